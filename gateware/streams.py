"""The pipelined fabric: several independent networks interleaved, one tick per cycle.

A tick of a fully parallel fabric is one long combinational loop (node voltages ->
edge terms -> node sums -> new voltages), which no register can cut without changing
the dynamics. ``[fabric] streams = C`` instead cuts it with ``C - 1`` pipeline registers
and fills the pipeline with ``C`` independent networks (streams), as C-slow retiming
does: stream ``s`` starts from the gates of seed ``learning.seed + s``, and all streams see
the same drives, targets and learning switch. Every clock cycle one stream's tick enters
the pipeline and another's leaves it, so the fabric makes ``C`` ticks every ``C`` cycles
at a clock about ``C`` times faster than the one-cycle tick's; each stream's bits are
those of :class:`~.fabric.Fabric` (``docs/semantics.md``) for its seed.

The state of every stream (node voltages of both networks, gates) rests in a bank of
registers between its ticks; a tick reads its stream's bank and writes it back ``C``
cycles later.
"""

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data
from amaranth.lib.wiring import Out

from .fabric import (Fabric, _bit, _or, _wire, bounded_usum_bits, edge_finish,
                     edge_operands, edge_raw_product, gate_apply, gate_clamp, gate_finish,
                     gate_operands, mux_tree, node_apply, node_delta, node_sum, overdrive,
                     split_mul, SAT_DG, SAT_TERM)

__all__ = ["StreamFabric", "CUTS", "pipeline_cuts"]

#: Places a pipeline register can cut the tick, in the order they are used: after the
#: edge terms and gate steps, after the node steps ``kappa * sum``, after the operands
#: (the factors of the products), after the products, after the node sums, after the
#: overdrives, after the read of the stream's state. With 6 streams the stages are of
#: similar length; more cut the first one.
CUTS = ("terms", "steps", "operands", "products", "sums", "overdrive", "state")


def pipeline_cuts(streams):
    """The cuts (a set of names from :data:`CUTS`) of a fabric of ``streams`` networks."""
    if not 1 <= streams <= len(CUTS) + 1:
        raise ValueError(f"a pipelined fabric has 1 to {len(CUTS) + 1} streams, got {streams}")
    return set(CUTS[:streams - 1])


