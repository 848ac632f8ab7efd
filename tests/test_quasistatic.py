"""The quasi-static model against independent computations."""

import numpy as np
import pytest

from clln import config
from clln.errors import SolverError
from clln.sim import physics
from clln.sim.quasistatic import QuasiStaticModel, linear_system, solve_network


def _bisect(f, lo, hi, n=200):
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        if f(lo) * f(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("g1, g2", [(1.5, 1.0), (0.8, 3.0), (0.9, 0.95), (4.0, 0.7)])
def test_one_free_node_matches_bisection(g1, g2):
    # 0 (held 0.05 V) --e0-- 1 (free) --e1-- 2 (held 0.40 V); solved by bisection on KCL.
    device = np.array([[0.62, 0.62], [1.0, 1.0]])          # thresholds, relative gains
    gate = np.array([g1, g2])
    edges = np.array([[0, 1], [1, 2]])
    v = np.array([0.05, 0.2, 0.40])
    held = np.array([True, False, True])
    lin = linear_system("dense", 3, edges[:, 0], edges[:, 1], held)
    it = solve_network(v, gate, device, 0.0, edges[:, 0], edges[:, 1], held, lin, np.empty(3))
    assert it > 0

    def kcl(x):
        return physics.node_currents(np.array([0.05, x, 0.40]), gate, edges, 0.62)[1]

    assert abs(v[1] - _bisect(kcl, 0.05, 0.40)) < 1e-10


def _net_current(v, gates, edges, vt, leak):
    """KCL residual with the NumPy current plus the linear leak across every edge."""
    a, b = edges[:, 0], edges[:, 1]
    into = physics.node_currents(v, gates, edges, vt)
    lk = leak * (v[..., a] - v[..., b])
    np.add.at(into, (..., a), -lk)
    np.add.at(into, (..., b), lk)
    return into


def test_paper_network_satisfies_kcl_and_bounds():
    cfg = config.load("paper-xor")
    model = QuasiStaticModel(cfg, [0, 1, 2])
    model.evaluate()
    p = model.problem
    for example in range(p.n_examples):
        v = model.free_state(example)
        into = _net_current(v, model.gates, cfg.network.edges, cfg.device.vt, model.leak)
        # Independent check with the NumPy current: KCL holds at every free node.
        assert np.abs(into[:, ~p.driven]).max() < 1e-12
        driven = p.drive[example][p.driven]
        assert (v >= driven.min() - 1e-12).all() and (v <= driven.max() + 1e-12).all()
        np.testing.assert_array_equal(v[:, p.driven], np.broadcast_to(driven, (3, driven.size)))


def test_one_learning_step_follows_the_rule(xor_dict):
    cfg = config.parse(xor_dict)
    model = QuasiStaticModel(cfg, [3])
    before = model.gates.copy()
    observed = model.present(1, True)
    p = model.problem
    vf = model.free_state(1)[0]
    vc = model._warm_clamped[1][0]
    o_f = vf[10] - vf[0]
    np.testing.assert_allclose(observed[0, 0], o_f)
    eta = cfg.learning.eta
    # Differential clamp: each side moves by eta/2 of the error.
    np.testing.assert_allclose(vc[10], vf[10] + eta / 2 * (p.targets[1, 0] - o_f), atol=1e-15)
    np.testing.assert_allclose(vc[0], vf[0] - eta / 2 * (p.targets[1, 0] - o_f), atol=1e-15)
    into = _net_current(vc, before, cfg.network.edges, cfg.device.vt, model.leak)
    assert np.abs(into[0, ~p.clamped]).max() < 1e-12
    a, b = p.edge_a, p.edge_b
    expected = np.clip(before[0] + cfg.learning.alpha / eta * (
        (vf[a] - vf[b]) ** 2 - (vc[a] - vc[b]) ** 2), cfg.learning.gate_min, cfg.learning.gate_max)
    np.testing.assert_allclose(model.gates[0], expected, rtol=0, atol=1e-15)


def test_failed_solve_is_reported(xor_dict, monkeypatch):
    import clln.sim.quasistatic as qs
    model = QuasiStaticModel(config.parse(xor_dict), [0])
    monkeypatch.setattr(qs, "_present", lambda *args: 0)
    with pytest.raises(SolverError, match="seed 0, example 2"):
        model.present(2, False)
