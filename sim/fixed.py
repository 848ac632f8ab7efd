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
from numba.cpython.unsafe.numbers import leading_zeros

from clln.formats import GAIN_FRAC, SAT_ACC, SAT_DG, SAT_DV, SAT_TERM, SAT_V, Formats
from clln.nonideal import noise_states

from .noise import next_samples
from .ticks import TickModel

#: Node relaxations (``[schedule] relax``), by their code in :class:`TickConstants`.
RELAX_CODES = {"euler": 0, "jacobi": 1, "momentum": 2}

#: Integer constants of one tick, in the order the kernel takes them.
TickConstants = namedtuple("TickConstants", [
    "gate_shift", "term_bits", "acc_bits", "dv_bits", "v_bits", "dg_bits", "kappa_mul",
    "node_shift", "lr_mul", "learn_shift", "eta_q", "eta_frac", "gate_min", "gate_max",
    "leak_q", "relax", "box_lo", "box_hi", "still_lsb", "droop_mul", "droop_shift",
    "rest_q", "noise_mul", "noise_shift", "extra", "momentum_shift"])

#: Per-edge constants of one chip (:mod:`clln.nonideal`, quantised by ``Formats``) and
#: the state of its read-noise generators (advanced in place by every learning tick).
EdgeConstants = namedtuple("EdgeConstants", [
    "vt_f", "vt_c", "k_f", "k_c", "offset", "frozen", "noise"])


def tick_constants(fmt):
    """The :class:`TickConstants` of a :class:`~clln.formats.Formats`."""
    return TickConstants(fmt.gate_shift, fmt.term_bits, fmt.acc_bits, fmt.dv_bits, fmt.v_bits,
                         fmt.dg_bits, fmt.kappa_mul, fmt.node_shift, fmt.lr_mul, fmt.learn_shift,
                         fmt.eta_q, fmt.eta_frac, fmt.gate_min_q, fmt.gate_max_q, fmt.leak_q,
                         RELAX_CODES[fmt.relax], fmt.box_lo_q, fmt.box_hi_q, fmt.still_lsb,
                         fmt.droop_mul, fmt.droop_shift, fmt.rest_q, fmt.noise_mul,
                         fmt.noise_shift, fmt.node_extra_bits, fmt.momentum_shift)


def edge_constants(cfg, fmt):
    """The :class:`EdgeConstants` of a config and its formats, noise at its first state."""
    return EdgeConstants(fmt.vt_q, fmt.vt_c_q, fmt.k_f_q, fmt.k_c_q, fmt.offset_q, fmt.frozen,
                         noise_states(cfg).astype(np.int64))


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
def edge_term(u_a, u_b, drop, leak, gain, bits):
    """``gain (u_b**2 - u_a**2) + leak drop``, saturated to ``bits``, from the overdrives
    ``u = relu(ov - V)`` at ends a and b and the drop ``va - vb``; ``gain`` is relative,
    ``2**GAIN_FRAC`` = 1 (the product rounded back), 0 for a dead edge."""
    square = round_shift((u_b - u_a) * (u_b + u_a) * gain, GAIN_FRAC)
    return saturate(square + leak * drop, bits)


@njit(cache=True, inline="always")
def end_conductance(u, leak, gain):
    """d(term)/dV at an end of overdrive ``u = relu(ov - V)``: ``gain 2 u`` (rounded
    back) ``+ leak``."""
    return round_shift(2 * u * gain, GAIN_FRAC) + leak


@njit(cache=True, inline="always")
def gate_step(g, d_f, d_c, offset, c):
    """New gate of a learning edge from its drops (noise included), and whether the step
    saturated: ``g + dg + droop`` kept within the gate bounds."""
    dg, sat = saturate(round_shift(((d_f - d_c) * (d_f + d_c) + offset) * c.lr_mul,
                                   c.learn_shift), c.dg_bits)
    droop = round_shift((c.rest_q - g) * c.droop_mul, c.droop_shift) if c.droop_mul else 0
    return min(max(g + dg + droop, c.gate_min), c.gate_max), sat


