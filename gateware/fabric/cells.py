"""The twin edge, gate and node steps of ``docs/semantics.md`` as Amaranth expressions,
and the combinational edge and node cells built from them."""


import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from clln.formats import GAIN_FRAC
from clln.nonideal import NOISE_MEAN

from .arith import (
    above,
    below,
    const_mul,
    round_half,
    round_shift,
    saturate,
    split_mul,
    tree_sum,
    wire,
)
from .ports import SatFlags, sat_bits

#: The gain of an ideal transistor (``docs/semantics.md``: ``kX_q = 1024``).
UNIT_GAIN = 1 << GAIN_FRAC


def node_sum(edges, n, terms):
    """Sum of the edge terms (currents a -> b) flowing into node ``n``.

    Parameters
    ----------
    edges : sequence of (a, b)
    n : int
    terms : dict
        Edge index -> its term; edges not in it are left out.
    """
    signed_terms = []
    for e, s in terms.items():
        if edges[e][1] == n:
            signed_terms.append(s)
        if edges[e][0] == n:
            signed_terms.append(-s)
    return tree_sum(signed_terms)


def output_value(vf, p, mi):
    """An output ``(p, m)`` of node voltages ``vf``: ``vf[p] - vf[m]``, or ``vf[p]`` when
    ``m < 0`` (an expression)."""
    return vf[p] - vf[mi] if mi >= 0 else vf[p]


def clamp_errors(outputs, target, vf):
    """``target[k] - out_k`` of every output (:func:`output_value`): expressions."""
    return [target[k] - output_value(vf, p, mi) for k, (p, mi) in enumerate(outputs)]


def clamp_scale(f, error):
    """``error * eta_q`` (an expression of shifts and adds)."""
    return const_mul(error, f.eta_q)


def clamp_finish(m, f, outputs, vf, scaled, vc_next):
    """Set the clamped outputs in ``vc_next`` (a list or dict by node): the free outputs
    nudged by ``eta (target - out)``, from the scaled errors (:func:`clamp_scale`).

    A single-ended output moves by all of the nudge, a differential one's nodes by half
    each, in opposite directions.

    Returns
    -------
    list of Signal
        Saturation of each clamped value.
    """
    clamp_flags = []
    for k, ((p, mi), sc) in enumerate(zip(outputs, scaled, strict=True)):
        if mi < 0:
            nudge = round_shift(sc, f.eta_frac)
            vc_next[p], s = saturate(m, vf[p] + nudge, f.v_bits, f"clamp{k}")
            clamp_flags.append(s)
        else:
            half = Signal(signed(f.v_bits + 2 + f.eta_frac), name=f"half{k}")
            m.d.comb += half.eq(round_shift(sc, f.eta_frac + 1))
            vc_next[p], sp = saturate(m, vf[p] + half, f.v_bits, f"clamp{k}p")
            vc_next[mi], sm = saturate(m, vf[mi] - half, f.v_bits, f"clamp{k}m")
            clamp_flags += [sp, sm]
    return clamp_flags


def _overdrive_bits(f):
    return max(f.g_bits - f.gate_shift + 1, f.v_bits) + 1


def product_operand_bits(f):
    """Operand widths (signed bits) of the two variable products of an edge unit.

    Returns
    -------
    dict
        ``term``: ``(u_b - u_a, u_b + u_a)`` of one transistor; ``learn``:
        ``(d_F - d_C, d_F + d_C)`` of the gate step. Products by constants are shifts
        and adds (:func:`const_mul`) and use no multiplier block.
    """
    u = max(_overdrive_bits(f), f.v_bits) + 1
    d = f.v_bits + 2 + (1 if f.noise_mul else 0)
    return {"term": (u + 1, u + 1), "learn": (d, d)}


