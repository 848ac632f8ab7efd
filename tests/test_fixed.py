"""The fixed-point model: equal to docs/semantics.md, close to the float and physics models."""

import numpy as np
import pytest

from clln import config
from clln.errors import ConfigError
from clln.formats import Formats, mantissa_shift
from clln.sim.dynamic import DynamicModel
from clln.sim.fixed import FixedPointModel, tick_constants
from clln.sim.quasistatic import QuasiStaticModel


def _rs(x, s):
    return x if s == 0 else (x + (1 << (s - 1))) >> s


def _sat(x, bits):
    hi = (1 << (bits - 1)) - 1
    return np.clip(x, -hi - 1, hi), (x > hi) | (x < -hi - 1)


def reference_tick(fmt, p, vf, vc, g, learn, drive, target):
    """docs/semantics.md written out again, in vectorised NumPy (an independent reading)."""
    a, b = p.edge_a, p.edge_b
    flags = 0
    ov = _rs(g, fmt.gate_shift) - fmt.vt_q
    accs = []
    for v in (vf, vc):
        ua, ub = np.maximum(ov - v[a], 0), np.maximum(ov - v[b], 0)
        s, sat = _sat((ub - ua) * (ub + ua) + fmt.leak_q * (v[a] - v[b]), fmt.term_bits)
        flags |= 1 if sat.any() else 0
        acc = np.zeros(len(v), np.int64)
        np.add.at(acc, b, s)
        np.add.at(acc, a, -s)
        accs.append(acc)
    if learn:
        df, dc = vf[a] - vf[b], vc[a] - vc[b]
        dg, sat = _sat(_rs((df - dc) * (df + dc) * fmt.lr_mul, fmt.learn_shift), fmt.dg_bits)
        flags |= 16 if sat.any() else 0
        g_new = np.clip(g + dg, fmt.gate_min_q, fmt.gate_max_q)
    else:
        g_new = g.copy()
    new = []
    for v, acc in zip((vf, vc), accs, strict=True):
        acc, s1 = _sat(acc, fmt.acc_bits)
        dv, s2 = _sat(_rs(acc * fmt.kappa_mul, fmt.node_shift), fmt.dv_bits)
        vn, s3 = _sat(v + dv, fmt.v_bits)
        free = ~p.driven
        flags |= (2 if s1[free].any() else 0) | (4 if s2[free].any() else 0) | (
            8 if s3[free].any() else 0)
        vn = np.where(p.driven, drive, vn)
        new.append(vn)
    vf_new, vc_new = new
    for k, (pl, mi) in enumerate(zip(p.out_plus, p.out_minus, strict=True)):
        if mi < 0:
            x, s = _sat(vf[pl] + _rs(fmt.eta_q * (target[k] - vf[pl]), fmt.eta_frac), fmt.v_bits)
            vc_new[pl] = x
            flags |= 8 if s else 0
        else:
            half = _rs(fmt.eta_q * (target[k] - (vf[pl] - vf[mi])), fmt.eta_frac + 1)
            (x, s1), (y, s2) = _sat(vf[pl] + half, fmt.v_bits), _sat(vf[mi] - half, fmt.v_bits)
            vc_new[pl], vc_new[mi] = x, y
            flags |= 8 if s1 or s2 else 0
    return vf_new, vc_new, g_new, flags


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


@pytest.mark.parametrize("case", ["paper-xor", "narrow", "random-graph"])
def test_kernel_equals_semantics_document(case, xor_dict, tmp_path):
    rng = np.random.default_rng(7)
    if case == "paper-xor":
        cfg = config.load("paper-xor")
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
    model = FixedPointModel(cfg, [0])
    fmt, p = model.formats, model.problem
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
        example = trial % p.n_examples
        learn = bool(trial % 3)
        expected = reference_tick(fmt, p, vf, vc, g, learn, model._drive[example],
                                  model._targets[example])
        model.v_free[0], model.v_clamped[0], model.gates[0] = vf, vc, g
        model.flags[:] = 0
        model.run(1, example, learn)
        np.testing.assert_array_equal(model.v_free[0], expected[0])
        np.testing.assert_array_equal(model.v_clamped[0], expected[1])
        np.testing.assert_array_equal(model.gates[0], expected[2])
        assert model.flags[0] == expected[3]
        saw_flags |= expected[3]
    if case == "narrow":
        assert saw_flags == 31, "every saturation path was exercised"


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
    cfg = config.parse(xor_dict)
    model = FixedPointModel(cfg, [0])
    model.run(5, 1, False)
    assert model.flags[0] & 4, "node steps clipped to 6 bits"
    step = np.abs(np.diff([0] + [0]))
    assert model.v_free[0].max() <= model.formats.volts_to_v(0.45)
    model.run(3000, 1, False)
    assert model.flags[0] & 4, "the flag stays set"
    assert step.size == 1