@njit(cache=True, inline="always")
def conductance_shift(cond):
    """The smallest ``s >= 0`` with ``2**s >= cond`` (``cond >= 0``; 0 for ``cond <= 1``):
    the bit length of ``cond - 1``."""
    if cond <= 1:
        return 0
    return 64 - leading_zeros(np.int64(cond - 1))


@njit(cache=True, inline="always")
def decayed(m, b):
    """``(1 - 2**-b) m`` rounded toward zero: ``m`` less ``m / 2**b`` rounded away from
    zero (``b >= 1``)."""
    return m - ((m + ((1 << b) - 1 if m > 0 else 0)) >> b)


@njit(cache=True, inline="always")
def node_update(h, m, acc, cond, c):
    """New state ``H`` and velocity ``M`` of a node that settles, and the saturation flags.

    ``euler``: ``v + kappa * acc``, rounded and saturated (``H = V`` there). ``jacobi``:
    ``H + (acc << F) / 2**s`` with ``2**s`` the power of two at or above the node's
    conductance ``cond``, the step and the result kept within the box ``[box_lo << F,
    box_hi << F]`` (the box is the rule, not an overflow: no flag). ``momentum``: half
    the jacobi step (``s + 1``) plus the velocity ``m`` decayed by :func:`decayed`, the
    result kept within the box; the new velocity is the move made. ``M`` is 0 but under
    ``momentum``.
    """
    acc, s1 = saturate(acc, c.acc_bits)
    if c.relax == 0:
        dv, s2 = saturate(round_shift(acc * c.kappa_mul, c.node_shift), c.dv_bits)
        v_new, s3 = saturate(h + dv, c.v_bits)
        return v_new, 0, (SAT_ACC if s1 else 0) | (SAT_DV if s2 else 0) | (SAT_V if s3 else 0)
    span = (c.box_hi - c.box_lo) << c.extra
    shift = conductance_shift(cond) + (1 if c.relax == 2 else 0)
    dh = min(max(round_shift(acc << c.extra, shift), -span), span)
    if c.relax == 2:
        dh += decayed(m, c.momentum_shift)
    h_new = min(max(h + dh, c.box_lo << c.extra), c.box_hi << c.extra)
    return h_new, (h_new - h if c.relax == 2 else 0), SAT_ACC if s1 else 0


