"""Fixed-point number formats: quantised constants and format checks.

Everything the fixed-point golden model and the gateware share about numbers
lives here, derived from a :class:`~clln.config.Config`; ``docs/semantics.md``
defines how they are used in one tick.
"""

import math
from dataclasses import dataclass

import numpy as np

from . import nonideal as nonideal_draws
from .errors import ConfigError

#: The sticky saturation flags of one tick (``docs/semantics.md``), bit 0 first: an edge
#: term, a node accumulator, a node step, a node voltage, a gate step clipped.
SATURATION_FLAGS = ("term", "acc", "dv", "v", "dg")
#: Bit masks of :data:`SATURATION_FLAGS`, as the fixed-point model returns them.
SAT_TERM, SAT_ACC, SAT_DV, SAT_V, SAT_DG = (1 << i for i in range(len(SATURATION_FLAGS)))

#: Fractional bits of a transistor's relative gain (``k_sigma``): ``1.0`` is ``2**GAIN_FRAC``.
GAIN_FRAC = 10
#: Mantissa bits of the gate leak per learning tick and of the read-noise scale.
DROOP_BITS = NOISE_BITS = 8
#: Widest right shift of the fixed-point model (int64, ``sim.fixed.round_shift``).
MAX_SHIFT = 62


def mantissa_shift(value, bits):
    """Approximate ``value > 0`` as ``mul * 2**-shift`` with ``mul`` of ``bits`` bits.

    The largest ``shift`` is chosen so that ``mul = round(value * 2**shift)``
    still fits in ``bits`` unsigned bits: the most precise representation.
    """
    shift = math.floor(math.log2((2 ** bits - 0.5) / value))
    mul = round(value * 2.0 ** shift)
    while mul >= 2 ** bits:
        shift -= 1
        mul = round(value * 2.0 ** shift)
    return int(mul), int(shift)


