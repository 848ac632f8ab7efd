"""The clln fabric: a twin (free + clamped) transistor network in Amaranth.

One tick of ``docs/semantics.md`` per ``cycles_per_tick`` clock cycles while ``run`` is
high. With ``[fabric] edge_units = 0`` every edge has its own cell and a tick takes one
cycle; with ``edge_units = P`` the P edge cells take turns over ``ceil(E / P)`` cycles,
node accumulators collect the edge terms, and the node state commits on the last cycle
of the tick (so the bits are the same as the parallel fabric's).

This module imports only the config and the number formats, never golden models or
board code.
"""

import math
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from clln.formats import Formats

__all__ = ["EdgeCell", "NodeCell", "Fabric", "make_fabric", "fabric_shape", "const_mul",
           "product_operand_bits", "overdrive", "edge_term", "edge_operands",
           "edge_product", "edge_raw_product", "edge_finish", "gate_operands",
           "gate_product", "gate_finish", "gate_scale", "gate_round", "gate_step",
           "gate_delta", "gate_apply", "gate_clamp", "node_sum", "node_step", "node_delta",
           "node_scale", "node_round", "node_apply", "output_value", "clamp_errors",
           "clamp_scale", "clamp_finish", "split_mul", "bounded_usum_bits", "SAT_TERM",
           "SAT_ACC", "SAT_DV", "SAT_V", "SAT_DG", "TICKS_BITS", "round_shift", "saturate",
           "mux_tree"]

#: Bits of the sticky saturation flags (as in ``docs/semantics.md``).
SAT_TERM, SAT_ACC, SAT_DV, SAT_V, SAT_DG = 1, 2, 4, 8, 16
#: Width of the tick counter (wraps).
TICKS_BITS = 32


def round_shift(x, s):
    """``x * 2**-s`` rounded to nearest, halves toward +infinity (an expression)."""
    if s == 0:
        return x
    return (x + _half(s)) >> s


def _half(s):
    """The rounding constant of a shift by ``s`` (see :func:`round_shift`)."""
    return 1 << (s - 1) if s else 0


def saturate(m, x, bits, name):
    """Clip expression ``x`` to ``signed(bits)``.

    Returns
    -------
    value : Signal
        The clipped value, ``signed(bits)``.
    clipped : Signal
        High when ``x`` was out of range.
    """
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    exact = _wire(m, x, f"{name}_exact")
    value = Signal(signed(bits), name=name)
    clipped = Signal(name=f"{name}_sat")
    if len(exact) <= bits or not exact.shape().signed:
        over, under = exact > hi, exact < lo
    else:
        # out of range <=> the bits from bits - 1 up are not all copies of the sign: a
        # few LUTs instead of two comparators as wide as ``exact``
        top, sign = exact[bits - 1:], exact[-1]
        over, under = ~sign & top.any(), sign & ~top.all()
    m.d.comb += [value.eq(Mux(over, hi, Mux(under, lo, exact))), clipped.eq(over | under)]
    return value, clipped


def _wire(m, x, name, shape=None):
    """A signal driven by ``x``, of ``x``'s own (exact) shape unless ``shape`` is given:
    computes ``x`` once."""
    x = Value.cast(x)
    w = Signal(x.shape() if shape is None else shape, name=name)
    m.d.comb += w.eq(x)
    return w


def _select(sel, cases):
    """``cases[sel]`` as a chain of ``Mux`` (0 for a missing case; no ``sel``: the only case)."""
    if sel is None:
        (value,) = cases.values()
        return value
    out = 0
    for c, value in cases.items():
        out = Mux(sel == c, value, out)
    return out