@njit(cache=True)
def tick(hf, hc, mf, mc, g, learn, edge_a, edge_b, x, noise_f, noise_c, driven, drive,
         out_plus, out_minus, target, c, hf_new, hc_new, mf_new, mc_new, g_new, acc_f, acc_c,
         cond_f, cond_c):
    """One synchronous tick of one network pair; returns the saturation flags.

    Reads ``hf, hc, mf, mc, g`` (state at t), writes ``hf_new, hc_new, mf_new, mc_new,
    g_new`` (state at t+1); ``mf, mc`` are the node velocities (``momentum``; 0 else).
    ``hf, hc`` are the node states ``H`` (``V << F`` plus ``F = c.extra`` fraction bits);
    everything but the node step reads ``V = H >> F``.
    ``x`` are the :class:`EdgeConstants`; ``noise_f, noise_c`` the read noise of this
    tick on every edge's drops (voltage LSBs; zeros without noise or learning).
    ``acc_f, acc_c, cond_f, cond_c`` are scratch arrays of one entry per node.
    """
    flags = 0
    F = c.extra
    acc_f[:] = 0
    acc_c[:] = 0
    cond_f[:] = 0
    cond_c[:] = 0
    for e in range(len(edge_a)):
        # unsigned node indices spare numba its negative-index wraparound (25% faster)
        a, b = np.uint64(edge_a[e]), np.uint64(edge_b[e])
        vf_a, vf_b, vc_a, vc_b = hf[a] >> F, hf[b] >> F, hc[a] >> F, hc[b] >> F
        g_v = round_shift(g[e], c.gate_shift)
        ov_f, ov_c = g_v - x.vt_f[e], g_v - x.vt_c[e]
        uf_a, uf_b = max(ov_f - vf_a, 0), max(ov_f - vf_b, 0)
        uc_a, uc_b = max(ov_c - vc_a, 0), max(ov_c - vc_b, 0)
        k_f, k_c = x.k_f[e], x.k_c[e]
        s, sat_f = edge_term(uf_a, uf_b, vf_a - vf_b, c.leak_q, k_f, c.term_bits)
        acc_f[a] -= s
        acc_f[b] += s
        s, sat_c = edge_term(uc_a, uc_b, vc_a - vc_b, c.leak_q, k_c, c.term_bits)
        acc_c[a] -= s
        acc_c[b] += s
        if c.relax != 0:
            cond_f[a] += end_conductance(uf_a, c.leak_q, k_f)
            cond_f[b] += end_conductance(uf_b, c.leak_q, k_f)
            cond_c[a] += end_conductance(uc_a, c.leak_q, k_c)
            cond_c[b] += end_conductance(uc_b, c.leak_q, k_c)
        if sat_f or sat_c:
            flags |= SAT_TERM
        if learn and not x.frozen[e]:
            g_new[e], sat = gate_step(g[e], vf_a - vf_b + noise_f[e], vc_a - vc_b + noise_c[e],
                                      x.offset[e], c)
            if sat:
                flags |= SAT_DG
        else:
            g_new[e] = g[e]
    for n in range(len(hf)):
        if driven[n]:
            hf_new[n] = drive[n] << F
            hc_new[n] = drive[n] << F
            mf_new[n] = mc_new[n] = 0
        else:
            hf_new[n], mf_new[n], f1 = node_update(hf[n], mf[n], acc_f[n], cond_f[n], c)
            hc_new[n], mc_new[n], f2 = node_update(hc[n], mc[n], acc_c[n], cond_c[n], c)
            flags |= f1 | f2
    for k in range(len(out_plus)):
        p, m = out_plus[k], out_minus[k]
        vp = hf[p] >> F
        if m < 0:
            vc_p, sat = saturate(vp + round_shift(c.eta_q * (target[k] - vp), c.eta_frac),
                                 c.v_bits)
            hc_new[p], mc_new[p] = vc_p << F, 0
            flags |= SAT_V if sat else 0
        else:
            vm = hf[m] >> F
            half = round_shift(c.eta_q * (target[k] - (vp - vm)), c.eta_frac + 1)
            vc_p, sat_p = saturate(vp + half, c.v_bits)
            vc_m, sat_m = saturate(vm - half, c.v_bits)
            hc_new[p], hc_new[m] = vc_p << F, vc_m << F
            mc_new[p] = mc_new[m] = 0
            flags |= SAT_V if sat_p or sat_m else 0
    return flags


@njit(cache=True, inline="always")
def moved(old, new, lsb, extra=0):
    """Whether any node moved by more than ``lsb``: node states ``H`` judged on their
    voltages ``V = H >> extra``."""
    for n in range(len(old)):
        if abs((new[n] >> extra) - (old[n] >> extra)) > lsb:
            return True
    return False


@njit(cache=True)
def seeds_moved(vf_old, vc_old, vf_new, vc_new, lsb):
    """Whether a tick moved each seed (rows: seeds): some node of the free or the clamped
    network changed by more than ``lsb`` (:func:`moved`, the rule of :func:`run_ticks`)."""
    out = np.zeros(vf_old.shape[0], np.bool_)
    for s in range(vf_old.shape[0]):
        out[s] = moved(vf_old[s], vf_new[s], lsb) or moved(vc_old[s], vc_new[s], lsb)
    return out


def moved_as_reported(moved, lag):
    """The ``moved`` a fabric reports with each ``tick_done``, from each tick's (ticks,):
    with ``lag`` (``cfg.fabric.still_lag``) the tick that many before's, 0 before the
    first (``docs/semantics.md``, "Moving and still")."""
    moved = np.asarray(moved, np.int64)
    return np.concatenate([np.zeros(min(lag, len(moved)), np.int64), moved[:len(moved) - lag]])