@dataclass(frozen=True)
class Formats:
    """Integer constants of the fixed-point model, and conversions to and from volts.

    Attributes
    ----------
    v_frac, g_frac : int
        Fractional bits of node voltages and gates (LSB = 2**-frac volts).
    v_bits, g_bits, term_bits, acc_bits, dv_bits, dg_bits : int
        Signed widths; every value saturates to its width.
    kappa_mul, kappa_shift : int
        Node update scale per tick, ``kappa ~= kappa_mul * 2**-kappa_shift`` (1/V).
    lr_mul, lr_shift : int
        Learning rate per learning tick, ``alpha / (eta * learn_ticks)``, same form (1/V).
    eta_q, eta_frac : int
        Nudge amplitude ``eta ~= eta_q * 2**-eta_frac``.
    vt_q : ndarray
        Threshold of every edge in voltage LSBs.
    gate_min_q, gate_max_q : int
        Gate bounds in gate LSBs.
    leak_q : int
        Leak across every edge, ``round(2 * gmin / k * 2**v_frac)``: an edge term gains
        ``leak_q * (Va - Vb)`` (0: no leak).
    relax : str
        Node step, ``euler``, ``jacobi`` or ``momentum`` (``[schedule] relax``).
    box_lo_q, box_hi_q : int
        The box of the ``jacobi`` step in voltage LSBs (:func:`settle_box`).
    still_lsb : int
        A node that moves by more than this many LSBs in a tick is not still.
    vt_c_q : ndarray
        Threshold of every clamped transistor (``vt_q`` is the free one's; equal unless
        ``nonideal.twin_mismatch``).
    k_f_q, k_c_q : ndarray
        Relative gain of every free and clamped transistor, ``2**GAIN_FRAC`` = 1, 0 on a
        dead edge.
    offset_q : ndarray
        Learning-rule offset of every edge in units of ``2**-(2 v_frac)`` V^2.
    frozen : ndarray of int64 (0 or 1)
        Edges whose gate never changes (dead or stuck).
    droop_mul, droop_shift, rest_q : int
        Gate leak per learning tick ``~= droop_mul * 2**-droop_shift`` toward ``rest_q``
        (gate LSBs); ``droop_mul = 0``: no leak.
    noise_mul, noise_shift : int
        Voltage LSBs per unit of a read-noise sample ``~= noise_mul * 2**-noise_shift``
        (``noise_mul = 0``: no noise).
    node_extra_bits : int
        ``F``: a settling node's state ``H`` has ``v_frac + F`` fraction bits, of which
        every reader sees ``V = H >> F`` (``[fixed] node_extra_bits``; 0: ``H = V``).
    momentum_shift : int
        ``b`` of the ``momentum`` step, which keeps ``1 - 2**-b`` of a node's last move
        (:func:`momentum_shift`; 0 under the other steps).
    """
    v_frac: int
    v_bits: int
    g_frac: int
    g_bits: int
    term_bits: int
    acc_bits: int
    dv_bits: int
    dg_bits: int
    kappa_mul: int
    kappa_shift: int
    lr_mul: int
    lr_shift: int
    eta_q: int
    eta_frac: int
    vt_q: np.ndarray
    gate_min_q: int
    gate_max_q: int
    leak_q: int = 0
    relax: str = "euler"
    box_lo_q: int = 0
    box_hi_q: int = 0
    still_lsb: int = 1
    vt_c_q: np.ndarray = None
    k_f_q: np.ndarray = None
    k_c_q: np.ndarray = None
    offset_q: np.ndarray = None
    frozen: np.ndarray = None
    droop_mul: int = 0
    droop_shift: int = 0
    rest_q: int = 0
    noise_mul: int = 0
    noise_shift: int = 0
    node_extra_bits: int = 0
    momentum_shift: int = 0

    @classmethod
    def from_config(cls, cfg):
        """Quantise a config's constants and check that its formats can hold its values.

        Raises
        ------
        ConfigError
            When a value does not fit its format or a shift would be negative.
        """
        f, src = cfg.fixed, cfg.source
        imp = nonideal_draws.draw(cfg)
        kappa_mul, kappa_shift = mantissa_shift(cfg.schedule.kappa, f.kappa_bits)
        learn_ticks = max(cfg.schedule.learn_ticks, 1)
        lr = cfg.learning.alpha / (cfg.learning.eta * learn_ticks)
        lr_mul, lr_shift = mantissa_shift(lr, f.lr_bits)
        eta_q = round(cfg.learning.eta * 2 ** f.eta_frac)
        if eta_q < 1:
            raise ConfigError(src, "fixed.eta_frac", f"{f.eta_frac} fractional bits cannot "
                              f"hold learning.eta = {cfg.learning.eta}")
        fmt = cls(
            f.v_frac, f.v_bits, f.g_frac, f.g_bits, f.term_bits, f.acc_bits, f.dv_bits,
            f.dg_bits, kappa_mul, kappa_shift, lr_mul, lr_shift, eta_q, f.eta_frac,
            _volts_q(imp.vt_free, f.v_frac),
            round(cfg.learning.gate_min * 2 ** f.g_frac),
            round(cfg.learning.gate_max * 2 ** f.g_frac),
            round(edge_leak(cfg) * 2 ** f.v_frac), cfg.schedule.relax,
            *settle_box(cfg), cfg.schedule.still_lsb, **_nonideal_constants(cfg, imp),
            # euler steps by whole LSBs: extra bits would stay 0, so they count for the others
            node_extra_bits=f.node_extra_bits if cfg.schedule.relax != "euler" else 0,
            momentum_shift=momentum_shift(cfg))
        fmt._check(cfg)
        fmt._check_nonideal(cfg, imp)
        return fmt

    def _check_nonideal(self, cfg, imp):
        src = cfg.source
        v_limit = 2 ** (self.v_bits - 1 - self.v_frac)
        worst = max(np.max(np.abs(imp.vt_free)), np.max(np.abs(imp.vt_clamped)))
        if worst >= v_limit:
            raise ConfigError(src, "nonideal.vt_sigma", f"a drawn threshold of {worst:.4g} V "
                              f"does not fit fixed.v_bits = {self.v_bits} with fixed.v_frac = "
                              f"{self.v_frac} (range +-{v_limit} V)")
        if max(np.max(self.k_f_q), np.max(self.k_c_q)) >= 4 << GAIN_FRAC:
            raise ConfigError(src, "nonideal.k_sigma", "a drawn gain of 4 or more does not "
                              "fit the gain format")
        if self.droop_mul and self.droop_shift < 1:
            raise ConfigError(src, "nonideal.gate_leak", f"{cfg.nonideal.gate_leak} per tick "
                              "is too large for a right shift")
        rms_lsb = cfg.nonideal.read_noise * np.sqrt(2.0) * 2 ** self.v_frac
        if cfg.nonideal.read_noise and rms_lsb < 0.5:
            raise ConfigError(src, "nonideal.read_noise", f"{cfg.nonideal.read_noise} V rms "
                              f"on a drop is below half a voltage LSB (2**-{self.v_frac} V): "
                              "raise fixed.v_frac or leave the noise out")
        # (d_f - d_c)(d_f + d_c) + offset of a full-scale drop stays within the products
        # the learning step multiplies (2 (v_bits + 2) bits).
        if np.max(np.abs(self.offset_q), initial=0) >= 2 ** (2 * self.v_bits + 2):
            raise ConfigError(src, "nonideal.update_offset", "a drawn offset does not fit "
                              "the learning rule's product width (2 (fixed.v_bits + 2) bits)")

    def _check(self, cfg):
        src = cfg.source
        if self.relax == "euler" and self.kappa_shift < 1:
            raise ConfigError(src, "schedule.kappa", f"{cfg.schedule.kappa} is too large for a "
                              "right shift (must be below 2**(fixed.kappa_bits - 1))")
        if self.learn_shift < 1:
            raise ConfigError(src, "learning.alpha", "the learning rate per tick "
                              f"{self.lr:.4g} is too large for fixed.g_frac = {self.g_frac} "
                              f"and fixed.v_frac = {self.v_frac} (shift {self.learn_shift})")
        v_limit = 2 ** (self.v_bits - 1 - self.v_frac)
        for key, v in (("io.v_min", cfg.io.v_min), ("io.v_max", cfg.io.v_max),
                       ("device.vt", cfg.device.vt)):
            if not -v_limit <= v < v_limit:
                raise ConfigError(src, key, f"{v} V does not fit fixed.v_bits = {self.v_bits} "
                                  f"with fixed.v_frac = {self.v_frac} (range +-{v_limit} V)")
        g_limit = 2 ** (self.g_bits - 1 - self.g_frac)
        if not (-g_limit <= cfg.learning.gate_min and cfg.learning.gate_max < g_limit):
            raise ConfigError(src, "learning.gate_max", f"gates up to {cfg.learning.gate_max} V "
                              f"do not fit fixed.g_bits = {self.g_bits} with fixed.g_frac = "
                              f"{self.g_frac} (range +-{g_limit} V)")
        if self.dg_bits > self.g_bits:
            raise ConfigError(src, "fixed.dg_bits", f"must be <= fixed.g_bits ({self.g_bits})")
        # A full-scale drop that changes by one voltage LSB must move the gate by at
        # least half a gate LSB, or learning rounds away the finest errors it can see.
        full_scale = cfg.io.v_max - min(cfg.io.v_min, 0.0)
        finest_step = self.lr * 2 * full_scale * 2.0 ** -self.v_frac
        if finest_step < 2.0 ** -(self.g_frac + 1):
            raise ConfigError(src, "fixed.g_frac", f"gate LSB 2**-{self.g_frac} V cannot hold "
                              f"the learning step {finest_step:.3g} V of a one-LSB error; "
                              "raise fixed.g_frac")
        # a right shift of 63 or more bits is not defined on the model's int64
        shifts = [("learning.alpha", self.learn_shift, True),
                  ("schedule.kappa", self.node_shift, self.relax == "euler"),
                  ("nonideal.gate_leak", self.droop_shift, self.droop_mul),
                  ("nonideal.read_noise", self.noise_shift, self.noise_mul)]
        for key, shift, used in shifts:
            if used and shift > MAX_SHIFT:
                raise ConfigError(src, key, f"too small for the fixed-point model: it takes a "
                                  f"right shift of {shift} bits (at most {MAX_SHIFT})")
        # int64 safety of the golden model: widest products stay below 2**62.
        widest = max(self.term_bits, self.acc_bits + cfg.fixed.kappa_bits,
                     2 * (self.v_bits + 2) + cfg.fixed.lr_bits, self.g_bits + 1,
                     self.v_bits + self.eta_frac + 2,
                     self.v_bits + 2 + max(self.leak_q, 1).bit_length(),
                     # the jacobi step on the node state: sat(acc) << F, and H itself
                     self.acc_bits + self.node_extra_bits + 1,
                     self.v_bits + self.node_extra_bits + 1,
                     # momentum: H + beta M + dh, M of h_bits + 1 bits
                     self.v_bits + self.node_extra_bits + 3)
        if widest > 62:
            raise ConfigError(src, "fixed", f"intermediate products need {widest} bits; "
                              "the model computes in 62: narrow the widths")

    @property
    def twin_thresholds(self):
        """Whether some clamped transistor's threshold differs from its free twin's."""
        return bool(np.any(self.vt_c_q != self.vt_q))

    @property
    def has_gains(self):
        """Whether some transistor's gain is not 1 (mismatch, or a dead edge's 0)."""
        unit = 1 << GAIN_FRAC
        return bool(np.any(self.k_f_q != unit) or np.any(self.k_c_q != unit))

    @property
    def has_offsets(self):
        return bool(np.any(self.offset_q))

    @property
    def has_frozen(self):
        return bool(np.any(self.frozen))

    @property
    def noise_max(self):
        """The largest read noise on a drop, in voltage LSBs (0: no noise)."""
        if not self.noise_mul:
            return 0
        return (nonideal_draws.NOISE_MEAN * self.noise_mul
                + (1 << self.noise_shift >> 1)) >> self.noise_shift

    @property
    def kappa(self):
        """The node update scale the fixed-point model really uses (1/V)."""
        return self.kappa_mul * 2.0 ** -self.kappa_shift

    @property
    def lr(self):
        """The learning rate per tick the fixed-point model really uses (1/V)."""
        return self.lr_mul * 2.0 ** -self.lr_shift

    @property
    def eta(self):
        return self.eta_q * 2.0 ** -self.eta_frac

    @property
    def node_shift(self):
        """Right shift of ``acc * kappa_mul`` to a node step in voltage LSBs."""
        return self.v_frac + self.kappa_shift

    @property
    def learn_shift(self):
        """Right shift of ``q * lr_mul`` to a gate step in gate LSBs."""
        return 2 * self.v_frac - self.g_frac + self.lr_shift

    @property
    def gate_shift(self):
        """Right shift from a gate to a voltage (0 when both have the same LSB)."""
        return self.g_frac - self.v_frac

    @property
    def h_bits(self):
        """Signed width of a node's state ``H`` (``v_bits + node_extra_bits``)."""
        return self.v_bits + self.node_extra_bits

    @property
    def m_bits(self):
        """Signed width of a node's velocity ``M = H' - H`` (``momentum``): ``h_bits + 1``
        holds the difference of any two node states."""
        return self.h_bits + 1

    def volts_to_v(self, volts):
        """Node voltages (V) to integers, rounded to nearest."""
        return np.round(np.asarray(volts) * 2.0 ** self.v_frac).astype(np.int64)

    def volts_to_g(self, volts):
        """Gates (V) to integers, rounded to nearest and kept within the gate bounds."""
        q = np.round(np.asarray(volts) * 2.0 ** self.g_frac).astype(np.int64)
        return np.clip(q, self.gate_min_q, self.gate_max_q)

    def v_to_volts(self, q):
        return np.asarray(q) * 2.0 ** -self.v_frac

    def g_to_volts(self, q):
        return np.asarray(q) * 2.0 ** -self.g_frac