def impairment_shapes(f):
    """The per-edge constants of a non-ideal chip that an edge unit takes
    (``docs/semantics.md``), name -> shape; only those the chip has: ``vt_c`` (twin
    thresholds), ``k_f``, ``k_c`` (gains, 0 for dead edges), ``offset`` (learning-rule
    offsets), ``frozen``."""
    shapes = {}
    if f.twin_thresholds:
        shapes["vt_c"] = signed(f.v_bits)
    if f.has_gains:
        shapes["k_f"] = shapes["k_c"] = unsigned(max_gain(f).bit_length())
    if f.has_offsets:
        shapes["offset"] = signed(int(np.max(np.abs(f.offset_q))).bit_length() + 1)
    if f.has_frozen:
        shapes["frozen"] = unsigned(1)
    return shapes


def impairment_values(f, e):
    """The constants of :func:`impairment_shapes` of edge ``e`` (name -> int)."""
    values = {"vt_c": f.vt_c_q[e], "k_f": f.k_f_q[e], "k_c": f.k_c_q[e],
              "offset": f.offset_q[e], "frozen": f.frozen[e]}
    return {name: int(values[name]) for name in impairment_shapes(f)}


def noise_bits(f):
    """Signed bits of one drop's read noise (:func:`noise_from_word`)."""
    return f.noise_max.bit_length() + 1


def xorshift32(x):
    """Marsaglia's xorshift32 step (shifts 13, 17, 5) of a 32-bit value (an expression)."""
    x = Value.cast(x)[:32]
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:32]


def noise_from_word(f, word):
    """The read noise of one drop from a generator word: the word's four bytes summed,
    minus their mean, times ``noise_mul``, rounded by ``noise_shift`` (an expression)."""
    word = Value.cast(word)
    total = tree_sum([word[8 * i:8 * i + 8] for i in range(4)]) - NOISE_MEAN
    return const_mul(total, f.noise_mul, round_half(f.noise_shift)) >> f.noise_shift


def noise_step(m, f, state, tag):
    """One learning tick of an edge's read-noise generator (``docs/semantics.md``, "Read
    noise"): its two words, and the noise on its free and clamped drop.

    Returns
    -------
    (next_state, n_f, n_c) : (Signal, Signal, Signal)
    """
    w1 = wire(m, xorshift32(state), f"nw1_{tag}", unsigned(32))
    w2 = wire(m, xorshift32(w1), f"nw2_{tag}", unsigned(32))
    shape = signed(noise_bits(f))
    return (w2, wire(m, noise_from_word(f, w1), f"nf_{tag}", shape),
            wire(m, noise_from_word(f, w2), f"nc_{tag}", shape))


def overdrive(m, f, g, vt, name="ov"):
    """``round_shift(g, gate_shift) - vt`` of an edge (a signal). A constant ``vt`` costs
    no adder: ``floor(a / 2**s) - vt == floor((a - vt 2**s) / 2**s)`` for an integer
    ``vt``."""
    ov = Signal(signed(_overdrive_bits(f)), name=name)
    s = f.gate_shift
    if isinstance(vt, int):
        m.d.comb += ov.eq((g + (round_half(s) - (vt << s))) >> s)
    else:
        m.d.comb += ov.eq(round_shift(g, s) - vt)
    return ov


def edge_ends(m, f, ov, va, vb, tag):
    """``(u_a, u_b) = (relu(ov - va), relu(ov - vb))`` of one transistor (signals)."""
    u_shape = signed(max(len(ov), f.v_bits) + 1)
    ua, ub = Signal(u_shape, name=f"ua_{tag}"), Signal(u_shape, name=f"ub_{tag}")
    da, db = wire(m, ov - va, f"da_{tag}"), wire(m, ov - vb, f"db_{tag}")
    m.d.comb += [ua.eq(Mux(da < 0, 0, da)), ub.eq(Mux(db < 0, 0, db))]
    return ua, ub


def operands_from_ends(m, ua, ub, va, vb, tag):
    """The factors of an edge term from its ends: ``(u_b - u_a, u_b + u_a, va - vb)``."""
    return (wire(m, ub - ua, f"udiff_{tag}"), wire(m, ub + ua, f"usum_{tag}"),
            wire(m, va - vb, f"vdiff_{tag}"))


def edge_operands(m, f, ov, va, vb, tag):
    """The factors of an edge term: ``(u_b - u_a, u_b + u_a, va - vb)`` (signals)."""
    return operands_from_ends(m, *edge_ends(m, f, ov, va, vb, tag), va, vb, tag)


