"""Fixed-point model: the exact integer arithmetic of the gateware.

One tick is defined in ``docs/semantics.md``; :func:`tick` is that definition, line for
line. Every right-hand side reads the state at tick t and all state commits together,
so hardware that computes edges in parallel or folds them onto fewer units gives the
same bits. Compiled with numba; integers are int64 and never wrap (widths are checked
by :class:`clln.formats.Formats`).
"""

from collections import namedtuple

import numpy as np
from numba import njit

from clln.formats import SAT_ACC, SAT_DG, SAT_DV, SAT_TERM, SAT_V, Formats

from .ticks import TickModel

#: Integer constants of one tick, in the order the kernel takes them.
TickConstants = namedtuple("TickConstants", [
    "gate_shift", "term_bits", "acc_bits", "dv_bits", "v_bits", "dg_bits", "kappa_mul",
    "node_shift", "lr_mul", "learn_shift", "eta_q", "eta_frac", "gate_min", "gate_max",
    "leak_q"])



def tick_constants(fmt):
    """The :class:`TickConstants` of a :class:`~clln.formats.Formats`."""
    return TickConstants(fmt.gate_shift, fmt.term_bits, fmt.acc_bits, fmt.dv_bits, fmt.v_bits,
                         fmt.dg_bits, fmt.kappa_mul, fmt.node_shift, fmt.lr_mul, fmt.learn_shift,
                         fmt.eta_q, fmt.eta_frac, fmt.gate_min_q, fmt.gate_max_q, fmt.leak_q)


@njit(cache=True, inline="always")
def round_shift(x, s):
    """``x * 2**-s`` rounded to nearest, halves toward +infinity (``s >= 0``)."""
    if s == 0:
        return x
    return (x + (1 << (s - 1))) >> s


@njit(cache=True, inline="always")
def saturate(x, bits):
    """Clip ``x`` to a signed ``bits``-bit integer; also return whether it was clipped."""
    hi = (1 << (bits - 1)) - 1
    lo = -hi - 1
    if x > hi:
        return hi, True
    if x < lo:
        return lo, True
    return x, False


@njit(cache=True, inline="always")
def edge_term(overdrive, v_a, v_b, leak, bits):
    """``relu(ov - vb)**2 - relu(ov - va)**2 + leak (va - vb)``, saturated to ``bits``."""
    u_a = max(overdrive - v_a, 0)
    u_b = max(overdrive - v_b, 0)
    return saturate((u_b - u_a) * (u_b + u_a) + leak * (v_a - v_b), bits)


@njit(cache=True, inline="always")
def node_update(v, acc, c):
    """New voltage of a node that settles: ``v + kappa * acc``, rounded and saturated."""
    acc, s1 = saturate(acc, c.acc_bits)
    dv, s2 = saturate(round_shift(acc * c.kappa_mul, c.node_shift), c.dv_bits)
    v_new, s3 = saturate(v + dv, c.v_bits)
    return v_new, (SAT_ACC if s1 else 0) | (SAT_DV if s2 else 0) | (SAT_V if s3 else 0)