def _volts_q(volts, frac):
    return np.round(np.asarray(volts) * 2.0 ** frac).astype(np.int64)


def _nonideal_constants(cfg, imp):
    """The keyword fields of :class:`Formats` that quantise :class:`clln.nonideal.Impairments`
    and the leak and noise of ``cfg.nonideal``."""
    f, ni = cfg.fixed, cfg.nonideal
    droop = mantissa_shift(ni.gate_leak, DROOP_BITS) if ni.gate_leak else (0, 0)
    scale = nonideal_draws.noise_scale(cfg) * 2 ** f.v_frac
    noise = mantissa_shift(scale, NOISE_BITS) if scale else (0, 0)
    return dict(vt_c_q=_volts_q(imp.vt_clamped, f.v_frac),
                k_f_q=_volts_q(imp.k_free, GAIN_FRAC), k_c_q=_volts_q(imp.k_clamped, GAIN_FRAC),
                offset_q=_volts_q(imp.offset, 2 * f.v_frac),
                frozen=imp.frozen.astype(np.int64),
                droop_mul=droop[0], droop_shift=droop[1],
                rest_q=round(nonideal_draws.gate_rest(cfg) * 2 ** f.g_frac),
                noise_mul=noise[0], noise_shift=noise[1])


def settle_box(cfg):
    """Bounds ``(lo, hi)`` in voltage LSBs of the ``jacobi`` node step's box.

    The box holds every voltage a network can hold: ``[v_min - m, v_max + m]`` with
    ``m = eta (v_max - v_min)`` (a clamped output moves at most that far outside the
    driven range), rounded outwards to whole LSBs and kept within ``v_bits``. By the
    maximum principle no settled node lies outside it, so it never moves a fixed point.
    """
    io, f = cfg.io, cfg.fixed
    margin = cfg.learning.eta * (io.v_max - io.v_min)
    lo = math.floor((io.v_min - margin) * 2 ** f.v_frac)
    hi = math.ceil((io.v_max + margin) * 2 ** f.v_frac)
    limit = 1 << (f.v_bits - 1)
    return max(lo, -limit), min(hi, limit - 1)