def end_conductance(f, u, gain=UNIT_GAIN):
    """Conductance an edge gives one of its ends, ``round_shift(2 u gain, 10) + leak_q``
    (an expression of :func:`end_conductance_bits` unsigned bits; ``u >= 0``; ``gain``
    a constant or an unsigned value, see :func:`apply_gain`)."""
    return apply_gain(u.as_unsigned() << 1, gain) + f.leak_q


def end_conductance_bits(f, ov_bits):
    """Unsigned bits of :func:`end_conductance` for an overdrive of ``ov_bits``."""
    u_max = (1 << max(ov_bits, f.v_bits)) - 1
    return ((2 * u_max * max_gain(f) + round_half(GAIN_FRAC) >> GAIN_FRAC)
            + f.leak_q).bit_length()


def max_gain(f):
    """The largest relative gain of any transistor (``UNIT_GAIN`` = 1)."""
    return max(int(np.max(f.k_f_q)), int(np.max(f.k_c_q)), 1)


def apply_gain(x, gain):
    """``round_shift(x * gain, GAIN_FRAC)``: a transistor's relative gain applied (an
    expression). A constant gain costs nothing at 1 (``UNIT_GAIN``) or 0 (a dead edge) and
    is shifts and adds otherwise; a gain that is a value (a folded unit's) is a product."""
    if isinstance(gain, int):
        if gain == UNIT_GAIN:
            return x
        if gain == 0:
            return Const(0, 1)
        return const_mul(x, gain, round_half(GAIN_FRAC)) >> GAIN_FRAC
    return (x * gain + round_half(GAIN_FRAC)) >> GAIN_FRAC


def edge_conductance_bits(f):
    """Unsigned bits of the conductance an edge cell gives one of its ends
    (:func:`end_conductance` of the cell's overdrive)."""
    return end_conductance_bits(f, _overdrive_bits(f))


def node_conductance_bits(f, degree):
    """Unsigned bits of the exact sum of ``degree`` end conductances at a node."""
    return edge_conductance_bits(f) + max(int(degree) - 1, 0).bit_length()


def node_conductance(edges, n, conds):
    """Sum of the conductances node ``n``'s edges give it (an expression).

    Parameters
    ----------
    edges : sequence of (a, b)
    n : int
    conds : dict
        Edge index -> ``(cond_a, cond_b)``, the conductance at each end; edges not in it
        are left out.
    """
    return tree_sum([c for e, ends in conds.items() for end, c in zip(edges[e], ends,
                                                                       strict=True)
                     if end == n])


def any_moved(m, f, old, new, tag="all"):
    """1 when some node moved by more than ``still_lsb`` (:func:`node_moved` of every
    pair of ``old[i]``, ``new[i]``, ORed)."""
    flags = [node_moved(m, f, o, n, f"{tag}{i}") for i, (o, n) in
             enumerate(zip(old, new, strict=True))]
    out = Signal(name=f"moved_{tag}")
    m.d.comb += out.eq(Cat(*flags).any() if flags else 0)
    return out


def uses_conductance(f):
    """Whether the node step divides by the node's conductance (``jacobi``,
    ``momentum``): the edges then give their ends their conductances."""
    return f.relax in ("jacobi", "momentum")


def conductance_shift(m, f, cond, tag):
    """``s``, the smallest shift with ``2**s >= cond`` (0 for ``cond <= 1``): the bit
    length of ``cond - 1``, a priority encoder (a signal). ``momentum`` takes half the
    step: ``s + 1`` (a constant in the encoder, no adder)."""
    below = wire(m, Mux(cond == 0, 0, cond - 1), f"cm1_{tag}", unsigned_of(cond))
    half = 1 if f.relax == "momentum" else 0
    s = Signal(range(len(below) + 1 + half), name=f"shift_{tag}")
    value = half
    for i in range(len(below)):
        value = Mux(below[i], i + 1 + half, value)
    m.d.comb += s.eq(value)
    return s