@njit(cache=True)
def run_ticks(vf, vc, mf, mc, g, n_ticks, learn, edge_a, edge_b, x, driven, drive, out_plus,
              out_minus, target, c, flags, still_ticks, joint, lag, used):
    """Run up to ``n_ticks`` ticks on every seed (rows of ``vf, vc, mf, mc, g``) in place;
    ``vf, vc`` are the node states ``H``, ``mf, mc`` their velocities (:func:`tick`).

    ``x`` are the :class:`EdgeConstants`; a learning tick advances their noise
    generators once for all seeds (the noise is a function of the edge and the count of
    learning ticks, the same in every stream).

    ``flags[s]`` accumulates (OR) the saturation flags of seed s; ``used[s]`` receives
    the ticks seed s ran. With ``still_ticks = k > 0`` a seed stops after the tick that
    makes k consecutive ticks in which no node of either network moved by more than
    ``c.still_lsb`` (with ``joint``, every seed stops at the first tick after which all
    seeds have such a run: the pipelined fabric's rule). ``lag = 1`` judges the run on
    the ticks before the last (a fabric that knows a tick's moves one tick late stops one
    tick later). ``still_ticks = 0``: exactly ``n_ticks`` ticks.
    """
    n_seeds, n = vf.shape
    acc_f, acc_c = np.empty(n, np.int64), np.empty(n, np.int64)
    cond_f, cond_c = np.empty(n, np.int64), np.empty(n, np.int64)
    vf_b, vc_b, g_b = np.empty_like(vf), np.empty_like(vc), np.empty_like(g)
    mf_b, mc_b = np.empty_like(mf), np.empty_like(mc)
    quiet = np.zeros(n_seeds, np.int64)
    done = np.zeros(n_seeds, np.bool_)
    judged = np.zeros(n_seeds, np.int64)
    noise_f, noise_c = np.zeros(len(edge_a), np.int64), np.zeros(len(edge_a), np.int64)
    used[:] = 0
    for _ in range(n_ticks):
        judged[:] = quiet
        if learn and c.noise_mul:
            next_samples(x.noise, noise_f, noise_c)
            for e in range(len(edge_a)):
                noise_f[e] = round_shift(noise_f[e] * c.noise_mul, c.noise_shift)
                noise_c[e] = round_shift(noise_c[e] * c.noise_mul, c.noise_shift)
        for s in range(n_seeds):
            if done[s]:
                continue
            flags[s] |= tick(vf[s], vc[s], mf[s], mc[s], g[s], learn, edge_a, edge_b, x,
                             noise_f, noise_c, driven, drive, out_plus, out_minus, target, c,
                             vf_b[s], vc_b[s], mf_b[s], mc_b[s], g_b[s], acc_f, acc_c, cond_f,
                             cond_c)
            if still_ticks > 0:
                if (moved(vf[s], vf_b[s], c.still_lsb, c.extra)
                        or moved(vc[s], vc_b[s], c.still_lsb, c.extra)):
                    quiet[s] = 0
                else:
                    quiet[s] += 1
            vf[s], vc[s], g[s] = vf_b[s], vc_b[s], g_b[s]
            mf[s], mc[s] = mf_b[s], mc_b[s]
            used[s] += 1
        if still_ticks > 0:
            if not lag:
                judged[:] = quiet
            if joint:
                if np.all(judged >= still_ticks):
                    break
            else:
                for s in range(n_seeds):
                    done[s] = judged[s] >= still_ticks
                if np.all(done):
                    break


class FixedPointModel(TickModel):
    """Fixed-point coupled learning for a batch of seeds; state is int64 in LSBs.

    With ``joint``, the seeds settle together as the streams of one pipelined fabric do
    (a settle phase ends when every seed is still); otherwise each on its own. ``lag``
    (``cfg.fabric.still_lag`` for the fabric's rule) judges stillness that many ticks late.
    """

    name = "fixed"

    def __init__(self, cfg, seeds, joint=False, lag=0):
        self.joint, self.lag = joint, lag
        self.formats = Formats.from_config(cfg)
        self.node_extra_bits = self.formats.node_extra_bits
        self.constants = tick_constants(self.formats)
        self.edges = edge_constants(cfg, self.formats)
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

    def _kernel(self, n_ticks, example, learn, still_ticks, used):
        p = self.problem
        run_ticks(self.h_free, self.h_clamped, self.m_free, self.m_clamped, self.gates, n_ticks,
                  learn, p.edge_a, p.edge_b, self.edges, p.driven, self._drive[example],
                  p.out_plus, p.out_minus, self._targets[example], self.constants, self.flags,
                  still_ticks, self.joint, self.lag, used)
