"""Dynamic model: the tick semantics of the fixed-point model in float64, without rounding.

Both networks are integrated tick by tick, by explicit Euler steps (node capacitance
folded into ``kappa``), by the normalised ``jacobi`` step or by the heavy ball of
``momentum`` (half that step plus ``beta`` times the last move), as ``[schedule] relax``
says; the clamp follows the free output every tick and learning is switched per
tick, exactly as in :mod:`sim.fixed`; constants are the config's own floats, not their
quantised values. It shows how far discretisation alone departs from the quasi-static
solution.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from clln import nonideal
from clln.formats import edge_leak, momentum_shift, settle_box

from .fixed import RELAX_CODES, EdgeConstants
from .noise import next_samples
from .ticks import TickModel

#: The mantissa field of a float64.
_MANTISSA = (1 << 52) - 1


@njit(cache=True, inline="always")
def power_of_two_at_or_above(x):
    """The least power of two ``>= x``, exactly, for a positive normal float ``x``: its
    exponent field, one up if any mantissa bit is set (no logarithm)."""
    bits = np.float64(x).view(np.int64)
    exponent = (bits >> 52) + (1 if bits & _MANTISSA else 0)
    return np.int64(exponent << 52).view(np.float64)


@njit(cache=True, inline="always")
def node_step(v, m, acc, cond, c):
    """New voltage and velocity of a settling node: ``v + kappa acc`` (``euler``) or, for
    ``jacobi``, ``v + acc / 2**s`` with ``2**s`` the power of two at or above the
    conductance (floored at one voltage LSB, as in the fixed-point model), kept within the
    box; ``momentum``: ``v + beta m + acc / 2**(s+1)`` within the box, the new velocity
    the move made (0 under the other steps)."""
    if c.relax == 0:
        return v + c.kappa * acc, 0.0
    step = acc / power_of_two_at_or_above(max(cond, c.cond_floor))
    span = c.box_hi - c.box_lo
    if c.relax == 1:
        return min(max(v + min(max(step, -span), span), c.box_lo), c.box_hi), 0.0
    step = min(max(0.5 * step, -span), span) + c.beta * m
    v_new = min(max(v + step, c.box_lo), c.box_hi)
    return v_new, v_new - v


@njit(cache=True, inline="always")
def edge_term(ov, v_a, v_b, leak, gain):
    """``gain (relu(ov - vb)**2 - relu(ov - va)**2) + leak (va - vb)`` and the
    conductances ``gain 2 relu(ov - V) + leak`` at ends a and b."""
    ua, ub = max(ov - v_a, 0.0), max(ov - v_b, 0.0)
    return (gain * (ub - ua) * (ub + ua) + leak * (v_a - v_b), 2 * gain * ua + leak,
            2 * gain * ub + leak)


@njit(cache=True)
def tick(vf, vc, mf, mc, g, learn, edge_a, edge_b, x, noise_f, noise_c, driven, drive,
         out_plus, out_minus, target, c, vf_new, vc_new, mf_new, mc_new, g_new, acc_f, acc_c,
         cond_f, cond_c):
    """One synchronous float tick; reads state at t (``mf, mc``: the node velocities of
    ``momentum``), writes state at t+1. ``x``: the float :class:`~sim.fixed.EdgeConstants`;
    ``noise_f, noise_c``: this tick's read noise on every edge's drops (V)."""
    acc_f[:] = 0.0
    acc_c[:] = 0.0
    cond_f[:] = 0.0
    cond_c[:] = 0.0
    for e in range(len(edge_a)):
        a, b = np.uint64(edge_a[e]), np.uint64(edge_b[e])   # no wraparound: faster
        s, ca, cb = edge_term(g[e] - x.vt_f[e], vf[a], vf[b], c.leak, x.k_f[e])
        acc_f[a] -= s
        acc_f[b] += s
        cond_f[a] += ca
        cond_f[b] += cb
        s, ca, cb = edge_term(g[e] - x.vt_c[e], vc[a], vc[b], c.leak, x.k_c[e])
        acc_c[a] -= s
        acc_c[b] += s
        cond_c[a] += ca
        cond_c[b] += cb
        if learn and not x.frozen[e]:
            d_f = vf[a] - vf[b] + noise_f[e]
            d_c = vc[a] - vc[b] + noise_c[e]
            dg = c.lr * ((d_f - d_c) * (d_f + d_c) + x.offset[e])
            g_new[e] = min(max(g[e] + dg + c.droop * (c.rest - g[e]), c.gate_min),
                           c.gate_max)
        else:
            g_new[e] = g[e]
    for n in range(len(vf)):
        if driven[n]:
            vf_new[n] = drive[n]
            vc_new[n] = drive[n]
            mf_new[n] = mc_new[n] = 0.0
        else:
            vf_new[n], mf_new[n] = node_step(vf[n], mf[n], acc_f[n], cond_f[n], c)
            vc_new[n], mc_new[n] = node_step(vc[n], mc[n], acc_c[n], cond_c[n], c)
    for k in range(len(out_plus)):
        p, m = out_plus[k], out_minus[k]
        mc_new[p] = 0.0
        if m < 0:
            vc_new[p] = vf[p] + c.eta * (target[k] - vf[p])
        else:
            half = 0.5 * c.eta * (target[k] - (vf[p] - vf[m]))
            vc_new[p] = vf[p] + half
            vc_new[m] = vf[m] - half
            mc_new[m] = 0.0


@njit(cache=True)
def run_ticks(vf, vc, mf, mc, g, n_ticks, learn, edge_a, edge_b, x, driven, drive, out_plus,
              out_minus, target, c, still_ticks, used):
    """Run up to ``n_ticks`` float ticks on every seed (rows of ``vf, vc, mf, mc, g``) in
    place; with ``still_ticks > 0`` each seed stops once no node moved by more than
    ``c.still`` (V) for that many consecutive ticks. ``used[s]``: ticks seed s ran.
    Learning ticks draw their read noise first, the same for every seed."""
    n_seeds, n = vf.shape
    acc_f, acc_c, cond_f, cond_c = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    n_edges = len(edge_a)
    noisy = learn and c.noise > 0
    rows = n_ticks if noisy else 1
    noise_f, noise_c = np.zeros((rows, n_edges)), np.zeros((rows, n_edges))
    if noisy:
        drawn_f, drawn_c = np.empty(n_edges, np.int64), np.empty(n_edges, np.int64)
        for t in range(n_ticks):
            next_samples(x.noise, drawn_f, drawn_c)
            noise_f[t] = drawn_f * c.noise
            noise_c[t] = drawn_c * c.noise
    for s in range(n_seeds):
        vf_a, vc_a, g_a = vf[s].copy(), vc[s].copy(), g[s].copy()
        vf_b, vc_b, g_b = np.empty_like(vf_a), np.empty_like(vc_a), np.empty_like(g_a)
        mf_a, mc_a = mf[s].copy(), mc[s].copy()
        mf_b, mc_b = np.empty_like(mf_a), np.empty_like(mc_a)
        quiet, ticks = 0, 0
        while ticks < n_ticks:
            row = ticks if noisy else 0
            tick(vf_a, vc_a, mf_a, mc_a, g_a, learn, edge_a, edge_b, x, noise_f[row],
                 noise_c[row], driven, drive, out_plus, out_minus, target, c, vf_b, vc_b, mf_b,
                 mc_b, g_b, acc_f, acc_c, cond_f, cond_c)
            ticks += 1
            if still_ticks > 0:
                if (np.max(np.abs(vf_b - vf_a)) > c.still
                        or np.max(np.abs(vc_b - vc_a)) > c.still):
                    quiet = 0
                else:
                    quiet += 1
            vf_a, vf_b = vf_b, vf_a
            vc_a, vc_b = vc_b, vc_a
            mf_a, mf_b = mf_b, mf_a
            mc_a, mc_b = mc_b, mc_a
            g_a, g_b = g_b, g_a
            if still_ticks > 0 and quiet >= still_ticks:
                break
        vf[s] = vf_a
        vc[s] = vc_a
        mf[s] = mf_a
        mc[s] = mc_a
        g[s] = g_a
        used[s] = ticks


#: Float constants of one tick, in the order the kernel takes them.
FloatConstants = namedtuple("FloatConstants", [
    "kappa", "lr", "eta", "gate_min", "gate_max", "leak", "relax", "box_lo", "box_hi",
    "cond_floor", "still", "droop", "rest", "noise", "beta"])


def float_constants(cfg):
    """The :class:`FloatConstants` of a config: its own floats, not their quantised
    values; the box, the conductance floor and the stillness threshold are the
    fixed-point model's, in volts; ``beta = 1 - 2**-momentum_shift`` (0 but under
    ``momentum``)."""
    lrn, sch, lsb = cfg.learning, cfg.schedule, 2.0 ** -cfg.fixed.v_frac
    lo, hi = settle_box(cfg)
    return FloatConstants(sch.kappa, lrn.alpha / (lrn.eta * max(sch.learn_ticks, 1)), lrn.eta,
                          lrn.gate_min, lrn.gate_max, edge_leak(cfg),
                          RELAX_CODES[sch.relax], lo * lsb, hi * lsb, lsb, sch.still_lsb * lsb,
                          cfg.nonideal.gate_leak, nonideal.gate_rest(cfg),
                          nonideal.noise_scale(cfg),
                          1.0 - 2.0 ** -momentum_shift(cfg) if sch.relax == "momentum" else 0.0)


def float_edge_constants(cfg):
    """The :class:`~sim.fixed.EdgeConstants` of a config in floats (volts, relative gains),
    noise at its first state."""
    imp = nonideal.draw(cfg)
    return EdgeConstants(imp.vt_free, imp.vt_clamped, imp.k_free, imp.k_clamped, imp.offset,
                         imp.frozen.astype(np.int64),
                         nonideal.noise_states(cfg).astype(np.int64))


class DynamicModel(TickModel):
    """Float64 tick model for a batch of seeds; state is in volts."""

    name = "dynamic"

    def __init__(self, cfg, seeds):
        self._constants = float_constants(cfg)
        self.edges = float_edge_constants(cfg)
        super().__init__(cfg, seeds)

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

    def _kernel(self, n_ticks, example, learn, still_ticks, used):
        p = self.problem
        run_ticks(self.h_free, self.h_clamped, self.m_free, self.m_clamped, self.gates, n_ticks,
                  learn, p.edge_a, p.edge_b, self.edges, p.driven, self._drive[example],
                  p.out_plus, p.out_minus, self._targets[example], self._constants,
                  still_ticks, used)