def unsigned_of(value):
    """Unsigned shape as wide as ``value``."""
    return unsigned(len(Value.cast(value)))


def jacobi_delta(m, f, acc, cond, tag, shift=None):
    """Step of a settling node under ``relax = jacobi``: ``round_shift(acc, s)`` with
    ``2**s`` at or above the conductance ``cond``, kept within ``+-(box_hi - box_lo)``
    (``shift``: s, already taken from the conductance by :func:`conductance_shift`).

    Returns
    -------
    (dv, flags) : (Signal, Value)
        ``flags`` has the acc bit of the saturation flags (the box raises none).
    """
    if shift is None:
        shift = conductance_shift(m, f, cond, tag)
    shifted, clipped = jacobi_shift(m, f, acc, shift, tag)
    return jacobi_span(m, f, shifted, tag), sat_bits(acc=clipped)


def jacobi_shift(m, f, acc, s, tag):
    """``round_shift(sat(acc, acc_bits) << F, s)`` (the first half of
    :func:`jacobi_delta`; ``F = node_extra_bits``) and whether ``acc`` saturated.

    The shifter takes ``sat(acc)`` with F zero bits appended below (wires, no adder):
    the same bits as shifting left by ``F - s`` or rounding right by ``s - F``, with one
    shifter and one rounding adder for every s."""
    a, clipped = saturate(m, acc, f.acc_bits, f"acc_{tag}")
    F = f.node_extra_bits
    if F:
        a = Value.cast(a) << F
    half = (Value.cast(1) << s) >> 1
    return wire(m, (a + half) >> s, f"jshift_{tag}", signed(f.acc_bits + 1 + F)), clipped


def jacobi_span(m, f, shifted, tag):
    """``shifted`` kept within ``+-((box_hi - box_lo) << F)`` (the second half of
    :func:`jacobi_delta`)."""
    span = (f.box_hi_q - f.box_lo_q) << f.node_extra_bits
    dv = Signal(signed(span.bit_length() + 1), name=f"dv_{tag}")
    m.d.comb += dv.eq(Mux(above(shifted, span), span,
                          Mux(below(shifted, -span), -span, shifted)))
    return dv


def momentum_decay(m, f, vel, tag):
    """``(1 - 2**-b) M`` rounded toward zero: ``M`` less ``M / 2**b`` rounded away from
    zero, ``(M + (2**b - 1 if M > 0 else 0)) >> b`` (``b = momentum_shift``; the shift is
    wires, the constant a mux on the sign)."""
    vel = Value.cast(vel)
    b = f.momentum_shift
    bias = Mux(above(vel, 0), (1 << b) - 1, 0)
    return wire(m, vel - ((vel + bias) >> b), f"mdecay_{tag}", signed(f.m_bits + 1))


def jacobi_apply(m, f, h, dh, tag, vel=None):
    """``h + dh`` kept within the box ``[box_lo << F, box_hi << F]`` (a node state of
    :func:`node_state_shape`), and its (empty) flags; ``momentum`` adds the decayed
    velocity ``vel`` (:func:`momentum_decay`) to the sum."""
    F = f.node_extra_bits
    lo, hi = f.box_lo_q << F, f.box_hi_q << F
    if f.relax == "momentum":
        if vel is None:
            raise ValueError("jacobi_apply: relax = momentum needs the node's velocity")
        dh = dh + momentum_decay(m, f, vel, tag)
    total = wire(m, h + dh, f"vsum_{tag}")
    vn = Signal(node_state_shape(f), name=f"v_{tag}")
    m.d.comb += vn.eq(Mux(above(total, hi), hi, Mux(below(total, lo), lo, total)))
    return vn, sat_bits()


def node_state_shape(f):
    """Shape of a node's state ``H``: ``v_bits + node_extra_bits`` signed bits."""
    return signed(f.h_bits)


def velocity_shape(f):
    """Shape of a node's velocity ``M`` (``momentum``): ``h_bits + 1`` signed bits."""
    return signed(f.m_bits)


