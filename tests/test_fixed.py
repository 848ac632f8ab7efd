"""The fixed-point model: equal to docs/semantics.md, close to the float and physics models."""

from dataclasses import replace

import numpy as np
import pytest

from clln import config
from clln.errors import ConfigError
from clln.formats import Formats, mantissa_shift
from clln.sim.dynamic import DynamicModel
from clln.sim.fixed import FixedPointModel, run_ticks, tick_constants
from clln.sim.quasistatic import QuasiStaticModel


def _rs(x, s):
    return x if s == 0 else (x + (1 << (s - 1))) >> s


def _sat(x, bits):
    hi = (1 << (bits - 1)) - 1
    return np.clip(x, -hi - 1, hi), (x > hi) | (x < -hi - 1)


def reference_noise(states, fmt):
    """docs/semantics.md's read noise, in plain Python: advance every edge's xorshift32
    twice (in place) and return the free and clamped drops' noise (voltage LSBs)."""
    def step(x):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        return x ^ ((x << 5) & 0xFFFFFFFF)

    out = np.zeros((2, len(states)), np.int64)
    for e in range(len(states)):
        x = int(states[e])
        for k in range(2):
            x = step(x)
            sample = sum((x >> (8 * i)) & 255 for i in range(4)) - 510
            out[k, e] = _rs(sample * fmt.noise_mul, fmt.noise_shift)
        states[e] = x
    return out


