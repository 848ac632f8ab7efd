"""The parallel and folded fabric (:class:`Fabric`), base of the serial and pipelined ones.

One tick of ``docs/semantics.md`` per ``cycles_per_tick`` clock cycles while ``run`` is
high. With ``[fabric] edge_units = 0`` every edge has its own cell and a tick takes one
cycle; with ``edge_units = P`` the P edge cells take turns over ``ceil(E / P)`` cycles,
node accumulators collect the edge terms, and the node state commits on the last cycle
of the tick (so the bits are the same as the parallel fabric's).
"""

import math
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from clln.formats import Formats

from .arith import any_of, as_bit, mux_tree, select
from .cells import (
    TICKS_BITS,
    EdgeCell,
    NodeCell,
    clamp_errors,
    clamp_finish,
    clamp_scale,
    node_sum,
    output_value,
)


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
        self.edge_units, self.cycles_per_tick = folded_shape(cfg)
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
                m.d.comb += port.eq(select(phase if C > 1 else None,
                                            {c: source(e) for c, e in my_edges}))
            m.d.comb += cell.learn.eq(learn)
            if C == 1:
                valid = 1
            else:
                valid = Signal(name=f"valid{u}")
                m.d.comb += valid.eq(select(phase, {c: 1 for c, _ in my_edges}))
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
                    m.d.comb += part.eq(select(phase, {c: phase_sum(n, c, tag)
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
            Cat(as_bit(any_of(term_flags)), Const(0, 3), as_bit(any_of(dg_flags)))
            | Mux(last, any_of(node_flags)
                  | Cat(Const(0, 3), as_bit(any_of(clamp_flags)), Const(0, 1)), 0))
        self._finish(m, st, commit, tick_flags, vf_next, vc_next, out_values)
        return m


def folded_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of :class:`Fabric` (edge cells taking turns)."""
    units = cfg.fabric.edge_units or cfg.network.n_edges
    return units, -(-cfg.network.n_edges // units)