def node_velocity(m, f, h, h_next, tag):
    """``M' = H' - H``, the move a ``momentum`` node step made (a signal)."""
    return wire(m, h_next - h, f"vel_{tag}", velocity_shape(f))


def node_voltage(f, h):
    """The voltage ``V = H >> node_extra_bits`` of a node state: its top ``v_bits`` bits
    (a wire slice; ``h`` itself without extra bits)."""
    F = f.node_extra_bits
    return h if F == 0 else Value.cast(h)[F:].as_signed()


def node_state(f, v):
    """The node state ``H = V << node_extra_bits`` of a voltage (``v`` itself without
    extra bits; zeros appended below otherwise)."""
    F = f.node_extra_bits
    return v if F == 0 else Value.cast(v) << F


def node_moved(m, f, old, new, tag):
    """1 when a node moved by more than ``still_lsb`` in a tick (``|new - old|``).

    ``d = new - old`` is within ``+-L`` exactly when its bits above the lowest ``k =
    bit_length(L)`` are all 0 and its low bits at most L, or all 1 and its low bits at
    least ``2**k - L`` (``d`` is then those bits minus ``2**k``): two tests of equal bits
    and a few low bits instead of two comparisons (each a carry chain on iCE40).
    """
    d = wire(m, new - old, f"move_{tag}")
    lsb = f.still_lsb
    k = lsb.bit_length()
    if k == 0:
        still = d == 0
    else:
        hi, lo = d[k:], d[:k]
        still = (((hi == 0) & (lo <= lsb)) |
                 (hi.all() & (lo >= (1 << k) - lsb)))
    return wire(m, ~still, f"moved_{tag}", 1)


def bounded_usum_bits(f):
    """Signed bits that hold ``u_b + u_a`` while every gate is within ``[gate_min,
    gate_max]``: the overdrive is then at most ``gate_max - min(vt)`` and a node voltage
    at least ``-2**(v_bits - 1)`` LSBs."""
    vt_min = min(int(np.min(f.vt_q)), int(np.min(f.vt_c_q)))
    ov_max = round_shift(f.gate_max_q, f.gate_shift) - vt_min
    u_max = max(ov_max + (1 << (f.v_bits - 1)), 0)
    return (2 * u_max).bit_length() + 1


def edge_product(m, f, udiff, usum, vdiff, tag, mult_bits=None, usum_bits=None,
                 gain=UNIT_GAIN):
    """``sat(udiff * usum + leak_q * vdiff, term_bits)``: the edge term from its factors
    (:func:`edge_raw_product` then :func:`edge_finish`).

    Returns
    -------
    (value, clipped) : (Signal, Signal)
    """
    return edge_finish(m, f, edge_raw_product(udiff, usum, f, mult_bits, usum_bits), vdiff,
                       tag, gain)


def edge_raw_product(udiff, usum, f, mult_bits=None, usum_bits=None):
    """``udiff * usum`` (an expression).

    With ``mult_bits``, ``udiff`` is narrowed to ``v_bits + 1`` bits first, which holds it:
    ``|u_b - u_a| <= |v_a - v_b|`` (a ReLU moves no two points further apart), and the
    product takes one multiplier block (:func:`split_mul`). ``usum_bits`` narrows
    ``usum`` too, for a fabric whose gates stay within their bounds
    (:func:`bounded_usum_bits`).
    """
    if usum_bits is not None:
        usum = Value.cast(usum)[:usum_bits].as_signed()
    if mult_bits is not None:
        udiff = Value.cast(udiff)[:f.v_bits + 1].as_signed()
    return split_mul(udiff, usum, mult_bits)


def edge_finish(m, f, product, vdiff, tag, gain=UNIT_GAIN):
    """``sat(round_shift(product * gain, 10) + leak_q * vdiff, term_bits)`` and whether it
    saturated (``gain``: see :func:`apply_gain`)."""
    return saturate(m, apply_gain(product, gain) + const_mul(vdiff, f.leak_q), f.term_bits,
                    f"s_{tag}")