def mux_tree(sel, values):
    """``values[sel]`` as a balanced tree of ``Mux`` on the bits of ``sel``."""
    values, bit = list(values), 0
    while len(values) > 1:
        values = [Mux(sel[bit], values[i + 1], values[i]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
        bit += 1
    return values[0]


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
    return _tree_sum(signed_terms)


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
    for k, ((p, mi), sc) in enumerate(zip(outputs, scaled)):
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


def _tree_sum(terms):
    """Balanced adder tree of expressions (exact: Amaranth widens every sum)."""
    terms = list(terms)
    if not terms:
        return 0
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def const_mul(x, k, plus=0):
    """``x * k + plus`` for constants ``k, plus >= 0`` as shifts and adds (keeps DSP blocks
    free); ``plus`` is one more term of the adder tree, which makes a rounding constant
    cost no adder in a row."""
    x = Value.cast(x)
    terms = [x << i for i in range(int(k).bit_length()) if (int(k) >> i) & 1]
    if plus:
        terms.append(Const(plus))
    return _tree_sum(terms) if terms else Const(0, 1)


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
    return {"term": (u + 1, u + 1), "learn": (f.v_bits + 2, f.v_bits + 2)}


def overdrive(m, f, g, vt, name="ov"):
    """``round_shift(g, gate_shift) - vt`` of an edge (a signal). A constant ``vt`` costs
    no adder: ``floor(a / 2**s) - vt == floor((a - vt 2**s) / 2**s)`` for an integer
    ``vt``."""
    ov = Signal(signed(_overdrive_bits(f)), name=name)
    s = f.gate_shift
    if isinstance(vt, int):
        m.d.comb += ov.eq((g + (_half(s) - (vt << s))) >> s)
    else:
        m.d.comb += ov.eq(round_shift(g, s) - vt)
    return ov


def edge_operands(m, f, ov, va, vb, tag):
    """The factors of an edge term: ``(u_b - u_a, u_b + u_a, va - vb)`` (signals)."""
    u_shape = signed(max(len(ov), f.v_bits) + 1)
    ua, ub = Signal(u_shape, name=f"ua_{tag}"), Signal(u_shape, name=f"ub_{tag}")
    da, db = _wire(m, ov - va, f"da_{tag}"), _wire(m, ov - vb, f"db_{tag}")
    m.d.comb += [ua.eq(Mux(da < 0, 0, da)), ub.eq(Mux(db < 0, 0, db))]
    return (_wire(m, ub - ua, f"udiff_{tag}"), _wire(m, ub + ua, f"usum_{tag}"),
            _wire(m, va - vb, f"vdiff_{tag}"))


def split_mul(a, b, mult_bits):
    """``a * b`` exactly, with one ``mult_bits x mult_bits`` signed multiplication.

    The low bits of an operand wider than ``mult_bits`` become shift-and-add rows in logic:
    with ``a = a_hi 2**ka + a_lo`` and ``b = b_hi 2**kb + b_lo`` (``a_lo``, ``b_lo``
    unsigned), ``a b = a_hi b_hi 2**(ka+kb) + a_hi b_lo 2**ka + a_lo b``. So each product
    takes one multiplier block, whatever its operands' widths. ``mult_bits=None``: a plain
    ``a * b`` (synthesis splits it over as many blocks as it needs).
    """
    a, b = Value.cast(a), Value.cast(b)
    if mult_bits is None:
        return a * b
    # an unsigned operand gains a 0 sign bit, so that its top bit is not read as a sign
    a, b = (x if x.shape().signed else Cat(x, Const(0, 1)).as_signed() for x in (a, b))
    ka, kb = max(0, len(a) - mult_bits), max(0, len(b) - mult_bits)
    a_hi, b_hi = a[ka:].as_signed(), b[kb:].as_signed()
    rows = [Mux(b[i], a_hi << (ka + i), 0) for i in range(kb)]
    rows += [Mux(a[i], b << i, 0) for i in range(ka)]
    # the block's product last: the rows add up while the block multiplies
    return _tree_sum(rows + [(a_hi * b_hi) << (ka + kb)])


def bounded_usum_bits(f):
    """Signed bits that hold ``u_b + u_a`` while every gate is within ``[gate_min,
    gate_max]``: the overdrive is then at most ``gate_max - min(vt)`` and a node voltage
    at least ``-2**(v_bits - 1)`` LSBs."""
    ov_max = round_shift(f.gate_max_q, f.gate_shift) - int(np.min(f.vt_q))
    u_max = max(ov_max + (1 << (f.v_bits - 1)), 0)
    return (2 * u_max).bit_length() + 1


def edge_product(m, f, udiff, usum, vdiff, tag, mult_bits=None, usum_bits=None):
    """``sat(udiff * usum + leak_q * vdiff, term_bits)``: the edge term from its factors
    (:func:`edge_raw_product` then :func:`edge_finish`).

    Returns
    -------
    (value, clipped) : (Signal, Signal)
    """
    return edge_finish(m, f, edge_raw_product(udiff, usum, f, mult_bits, usum_bits), vdiff,
                       tag)


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


def edge_finish(m, f, product, vdiff, tag):
    """``sat(product + leak_q * vdiff, term_bits)`` and whether it saturated."""
    return saturate(m, product + const_mul(vdiff, f.leak_q), f.term_bits, f"s_{tag}")


def edge_term(m, f, ov, va, vb, tag, mult_bits=None):
    """Current a -> b of one transistor, ``u_b**2 - u_a**2 + leak_q (va - vb)``, saturated.

    Returns
    -------
    (value, clipped) : (Signal, Signal)
    """
    return edge_product(m, f, *edge_operands(m, f, ov, va, vb, tag), tag, mult_bits)


def gate_operands(m, f, d_f, d_c, tag="dg"):
    """The factors of a gate step: ``(d_f - d_c, d_f + d_c)`` (signals)."""
    d_f, d_c = _wire(m, d_f, f"{tag}_df"), _wire(m, d_c, f"{tag}_dc")
    return _wire(m, d_f - d_c, f"{tag}_minus"), _wire(m, d_f + d_c, f"{tag}_plus")


def gate_product(m, f, minus, plus, tag="dg", mult_bits=None):
    """``sat(round_shift(minus * plus * lr_mul, learn_shift), dg_bits)`` and whether it
    saturated (``mult_bits``: see :func:`split_mul`)."""
    return gate_finish(m, f, split_mul(minus, plus, mult_bits), tag)


def gate_finish(m, f, product, tag="dg"):
    """``sat(round_shift(product * lr_mul, learn_shift), dg_bits)`` and whether it
    saturated (:func:`gate_scale` then :func:`gate_round`)."""
    return gate_round(m, f, gate_scale(f, product), tag)


def gate_scale(f, product):
    """``product * lr_mul`` plus the rounding constant of :func:`gate_round` (an expression
    of shifts and adds)."""
    return const_mul(product, f.lr_mul, _half(f.learn_shift))


def gate_round(m, f, scaled, tag="dg"):
    """``sat(scaled >> learn_shift, dg_bits)`` (rounded: :func:`gate_scale` added the
    constant) and whether it saturated."""
    return saturate(m, scaled >> f.learn_shift, f.dg_bits, tag)


def gate_delta(m, f, d_f, d_c, tag="dg", mult_bits=None):
    """Gate step of one learning tick from the free and clamped drops ``d_f``, ``d_c``.

    Returns
    -------
    (dg, clipped) : (Signal, Signal)
        ``sat(round_shift((d_f - d_c)(d_f + d_c) lr_mul, learn_shift), dg_bits)`` and
        whether it saturated.
    """
    return gate_product(m, f, *gate_operands(m, f, d_f, d_c, tag), tag, mult_bits)


def gate_apply(m, f, g, dg, tag="dg"):
    """``g + dg`` kept within ``[gate_min, gate_max]`` (the learning rule's bounds)."""
    return gate_clamp(f, _wire(m, g + dg, f"{tag}_sum"))


def gate_clamp(f, g):
    """``g`` kept within ``[gate_min, gate_max]`` (an expression)."""
    return Mux(g < f.gate_min_q, f.gate_min_q, Mux(g > f.gate_max_q, f.gate_max_q, g))


def gate_step(m, f, g, d_f, d_c, tag="dg", mult_bits=None):
    """Gate after one learning tick: :func:`gate_delta` then :func:`gate_apply`.

    Returns
    -------
    (g_next, clipped) : (Value, Signal)
        The gate kept within ``[gate_min, gate_max]``; ``clipped`` when ``dg`` saturated.
    """
    dg, clipped = gate_delta(m, f, d_f, d_c, tag, mult_bits)
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
    return dv, Cat(Const(0, 1), s1, s2, Const(0, 2))


def node_scale(m, f, acc, tag):
    """``sat(acc, acc_bits) * kappa_mul`` plus the rounding constant of :func:`node_round`
    (an expression) and whether ``acc`` saturated."""
    a, clipped = saturate(m, acc, f.acc_bits, f"acc_{tag}")
    return const_mul(a, f.kappa_mul, _half(f.node_shift)), clipped


def node_round(m, f, scaled, tag):
    """``sat(scaled >> node_shift, dv_bits)`` (rounded: :func:`node_scale` added the
    constant) and whether it saturated."""
    return saturate(m, scaled >> f.node_shift, f.dv_bits, f"dv_{tag}")


def node_apply(m, f, v, dv, tag):
    """``v + dv`` saturated, and its bit of the saturation flags (a 5-bit value)."""
    vn, s3 = saturate(m, v + dv, f.v_bits, f"v_{tag}")
    return vn, Cat(Const(0, 3), s3, Const(0, 1))


def node_step(m, f, v, acc, tag):
    """New voltage of a settling node, ``v + kappa * acc`` rounded and saturated.

    Returns
    -------
    (v_next, flags) : (Signal, Value)
        ``flags`` has the acc, dv and v bits of the saturation flags.
    """
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
    the free and the clamped transistor; ``g_next`` is the gate after this tick.
    """

    def __init__(self, fmt, mult_bits=None):
        self.fmt, self.mult_bits = fmt, mult_bits
        v, g = signed(fmt.v_bits), signed(fmt.g_bits)
        super().__init__({
            "va_f": In(v), "vb_f": In(v), "va_c": In(v), "vb_c": In(v),
            "g": In(g), "vt": In(v), "learn": In(1),
            "s_f": Out(signed(fmt.term_bits)), "s_c": Out(signed(fmt.term_bits)),
            "g_next": Out(g), "sat_term": Out(1), "sat_dg": Out(1),
        })

    def elaborate(self, platform):
        f = self.fmt
        m = Module()
        ov = overdrive(m, f, self.g, self.vt)
        s_f, sat_f = edge_term(m, f, ov, self.va_f, self.vb_f, "f", self.mult_bits)
        s_c, sat_c = edge_term(m, f, ov, self.va_c, self.vb_c, "c", self.mult_bits)
        g_next, dg_clipped = gate_step(m, f, self.g, self.va_f - self.vb_f,
                                       self.va_c - self.vb_c, mult_bits=self.mult_bits)
        m.d.comb += [
            self.s_f.eq(s_f), self.s_c.eq(s_c), self.sat_term.eq(sat_f | sat_c),
            self.g_next.eq(Mux(self.learn, g_next, self.g)),
            self.sat_dg.eq(self.learn & dg_clipped),
        ]
        return m


class NodeCell(wiring.Component):
    """Combinational node cell of a settling node, for both networks.

    Parameters
    ----------
    fmt : clln.formats.Formats
    acc_width : int
        Width of the exact sums of edge terms at this node.
    """

    def __init__(self, fmt, acc_width):
        self.fmt = fmt
        v = signed(fmt.v_bits)
        super().__init__({
            "v_f": In(v), "v_c": In(v),
            "acc_f": In(signed(acc_width)), "acc_c": In(signed(acc_width)),
            "v_f_next": Out(v), "v_c_next": Out(v), "flags": Out(5),
        })

    def elaborate(self, platform):
        m = Module()
        vf, flags_f = node_step(m, self.fmt, self.v_f, self.acc_f, "f")
        vc, flags_c = node_step(m, self.fmt, self.v_c, self.acc_c, "c")
        m.d.comb += [self.v_f_next.eq(vf), self.v_c_next.eq(vc),
                     self.flags.eq(flags_f | flags_c)]
        return m


class Fabric(wiring.Component):
    """The whole fabric of one network pair (one seed).

    Parameters
    ----------
    cfg : clln.config.Config
    fmt : clln.formats.Formats, optional
        Defaults to ``Formats.from_config(cfg)``.
    seed : int, optional
        Seed of the initial gates (reset values); defaults to ``learning.seed``.
    mult_bits : int, optional
        Operand bits of the target's multiplier blocks: each variable product then takes
        one block (:func:`split_mul`). None: plain products.

    Attributes
    ----------
    cycles_per_tick : int
        ``ceil(E / edge_units)``, 1 when every edge has its own cell.
    edge_units : int
        Number of edge cells.
    driven_nodes : list of int
        Node of every drive register (sample address i < len(driven_nodes)).

    Notes
    -----
    Ports (``sync`` domain, so ``clk`` and ``rst`` in Verilog):

    - ``run``: tick while high (a folded tick pauses when low);
    - ``learn``: learning on for the tick (sampled on the tick's first cycle);
    - ``sample_we/addr/data``: write a drive value (addresses ``0 .. D-1``, in
      ``cfg.driven_nodes()`` order) or a target (addresses ``D .. D+K-1``); drive and
      target registers are read when the tick commits;
    - ``gate_we/addr/data``: overwrite a gate (wins over a same-cycle update);
    - ``gate_raddr/rdata``: read a gate; ``gate_rdata`` is the gate at ``gate_raddr``
      one cycle earlier (a registered read, as from block RAM);
    - ``clear_flags``: clear the sticky saturation flags;
    - ``v_free``, ``v_clamped``, ``gates``: flat arrays of the state, element 0 in the
      low bits; ``outputs``: free outputs (``VF[p]`` or ``VF[p] - VF[m]``);
    - ``ticks``: committed ticks; ``tick_done``: high in the cycle a tick commits;
      ``sat_flags``/``saturated``: sticky saturation flags.
    """

    #: Networks the fabric holds (:class:`~.streams.StreamFabric` interleaves several).
    streams = 1
    #: Cycles from a ``gate_raddr`` to its gate on ``gate_rdata``.
    gate_read_latency = 1

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None):
        self.cfg = cfg
        self.mult_bits = mult_bits
        self.fmt = fmt = fmt if fmt is not None else Formats.from_config(cfg)
        net = cfg.network
        self.n_nodes, self.n_edges = net.n_nodes, net.n_edges
        self.edge_units, self.cycles_per_tick = _folded_shape(cfg)
        self.driven_nodes = list(cfg.driven_nodes())
        self.n_outputs = len(cfg.io.outputs)
        seed = cfg.learning.seed if seed is None else seed
        self.gate_init = fmt.volts_to_g(cfg.learning.initial_gates(self.n_edges, seed))
        self.drive_init = [int(fmt.volts_to_v(0.0)) for _ in cfg.io.inputs] + \
            [int(fmt.volts_to_v(v)) for _, v in cfg.io.rails]
        self.n_samples = len(self.driven_nodes) + self.n_outputs
        degree = int(net.degrees().max())
        self.acc_width = fmt.term_bits + max(1, math.ceil(math.log2(degree))) + 1
        super().__init__(self._members())

    def _members(self):
        """The signature's members (a dict)."""
        v, g = signed(self.fmt.v_bits), signed(self.fmt.g_bits)
        return {
            **self._control_members(),
            "v_free": Out(data.ArrayLayout(v, self.n_nodes)),
            "v_clamped": Out(data.ArrayLayout(v, self.n_nodes)),
            "gates": Out(data.ArrayLayout(g, self.n_edges)),
        }

    def _control_members(self):
        """Members every fabric has: run, samples, gate writes and reads, status."""
        v, g = signed(self.fmt.v_bits), signed(self.fmt.g_bits)
        return {
            "run": In(1),
            "learn": In(1),
            "sample_we": In(1),
            "sample_addr": In(range(max(self.n_samples, 2))),
            "sample_data": In(v),
            "gate_we": In(1),
            "gate_addr": In(range(max(self.streams * self.n_edges, 2))),
            "gate_data": In(g),
            "gate_raddr": In(range(max(self.streams * self.n_edges, 2))),
            "gate_rdata": Out(g),
            "clear_flags": In(1),
            "outputs": Out(data.ArrayLayout(signed(self.fmt.v_bits + 1),
                                            self.streams * self.n_outputs)),
            "ticks": Out(TICKS_BITS),
            "tick_done": Out(1),
            "sat_flags": Out(5),
            "saturated": Out(1),
        }

    def _state(self, m):
        """The state registers, plus those of :meth:`_io_registers`."""
        f = self.fmt
        N, E = self.n_nodes, self.n_edges
        return SimpleNamespace(
            vf=[Signal(signed(f.v_bits), name=f"vf{n}") for n in range(N)],
            vc=[Signal(signed(f.v_bits), name=f"vc{n}") for n in range(N)],
            g=[Signal(signed(f.g_bits), name=f"g{e}", init=int(self.gate_init[e]))
               for e in range(E)],
            **self._io_registers())

    def _io_registers(self):
        """Drive and target registers, sticky flags and the tick counter (a dict)."""
        f = self.fmt
        return dict(
            drive=[Signal(signed(f.v_bits), name=f"drive{i}", init=self.drive_init[i])
                   for i in range(len(self.driven_nodes))],
            target=[Signal(signed(f.v_bits), name=f"target{k}")
                    for k in range(self.n_outputs)],
            flags=Signal(5), ticks=Signal(TICKS_BITS))

    def _clamp(self, m, st, vc_next):
        """Override the clamped outputs in ``vc_next`` from the free outputs at t.

        ``st.vf`` maps (at least) every output node to its free voltage at t, and
        ``vc_next`` is a list or dict indexed by node.

        Returns
        -------
        (flags, outputs) : (list of Signal, list of Value)
            Saturation of each clamped value; the free output of each output.
        """
        outputs = self.cfg.io.outputs
        errors = clamp_errors(outputs, st.target, st.vf)
        scaled = [clamp_scale(self.fmt, err) for err in errors]
        clamp_flags = clamp_finish(m, self.fmt, outputs, st.vf, scaled, vc_next)
        out_values = [output_value(st.vf, p, mi) for p, mi in outputs]
        return clamp_flags, out_values

    def _finish(self, m, st, commit, tick_flags, vf_next, vc_next, out_values):
        """Commit, sticky flags, controller writes and readback (shared by every fabric).

        ``tick_flags`` are ORed into the sticky flags on every running cycle; on
        ``commit`` the node state takes ``vf_next``/``vc_next``.
        """
        N, E = self.n_nodes, self.n_edges
        with m.If(commit):
            m.d.sync += [st.vf[n].eq(vf_next[n]) for n in range(N)]
            m.d.sync += [st.vc[n].eq(vc_next[n]) for n in range(N)]
        self._status_and_samples(m, st, commit, tick_flags, out_values)

        # Controller writes (after the updates: a write wins).
        with m.If(self.gate_we):
            with m.Switch(self.gate_addr):
                for e in range(E):
                    with m.Case(e):
                        m.d.sync += st.g[e].eq(self.gate_data)

        # Readback.
        m.d.sync += self.gate_rdata.eq(mux_tree(self.gate_raddr, st.g))
        m.d.comb += [self.v_free[n].eq(st.vf[n]) for n in range(N)]
        m.d.comb += [self.v_clamped[n].eq(st.vc[n]) for n in range(N)]
        m.d.comb += [self.gates[e].eq(st.g[e]) for e in range(E)]

    def _status_and_samples(self, m, st, commit, tick_flags, out_values, run=None):
        """Sticky flags, tick counter, sample writes and the output/status ports.

        ``tick_flags`` are ORed into the sticky flags on every cycle of ``run`` (default
        the ``run`` port).
        """
        with m.If(self.run if run is None else run):
            m.d.sync += st.flags.eq(st.flags | tick_flags)
        with m.If(self.clear_flags):
            m.d.sync += st.flags.eq(0)
        with m.If(commit):
            m.d.sync += st.ticks.eq(st.ticks + 1)
        with m.If(self.sample_we):           # after the commit: a write wins
            with m.Switch(self.sample_addr):
                for i, reg in enumerate(st.drive + st.target):
                    with m.Case(i):
                        m.d.sync += reg.eq(self.sample_data)
        m.d.comb += [self.outputs[k].eq(o) for k, o in enumerate(out_values)]
        m.d.comb += [self.ticks.eq(st.ticks), self.tick_done.eq(commit),
                     self.sat_flags.eq(st.flags), self.saturated.eq(st.flags.any())]

    def elaborate(self, platform):
        f, cfg = self.fmt, self.cfg
        m = Module()
        N, E, P, C = self.n_nodes, self.n_edges, self.edge_units, self.cycles_per_tick
        edges = np.asarray(cfg.network.edges)
        st = self._state(m)
        vf, vc, g = st.vf, st.vc, st.g

        # Sequencing: phase c of C handles edges c*P .. c*P+P-1.
        if C > 1:
            phase = Signal(range(C))
            learn_q = Signal()
            learn = Mux(phase == 0, self.learn, learn_q)
            last = phase == C - 1
            with m.If(self.run):
                m.d.sync += phase.eq(Mux(last, 0, phase + 1))
                with m.If(phase == 0):
                    m.d.sync += learn_q.eq(self.learn)
        else:
            learn, last = self.learn, 1
        commit = Signal()
        m.d.comb += commit.eq(self.run & last)

        # Edge cells; unit u in phase c works on edge c*P + u.
        cells = []
        term_flags, dg_flags = [], []
        for u in range(P):
            cell = EdgeCell(f, self.mult_bits)
            m.submodules[f"edge{u}"] = cell
            cells.append(cell)
            my_edges = [(c, c * P + u) for c in range(C) if c * P + u < E]

            # Multiplexers are Mux chains (continuous assignments in Verilog): a comb
            # Switch becomes an ``always @*`` that Icarus may never run when its inputs
            # do not change after time 0.
            sources = [
                (cell.va_f, lambda e: vf[edges[e][0]]), (cell.vb_f, lambda e: vf[edges[e][1]]),
                (cell.va_c, lambda e: vc[edges[e][0]]), (cell.vb_c, lambda e: vc[edges[e][1]]),
                (cell.g, lambda e: g[e]), (cell.vt, lambda e: int(f.vt_q[e])),
            ]
            for port, source in sources:
                m.d.comb += port.eq(_select(phase if C > 1 else None,
                                            {c: source(e) for c, e in my_edges}))
            m.d.comb += cell.learn.eq(learn)
            if C == 1:
                valid = 1
            else:
                valid = Signal(name=f"valid{u}")
                m.d.comb += valid.eq(_select(phase, {c: 1 for c, _ in my_edges}))
            term_flags.append(cell.sat_term & valid)
            dg_flags.append(cell.sat_dg & valid)
            with m.If(self.run):
                if C == 1:
                    m.d.sync += g[my_edges[0][1]].eq(cell.g_next)
                else:
                    with m.Switch(phase):
                        for c, e in my_edges:
                            with m.Case(c):
                                m.d.sync += g[e].eq(cell.g_next)

        # Node sums: signed edge terms of the current phase, plus the accumulators.
        def phase_sum(n, c, tag):
            return node_sum(edges, n, {c * P + u: cells[u].s_f if tag == "f" else cells[u].s_c
                                       for u in range(P) if c * P + u < E})

        driven_index = {n: i for i, n in enumerate(self.driven_nodes)}
        node_flags = []
        vf_next, vc_next = list(vf), list(vc)
        for n in range(N):
            if n in driven_index:
                vf_next[n] = vc_next[n] = st.drive[driven_index[n]]
                continue
            sums = []
            for tag in ("f", "c"):
                total = Signal(signed(self.acc_width), name=f"acc{tag}{n}")
                if C == 1:
                    m.d.comb += total.eq(phase_sum(n, 0, tag))
                else:
                    part = Signal(signed(self.acc_width), name=f"part{tag}{n}")
                    acc = Signal(signed(self.acc_width), name=f"accq{tag}{n}")
                    m.d.comb += part.eq(_select(phase, {c: phase_sum(n, c, tag)
                                                        for c in range(C)}))
                    m.d.comb += total.eq(acc + part)
                    with m.If(self.run):
                        m.d.sync += acc.eq(Mux(last, 0, total))
                sums.append(total)
            cell = NodeCell(f, self.acc_width)
            m.submodules[f"node{n}"] = cell
            m.d.comb += [cell.v_f.eq(vf[n]), cell.v_c.eq(vc[n]),
                         cell.acc_f.eq(sums[0]), cell.acc_c.eq(sums[1])]
            vf_next[n], vc_next[n] = cell.v_f_next, cell.v_c_next
            node_flags.append(cell.flags)

        clamp_flags, out_values = self._clamp(m, st, vc_next)
        tick_flags = Signal(5)
        m.d.comb += tick_flags.eq(
            Cat(_bit(_or(term_flags)), Const(0, 3), _bit(_or(dg_flags)))
            | Mux(last, _or(node_flags)
                  | Cat(Const(0, 3), _bit(_or(clamp_flags)), Const(0, 1)), 0))
        self._finish(m, st, commit, tick_flags, vf_next, vc_next, out_values)
        return m


def fabric_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of the fabric ``cfg`` asks for, without building it.

    A tick is one network's: a fabric of ``cfg.fabric.streams`` networks completes that
    many ticks every ``cycles_per_tick`` cycles."""
    if cfg.fabric.streams > 1:
        return cfg.network.n_edges, cfg.fabric.streams
    if cfg.fabric.serial:
        from .serial import serial_cycles_per_tick
        return 1, serial_cycles_per_tick(cfg)
    return _folded_shape(cfg)


def _folded_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of :class:`Fabric` (edge cells taking turns)."""
    units = cfg.fabric.edge_units or cfg.network.n_edges
    return units, -(-cfg.network.n_edges // units)


def make_fabric(cfg, fmt=None, seed=None, mult_bits=None):
    """The fabric ``cfg`` asks for: :class:`Fabric`, the serial one (``[fabric] serial``)
    or the pipelined one of several networks (``[fabric] streams``)."""
    if cfg.fabric.streams > 1:
        from .streams import StreamFabric
        return StreamFabric(cfg, fmt, seed, mult_bits)
    if cfg.fabric.serial:
        from .serial import SerialFabric
        return SerialFabric(cfg, fmt, seed, mult_bits)
    return Fabric(cfg, fmt, seed, mult_bits)


def _or(values):
    """OR of a list of 1-bit or 5-bit values (0 when empty)."""
    out = 0
    for v in values:
        out = out | v
    return out



def _bit(value):
    """A 1-bit value (``0`` becomes ``Const(0, 1)``)."""
    return Const(0, 1) if isinstance(value, int) else value[0]
