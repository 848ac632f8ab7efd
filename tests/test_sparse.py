"""The sparse Newton solve of the quasi-static model: its LU, and equal to the dense solve."""

import numpy as np
import pytest

from clln import config
from clln.sim import physics, sparse
from clln.sim.quasistatic import QuasiStaticModel
from clln.sim.training import train


def _lattice_dict(data, topology, rows, cols):
    """``data`` (paper-xor) on a rows x cols lattice, its nodes where paper-xor's sit on
    the 4 x 4 torus, scaled."""
    def node(r, c):
        return (r * rows // 4) * cols + c * cols // 4

    data["network"] = {"topology": topology, "rows": rows, "cols": cols}
    data["io"] = {"inputs": [node(3, 3), node(3, 1)],
                  "rails": [[node(1, 1), 0.11], [node(1, 3), 0.33]],
                  "outputs": [[node(2, 2), node(0, 0)]]}
    return data


def _random_graph_dict(data, n_nodes=40, n_edges=80, seed=5):
    """``data`` (paper-xor, nodes 0-15 used by its io) on a random connected graph."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_nodes)
    edges = {tuple(sorted((int(order[i]), int(order[rng.integers(i)]))))
             for i in range(1, n_nodes)}
    while len(edges) < n_edges:
        a, b = (int(v) for v in rng.choice(n_nodes, 2, replace=False))
        edges.add((min(a, b), max(a, b)))
    data["network"] = {"topology": "edges", "nodes": n_nodes,
                       "edges": [list(e) for e in sorted(edges)]}
    return data


GRAPHS = {"torus": lambda d: _lattice_dict(d, "torus", 8, 8),
          "grid": lambda d: _lattice_dict(d, "grid", 6, 9),
          "edges": _random_graph_dict}


def _held(cfg):
    held = np.zeros(cfg.network.n_nodes, bool)
    held[cfg.driven_nodes()] = True
    return held


def _split_grid(data):
    """A 12 x 12 grid whose middle column is held too: two free parts, each past
    nested dissection's leaf size."""
    cfg = config.parse(_lattice_dict(data, "grid", 12, 12))
    held = _held(cfg)
    held[6::12] = True
    return cfg, held


@pytest.mark.parametrize("graph", [*sorted(GRAPHS), "split"])
def test_factor_and_solve_equal_a_dense_solve(graph, xor_dict):
    if graph == "split":
        cfg, held = _split_grid(xor_dict)
    else:
        cfg = config.parse(GRAPHS[graph](xor_dict))
        held = _held(cfg)
    a, b = cfg.network.edges[:, 0], cfg.network.edges[:, 1]
    n = cfg.network.n_nodes
    pattern = sparse.analyse(n, a, b, held)
    assert sorted(pattern.order) == np.flatnonzero(~held).tolist()
    # every update of the elimination lands on the column it updates
    for p in range(len(pattern.order)):
        row = pattern.index[pattern.ptr[p]:pattern.ptr[p + 1]]
        for t1, i in enumerate(row):
            slots = pattern.pair_slot[_pair_offset(pattern, p, t1):][:len(row) - t1 - 1]
            assert ((slots >= pattern.ptr[i]) & (slots < pattern.ptr[i + 1])).all()
            np.testing.assert_array_equal(pattern.index[slots], row[t1 + 1:])
    # a Jacobian-shaped matrix: column sums zero, conductances of either direction
    rng = np.random.default_rng(1)
    jac, vals = np.zeros((n, n)), np.zeros(sparse.values_size(pattern))
    for e in range(len(a)):
        g_a, g_b = rng.uniform(0.01, 2.0, 2)
        for (r, c, d), slot in zip([(a[e], a[e], -g_a), (a[e], b[e], g_b), (b[e], a[e], g_a),
                                    (b[e], b[e], -g_b)], pattern.edge_entries[e], strict=True):
            jac[r, c] += d
            if slot >= 0:
                vals[slot] += d
    rhs = rng.normal(size=n)
    free = ~held
    expected = np.linalg.solve(jac[np.ix_(free, free)], rhs[free])
    x = rhs[pattern.order]
    sparse.factor(pattern, vals)
    sparse.solve(pattern, vals, x)
    got = np.zeros(n)
    got[pattern.order] = x
    np.testing.assert_allclose(got[free], expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def _pair_offset(pattern, p, t1):
    """Where :func:`sparse.factor` reads the slots of pivot p's t1-th neighbour's pairs."""
    sizes = np.diff(pattern.ptr)
    before = int((sizes[:p] * (sizes[:p] - 1) // 2).sum())
    m = sizes[p]
    return before + t1 * m - t1 * (t1 + 1) // 2


def test_nested_dissection_orders_every_part(xor_dict):
    cfg, held = _split_grid(xor_dict)
    free = ~held
    adjacent = sparse.adjacency(cfg.network.n_nodes, cfg.network.edges.tolist(), free)
    nodes = np.flatnonzero(free).tolist()
    assert sorted(sparse.nested_dissection(adjacent, nodes)) == nodes


def test_nested_dissection_beats_minimum_degree_on_a_torus(xor_dict):
    cfg = config.parse(_lattice_dict(xor_dict, "torus", 16, 16))
    free = ~_held(cfg)
    adjacent = sparse.adjacency(cfg.network.n_nodes, cfg.network.edges.tolist(), free)
    nodes = np.flatnonzero(free).tolist()
    work = {name: sparse.updates(sparse.fill(adjacent, order(adjacent, nodes)))
            for name, order in [("md", sparse.minimum_degree),
                                ("nd", sparse.nested_dissection)]}
    assert work["nd"] < 0.9 * work["md"]
    for order in (sparse.minimum_degree(adjacent, nodes),
                  sparse.nested_dissection(adjacent, nodes)):
        assert sorted(order) == nodes


def _kcl(cfg, gates, leak, v):
    """Net current (units of K/2) into every node of voltages ``v`` (seeds, nodes) at
    ``gates`` with ``leak`` across every edge, computed with the NumPy physics."""
    edges = cfg.network.edges
    into = physics.node_currents(v, gates, edges, cfg.device.vt)
    leak = leak * (v[..., edges[:, 0]] - v[..., edges[:, 1]])
    np.add.at(into, (..., edges[:, 0]), -leak)
    np.add.at(into, (..., edges[:, 1]), leak)
    return into


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_sparse_solve_equals_dense(graph, xor_dict):
    cfg = config.parse(GRAPHS[graph](xor_dict))
    dense = QuasiStaticModel(cfg, [0, 1], solver="dense")
    model = QuasiStaticModel(cfg, [0, 1])
    assert (dense.solver, model.solver) == ("dense", "sparse")
    free = ~model.problem.driven
    for _ in range(3):   # learning epochs: the clamped solve and the update too
        for i in range(model.problem.n_examples):
            gates = model.gates.copy()   # the free solve's, before the update
            np.testing.assert_allclose(model.present(i, True), dense.present(i, True),
                                       rtol=0, atol=1e-12)
            v = model.free_state(i)
            np.testing.assert_allclose(v, dense.free_state(i), rtol=0, atol=1e-12)
            assert np.abs(_kcl(cfg, gates, model.leak, v)[:, free]).max() < 1e-12
    np.testing.assert_allclose(model.gates, dense.gates, rtol=0, atol=1e-12)


def test_shipped_config_trains_the_same_with_either_solver():
    cfg = config.load("paper-xor")
    assert QuasiStaticModel(cfg, [0]).solver == "dense"
    seeds = [0, 1, 2]
    dense = train(QuasiStaticModel(cfg, seeds), cfg.learning.epochs)
    other = train(QuasiStaticModel(cfg, seeds, solver="sparse"), cfg.learning.epochs)
    np.testing.assert_allclose(other.gates_final, dense.gates_final, rtol=0, atol=1e-9)
    np.testing.assert_allclose(other.mse_final, dense.mse_final, rtol=1e-8)
    assert (dense.mse_final < cfg.task.mse_target).sum() >= 2


def test_unknown_solver_is_refused(xor_dict):
    with pytest.raises(ValueError, match="unknown solver 'lu'"):
        QuasiStaticModel(config.parse(xor_dict), [0], solver="lu")
