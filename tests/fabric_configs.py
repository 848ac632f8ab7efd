"""Configs shared by the gateware tests: a random graph, narrow and saturating formats."""

import dataclasses

import numpy as np
from conftest import builtin_dict

from clln import config as config_mod


def random_graph_config(tmp_path, seed=3, extra_edges=(), fixed=None, relax="euler",
                        still_lsb=1, nonideal=None, schedule=None):
    """A random connected 9-node graph, one single-ended and one differential output.

    ``extra_edges`` are added as given (e.g. an edge between two driven nodes); ``fixed``
    is an optional ``[fixed]`` table; ``relax`` and ``still_lsb`` go to ``[schedule]``;
    ``nonideal`` is an optional ``[nonideal]`` table; ``schedule`` more ``[schedule]``
    keys.
    """
    rng = np.random.default_rng(seed)
    n = 9
    order = rng.permutation(n)
    edges = {tuple(sorted((int(order[i]), int(order[rng.integers(i)])))) for i in range(1, n)}
    while len(edges) < 16:
        a, b = (int(v) for v in rng.choice(n, 2, replace=False))
        edges.add((min(a, b), max(a, b)))
    edges = [[a, b] if rng.random() < 0.5 else [b, a] for a, b in sorted(edges)]
    edges += [list(e) for e in extra_edges]
    (tmp_path / "data.csv").write_text(
        "x1,x2,y1,y2\n0.0,0.45,0.2,-0.05\n0.45,0.1,0.3,0.08\n0.2,0.2,0.15,0.0\n")
    data = {
        "name": "random-graph",
        "network": {"topology": "edges", "nodes": n, "edges": edges},
        "device": {"vt": 0.62, "k": 8.5e-4},
        "io": {"inputs": [0, 1], "rails": [[2, 0.0], [3, 0.45]], "outputs": [4, [5, 6]]},
        "learning": {"eta": 0.5, "alpha": 20.0, "gate_init": [1.0, 2.5], "gate_min": 0.7,
                     "gate_max": 4.0, "epochs": 1, "seed": 1},
        "task": {"dataset": "data.csv"},
        "schedule": {"settle_ticks": 30, "learn_ticks": 10, "kappa": 0.02, "relax": relax,
                     "still_lsb": still_lsb, **(schedule or {})},
    }
    if fixed:
        data["fixed"] = dict(fixed)
    if nonideal:
        data["nonideal"] = dict(nonideal)
    return config_mod.parse(data, "<random>", tmp_path)


def jacobi_xor_config(still_lsb=1, extra=0):
    """paper-xor with ``[schedule] relax = "jacobi"`` (the shift-Jacobi node step),
    ``still_lsb`` and ``[fixed] node_extra_bits = extra``."""
    data = builtin_dict("paper-xor")
    data["schedule"].update(relax="jacobi", still_lsb=still_lsb)
    if extra:
        data["fixed"]["node_extra_bits"] = extra
    return config_mod.parse(data, "<jacobi-xor>")


def jacobi_random_config(tmp_path, still_lsb=1, extra=0):
    """:func:`random_graph_config` (a single-ended and a differential output) with
    ``[schedule] relax = "jacobi"``, ``still_lsb`` and ``[fixed] node_extra_bits =
    extra``."""
    return random_graph_config(tmp_path, relax="jacobi", still_lsb=still_lsb,
                               fixed={"node_extra_bits": extra} if extra else None)


def momentum_xor_config(still_lsb=1, extra=3, shift=2):
    """paper-xor with ``[schedule] relax = "momentum"``, ``momentum_shift = shift``,
    ``still_lsb`` and ``[fixed] node_extra_bits = extra``."""
    data = builtin_dict("paper-xor")
    data["schedule"].update(relax="momentum", still_lsb=still_lsb, momentum_shift=shift)
    data["fixed"]["node_extra_bits"] = extra
    return config_mod.parse(data, "<momentum-xor>")


def momentum_random_config(tmp_path, still_lsb=1, extra=3, shift=2):
    """:func:`random_graph_config` (a single-ended and a differential output) with
    ``[schedule] relax = "momentum"``, ``momentum_shift = shift``, ``still_lsb`` and
    ``[fixed] node_extra_bits = extra``."""
    return random_graph_config(tmp_path, relax="momentum", still_lsb=still_lsb,
                               fixed={"node_extra_bits": extra},
                               schedule={"momentum_shift": shift})


def narrow_config():
    """paper-xor with non-default (narrower, coarser) fixed-point widths."""
    data = builtin_dict("paper-xor")
    data["fixed"] = {"v_frac": 12, "v_bits": 15, "g_frac": 18, "g_bits": 22,
                     "term_bits": 30, "acc_bits": 31, "dv_bits": 14, "dg_bits": 20,
                     "kappa_bits": 5, "lr_bits": 6, "eta_frac": 6}
    return config_mod.parse(data, "<narrow>")


def saturating_config():
    """paper-xor with widths so narrow that edge terms, node sums, node steps and gate
    steps saturate within a few dozen ticks (the euler step: the jacobi one clips its steps
    to the box and raises no step flag)."""
    data = builtin_dict("paper-xor")
    data["schedule"].update(relax="euler", settle="fixed", settle_ticks=3000)
    data["fixed"] = {"v_frac": 12, "v_bits": 15, "g_frac": 18, "g_bits": 22, "term_bits": 24,
                     "acc_bits": 25, "dv_bits": 7, "dg_bits": 12, "kappa_bits": 5,
                     "lr_bits": 6, "eta_frac": 6}
    return config_mod.parse(data, "<saturating>")


def driven_pair_config(tmp_path):
    """The random graph plus an edge between two driven nodes, and that edge."""
    base = random_graph_config(tmp_path)
    have = {frozenset(e) for e in np.asarray(base.network.edges).tolist()}
    pair = next((a, b) for a in base.driven_nodes() for b in base.driven_nodes()
                if a < b and frozenset((a, b)) not in have)
    return random_graph_config(tmp_path, extra_edges=[pair]), pair


def mismatched(cfg, vt_sigma=0.05, mismatch_seed=3):
    """``cfg`` on a chip with per-edge threshold mismatch (``[nonideal] vt_sigma``), the
    non-ideality every fabric builds in."""
    ni = dataclasses.replace(cfg.nonideal, vt_sigma=vt_sigma, mismatch_seed=mismatch_seed)
    return dataclasses.replace(cfg, nonideal=ni)


#: A chip with every non-ideality, strong enough to show in a short bench (a dead edge,
#: a stuck one, twin mismatch, offsets, noise, a gate leak and a 6-bit DAC).
EVERY_NONIDEALITY = {"vt_sigma": 0.03, "k_sigma": 0.1, "twin_mismatch": True,
                     "update_offset": 1e-4, "read_noise": 0.003, "gate_leak": 0.01,
                     "gate_rest": 1.0, "dead_edges": [3], "stuck_edges": [5], "dac_bits": 6}


def nonideal_random_config(tmp_path, keys=None, still_lsb=255):
    """:func:`jacobi_random_config` on a chip with ``keys`` of ``[nonideal]`` (default
    :data:`EVERY_NONIDEALITY`)."""
    return random_graph_config(tmp_path, relax="jacobi", still_lsb=still_lsb,
                               nonideal=EVERY_NONIDEALITY if keys is None else keys)