def edge_term(m, f, ov, va, vb, tag, mult_bits=None):
    """Current a -> b of one transistor, ``u_b**2 - u_a**2 + leak_q (va - vb)``, saturated.

    Returns
    -------
    (value, clipped) : (Signal, Signal)
    """
    return edge_product(m, f, *edge_operands(m, f, ov, va, vb, tag), tag, mult_bits)


def gate_operands(m, f, d_f, d_c, tag="dg"):
    """The factors of a gate step: ``(d_f - d_c, d_f + d_c)`` (signals)."""
    d_f, d_c = wire(m, d_f, f"{tag}_df"), wire(m, d_c, f"{tag}_dc")
    return wire(m, d_f - d_c, f"{tag}_minus"), wire(m, d_f + d_c, f"{tag}_plus")


def gate_product(m, f, minus, plus, tag="dg", mult_bits=None, offset=0):
    """``sat(round_shift((minus * plus + offset) * lr_mul, learn_shift), dg_bits)`` and
    whether it saturated (``mult_bits``: see :func:`split_mul`; ``offset``: the edge's
    learning-rule offset, a constant or a value)."""
    product = split_mul(minus, plus, mult_bits)
    if not isinstance(offset, int) or offset:
        product = product + offset
    return gate_finish(m, f, product, tag)


def gate_finish(m, f, product, tag="dg"):
    """``sat(round_shift(product * lr_mul, learn_shift), dg_bits)`` and whether it
    saturated (:func:`gate_scale` then :func:`gate_round`)."""
    return gate_round(m, f, gate_scale(f, product), tag)


def gate_scale(f, product):
    """``product * lr_mul`` plus the rounding constant of :func:`gate_round` (an expression
    of shifts and adds)."""
    return const_mul(product, f.lr_mul, round_half(f.learn_shift))


def gate_round(m, f, scaled, tag="dg"):
    """``sat(scaled >> learn_shift, dg_bits)`` (rounded: :func:`gate_scale` added the
    constant) and whether it saturated."""
    return saturate(m, scaled >> f.learn_shift, f.dg_bits, tag)


def gate_delta(m, f, d_f, d_c, tag="dg", mult_bits=None, offset=0):
    """Gate step of one learning tick from the free and clamped drops ``d_f``, ``d_c``.

    Returns
    -------
    (dg, clipped) : (Signal, Signal)
        ``sat(round_shift((d_f - d_c)(d_f + d_c) lr_mul, learn_shift), dg_bits)`` and
        whether it saturated.
    """
    return gate_product(m, f, *gate_operands(m, f, d_f, d_c, tag), tag, mult_bits, offset)


def gate_apply(m, f, g, dg, tag="dg"):
    """``g + dg`` (plus the gate leak's droop toward ``rest_q``, if any) kept within
    ``[gate_min, gate_max]`` (the learning rule's bounds)."""
    total = g + dg
    if f.droop_mul:
        droop = const_mul(f.rest_q - g, f.droop_mul, round_half(f.droop_shift)) >> f.droop_shift
        total = total + droop
    return gate_clamp(f, wire(m, total, f"{tag}_sum"))


def gate_clamp(f, g):
    """``g`` kept within ``[gate_min, gate_max]`` (an expression)."""
    return Mux(below(g, f.gate_min_q), f.gate_min_q,
               Mux(above(g, f.gate_max_q), f.gate_max_q, g))


def gate_step(m, f, g, d_f, d_c, tag="dg", mult_bits=None, offset=0):
    """Gate after one learning tick: :func:`gate_delta` then :func:`gate_apply`.

    Returns
    -------
    (g_next, clipped) : (Value, Signal)
        The gate kept within ``[gate_min, gate_max]``; ``clipped`` when ``dg`` saturated.
    """
    dg, clipped = gate_delta(m, f, d_f, d_c, tag, mult_bits, offset)
    return gate_apply(m, f, g, dg, tag), clipped


def node_delta(m, f, acc, tag):
    """Step of a settling node, ``kappa * acc`` rounded and saturated.

    Returns
    -------
    (dv, flags) : (Signal, Value)
        ``flags`` has the acc and dv bits of the saturation flags.
    """
    scaled, s1 = node_scale(m, f, acc, tag)
    dv, s2 = node_round(m, f, scaled, tag)
    return dv, sat_bits(acc=s1, dv=s2)