@njit(cache=True)
def tick(vf, vc, g, learn, edge_a, edge_b, vt, driven, drive, out_plus, out_minus, target,
         c, vf_new, vc_new, g_new, acc_f, acc_c):
    """One synchronous tick of one network pair; returns the saturation flags.

    Reads ``vf, vc, g`` (state at t), writes ``vf_new, vc_new, g_new`` (state at t+1).
    ``acc_f, acc_c`` are scratch arrays of one entry per node.
    """
    flags = 0
    acc_f[:] = 0
    acc_c[:] = 0
    for e in range(len(edge_a)):
        a, b = edge_a[e], edge_b[e]
        ov = round_shift(g[e], c.gate_shift) - vt[e]
        s, sat_f = edge_term(ov, vf[a], vf[b], c.leak_q, c.term_bits)
        acc_f[a] -= s
        acc_f[b] += s
        s, sat_c = edge_term(ov, vc[a], vc[b], c.leak_q, c.term_bits)
        acc_c[a] -= s
        acc_c[b] += s
        if sat_f or sat_c:
            flags |= SAT_TERM
        if learn:
            d_f = vf[a] - vf[b]
            d_c = vc[a] - vc[b]
            dg, sat = saturate(round_shift((d_f - d_c) * (d_f + d_c) * c.lr_mul,
                                           c.learn_shift), c.dg_bits)
            if sat:
                flags |= SAT_DG
            g_new[e] = min(max(g[e] + dg, c.gate_min), c.gate_max)
        else:
            g_new[e] = g[e]
    for n in range(len(vf)):
        if driven[n]:
            vf_new[n] = drive[n]
            vc_new[n] = drive[n]
        else:
            vf_new[n], f1 = node_update(vf[n], acc_f[n], c)
            vc_new[n], f2 = node_update(vc[n], acc_c[n], c)
            flags |= f1 | f2
    for k in range(len(out_plus)):
        p, m = out_plus[k], out_minus[k]
        if m < 0:
            vc_new[p], sat = saturate(
                vf[p] + round_shift(c.eta_q * (target[k] - vf[p]), c.eta_frac), c.v_bits)
            flags |= SAT_V if sat else 0
        else:
            half = round_shift(c.eta_q * (target[k] - (vf[p] - vf[m])), c.eta_frac + 1)
            vc_new[p], sat_p = saturate(vf[p] + half, c.v_bits)
            vc_new[m], sat_m = saturate(vf[m] - half, c.v_bits)
            flags |= SAT_V if sat_p or sat_m else 0
    return flags


@njit(cache=True)
def run_ticks(vf, vc, g, n_ticks, learn, edge_a, edge_b, vt, driven, drive, out_plus,
              out_minus, target, c, flags):
    """Run ``n_ticks`` ticks on every seed (rows of ``vf, vc, g``) in place.

    ``flags[s]`` accumulates (OR) the saturation flags of seed s.
    """
    n_seeds, n = vf.shape
    acc_f = np.empty(n, np.int64)
    acc_c = np.empty(n, np.int64)
    for s in range(n_seeds):
        # Ping-pong buffers: the state at t and t+1 swap roles every tick.
        vf_a, vc_a, g_a = vf[s].copy(), vc[s].copy(), g[s].copy()
        vf_b, vc_b, g_b = np.empty_like(vf_a), np.empty_like(vc_a), np.empty_like(g_a)
        for _ in range(n_ticks):
            flags[s] |= tick(vf_a, vc_a, g_a, learn, edge_a, edge_b, vt, driven, drive,
                             out_plus, out_minus, target, c, vf_b, vc_b, g_b, acc_f, acc_c)
            vf_a, vf_b = vf_b, vf_a
            vc_a, vc_b = vc_b, vc_a
            g_a, g_b = g_b, g_a
        vf[s] = vf_a
        vc[s] = vc_a
        g[s] = g_a


class FixedPointModel(TickModel):
    """Fixed-point coupled learning for a batch of seeds; state is int64 in LSBs."""

    name = "fixed"

    def __init__(self, cfg, seeds):
        self.formats = Formats.from_config(cfg)
        self.constants = tick_constants(self.formats)
        super().__init__(cfg, seeds)

    @property
    def kappa(self):
        return self.formats.kappa

    def volts_to_state(self, volts):
        return self.formats.volts_to_v(volts)

    def gates_from_volts(self, volts):
        return self.formats.volts_to_g(volts)

    def state_to_volts(self, values):
        return self.formats.v_to_volts(values)

    def gates_volts(self):
        return self.formats.g_to_volts(self.gates)

    def _kernel(self, n_ticks, example, learn):
        p = self.problem
        run_ticks(self.v_free, self.v_clamped, self.gates, n_ticks, learn, p.edge_a, p.edge_b,
                  self.formats.vt_q, p.driven, self._drive[example], p.out_plus, p.out_minus,
                  self._targets[example], self.constants, self.flags)