def _decayed(m, b):
    """``(1 - 2**-b) m`` rounded toward zero, as semantics.md writes it: ``|m|`` less
    ``ceil(|m| / 2**b)``, the sign put back."""
    mag = np.abs(m)
    return np.sign(m) * (mag - -(-mag // 2 ** b))


def reference_tick(fmt, p, hf, hc, g, learn, drive, target, noise=None, mf=None, mc=None):
    """docs/semantics.md written out again, in vectorised NumPy (an independent reading).
    ``hf, hc``: the node states H (``node_extra_bits`` fraction bits below the voltages),
    ``mf, mc`` their velocities (``momentum``; zeros by default); returns the new states,
    gates, flags and velocities. ``noise``: (2, edges) read noise of this tick on the free
    and clamped drops."""
    zero = np.zeros(len(hf), np.int64)
    mf, mc = (zero if mf is None else mf), (zero if mc is None else mc)
    a, b = p.edge_a, p.edge_b
    extra = fmt.node_extra_bits
    vf, vc = hf // 2 ** extra, hc // 2 ** extra          # floor: the top bits
    flags = 0
    g_v = _rs(g, fmt.gate_shift)
    accs, conds = [], []
    for v, vt, gain in ((vf, fmt.vt_q, fmt.k_f_q), (vc, fmt.vt_c_q, fmt.k_c_q)):
        ov = g_v - vt
        ua, ub = np.maximum(ov - v[a], 0), np.maximum(ov - v[b], 0)
        square = _rs((ub - ua) * (ub + ua) * gain, 10)
        s, sat = _sat(square + fmt.leak_q * (v[a] - v[b]), fmt.term_bits)
        flags |= 1 if sat.any() else 0
        acc = np.zeros(len(v), np.int64)
        np.add.at(acc, b, s)
        np.add.at(acc, a, -s)
        accs.append(acc)
        cond = np.zeros(len(v), np.int64)
        np.add.at(cond, a, _rs(2 * ua * gain, 10) + fmt.leak_q)
        np.add.at(cond, b, _rs(2 * ub * gain, 10) + fmt.leak_q)
        conds.append(cond)
    if learn:
        n_f, n_c = (0, 0) if noise is None else noise
        df, dc = vf[a] - vf[b] + n_f, vc[a] - vc[b] + n_c
        dg, sat = _sat(_rs(((df - dc) * (df + dc) + fmt.offset_q) * fmt.lr_mul,
                           fmt.learn_shift), fmt.dg_bits)
        droop = _rs((fmt.rest_q - g) * fmt.droop_mul, fmt.droop_shift) if fmt.droop_mul else 0
        sat &= fmt.frozen == 0
        flags |= 16 if sat.any() else 0
        g_new = np.where(fmt.frozen, g, np.clip(g + dg + droop, fmt.gate_min_q,
                                                fmt.gate_max_q))
    else:
        g_new = g.copy()
    new, moves = [], []
    scale = 2 ** extra
    for v, h, m, acc, cond in zip((vf, vc), (hf, hc), (mf, mc), accs, conds, strict=True):
        acc, s1 = _sat(acc, fmt.acc_bits)
        move = np.zeros(len(v), np.int64)
        if fmt.relax in ("jacobi", "momentum"):
            half = 1 if fmt.relax == "momentum" else 0
            shift = np.array([int(d - 1).bit_length() + half if d > 1 else half for d in cond])
            dh = np.array([_rs(int(x) * scale, int(k)) for x, k in zip(acc, shift, strict=True)])
            span = (fmt.box_hi_q - fmt.box_lo_q) * scale
            dh = np.clip(dh, -span, span)
            if half:
                dh = dh + _decayed(m, fmt.momentum_shift)
            vn = np.clip(h + dh, fmt.box_lo_q * scale, fmt.box_hi_q * scale)
            if half:
                move = np.where(p.driven, 0, vn - h)
            s2 = s3 = np.zeros(len(v), bool)
        else:
            dv, s2 = _sat(_rs(acc * fmt.kappa_mul, fmt.node_shift), fmt.dv_bits)
            vn, s3 = _sat(v + dv, fmt.v_bits)
        free = ~p.driven
        flags |= (2 if s1[free].any() else 0) | (4 if s2[free].any() else 0) | (
            8 if s3[free].any() else 0)
        vn = np.where(p.driven, drive * scale, vn)
        new.append(vn)
        moves.append(move)
    vf_new, vc_new = new
    mf_new, mc_new = moves
    for k, (pl, mi) in enumerate(zip(p.out_plus, p.out_minus, strict=True)):
        if mi < 0:
            x, s = _sat(vf[pl] + _rs(fmt.eta_q * (target[k] - vf[pl]), fmt.eta_frac), fmt.v_bits)
            vc_new[pl], mc_new[pl] = x * scale, 0
            flags |= 8 if s else 0
        else:
            half = _rs(fmt.eta_q * (target[k] - (vf[pl] - vf[mi])), fmt.eta_frac + 1)
            (x, s1), (y, s2) = _sat(vf[pl] + half, fmt.v_bits), _sat(vf[mi] - half, fmt.v_bits)
            vc_new[pl], vc_new[mi] = x * scale, y * scale
            mc_new[pl] = mc_new[mi] = 0
            flags |= 8 if s1 or s2 else 0
    return vf_new, vc_new, g_new, flags, mf_new, mc_new


def _random_graph_dict(xor_dict, rng):
    n = 9
    edges = [[i, i + 1] for i in range(n - 1)]
    while len(edges) < 16:
        a, b = sorted(rng.choice(n, 2, replace=False).tolist())
        if [a, b] not in edges:
            edges.append([a, b])
    xor_dict["network"] = {"topology": "edges", "nodes": n, "edges": edges}
    xor_dict["io"] = {"inputs": [0, 1], "rails": [[2, 0.1]], "outputs": [[3, 4], 5]}
    xor_dict["learning"]["gate_init"] = [0.75, 3.0]
    xor_dict["learning"]["gate_max"] = 4.0
    xor_dict.pop("fixed", None)          # the default widths (gates up to 4 V)
    xor_dict["schedule"]["kappa"] = 0.02
    xor_dict["task"]["dataset"] = "two.csv"
    return xor_dict


#: A chip with every non-ideality (docs/config.md, ``[nonideal]``).
EVERY_NONIDEALITY = {"vt_sigma": 0.03, "k_sigma": 0.1, "twin_mismatch": True,
                     "update_offset": 1e-4, "read_noise": 0.003, "gate_leak": 0.01,
                     "gate_rest": 1.0, "dead_edges": [3], "stuck_fraction": 0.1,
                     "dac_bits": 6}


@pytest.mark.parametrize("relax, extra", [("euler", 0), ("jacobi", 0), ("jacobi", 3),
                                          ("momentum", 0), ("momentum", 3)])
@pytest.mark.parametrize("case", ["paper-xor", "narrow", "random-graph", "nonideal"])
def test_kernel_equals_semantics_document(case, relax, extra, xor_dict, tmp_path):
    rng = np.random.default_rng(7)
    xor_dict["schedule"]["relax"] = relax
    if relax == "momentum":
        xor_dict["schedule"]["momentum_shift"] = 1 + int(rng.integers(4))
    if case == "paper-xor":
        cfg = config.parse(xor_dict)
    elif case == "nonideal":
        xor_dict["nonideal"] = EVERY_NONIDEALITY
        cfg = config.parse(xor_dict)
    elif case == "narrow":
        # Narrow widths so that every saturation path is exercised.
        xor_dict["fixed"] = {"v_frac": 10, "v_bits": 12, "g_frac": 14, "g_bits": 18,
                             "term_bits": 20, "acc_bits": 20, "dv_bits": 3, "dg_bits": 6,
                             "kappa_bits": 3, "lr_bits": 2, "eta_frac": 4}
        xor_dict["learning"]["eta"] = 0.7
        cfg = config.parse(xor_dict)
    else:
        (tmp_path / "two.csv").write_text("x1,x2,y1,y2\n0.1,0.3,-0.05,0.2\n0.4,0.0,0.05,0.15\n")
        cfg = config.parse(_random_graph_dict(xor_dict, rng), str(tmp_path / "n.toml"), tmp_path)
    cfg = replace(cfg, fixed=replace(cfg.fixed, node_extra_bits=extra))
    model = FixedPointModel(cfg, [0])
    fmt, p = model.formats, model.problem
    assert fmt.node_extra_bits == extra
    v_hi = 1 << (fmt.v_bits - 1)
    saw_flags = 0
    for trial in range(300):
        vf = rng.integers(-v_hi, v_hi, p.n_nodes)
        vc = rng.integers(-v_hi, v_hi, p.n_nodes)
        if trial % 2:   # realistic voltages too, not only extremes
            vf = rng.integers(0, fmt.volts_to_v(0.45), p.n_nodes)
            vc = vf + rng.integers(-200, 200, p.n_nodes)
        if trial % 5 == 0:   # nodes at the rails of their format
            vf = rng.choice([-v_hi, v_hi - 1], p.n_nodes)
            vc = rng.choice([-v_hi, v_hi - 1], p.n_nodes)
        g = rng.integers(fmt.gate_min_q, fmt.gate_max_q + 1, p.n_edges)
        # the extra state bits: any, below the voltage's (a driven node's are 0)
        hf = (vf << extra) + rng.integers(0, 1 << extra, p.n_nodes) * ~p.driven
        hc = (vc << extra) + rng.integers(0, 1 << extra, p.n_nodes) * ~p.driven
        # velocities: any difference of two node states (0 at driven nodes)
        h_hi = 1 << (fmt.h_bits - 1)
        mf, mc = (rng.integers(-2 * h_hi + 1, 2 * h_hi, p.n_nodes) * ~p.driven
                  if relax == "momentum" else np.zeros(p.n_nodes, np.int64) for _ in "fc")
        if relax == "momentum" and trial % 2:       # moves of a settling network
            mf, mc = (rng.integers(-300 << extra, 300 << extra, p.n_nodes) * ~p.driven
                      for _ in "fc")
        example = trial % p.n_examples
        learn = bool(trial % 3)
        noise = None
        if learn and fmt.noise_mul:
            noise = reference_noise(model.edges.noise.copy(), fmt)
        expected = reference_tick(fmt, p, hf, hc, g, learn, model._drive[example],
                                  model._targets[example], noise, mf, mc)
        model.h_free[0], model.h_clamped[0], model.gates[0] = hf, hc, g
        model.m_free[0], model.m_clamped[0] = mf, mc
        model.flags[:] = 0
        model.run(1, example, learn)
        np.testing.assert_array_equal(model.h_free[0], expected[0])
        np.testing.assert_array_equal(model.h_clamped[0], expected[1])
        np.testing.assert_array_equal(model.v_free[0], expected[0] >> extra)
        np.testing.assert_array_equal(model.gates[0], expected[2])
        np.testing.assert_array_equal(model.m_free[0], expected[4])
        np.testing.assert_array_equal(model.m_clamped[0], expected[5])
        assert model.flags[0] == expected[3]
        saw_flags |= expected[3]
    if case == "narrow":
        # the jacobi step raises no dv or v flag for its nodes (the box is the rule)
        assert saw_flags == (31 if relax == "euler" else 31 & ~4), saw_flags


def test_constants_are_quantised_as_documented():
    assert mantissa_shift(0.025, 4) == (13, 9)
    assert mantissa_shift(0.5, 1) == (1, 1)
    fmt = Formats.from_config(config.load("paper-xor"))
    assert abs(fmt.kappa - 0.05) / 0.05 < 0.02
    assert fmt.vt_q[0] == round(0.62 * 2 ** 16)
    assert fmt.gate_max_q == 3 * 2 ** 20     # paper-xor: g_frac = 20
    assert fmt.leak_q == 2 ** 9        # 2 gmin / k = 2**-7 V, times 2**16
    c = tick_constants(fmt)
    assert c.learn_shift == 2 * 16 - 20 + fmt.lr_shift


def test_formats_that_cannot_hold_the_values_are_refused(xor_dict):
    xor_dict["fixed"] = {"g_frac": 16, "g_bits": 20, "dg_bits": 20}
    xor_dict["learning"]["alpha"] = 0.01
    xor_dict["schedule"]["learn_ticks"] = 50
    with pytest.raises(ConfigError, match="learning step"):
        Formats.from_config(config.parse(xor_dict))
    xor_dict["fixed"] = {"g_bits": 26}
    with pytest.raises(ConfigError, match="gate"):
        Formats.from_config(config.parse(xor_dict))
    xor_dict["fixed"] = {"v_bits": 16}
    with pytest.raises(ConfigError, match="v_bits"):
        Formats.from_config(config.parse(xor_dict))


def _exact_constants(d):
    # kappa, the learning rate and eta all exactly representable: only rounding differs.
    d["schedule"] = {"settle_ticks": 400, "learn_ticks": 50, "kappa": 2 ** -6}
    d["learning"].update(eta=0.5, alpha=1.5625)    # 1.5625 / (0.5 * 50) = 2**-4
    return config.parse(d)


def test_fixed_tracks_dynamic(xor_dict):
    cfg = _exact_constants(xor_dict)
    fixed, dyn = FixedPointModel(cfg, [0, 1]), DynamicModel(cfg, [0, 1])
    np.testing.assert_allclose(fixed.formats.kappa, dyn.kappa)
    for _epoch in range(20):
        for i in range(4):
            fixed.present(i, True)
            dyn.present(i, True)
    lsb = 2.0 ** -16
    dv = np.abs(fixed.state_to_volts(fixed.v_free) - dyn.v_free).max() / lsb
    dg = np.abs(fixed.gates_volts() - dyn.gates).max()
    assert dv < 64, f"free voltages differ by {dv:.1f} LSB"
    assert dg < 1e-3, f"gates differ by {dg:.2e} V after 20 epochs"
    assert np.abs(fixed.gates_volts() - fixed.formats.g_to_volts(fixed.formats.volts_to_g(
        cfg.learning.initial_gates(32, 0)))).max() > 1e-2, "the gates did learn"


def test_fixed_steady_state_vs_quasistatic_in_lsb():
    """How far the fixed-point steady state sits from the physics (documented in docs/)."""
    cfg = config.load("paper-xor")
    seeds = list(range(5))
    fixed, qs = FixedPointModel(cfg, seeds), QuasiStaticModel(cfg, seeds)
    worst = []
    for i in range(4):
        qs.present(i, False)
        fixed.run(4000, i, False)
        diff = np.abs(fixed.v_free - qs.free_state(i) * 2 ** 16)
        worst.append(diff.max())
    # A node stops moving once kappa * net current rounds to zero: a dead band of a few
    # LSB divided by the node's total conductance.
    assert max(worst) <= 16, worst   # measured: 3.6 to 10.5 LSB (0.16 mV)
    assert min(worst) >= 0


def test_saturation_is_sticky_and_clips(xor_dict):
    xor_dict["fixed"] = {"dv_bits": 6}
    xor_dict["schedule"]["relax"] = "euler"       # the jacobi step has no dv flag
    cfg = config.parse(xor_dict)
    model = FixedPointModel(cfg, [0])
    model.run(5, 1, False)
    assert model.flags[0] & 4, "node steps clipped to 6 bits"
    step = np.abs(np.diff([0] + [0]))
    assert model.v_free[0].max() <= model.formats.volts_to_v(0.45)
    model.run(3000, 1, False)
    assert model.flags[0] & 4, "the flag stays set"
    assert step.size == 1


def _jacobi_still(xor_dict, still_ticks=4, still_lsb=1, extra=0):
    xor_dict["schedule"].update(relax="jacobi", settle="still", still_ticks=still_ticks,
                                still_lsb=still_lsb)
    xor_dict.setdefault("fixed", {})["node_extra_bits"] = extra
    return config.parse(xor_dict)


@pytest.mark.parametrize("joint,lag,extra", [(False, 0, 0), (True, 0, 0), (False, 1, 0),
                                             (True, 1, 0), (False, 0, 3)])
def test_settle_until_still_stops_where_the_rule_says(xor_dict, joint, lag, extra):
    """Run tick by tick and find where k consecutive ticks moved no node by more than
    ``still_lsb``; the kernel's settle phase must stop exactly there, in that state
    (every seed on its own, or all at the first tick where all are still: ``joint``;
    with ``lag`` 1, one tick after that: the run is judged on the ticks before). With
    ``extra`` node bits, moves are judged on the voltages, not the node state."""
    cfg = _jacobi_still(xor_dict, still_ticks=3, still_lsb=2, extra=extra)
    seeds = [0, 1, 2]
    stepped, ruled = FixedPointModel(cfg, seeds), FixedPointModel(cfg, seeds)
    p = ruled.problem
    for example in (0, 1, 3):
        stepped.h_free[:], stepped.h_clamped[:] = ruled.h_free, ruled.h_clamped
        stepped.m_free[:], stepped.m_clamped[:] = ruled.m_free, ruled.m_clamped
        quiet, stop = np.zeros(len(seeds), int), np.full(len(seeds), -1)
        states = [stepped.v_free.copy()]
        judged = quiet
        for t in range(1, 400):
            if lag:
                judged = quiet
            before = stepped.v_free.copy(), stepped.v_clamped.copy()
            stepped.run(1, example, False)
            states.append(stepped.v_free.copy())
            still = [np.abs(stepped.v_free[s] - before[0][s]).max() <= 2
                     and np.abs(stepped.v_clamped[s] - before[1][s]).max() <= 2
                     for s in range(len(seeds))]
            quiet = np.where(still, quiet + 1, 0)
            if not lag:
                judged = quiet
            for s in range(len(seeds)):
                if stop[s] < 0 and (judged[s] >= 3 if not joint else (judged >= 3).all()):
                    stop[s] = t
            if (stop >= 0).all():
                break
        assert (stop > 3).all(), stop            # the new drives moved: not still at once
        used = np.zeros(len(seeds), np.int64)
        run_ticks(ruled.h_free, ruled.h_clamped, ruled.m_free, ruled.m_clamped, ruled.gates,
                  400, False, p.edge_a, p.edge_b, ruled.edges, p.driven, ruled._drive[example],
                  p.out_plus, p.out_minus, ruled._targets[example], ruled.constants, ruled.flags, 3,
                  joint, lag, used)
        np.testing.assert_array_equal(used, stop)
        if joint:
            assert (stop == stop.max()).all()
        for s in range(len(seeds)):
            np.testing.assert_array_equal(ruled.v_free[s], states[stop[s]][s])


def test_cap_bounds_the_settle_phase(xor_dict):
    """``settle_ticks`` caps a phase that never becomes still (``still_lsb = 0`` and a
    rule needing 255 quiet ticks)."""
    cfg = _jacobi_still(xor_dict, still_ticks=255, still_lsb=0)
    model = FixedPointModel(cfg, [0])
    used = model.run(40, 0, False, still_ticks=255)
    assert used.tolist() == [40] and model.ticks == 40


def _torus_dict(xor_dict, size):
    """paper-xor on a ``size`` x ``size`` torus (its io where paper-xor has it on 4x4,
    scaled, as ``bench/scaling.py``), gates drawn in [1, 2] V."""
    def node(r, c):
        return (r * size // 4) * size + c * size // 4

    xor_dict["network"] = {"topology": "torus", "rows": size, "cols": size}
    xor_dict["io"].update(inputs=[node(3, 3), node(3, 1)],
                          rails=[[node(1, 1), 0.11], [node(1, 3), 0.33]],
                          outputs=[[node(2, 2), node(0, 0)]])
    xor_dict["learning"]["gate_init"] = [1.0, 2.0]
    xor_dict.pop("fixed", None)
    return xor_dict


@pytest.mark.parametrize("model", ["fixed", "dynamic"])
def test_momentum_gets_still_near_the_physics_on_a_torus(xor_dict, model):
    """``relax = "momentum"`` at its defaults (8 extra bits, still_lsb 2, b = 2 from the
    8x8 torus's diameter) settles from 0 V until still in fewer than half jacobi's ticks
    (8 extra bits, still_lsb 1), and stops within 8 LSB of the quasi-static solution
    (measured: 56 to 67 ticks against 176 to 243, at most 5.4 LSB off; the float model 57
    to 68 against 144 to 177, 3.8 LSB)."""
    kind = FixedPointModel if model == "fixed" else DynamicModel
    used, worst = {}, {}
    for relax in ("momentum", "jacobi"):
        data = _torus_dict(xor_dict, 8)
        data["schedule"] = {"relax": relax, "settle_ticks": 3000}
        if relax == "jacobi":
            data["fixed"] = {"node_extra_bits": 8}
        cfg = config.parse(data)
        tick_model, qs = kind(cfg, [0, 1]), QuasiStaticModel(cfg, [0, 1])
        if model == "fixed":
            qs.gates[:] = tick_model.gates_volts()
        used[relax], worst[relax] = [], []
        for ex in (0, 1):
            tick_model.v_free = np.zeros_like(tick_model.v_free)
            tick_model.v_clamped = np.zeros_like(tick_model.v_clamped)
            used[relax] += tick_model.run(3000, ex, False, still_ticks=4).tolist()
            qs.present(ex, False)
            err = np.abs(tick_model.state_to_volts(tick_model.v_free) - qs.free_state(ex))
            worst[relax].append(err.max() * 2 ** 16)
    assert max(used["momentum"]) < 3000 and max(used["jacobi"]) < 3000, used
    assert 2 * max(used["momentum"]) < min(used["jacobi"]), used
    assert max(worst["momentum"]) <= 8, worst


def test_momentum_state_carries_the_velocities(xor_dict):
    """Under ``momentum`` a model's state has the velocities: a model loaded from it goes
    on bit for bit (without them it would not), and an evaluation pass leaves them."""
    xor_dict["schedule"].update(relax="momentum", momentum_shift=3)
    cfg = config.parse(xor_dict)
    first = FixedPointModel(cfg, [0, 1])
    for i in (0, 1, 2):
        first.present(i, True)
    state = first.state()
    assert {"m_free", "m_clamped"} <= set(state) and np.any(state["m_free"])
    before = first.m_free.copy()
    first.evaluate()
    np.testing.assert_array_equal(first.m_free, before)
    second, stale = FixedPointModel(cfg, [0, 1]), FixedPointModel(cfg, [0, 1])
    second.load_state(state)
    stale.load_state(state)
    stale.m_free[:] = 0
    for model in (first, second, stale):
        model.run(5, 3, False)
    np.testing.assert_array_equal(second.h_free, first.h_free)
    np.testing.assert_array_equal(second.m_free, first.m_free)
    assert np.any(stale.h_free != first.h_free)
    xor_dict["schedule"]["relax"] = "jacobi"
    assert "m_free" not in FixedPointModel(config.parse(xor_dict), [0]).state()