def graph_diameter(network):
    """The double-sweep diameter of a connected graph: the eccentricity (hops, edges
    taken either way) of the lowest-numbered node farthest from node 0. Exact on a
    torus, a lattice or any graph whose nodes all look alike, a lower bound otherwise."""
    far = _hops_from(network, 0)
    return int(_hops_from(network, int(np.argmax(far))).max())


def _hops_from(network, start):
    """Hops from ``start`` to every node (breadth first; -1 for a node not reached)."""
    a, b = network.edges[:, 0], network.edges[:, 1]
    hops = np.full(network.n_nodes, -1, np.int64)
    hops[start], frontier, level = 0, np.array([start]), 0
    while frontier.size:
        level += 1
        seen = np.zeros(network.n_nodes, bool)
        seen[frontier] = True
        nxt = np.concatenate([b[seen[a]], a[seen[b]]])
        nxt = np.unique(nxt[hops[nxt] < 0])
        hops[nxt] = level
        frontier = nxt
    return hops


#: Largest default ``momentum_shift``: from ``b = 6`` on, the heavy ball's limit cycles of
#: quantisation move nodes by more than 2 LSB on 32x32 and 64x64 tori (docs/results.md,
#: "Momentum"), so that they are never still.
MAX_DEFAULT_MOMENTUM_SHIFT = 5