def node_scale(m, f, acc, tag):
    """``sat(acc, acc_bits) * kappa_mul`` plus the rounding constant of :func:`node_round`
    (an expression) and whether ``acc`` saturated."""
    a, clipped = saturate(m, acc, f.acc_bits, f"acc_{tag}")
    return const_mul(a, f.kappa_mul, round_half(f.node_shift)), clipped


def node_round(m, f, scaled, tag):
    """``sat(scaled >> node_shift, dv_bits)`` (rounded: :func:`node_scale` added the
    constant) and whether it saturated."""
    return saturate(m, scaled >> f.node_shift, f.dv_bits, f"dv_{tag}")


def node_apply(m, f, v, dv, tag):
    """``v + dv`` saturated, and its bit of the saturation flags (a 5-bit value)."""
    vn, s3 = saturate(m, v + dv, f.v_bits, f"v_{tag}")
    return vn, sat_bits(v=s3)


def node_step(m, f, v, acc, tag, cond=None, shift=None, vel=None):
    """New state of a settling node: ``v + kappa * acc`` rounded and saturated
    (``euler``), or the ``jacobi`` step of its state ``H`` (``v``, with
    ``node_extra_bits``) from its conductance ``cond`` (or from the shift
    :func:`conductance_shift` takes from it; one of them required then); ``momentum``:
    the half step plus the decayed velocity ``vel`` (required then; the new velocity is
    :func:`node_velocity`).

    Returns
    -------
    (v_next, flags) : (Signal, Value)
        ``flags`` has the acc, dv and v bits of the saturation flags.
    """
    if uses_conductance(f):
        if cond is None and shift is None:
            raise ValueError(f"node_step: relax = {f.relax} needs the node's conductance")
        dv, flags_dv = jacobi_delta(m, f, acc, cond, tag, shift)
        vn, flags_v = jacobi_apply(m, f, v, dv, tag, vel)
    else:
        dv, flags_dv = node_delta(m, f, acc, tag)
        vn, flags_v = node_apply(m, f, v, dv, tag)
    return vn, flags_dv | flags_v


class EdgeCell(wiring.Component):
    """Combinational twin edge cell: both networks' edge terms and the gate update.

    Parameters
    ----------
    fmt : clln.formats.Formats

    Notes
    -----
    ``s_f``/``s_c`` are the currents a -> b (``u_b**2 - u_a**2 + leak_q (va - vb)``) of
    the free and the clamped transistor; ``g_next`` is the gate after this tick. With
    ``fmt.relax == "jacobi"`` the cell also gives the conductance of each end,
    ``cond_a_f``, ``cond_b_f``, ``cond_a_c``, ``cond_b_c`` (``2 u + leak_q``, unsigned,
    :attr:`cond_bits` bits).
    """

    def __init__(self, fmt, mult_bits=None):
        self.fmt, self.mult_bits = fmt, mult_bits
        v, g = signed(fmt.v_bits), signed(fmt.g_bits)
        members = {
            "va_f": In(v), "vb_f": In(v), "va_c": In(v), "vb_c": In(v),
            "g": In(g), "vt": In(v), "learn": In(1),
            "s_f": Out(signed(fmt.term_bits)), "s_c": Out(signed(fmt.term_bits)),
            "g_next": Out(g), "sat_term": Out(1), "sat_dg": Out(1),
            **{name: In(shape) for name, shape in impairment_shapes(fmt).items()},
        }
        if fmt.noise_mul:
            members.update(n_f=In(signed(noise_bits(fmt))), n_c=In(signed(noise_bits(fmt))))
        #: Bits of each end's conductance (``jacobi``, ``momentum`` only).
        self.cond_bits = edge_conductance_bits(fmt)
        if uses_conductance(fmt):
            members.update({f"cond_{end}_{tag}": Out(unsigned(self.cond_bits))
                            for tag in ("f", "c") for end in ("a", "b")})
        super().__init__(members)

    def elaborate(self, platform):
        f = self.fmt
        m = Module()
        ports = impairment_shapes(f)
        ov_f = overdrive(m, f, self.g, self.vt)
        ov_c = overdrive(m, f, self.g, self.vt_c, "ov_c") if "vt_c" in ports else ov_f
        nets = {"f": (self.va_f, self.vb_f, ov_f), "c": (self.va_c, self.vb_c, ov_c)}
        terms = {}
        for tag, (va, vb, ov) in nets.items():
            gain = getattr(self, f"k_{tag}") if "k_f" in ports else UNIT_GAIN
            ua, ub = edge_ends(m, f, ov, va, vb, tag)
            ops = operands_from_ends(m, ua, ub, va, vb, tag)
            terms[tag] = edge_product(m, f, *ops, tag, self.mult_bits, gain=gain)
            if uses_conductance(f):
                m.d.comb += [getattr(self, f"cond_a_{tag}").eq(end_conductance(f, ua, gain)),
                             getattr(self, f"cond_b_{tag}").eq(end_conductance(f, ub, gain))]
        (s_f, sat_f), (s_c, sat_c) = terms["f"], terms["c"]
        d_f, d_c = self.va_f - self.vb_f, self.va_c - self.vb_c
        if f.noise_mul:
            d_f, d_c = d_f + self.n_f, d_c + self.n_c
        g_next, dg_clipped = gate_step(m, f, self.g, d_f, d_c, mult_bits=self.mult_bits,
                                       offset=self.offset if "offset" in ports else 0)
        learning = self.learn & ~self.frozen if "frozen" in ports else self.learn
        m.d.comb += [
            self.s_f.eq(s_f), self.s_c.eq(s_c), self.sat_term.eq(sat_f | sat_c),
            self.g_next.eq(Mux(learning, g_next, self.g)),
            self.sat_dg.eq(learning & dg_clipped),
        ]
        return m


