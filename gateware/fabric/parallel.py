"""The parallel and folded fabric (:class:`Fabric`), base of the serial and pipelined ones.

One tick of ``docs/semantics.md`` per ``cycles_per_tick`` clock cycles while ``run`` is
high. With ``[fabric] edge_units = 0`` every edge has its own cell and a tick takes one
cycle; with ``edge_units = P`` the P edge cells take turns over ``ceil(E / P)`` cycles,
node accumulators collect the edge terms, and the node state commits on the last cycle
of the tick (so the bits are the same as the parallel fabric's). With ``[schedule] relax =
"jacobi"`` the edge cells also give both ends of their edge its conductance, which the
nodes sum (and accumulate) as they do the edge terms, for the shift-Jacobi node step;
``relax = "momentum"`` adds a velocity register beside every settling node's state.
"""

import math
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from clln.formats import Formats
from clln.nonideal import noise_states

from .arith import any_of, as_bit, mux_tree, select
from .cells import (
    EdgeCell,
    NodeCell,
    any_moved,
    clamp_errors,
    clamp_finish,
    clamp_scale,
    impairment_values,
    node_conductance,
    node_conductance_bits,
    node_state,
    node_state_shape,
    node_sum,
    node_voltage,
    noise_step,
    output_value,
    uses_conductance,
    velocity_shape,
)
from .ports import (
    TICKS_BITS,
    ControlSignature,
    GatePortSignature,
    SatFlags,
    StatusSignature,
    sat_bits,
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
    Members (``sync`` domain, so ``clk`` and ``rst`` in Verilog; a nested member is the
    Verilog port ``control__run`` etc.), the signatures of :mod:`.ports`:

    - ``control`` (:class:`~.ports.ControlSignature`): ``run``, tick while high (a folded
      tick pauses when low); ``learn``, learning on for the tick (sampled on the tick's
      first cycle); ``clear``, restore the power-up state (as the domain's reset does);
      ``sample_we/addr/data``, write a drive value (addresses ``0 .. D-1``, in
      ``cfg.driven_nodes()`` order) or a target (addresses ``D .. D+K-1``), read when
      the tick commits; ``tick_done``, high in the cycle a tick commits; ``moved``, in
      that cycle, 1 when the tick moves some node of either network (driven and clamped
      ones included) by more than ``still_lsb``; ``outputs``, the free outputs
      (``VF[p]`` or ``VF[p] - VF[m]``); ``busy`` (0 here);
    - ``gate`` (:class:`~.ports.GatePortSignature`): ``we/addr/data`` overwrite a gate
      (wins over a same-cycle update); ``rdata`` is the gate at ``raddr`` one cycle
      earlier (a registered read, as from block RAM);
    - ``status`` (:class:`~.ports.StatusSignature`): ``ticks``, committed ticks;
      ``sat_flags`` (:data:`~.ports.SatFlags`)/``saturated``, sticky saturation flags;
      ``clear_flags`` clears them;
    - ``v_free``, ``v_clamped``, ``gates``: flat arrays of the state, element 0 in the
      low bits.
    """

    #: Networks the fabric holds (:class:`~.streams.StreamFabric` interleaves several).
    streams = 1
    #: Cycles from a ``gate.raddr`` to its gate on ``gate.rdata``.
    gate_read_latency = 1

    #: The ``[schedule] relax`` values this fabric implements.
    RELAXATIONS = ("euler", "jacobi", "momentum")

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
        degrees = net.degrees()
        degree = int(degrees.max())
        self.acc_width = fmt.term_bits + max(1, math.ceil(math.log2(degree))) + 1
        #: Width of each node's exact sum of end conductances (``jacobi``, ``momentum``).
        self.cond_widths = [node_conductance_bits(fmt, d) for d in degrees]
        super().__init__(self._members())

    def _members(self):
        """The signature's members (a dict)."""
        v, g = signed(self.fmt.v_bits), signed(self.fmt.g_bits)
        return {
            **self._seam_members(),
            "v_free": Out(data.ArrayLayout(v, self.n_nodes)),
            "v_clamped": Out(data.ArrayLayout(v, self.n_nodes)),
            "gates": Out(data.ArrayLayout(g, self.n_edges)),
        }

    def _seam_members(self):
        """Members every fabric has (:mod:`.ports`): ``control``, ``gate``, ``status``."""
        f = self.fmt
        return {
            "control": In(ControlSignature(self.n_samples, f.v_bits,
                                           self.streams * self.n_outputs)),
            "gate": In(GatePortSignature(self.streams * self.n_edges, f.g_bits)),
            "status": Out(StatusSignature()),
        }

    def _state(self, m):
        """The state registers, plus those of :meth:`_io_registers`: node states ``hf``,
        ``hc`` (with ``node_extra_bits``) and their voltages ``vf``, ``vc`` (the top bits,
        the registers themselves without extra bits); under ``momentum`` the velocities
        ``mf``, ``mc`` of the settling nodes (None where a node is driven, or clamped in
        the clamped network: its velocity is 0)."""
        f = self.fmt
        N, E = self.n_nodes, self.n_edges
        hf = [Signal(node_state_shape(f), name=f"vf{n}") for n in range(N)]
        hc = [Signal(node_state_shape(f), name=f"vc{n}") for n in range(N)]
        mf, mc = [None] * N, [None] * N
        if f.relax == "momentum":
            driven = set(self.driven_nodes)
            clamped = {n for out in self.cfg.io.outputs for n in out if n >= 0}
            mf = [None if n in driven else Signal(velocity_shape(f), name=f"mf{n}")
                  for n in range(N)]
            mc = [None if n in driven | clamped else Signal(velocity_shape(f), name=f"mc{n}")
                  for n in range(N)]
        return SimpleNamespace(
            hf=hf, hc=hc, mf=mf, mc=mc, vf=[node_voltage(f, h) for h in hf],
            vc=[node_voltage(f, h) for h in hc],
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
            flags=Signal(SatFlags.size), ticks=Signal(TICKS_BITS))

    def _clamp(self, m, st, vc_next):
        """Override the clamped outputs in ``vc_next`` from the free outputs at t.

        ``st.vf`` maps (at least) every output node to its free voltage at t, and
        ``vc_next`` is a list or dict indexed by node; it receives node states
        (:func:`~.cells.node_state` of the clamped voltages).

        Returns
        -------
        (flags, outputs) : (list of Signal, list of Value)
            Saturation of each clamped value; the free output of each output.
        """
        outputs = self.cfg.io.outputs
        errors = clamp_errors(outputs, st.target, st.vf)
        scaled = [clamp_scale(self.fmt, err) for err in errors]
        clamped = {}
        clamp_flags = clamp_finish(m, self.fmt, outputs, st.vf, scaled, clamped)
        for n, value in clamped.items():
            vc_next[n] = node_state(self.fmt, value)
        out_values = [output_value(st.vf, p, mi) for p, mi in outputs]
        return clamp_flags, out_values

    def _finish(self, m, st, commit, tick_flags, vf_next, vc_next, out_values, moved=None):
        """Commit, sticky flags, controller writes and readback (shared by every fabric).

        ``tick_flags`` are ORed into the sticky flags on every running cycle; on
        ``commit`` the node states take ``vf_next``/``vc_next``; ``moved`` drives
        ``control.moved`` (see :meth:`_status_and_samples`).
        """
        N, E = self.n_nodes, self.n_edges
        with m.If(commit):
            m.d.sync += [st.hf[n].eq(vf_next[n]) for n in range(N)]
            m.d.sync += [st.hc[n].eq(vc_next[n]) for n in range(N)]
        self._status_and_samples(m, st, commit, tick_flags, out_values, moved=moved)

        # Controller writes (after the updates: a write wins).
        with m.If(self.gate.we):
            with m.Switch(self.gate.addr):
                for e in range(E):
                    with m.Case(e):
                        m.d.sync += st.g[e].eq(self.gate.data)

        # Readback.
        m.d.sync += self.gate.rdata.eq(mux_tree(self.gate.raddr, st.g))
        m.d.comb += [self.v_free[n].eq(st.vf[n]) for n in range(N)]
        m.d.comb += [self.v_clamped[n].eq(st.vc[n]) for n in range(N)]
        m.d.comb += [self.gates[e].eq(st.g[e]) for e in range(E)]

    def _status_and_samples(self, m, st, commit, tick_flags, out_values, run=None,
                            moved=None):
        """Sticky flags, tick counter, sample writes and the output/status ports.

        ``tick_flags`` are ORed into the sticky flags on every cycle of ``run`` (default
        ``control.run``). ``moved`` (a 1-bit value, read in the cycles of ``commit``)
        drives ``control.moved``; None leaves it to the caller.
        """
        ctl, status = self.control, self.status
        with m.If(ctl.run if run is None else run):
            m.d.sync += st.flags.eq(st.flags | tick_flags)
        with m.If(status.clear_flags):
            m.d.sync += st.flags.eq(0)
        with m.If(commit):
            m.d.sync += st.ticks.eq(st.ticks + 1)
        with m.If(ctl.sample_we):            # after the commit: a write wins
            with m.Switch(ctl.sample_addr):
                for i, reg in enumerate(st.drive + st.target):
                    with m.Case(i):
                        m.d.sync += reg.eq(ctl.sample_data)
        m.d.comb += [ctl.outputs[k].eq(o) for k, o in enumerate(out_values)]
        m.d.comb += [status.ticks.eq(st.ticks), ctl.tick_done.eq(commit),
                     status.sat_flags.eq(st.flags), status.saturated.eq(st.flags.any())]
        if moved is not None:
            m.d.comb += ctl.moved.eq(moved)

    def elaborate(self, platform):
        m = Module()
        edges = np.asarray(self.cfg.network.edges)
        st = self._state(m)
        seq = self._sequencer(m)
        cells, term_flags, dg_flags = self._edge_cells(m, st, seq, edges)
        vf_next, vc_next, node_flags = self._node_cells(m, st, seq, cells, edges)
        clamp_flags, out_values = self._clamp(m, st, vc_next)
        tick_flags = Signal(SatFlags.size)
        m.d.comb += tick_flags.eq(
            sat_bits(term=as_bit(any_of(term_flags)), dg=as_bit(any_of(dg_flags)))
            | Mux(seq.last, any_of(node_flags) | sat_bits(v=as_bit(any_of(clamp_flags))), 0))
        moved = self._moved_flag(m, st, seq, vf_next, vc_next)
        self._finish(m, st, seq.commit, tick_flags, vf_next, vc_next, out_values, moved)
        m.d.comb += self.control.busy.eq(0)          # a tick never outlasts ``run``
        # ``control.clear`` restores what the domain's reset does
        return ResetInserter({"sync": self.control.clear})(m)

    def _sequencer(self, m):
        """The phase of a folded tick: phase c of C handles edges ``c*P .. c*P+P-1``.

        Returns
        -------
        SimpleNamespace
            ``phase`` (None when C is 1), ``learn`` (sampled on the tick's first cycle),
            ``last`` (the tick's last cycle) and ``commit`` (``run`` and ``last``).
        """
        C, ctl = self.cycles_per_tick, self.control
        if C > 1:
            phase = Signal(range(C))
            learn_q = Signal()
            learn = Mux(phase == 0, ctl.learn, learn_q)
            last = phase == C - 1
            with m.If(ctl.run):
                m.d.sync += phase.eq(Mux(last, 0, phase + 1))
                with m.If(phase == 0):
                    m.d.sync += learn_q.eq(ctl.learn)
        else:
            phase, learn, last = None, ctl.learn, 1
        commit = Signal()
        m.d.comb += commit.eq(ctl.run & last)
        return SimpleNamespace(phase=phase, learn=learn, last=last, commit=commit)

    def _edge_cells(self, m, st, seq, edges):
        """The edge cells; unit u in phase c works on edge ``c*P + u`` and updates its gate.

        Returns
        -------
        (cells, term_flags, dg_flags)
            The cells, and their saturation bits of this cycle (valid units only).
        """
        f, E, P, C = self.fmt, self.n_edges, self.edge_units, self.cycles_per_tick
        vf, vc, g = st.vf, st.vc, st.g
        noise = self._noise(m, seq)
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
            for name in impairment_values(f, 0):
                sources.append((getattr(cell, name),
                                lambda e, name=name: impairment_values(f, e)[name]))
            if noise is not None:
                sources += [(cell.n_f, lambda e: noise[e][0]), (cell.n_c, lambda e: noise[e][1])]
            for port, source in sources:
                m.d.comb += port.eq(select(seq.phase, {c: source(e) for c, e in my_edges}))
            m.d.comb += cell.learn.eq(seq.learn)
            if C == 1:
                valid = 1
            else:
                valid = Signal(name=f"valid{u}")
                m.d.comb += valid.eq(select(seq.phase, {c: 1 for c, _ in my_edges}))
            term_flags.append(cell.sat_term & valid)
            dg_flags.append(cell.sat_dg & valid)
            self._gate_updates(m, g, seq, cell, my_edges)
        return cells, term_flags, dg_flags

    def _noise(self, m, seq):
        """The per-edge read-noise generators (``docs/semantics.md``), None without noise:
        state registers that advance when a learning tick commits, and each edge's noise
        on its free and clamped drop during that tick (a list of pairs)."""
        f = self.fmt
        if not f.noise_mul:
            return None
        first = noise_states(self.cfg)
        pairs = []
        for e in range(self.n_edges):
            state = Signal(32, name=f"noise{e}", init=int(first[e]))
            nxt, n_f, n_c = noise_step(m, f, state, str(e))
            with m.If(seq.commit & seq.learn):
                m.d.sync += state.eq(nxt)
            pairs.append((n_f, n_c))
        return pairs

    def _gate_updates(self, m, g, seq, cell, my_edges):
        """Each running cycle, the gate of the cell's edge of this phase takes ``g_next``."""
        with m.If(self.control.run):
            if self.cycles_per_tick == 1:
                m.d.sync += g[my_edges[0][1]].eq(cell.g_next)
            else:
                with m.Switch(seq.phase):
                    for c, e in my_edges:
                        with m.Case(c):
                            m.d.sync += g[e].eq(cell.g_next)

    def _node_cells(self, m, st, seq, cells, edges):
        """Node sums (this phase's signed edge terms plus the accumulators), with
        ``jacobi`` the sums of the end conductances likewise, and the node cells; a
        driven node's next state is its drive register. Under ``momentum`` the
        velocities commit here too.

        Returns
        -------
        (vf_next, vc_next, node_flags)
            The next node states (``H``, with ``node_extra_bits``).
        """
        f, N = self.fmt, self.n_nodes
        jacobi = uses_conductance(f)
        driven_index = {n: i for i, n in enumerate(self.driven_nodes)}
        node_flags = []
        vf_next, vc_next = list(st.hf), list(st.hc)
        for n in range(N):
            if n in driven_index:
                vf_next[n] = vc_next[n] = node_state(f, st.drive[driven_index[n]])
                continue
            sums = [self._node_total(m, seq, cells, edges, n, tag) for tag in ("f", "c")]
            cell = NodeCell(f, self.acc_width, self.cond_widths[n] if jacobi else None)
            m.submodules[f"node{n}"] = cell
            m.d.comb += [cell.v_f.eq(st.hf[n]), cell.v_c.eq(st.hc[n]),
                         cell.acc_f.eq(sums[0]), cell.acc_c.eq(sums[1])]
            if jacobi:
                m.d.comb += [cell.cond_f.eq(self._node_cond(m, seq, cells, edges, n, "f")),
                             cell.cond_c.eq(self._node_cond(m, seq, cells, edges, n, "c"))]
            vf_next[n], vc_next[n] = cell.v_f_next, cell.v_c_next
            node_flags.append(cell.flags)
            if f.relax == "momentum":
                self._velocities(m, st, seq.commit, cell, n)
        return vf_next, vc_next, node_flags

    @staticmethod
    def _velocities(m, st, commit, cell, n):
        """``momentum``: node ``n``'s velocity registers into its node cell, and the
        cell's new velocities into them when the tick commits (a clamped node's stays 0)."""
        for tag, regs in (("f", st.mf), ("c", st.mc)):
            if regs[n] is None:
                m.d.comb += getattr(cell, f"m_{tag}").eq(0)
                continue
            m.d.comb += getattr(cell, f"m_{tag}").eq(regs[n])
            with m.If(commit):
                m.d.sync += regs[n].eq(getattr(cell, f"m_{tag}_next"))

    def _unit_edges(self, c):
        """``{edge: unit}`` of the edges the units work on in phase ``c``."""
        P = self.edge_units
        return {c * P + u: u for u in range(P) if c * P + u < self.n_edges}

    def _node_total(self, m, seq, cells, edges, n, tag):
        """The sum of node ``n``'s edge terms of the tick so far in network ``tag`` ("f"
        or "c"): this phase's terms plus the accumulator of the earlier phases."""
        def phase_sum(c):
            return node_sum(edges, n, {e: cells[u].s_f if tag == "f" else cells[u].s_c
                                       for e, u in self._unit_edges(c).items()})

        return self._accumulate(m, seq, phase_sum, signed(self.acc_width),
                                (f"acc{tag}{n}", f"part{tag}{n}", f"accq{tag}{n}"))

    def _node_cond(self, m, seq, cells, edges, n, tag):
        """The sum of the end conductances node ``n``'s edges give it in network ``tag``
        (``jacobi``, ``momentum``), of the tick so far: as :meth:`_node_total`."""
        def phase_sum(c):
            return node_conductance(edges, n, {
                e: (getattr(cells[u], f"cond_a_{tag}"), getattr(cells[u], f"cond_b_{tag}"))
                for e, u in self._unit_edges(c).items()})

        return self._accumulate(m, seq, phase_sum, unsigned(self.cond_widths[n]),
                                (f"cond{tag}{n}", f"cpart{tag}{n}", f"condq{tag}{n}"))

    def _accumulate(self, m, seq, phase_sum, shape, names):
        """``phase_sum(c)`` of this phase plus, in a folded fabric, a register of the
        earlier phases' sums (cleared on the tick's last cycle); ``names`` are the
        signals' (total, this phase's part, register)."""
        total = Signal(shape, name=names[0])
        if self.cycles_per_tick == 1:
            m.d.comb += total.eq(phase_sum(0))
        else:
            part, acc = Signal(shape, name=names[1]), Signal(shape, name=names[2])
            m.d.comb += part.eq(select(seq.phase, {c: phase_sum(c)
                                                   for c in range(self.cycles_per_tick)}))
            m.d.comb += total.eq(acc + part)
            with m.If(self.control.run):
                m.d.sync += acc.eq(Mux(seq.last, 0, total))
        return total

    def _moved_flag(self, m, st, seq, vf_next, vc_next):
        """``control.moved``: on the tick's last cycle, 1 when some node of either network
        (driven and clamped ones included) moves by more than ``still_lsb``."""
        old = st.vf + st.vc
        new = [node_voltage(self.fmt, h) for h in list(vf_next) + list(vc_next)]
        moved = Signal(name="moved")
        m.d.comb += moved.eq(any_moved(m, self.fmt, old, new) & seq.last)
        return moved


def folded_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of :class:`Fabric` (edge cells taking turns)."""
    units = cfg.fabric.edge_units or cfg.network.n_edges
    return units, -(-cfg.network.n_edges // units)