class StreamFabric(Fabric):
    """``cfg.fabric.streams`` networks in one pipelined, fully parallel fabric.

    Parameters are those of :class:`~.fabric.Fabric`; ``seed`` is stream 0's.

    Attributes
    ----------
    streams : int
        Number of networks, ``C``; also the pipeline's depth and ``cycles_per_tick``.
    seeds : list of int
        Seed of each stream's initial gates.

    Notes
    -----
    The ports are those of :class:`~.fabric.Fabric`, for ``C`` networks:

    - ``run``/``learn``: sampled when a round begins; a round issues one tick of every
      stream, stream ``s`` in its ``s``-th cycle, and always completes. ``tick_done`` is
      high in a round's last cycle and ``ticks`` counts rounds (ticks of each stream).
    - ``busy``: high while a tick is in the pipeline (and for the cycle after its last
      write, while ``outputs`` follow). Drive and target registers are read by the ticks
      in flight, so change them (and read ``outputs`` or the state) only while ``busy``
      is low.
    - ``gate_addr``/``gate_raddr`` address ``s * E + e``; ``outputs`` has ``s * K + k``;
      ``v_free``, ``v_clamped`` and ``gates`` hold stream after stream. A gate write wins
      over a tick writing back the same stream; it is kept within ``[gate_min,
      gate_max]``, as learning keeps gates, so that every gate always is (which bounds
      the edge terms' factors, see ``bounded_usum_bits``; the protocol refuses other
      gates anyway).
    - ``sat_flags``: sticky flags of all streams together.
    """

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None):
        self.streams = cfg.fabric.streams
        self.cuts = pipeline_cuts(self.streams)
        super().__init__(cfg, fmt, seed, mult_bits)
        seed = cfg.learning.seed if seed is None else seed
        self.seeds = [seed + s for s in range(self.streams)]
        self.stream_gate_init = [self.fmt.volts_to_g(cfg.learning.initial_gates(self.n_edges, s))
                                 for s in self.seeds]
        self.edge_units, self.cycles_per_tick = self.n_edges, self.streams

    def _members(self):
        v, g = signed(self.fmt.v_bits), signed(self.fmt.g_bits)
        C, N, E = self.streams, self.n_nodes, self.n_edges
        return {
            **self._control_members(),
            "busy": Out(1),
            "v_free": Out(data.ArrayLayout(v, C * N)),
            "v_clamped": Out(data.ArrayLayout(v, C * N)),
            "gates": Out(data.ArrayLayout(g, C * E)),
        }

    def elaborate(self, platform):
        f, cfg = self.fmt, self.cfg
        m = Module()
        C, N, E = self.streams, self.n_nodes, self.n_edges
        edges = [tuple(int(x) for x in e) for e in np.asarray(cfg.network.edges)]
        io = SimpleNamespace(**self._io_registers())
        v_shape, g_shape = signed(f.v_bits), signed(f.g_bits)
        bank = [SimpleNamespace(
            vf=[Signal(v_shape, name=f"s{s}_vf{n}") for n in range(N)],
            vc=[Signal(v_shape, name=f"s{s}_vc{n}") for n in range(N)],
            g=[Signal(g_shape, name=f"s{s}_g{e}", init=int(self.stream_gate_init[s][e]))
               for e in range(E)]) for s in range(C)]

        # Issue: a round takes C cycles, stream s in cycle s.
        issue = Signal(range(C))
        learn_q = Signal()
        first = issue == 0
        valid = Signal()
        learn = Signal()
        m.d.comb += [valid.eq(Mux(first, self.run, 1)),
                     learn.eq(Mux(first, self.learn, learn_q))]
        with m.If(valid):
            m.d.sync += issue.eq(Mux(issue == C - 1, 0, issue + 1))
            with m.If(first):
                m.d.sync += learn_q.eq(self.learn)
        tick_done = Signal()
        m.d.comb += tick_done.eq(valid & (issue == C - 1))

        # Pipeline: ``carry`` travels with each tick; ``stage`` registers it at a cut.
        valids = []

        def stage(cut, values):
            """``values`` (a dict of values or lists of values), registered at ``cut``."""
            if cut not in self.cuts:
                return values
            out = {}
            for key, value in values.items():
                if isinstance(value, list):
                    out[key] = [_register(m, x, f"{cut}_{key}{i}") for i, x in enumerate(value)]
                else:
                    out[key] = _register(m, value, f"{cut}_{key}")
            valids.append(out["valid"])
            return out

        vf = [mux_tree(issue, [bank[s].vf[n] for s in range(C)]) for n in range(N)]
        vc = [mux_tree(issue, [bank[s].vc[n] for s in range(C)]) for n in range(N)]
        g = [mux_tree(issue, [bank[s].g[e] for s in range(C)]) for e in range(E)]
        vf = [_wire(m, x, f"i_vf{n}", v_shape) for n, x in enumerate(vf)]
        vc = [_wire(m, x, f"i_vc{n}", v_shape) for n, x in enumerate(vc)]
        g = [_wire(m, x, f"i_g{e}", g_shape) for e, x in enumerate(g)]
        state = ("valid", "stream", "learn", "vf", "vc", "g")
        x = stage("state", dict(zip(state, (valid, issue, learn, vf, vc, g))))

        # Overdrives; the clamped outputs come from the free outputs at t, so they are
        # computed here and carried.
        ov = [overdrive(m, f, x["g"][e], int(f.vt_q[e]), name=f"ov{e}") for e in range(E)]
        clamp = {}
        clamp_flags, _ = self._clamp(m, SimpleNamespace(vf=x["vf"], target=io.target), clamp)
        clamp_nodes = sorted(clamp)
        flags = Cat(Const(0, 3), _bit(_or(clamp_flags)), Const(0, 1))
        carry = {**{k: x[k] for k in state}, "clamp": [clamp[n] for n in clamp_nodes],
                 "flags": flags}
        state += ("clamp", "flags")
        x = stage("overdrive", {**carry, "ov": ov})

        # Operands.
        udiff_f, usum_f, vdiff_f, udiff_c, usum_c, vdiff_c, minus, plus = ([] for _ in range(8))
        for e, (a, b) in enumerate(edges):
            for tag, v, ud, us, vd in (("f", x["vf"], udiff_f, usum_f, vdiff_f),
                                       ("c", x["vc"], udiff_c, usum_c, vdiff_c)):
                o1, o2, o3 = edge_operands(m, f, x["ov"][e], v[a], v[b], f"{tag}{e}")
                ud.append(o1), us.append(o2), vd.append(o3)
            mi, pl = gate_operands(m, f, vdiff_f[e], vdiff_c[e], f"dg{e}")
            minus.append(mi), plus.append(pl)
        x = stage("operands", {**{k: x[k] for k in state}, "udiff_f": udiff_f,
                               "usum_f": usum_f, "vdiff_f": vdiff_f, "udiff_c": udiff_c,
                               "usum_c": usum_c, "vdiff_c": vdiff_c, "minus": minus,
                               "plus": plus})

        # Products (a multiplier block each with ``mult_bits``), then the edge terms and
        # gate steps.
        usum_bits = bounded_usum_bits(f)
        products = {
            "p_f": [edge_raw_product(x["udiff_f"][e], x["usum_f"][e], f, self.mult_bits,
                                     usum_bits) for e in range(E)],
            "p_c": [edge_raw_product(x["udiff_c"][e], x["usum_c"][e], f, self.mult_bits,
                                     usum_bits) for e in range(E)],
            "q": [split_mul(x["minus"][e], x["plus"][e], self.mult_bits) for e in range(E)]}
        x = stage("products", {**{k: x[k] for k in state}, **products,
                               "vdiff_f": x["vdiff_f"], "vdiff_c": x["vdiff_c"]})
        s_f, s_c, dg, term_sat, dg_sat = [], [], [], [], []
        for e in range(E):
            t_f, sat_f = edge_finish(m, f, x["p_f"][e], x["vdiff_f"][e], f"f{e}")
            t_c, sat_c = edge_finish(m, f, x["p_c"][e], x["vdiff_c"][e], f"c{e}")
            d, sat_d = gate_finish(m, f, x["q"][e], f"dg{e}")
            s_f.append(t_f), s_c.append(t_c), dg.append(d)
            term_sat += [sat_f, sat_c]
            dg_sat.append(sat_d)
        flags = (x["flags"] | Mux(_or(term_sat), SAT_TERM, 0)
                 | Mux(x["learn"] & _or(dg_sat), SAT_DG, 0))
        carry = {k: x[k] for k in ("valid", "stream", "learn", "vf", "vc", "g", "clamp")}
        x = stage("terms", {**carry, "flags": flags, "s_f": s_f, "s_c": s_c, "dg": dg})

        # Node sums (exact) of the settling nodes.
        settling = [n for n in range(N) if n not in self.driven_nodes]
        acc = {(tag, n): _wire(m, node_sum(edges, n, dict(enumerate(x[f"s_{tag}"]))),
                               f"acc{tag}{n}", signed(self.acc_width))
               for tag in ("f", "c") for n in settling}
        carry = {k: x[k] for k in ("valid", "stream", "learn", "vf", "vc", "g", "clamp",
                                   "flags", "dg")}
        x = stage("sums", {**carry, "acc": [acc[key] for key in sorted(acc)]})
        acc = dict(zip(sorted(acc), x["acc"]))

        # Node steps.
        flags, dv = x["flags"], {}
        for key in sorted(acc):
            dv[key], fl = node_delta(m, f, acc[key], f"{key[0]}{key[1]}")
            flags = flags | fl
        carry = {k: x[k] for k in ("valid", "stream", "learn", "vf", "vc", "g", "clamp", "dg")}
        x = stage("steps", {**carry, "flags": flags, "dv": [dv[key] for key in sorted(dv)]})
        dv = dict(zip(sorted(dv), x["dv"]))

        # New state of the stream, written back to its bank.
        flags = x["flags"]
        vf_next, vc_next = {}, {}
        driven_index = {n: i for i, n in enumerate(self.driven_nodes)}
        for n in range(N):
            if n in driven_index:
                vf_next[n] = vc_next[n] = io.drive[driven_index[n]]
                continue
            vf_next[n], fl_f = node_apply(m, f, x["vf"][n], dv["f", n], f"f{n}")
            vc_next[n], fl_c = node_apply(m, f, x["vc"][n], dv["c", n], f"c{n}")
            flags = flags | fl_f | fl_c
        for n, value in zip(clamp_nodes, x["clamp"]):
            vc_next[n] = value
        g_next = [Mux(x["learn"], gate_apply(m, f, x["g"][e], x["dg"][e], f"dg{e}"), x["g"][e])
                  for e in range(E)]
        with m.If(x["valid"]):
            with m.Switch(x["stream"]):
                for s in range(C):
                    with m.Case(s):
                        m.d.sync += [bank[s].vf[n].eq(vf_next[n]) for n in range(N)]
                        m.d.sync += [bank[s].vc[n].eq(vc_next[n]) for n in range(N)]
                        m.d.sync += [bank[s].g[e].eq(g_next[e]) for e in range(E)]

        # Status, samples, outputs of every stream, registered from its bank (the
        # controller's error path then starts at a register): one cycle behind the bank,
        # so ``busy`` lasts a cycle longer.
        out_values = []
        for s in range(C):
            for k, (p, mi) in enumerate(cfg.io.outputs):
                reg = Signal(signed(f.v_bits + 1), name=f"s{s}_out{k}")
                m.d.sync += reg.eq(bank[s].vf[p] - bank[s].vf[mi] if mi >= 0
                                   else bank[s].vf[p])
                out_values.append(reg)
        self._status_and_samples(m, io, tick_done, flags, out_values, run=x["valid"])
        written = Signal()
        m.d.sync += written.eq(x["valid"])
        m.d.comb += self.busy.eq((issue != 0) | _or(valids) | written)

        # Gate writes (a write wins) and reads, stream-major.
        flat_g = [bank[s].g[e] for s in range(C) for e in range(E)]
        written_gate = _wire(m, gate_clamp(f, self.gate_data), "written_gate", g_shape)
        with m.If(self.gate_we):
            with m.Switch(self.gate_addr):
                for i, reg in enumerate(flat_g):
                    with m.Case(i):
                        m.d.sync += reg.eq(written_gate)
        m.d.sync += self.gate_rdata.eq(mux_tree(self.gate_raddr, flat_g))
        m.d.comb += [self.v_free[s * N + n].eq(bank[s].vf[n]) for s in range(C) for n in range(N)]
        m.d.comb += [self.v_clamped[s * N + n].eq(bank[s].vc[n])
                     for s in range(C) for n in range(N)]
        m.d.comb += [self.gates[i].eq(reg) for i, reg in enumerate(flat_g)]
        return m


def _register(m, x, name):
    """A register of ``x``'s shape that takes ``x`` every cycle (a pipeline stage)."""
    x = Value.cast(x)
    r = Signal(x.shape(), name=name)
    m.d.sync += r.eq(x)
    return r