class NodeCell(wiring.Component):
    """Combinational node cell of a settling node, for both networks.

    Parameters
    ----------
    fmt : clln.formats.Formats
    acc_width : int
        Width of the exact sums of edge terms at this node.
    cond_width : int, optional
        Width of the exact sums of end conductances at this node (unsigned); with
        ``fmt.relax`` ``jacobi`` or ``momentum`` the cell has the inputs ``cond_f``,
        ``cond_c`` (required then). ``momentum`` adds the velocities ``m_f``, ``m_c`` and
        their next values ``m_f_next``, ``m_c_next``.
    """

    def __init__(self, fmt, acc_width, cond_width=None):
        self.fmt = fmt
        v = node_state_shape(fmt)          # node states H (V with no extra bits)
        members = {
            "v_f": In(v), "v_c": In(v),
            "acc_f": In(signed(acc_width)), "acc_c": In(signed(acc_width)),
            "v_f_next": Out(v), "v_c_next": Out(v), "flags": Out(SatFlags.size),
        }
        if uses_conductance(fmt):
            if cond_width is None:
                raise ValueError(f"a {fmt.relax} node cell needs cond_width")
            members.update(cond_f=In(unsigned(cond_width)), cond_c=In(unsigned(cond_width)))
        if fmt.relax == "momentum":
            vel = velocity_shape(fmt)
            members.update(m_f=In(vel), m_c=In(vel), m_f_next=Out(vel), m_c_next=Out(vel))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        flags = []
        for tag in ("f", "c"):
            h = getattr(self, f"v_{tag}")
            cond = getattr(self, f"cond_{tag}") if uses_conductance(f) else None
            vel = getattr(self, f"m_{tag}") if f.relax == "momentum" else None
            h_next, net_flags = node_step(m, f, h, getattr(self, f"acc_{tag}"), tag, cond,
                                          vel=vel)
            m.d.comb += getattr(self, f"v_{tag}_next").eq(h_next)
            if vel is not None:
                m.d.comb += getattr(self, f"m_{tag}_next").eq(node_velocity(m, f, h, h_next,
                                                                            tag))
            flags.append(net_flags)
        m.d.comb += self.flags.eq(flags[0] | flags[1])
        return m