def default_momentum_shift(network):
    """``b`` of the ``momentum`` step for a graph that names none: ``floor(3 k / 2) - 2``
    for ``k = floor(log2(d))`` of its :func:`graph_diameter` ``d``, kept within ``[1,
    MAX_DEFAULT_MOMENTUM_SHIFT]`` (1, 2, 4, 5 on 4x4 to 32x32 tori: measured,
    docs/results.md, "Momentum")."""
    k = graph_diameter(network).bit_length() - 1
    return min(max(3 * k // 2 - 2, 1), MAX_DEFAULT_MOMENTUM_SHIFT)


def momentum_shift(cfg):
    """``b`` of the ``momentum`` step, ``beta = 1 - 2**-b``: ``[schedule] momentum_shift``
    or the graph's :func:`default_momentum_shift`; 0 under the other node steps."""
    if cfg.schedule.relax != "momentum":
        return 0
    return cfg.schedule.momentum_shift or default_momentum_shift(cfg.network)


def edge_leak(cfg):
    """Linear leak across every edge in units of K/2 (V): ``2 * gmin / k``."""
    return 2 * cfg.device.gmin / cfg.device.k


def check_tick_stability(cfg, kappa):
    """Refuse a node update scale that can make the explicit (``euler``) tick unstable;
    the ``jacobi`` step needs no ``kappa``.

    The tick is an explicit Euler step of ``dV/dt = -kappa * J V``; by Gershgorin the
    eigenvalues of J are below twice the largest weighted degree, each edge weighing
    ``2 * (gate_max - vt - min(v_min, 0))`` plus the leak (V). Stability needs
    ``kappa * lambda < 2``.
    """
    if cfg.schedule.relax != "euler":
        return
    overdrive = cfg.learning.gate_max - cfg.device.vt - min(cfg.io.v_min, 0.0)
    lam = 2 * cfg.network.degrees().max() * (2 * max(overdrive, 0.0) + edge_leak(cfg))
    if kappa * lam >= 2:
        raise ConfigError(cfg.source, "schedule.kappa", f"{kappa:.4g} /V can make the tick "
                          f"unstable at gate_max = {cfg.learning.gate_max} V (needs kappa < "
                          f"{2 / lam:.4g} /V for max degree {cfg.network.degrees().max()})")
