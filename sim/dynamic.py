"""Dynamic model: the tick semantics of the fixed-point model in float64, without rounding.

Both networks are integrated by explicit Euler ticks (node capacitance folded into
``kappa``), the clamp follows the free output every tick and learning is switched per
tick, exactly as in :mod:`sim.fixed`; constants are the config's own floats, not their
quantised values. It shows how far discretisation alone departs from the quasi-static
solution.
"""

import numpy as np
from numba import njit

from clln.formats import edge_leak

from .ticks import TickModel


@njit(cache=True)
def tick(vf, vc, g, learn, edge_a, edge_b, vt, driven, drive, out_plus, out_minus, target,
         kappa, lr, eta, gate_min, gate_max, leak, vf_new, vc_new, g_new, acc_f, acc_c):
    """One synchronous float tick; reads state at t, writes state at t+1."""
    acc_f[:] = 0.0
    acc_c[:] = 0.0
    for e in range(len(edge_a)):
        a, b = edge_a[e], edge_b[e]
        ov = g[e] - vt[e]
        ua, ub = max(ov - vf[a], 0.0), max(ov - vf[b], 0.0)
        s = (ub - ua) * (ub + ua) + leak * (vf[a] - vf[b])
        acc_f[a] -= s
        acc_f[b] += s
        ua, ub = max(ov - vc[a], 0.0), max(ov - vc[b], 0.0)
        s = (ub - ua) * (ub + ua) + leak * (vc[a] - vc[b])
        acc_c[a] -= s
        acc_c[b] += s
        if learn:
            d_f = vf[a] - vf[b]
            d_c = vc[a] - vc[b]
            g_new[e] = min(max(g[e] + lr * (d_f - d_c) * (d_f + d_c), gate_min), gate_max)
        else:
            g_new[e] = g[e]
    for n in range(len(vf)):
        if driven[n]:
            vf_new[n] = drive[n]
            vc_new[n] = drive[n]
        else:
            vf_new[n] = vf[n] + kappa * acc_f[n]
            vc_new[n] = vc[n] + kappa * acc_c[n]
    for k in range(len(out_plus)):
        p, m = out_plus[k], out_minus[k]
        if m < 0:
            vc_new[p] = vf[p] + eta * (target[k] - vf[p])
        else:
            half = 0.5 * eta * (target[k] - (vf[p] - vf[m]))
            vc_new[p] = vf[p] + half
            vc_new[m] = vf[m] - half


@njit(cache=True)
def run_ticks(vf, vc, g, n_ticks, learn, edge_a, edge_b, vt, driven, drive, out_plus,
              out_minus, target, kappa, lr, eta, gate_min, gate_max, leak):
    """Run ``n_ticks`` float ticks on every seed (rows of ``vf, vc, g``) in place."""
    n_seeds, n = vf.shape
    acc_f, acc_c = np.empty(n), np.empty(n)
    for s in range(n_seeds):
        vf_a, vc_a, g_a = vf[s].copy(), vc[s].copy(), g[s].copy()
        vf_b, vc_b, g_b = np.empty_like(vf_a), np.empty_like(vc_a), np.empty_like(g_a)
        for _ in range(n_ticks):
            tick(vf_a, vc_a, g_a, learn, edge_a, edge_b, vt, driven, drive, out_plus,
                 out_minus, target, kappa, lr, eta, gate_min, gate_max, leak, vf_b, vc_b, g_b,
                 acc_f, acc_c)
            vf_a, vf_b = vf_b, vf_a
            vc_a, vc_b = vc_b, vc_a
            g_a, g_b = g_b, g_a
        vf[s] = vf_a
        vc[s] = vc_a
        g[s] = g_a


class DynamicModel(TickModel):
    """Float64 tick model for a batch of seeds; state is in volts."""

    name = "dynamic"

    @property
    def kappa(self):
        return self.cfg.schedule.kappa

    def volts_to_state(self, volts):
        return np.array(volts, dtype=float)

    def gates_from_volts(self, volts):
        return np.clip(np.array(volts, dtype=float), self.cfg.learning.gate_min,
                       self.cfg.learning.gate_max)

    def state_to_volts(self, values):
        return np.asarray(values, dtype=float)

    def gates_volts(self):
        return self.gates.copy()

    def _kernel(self, n_ticks, example, learn):
        p, lrn = self.problem, self.cfg.learning
        lr = lrn.alpha / (lrn.eta * max(self.cfg.schedule.learn_ticks, 1))
        run_ticks(self.v_free, self.v_clamped, self.gates, n_ticks, learn, p.edge_a, p.edge_b,
                  np.full(p.n_edges, self.cfg.device.vt), p.driven, self._drive[example],
                  p.out_plus, p.out_minus, self._targets[example], self.kappa, lr, lrn.eta,
                  lrn.gate_min, lrn.gate_max, edge_leak(self.cfg))
