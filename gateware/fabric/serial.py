"""The serial fabric: one edge term per clock cycle, for the smallest FPGAs.

``[fabric] serial = true`` folds the whole tick onto one edge unit and one node unit. The
tick walks a schedule fixed at elaboration, node by node: for every settling node n and
each network, the terms of n's edges are summed into one accumulator, and on the last of
them the node unit writes n's new voltage into a register of the next state. Every edge is
so visited once from each settling end (its term is computed twice, which costs cycles but
no per-node accumulators); its gate is updated on its last visit, after which no visit of
the tick reads it. A visit takes four pipeline stages: operands (memory reads, overdrive,
the factors of the edge term and the gate step), products, the sum (and the new gate),
and the node unit (node update on a node's last term). After the last visit three cycles
drain the pipeline and one commits the next state, the drives and the clamp, so a tick
has the same bits as the parallel fabric's (``docs/semantics.md``).

With ``[schedule] relax = "jacobi"`` each visit also gives the visited node the
conductance of its end of the edge (``2 u + leak_q``, from the operands), summed beside
the terms; the node unit takes the jacobi step from both sums. Every node unit write is
compared with the node's voltage at t one cycle later (``moved``, off the node unit's
path); the last write's comparison falls in the commit cycle, with the driven nodes'. So
the cycles of a tick are the same for both node steps. ``relax = "momentum"`` adds one
memory, the velocities at {net, node} (one word per node and network, no second half:
only the node's own visits read it, the first of them one tick after the last write),
read with the node state and written by the node unit beside it.

Node states (``H``: the voltages with ``node_extra_bits`` more fraction bits, of which the
edges and every other reader take the top bits; two halves: the state at t and the next
state, swapped on commit) and gates live in memories, which synthesis maps to block RAM;
only the driven nodes and the free outputs are registers.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln.errors import ConfigError
from clln.nonideal import noise_states
from clln.schedule import (
    PIPELINE_CYCLES,
    Visit,
    max_rows,
    output_nodes,
    parse_capacity,
    relabel,
    row_fields,
    schedule_rows,
    serial_schedule,
)

from ..memory import sync_read_port
from .arith import above, any_of, mux_tree, select, wire
from .cells import (
    UNIT_GAIN,
    conductance_shift,
    edge_ends,
    edge_product,
    end_conductance,
    end_conductance_bits,
    gate_apply,
    gate_operands,
    gate_product,
    impairment_shapes,
    max_gain,
    node_moved,
    node_state,
    node_state_shape,
    node_step,
    node_velocity,
    node_voltage,
    noise_step,
    operands_from_ends,
    overdrive,
    uses_conductance,
    velocity_shape,
)
from .parallel import Fabric
from .ports import SAT_MASK, GraphPortSignature, SatFlags

__all__ = ["SerialFabric", "Visit", "serial_schedule", "serial_cycles_per_tick"]


def serial_cycles_per_tick(cfg):
    """Clock cycles of one tick of ``cfg``'s serial fabric."""
    return len(serial_schedule(cfg)) + PIPELINE_CYCLES


class SerialFabric(Fabric):
    """A fabric with one edge unit and one node unit; its state lives in block RAM.

    Parameters are those of :class:`~.fabric.Fabric`.

    Attributes
    ----------
    schedule : list of Visit
        The visits of one tick; ``cycles_per_tick = len(schedule) + PIPELINE_CYCLES``.

    Notes
    -----
    The ports are those of :class:`~.fabric.Fabric` except the flat state vectors:
    node voltages are read through ``node_raddr`` (``v_free_rdata``/``v_clamped_rdata``
    are the voltages of that node one cycle later), gates through ``gate.raddr``. Node
    voltages and gates are kept in memories (block RAM). After a reset (and at start) the
    fabric clears them, one address per cycle (``max(2 * 2**ceil(log2 N), E) + 1``
    cycles), with ``control.busy`` high; ``control.run`` waits until it is done
    (``control.clear`` starts it again, as a reset does). ``control.moved`` is given with
    ``tick_done`` and held until the next tick commits.
    """

    #: The ``[schedule] relax`` values this fabric implements.
    RELAXATIONS = ("euler", "jacobi", "momentum")

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None, capacity=None):
        self.capacity = None if capacity is None else parse_capacity(capacity)
        if self.capacity:              # the I/O at the first nodes (``clln.schedule``)
            cfg = relabel(cfg)
        super().__init__(cfg, fmt, seed, mult_bits)
        if self.capacity:
            self._check_capacity(cfg)
            pad = self.n_edges - len(self.gate_init)
            self.gate_init = [int(g) for g in self.gate_init] + [0] * pad
        self.schedule = serial_schedule(cfg)
        self.max_degree = int(cfg.network.degrees().max())
        self.edge_units = 1
        self.cycles_per_tick = len(self.schedule) + PIPELINE_CYCLES

    def _members(self):
        v = signed(self.fmt.v_bits)
        loadable = {}
        if self.capacity:
            # the memories and ports are sized for the capacity, not the config's graph
            self.n_nodes, self.n_edges = self.capacity
            self.row_fields = row_fields(self.capacity, self.fmt.v_bits,
                                         len(self.driven_nodes), len(output_nodes(self.cfg)))
            self.rows_depth = max_rows(self.capacity)
            loadable["graph"] = In(GraphPortSignature(
                self.rows_depth, sum(b for _, b, _ in self.row_fields), self.n_edges,
                self.fmt.g_bits))
        return {**self._seam_members(), "node_raddr": In(range(max(self.n_nodes, 2))),
                "v_free_rdata": Out(v), "v_clamped_rdata": Out(v), **loadable}

    def _check_capacity(self, cfg):
        """A capacity build: the config's graph fits it, on the ideal chip."""
        cap, net = self.capacity, cfg.network
        if net.n_nodes > cap.nodes or net.n_edges > cap.edges:
            raise ConfigError(cfg.source, "", f"{net.n_nodes} nodes, {net.n_edges} edges > "
                              f"capacity {cap.nodes}:{cap.edges}")
        f = self.fmt
        if f.has_gains or f.has_offsets or f.has_frozen or f.noise_mul or f.twin_thresholds \
                or f.droop_mul:
            raise ConfigError(cfg.source, "nonideal", "a capacity build (a graph loaded at "
                              "run time) needs the ideal chip: leave out [nonideal]")

    def elaborate(self, platform):
        m = Module()
        x = self._registers(m)
        self._sequencer(m, x)
        self._memories(m, x)
        p = self._operand_stage(m, x)
        q = self._product_stage(m, x, p)
        r = self._sum_stage(m, x, q)
        node_flags = self._node_stage(m, x, q, r)
        self._commit(m, x, q, r, node_flags)
        self._moved(m, x)
        self._readback(m, x)
        # ``control.clear`` restores what the domain's reset does (and so clears the
        # memories again)
        return ResetInserter({"sync": self.control.clear})(m)

    def _registers(self, m):
        """The elaboration's namespace, with the registers outside the memories: drives,
        targets, flags, ticks; the driven nodes' state and the output nodes' free
        voltages; and the clamp, from the free outputs at t."""
        f = self.fmt
        v_shape = signed(f.v_bits)
        x = SimpleNamespace(st=SimpleNamespace(**self._io_registers()),
                            driven={n: i for i, n in enumerate(self.driven_nodes)})
        # A driven node's state (the same in both networks) is a register; so is the
        # free voltage of every output node, which the clamp and ``outputs`` read.
        x.vd = [Signal(v_shape, name=f"vd{n}") for n in self.driven_nodes]
        x.out_nodes = sorted({n for p, q in self.cfg.io.outputs for n in (p, q) if n >= 0})
        x.vf_out = {n: Signal(v_shape, name=f"vf_out{n}") for n in x.out_nodes}
        x.vf_out_next = {n: Signal(v_shape, name=f"vf_out_next{n}") for n in x.out_nodes}

        # The clamped voltage of each clamped output node, from the free outputs at t.
        x.clamp_values = {}
        x.clamp_flags, x.out_values = self._clamp(
            m, SimpleNamespace(vf=x.vf_out, target=x.st.target), x.clamp_values)
        x.clamp_nodes = sorted(x.clamp_values)
        return x

    def _schedule_rows(self, x):
        """The schedule as rows of registered fields (a layout and a list of dicts), the
        drain and commit cycles last."""
        f, N, E = self.fmt, self.n_nodes, self.n_edges
        layout = data.StructLayout({
            "node": range(N), "other": range(N), "edge": range(E), "net": 1, "plus": 1,
            "first": 1, "last": 1, "gate": 1, "term": 1, "vt": signed(f.v_bits),
            "node_driven": 1, "other_driven": 1, "node_slot": range(max(len(x.vd), 1)),
            "other_slot": range(max(len(x.vd), 1)), "clamp": range(len(x.clamp_nodes) + 1),
            **self._chip_fields()})
        if self.capacity:
            layout = data.StructLayout({name: signed(b) if sgn else unsigned(b)
                                        for name, b, sgn in self.row_fields})
            return layout, schedule_rows(self.cfg, f)
        rows = [dict(v._asdict(), vt=int((f.vt_c_q if v.net else f.vt_q)[v.edge]),
                     node_driven=int(v.node in x.driven),
                     other_driven=int(v.other in x.driven),
                     node_slot=x.driven.get(v.node, 0), other_slot=x.driven.get(v.other, 0),
                     clamp=x.clamp_nodes.index(v.node) + 1
                     if v.net and v.node in x.clamp_values else 0, **self._chip_row(v))
                for v in self.schedule]
        # The drain and commit rows do nothing (no term, gate, noise step or node write);
        # their other fields repeat the last visit's, so that a field the same in every
        # visit (e.g. ``vt`` on a uniform chip) is a constant column, which Yosys takes
        # out of the ROM and its register.
        idle = dict(rows[-1], first=0, last=0, gate=0, term=0)
        if "noise" in layout.members:
            idle["noise"] = 0
        rows += [idle] * PIPELINE_CYCLES            # drain the pipeline, then commit
        return layout, rows

    def _chip_fields(self):
        """Schedule fields of a non-ideal chip (``docs/semantics.md``): ``k``, the gain of
        the visited network's transistor (0 on a dead edge); ``offset``, the edge's
        learning-rule offset; ``noise``, the edge's last visit, which advances its noise
        generator (``gate`` is then 0 on a frozen edge). Only those the chip needs."""
        f, shapes = self.fmt, impairment_shapes(self.fmt)
        fields = {}
        if f.has_gains:
            fields["k"] = unsigned(max_gain(f).bit_length())
        if "offset" in shapes:
            fields["offset"] = shapes["offset"]
        if f.noise_mul:
            fields["noise"] = 1
        return fields

    def _chip_row(self, v):
        """The :meth:`_chip_fields` of visit ``v`` (a dict), and its ``gate`` bit."""
        f, fields = self.fmt, self._chip_fields()
        e = v.edge
        row = {"gate": v.gate & (1 - int(f.frozen[e]))}
        if "k" in fields:
            row["k"] = int((f.k_c_q if v.net else f.k_f_q)[e])
        if "offset" in fields:
            row["offset"] = int(f.offset_q[e])
        if "noise" in fields:
            row["noise"] = v.gate
        return row

    def _sequencer(self, m, x):
        """The step through the schedule: ``cur`` is the visit in stage 1, ``pre`` the next
        one (whose memory reads are issued one cycle ahead); ``learn`` sampled on the
        first step, ``run`` (driven by :meth:`_memories`), ``bank``, ``commit``."""
        S, ctl = self.cycles_per_tick, self.control
        layout, rows = self._schedule_rows(x)
        x.run = Signal()                            # ``run`` unless clearing (below)
        x.bank = Signal()                           # memory half that holds the state at t
        x.commit = Signal()
        x.busy = Signal()
        if self.capacity:
            step, rom_rd = self._loaded_schedule(m, x, layout, rows)
        else:
            step = Signal(range(S))
            x.cur = Signal(layout, init=rows[0])
            # ``pre`` comes from a ROM in block RAM, read at ``step`` for the visit after
            # next; while the fabric is busy (after a reset) it reads the visit of step 1
            rom = Memory(shape=layout, depth=S, init=[rows[(i + 2) % S] for i in range(S)])
            m.submodules.schedule = rom
            rom_rd = sync_read_port(m, rom, "schedule", enable=True)
            x.end = step == S - 1
        cur = x.cur
        pre = x.pre = rom_rd.data
        learn_q = Signal()
        x.learn = Mux(step == 0, ctl.learn, learn_q)
        m.d.comb += [x.commit.eq(x.run & x.end), rom_rd.en.eq(x.run | x.busy)]
        if not self.capacity:
            m.d.comb += rom_rd.addr.eq(Mux(x.busy, S - 1, step))
        with m.If(x.run):
            m.d.sync += [step.eq(Mux(x.end, 0, step + 1)), cur.eq(pre)]
            with m.If(step == 0):
                m.d.sync += learn_q.eq(ctl.learn)

    def _loaded_schedule(self, m, x, layout, rows):
        """A capacity build's schedule: a RAM the handler writes (``graph``), row i at
        address i, the config's rows at power-up; a tick is ``graph.n_rows`` rows. The
        RAM is read at ``step + 2`` (mod ``n_rows``); while clearing, at 0 (whose row
        becomes ``cur``, as no reset value can hold a loaded row) and then at 1."""
        D, g = self.rows_depth, self.graph
        step = Signal(range(D))
        x.cur = Signal(layout, init=rows[0])
        ram = Memory(shape=layout, depth=D, init=rows + [rows[-1]] * (D - len(rows)))
        m.submodules.schedule = ram
        wr = ram.write_port()
        m.d.comb += [wr.addr.eq(g.row_addr), wr.data.eq(g.row_data), wr.en.eq(g.row_we)]
        rd = sync_read_port(m, ram, "schedule", enable=True)
        after_next = Signal(range(D + 2))
        m.d.comb += after_next.eq(step + 2)
        wrapped = Mux(after_next >= g.n_rows, after_next - g.n_rows, after_next)
        x.clear_start = Signal()                    # the first cycle of a clear
        m.d.comb += rd.addr.eq(Mux(x.busy, ~x.clear_start, wrapped))
        x.end = step == g.n_rows - 1
        return step, rd

    def _memories(self, m, x):
        """Node voltages at {bank, node}, gates at edge; the clearing after a reset."""
        f, N, E = self.fmt, self.n_nodes, self.n_edges
        v_shape, g_shape = node_state_shape(f), signed(f.g_bits)     # node states H
        node_bits = max(1, (N - 1).bit_length())
        gate_init = [int(v) for v in self.gate_init]
        x.mems = {}
        memories = [("vf", v_shape, 2 << node_bits, []), ("vc", v_shape, 2 << node_bits, []),
                    ("g", g_shape, E, gate_init)]
        if f.relax == "momentum":              # velocities at {net, node}
            memories.append(("m", velocity_shape(f), 2 << node_bits, []))
        for name, shape, depth, init in memories:
            mem = Memory(shape=shape, depth=depth, init=init)
            m.submodules[f"{name}_mem"] = mem
            wr = mem.write_port()
            x.mems[name] = (mem, wr)
        # After a reset the memories are cleared (node voltages 0, the initial gates from
        # a ROM), one address per cycle; meanwhile ``busy`` is high and ``run`` is ignored.
        x.node_depth = 2 << node_bits
        clear_len = max(x.node_depth, E)
        x.clear = Signal(range(clear_len + 2))
        m.d.comb += [x.busy.eq(x.clear != clear_len + 1), self.control.busy.eq(x.busy)]
        with m.If(x.busy):
            m.d.sync += x.clear.eq(x.clear + 1)
        m.submodules.gate_rom = gate_rom = Memory(shape=g_shape, depth=E, init=gate_init)
        if self.capacity:
            # the initial gates of the loaded graph (a RAM), and the first row into ``cur``
            init_wr, g = gate_rom.write_port(), self.graph
            m.d.comb += [init_wr.addr.eq(g.init_addr), init_wr.data.eq(g.init_data),
                         init_wr.en.eq(g.init_we), x.clear_start.eq(x.clear == 0)]
            with m.If(x.busy & (x.clear == 1)):
                m.d.sync += x.cur.eq(x.pre)
        else:
            gate_rom.attrs["rom_style"] = "block"   # yosys would make a small ROM of LUTs
        x.rom_rd = sync_read_port(m, gate_rom, "gate_rom")       # block RAM: no reset
        m.d.comb += [x.rom_rd.addr.eq(x.clear), x.run.eq(self.control.run & ~x.busy)]
        if f.noise_mul:
            first = [int(s) for s in noise_states(self.cfg)]
            x.mems["noise"] = (mem := Memory(shape=32, depth=E, init=first), mem.write_port())
            m.submodules.noise_mem = mem
            m.submodules.noise_rom = rom = Memory(shape=32, depth=E, init=first)
            x.noise_rom = rom.read_port()
            m.d.comb += x.noise_rom.addr.eq(x.clear)

    def _engine_reads(self, m, x):
        """The operands' memory reads: running, the engine reads ``pre``'s operands;
        paused, ``cur``'s, so a gate written meanwhile is seen. A driven node's voltage
        comes from its register (the same in both networks).

        Returns
        -------
        (vn_f, vo_f, vn_c, vo_c, g_e, vel)
            The visit's node (its state H) and other end (its voltage) in both networks,
            the edge's gate and (``momentum``; else None) the node's velocity in the
            visited network.
        """
        f, cur, pre = self.fmt, x.cur, x.pre
        at = SimpleNamespace(**{k: Mux(x.run, getattr(pre, k), getattr(cur, k))
                                for k in ("node", "other", "edge")})
        read_bank = Mux(x.commit, ~x.bank, x.bank)

        def engine_read(name, addr):
            mem, wr = x.mems[name]
            port = mem.read_port(transparent_for=(wr,))
            m.d.comb += port.addr.eq(addr)
            return port.data

        # a driven end's register, by its slot (from the ROM): a multiplexer of the few
        # driven nodes, not of all N
        vd_node = mux_tree(cur.node_slot, x.vd)
        vd_other = mux_tree(cur.other_slot, x.vd)

        def node_value(name, addr, is_driven, from_register):
            return Mux(is_driven, node_state(f, from_register),
                       engine_read(name, Cat(addr, read_bank)))

        vn_f = node_value("vf", at.node, cur.node_driven, vd_node)
        vo_f = node_voltage(f, node_value("vf", at.other, cur.other_driven, vd_other))
        vn_c = node_value("vc", at.node, cur.node_driven, vd_node)
        vo_c = node_voltage(f, node_value("vc", at.other, cur.other_driven, vd_other))
        vel = None
        if f.relax == "momentum":
            vel = engine_read("m", Cat(at.node, Mux(x.run, pre.net, cur.net)))
        return vn_f, vo_f, vn_c, vo_c, engine_read("g", at.edge), vel

    def _stage_registers(self, m, x, tag, values, results):
        """Pipeline registers (they hold while ``run`` is low): what the later stages need
        of the visit (``values``, by the fields of :meth:`_visit_fields`), and the
        stage's ``results`` (``regs.results``)."""
        regs = SimpleNamespace(**{k: Signal(shape, name=f"{tag}_{k}")
                                  for k, shape in self._visit_fields(x).items()})
        regs.results = [Signal(r.shape(), name=f"{tag}_r{i}") for i, r in enumerate(results)]
        with m.If(x.run):
            m.d.sync += [getattr(regs, k).eq(v) for k, v in values.items()]
            m.d.sync += [r.eq(v) for r, v in zip(regs.results, results, strict=True)]
        return regs

    def _visit_fields(self, x):
        """The fields of a visit the pipeline registers carry (name -> shape)."""
        N, E = self.n_nodes, self.n_edges
        chip = {k: v for k, v in self._chip_fields().items() if k in ("k", "offset")}
        if self.fmt.relax == "momentum":
            chip["vel"] = velocity_shape(self.fmt)
        return {"plus": 1, "first": 1, "last": 1, "node": range(N), "net": 1, "term": 1,
                "vn": node_state_shape(self.fmt), "gate": 1, "edge": range(E),
                "g": signed(self.fmt.g_bits), "clamp": range(len(x.clamp_nodes) + 1), **chip}

    def _operand_stage(self, m, x):
        """Stage 1, operands: the factors of one edge's term in one network and of its
        gate step (``jacobi``: and the conductance the edge gives the visited node, ``2 u
        + leak_q`` of the node's own end); returns the stage's registers."""
        f, cur = self.fmt, x.cur
        hn_f, vo_f, hn_c, vo_c, g_e, vel = self._engine_reads(m, x)
        hn = Signal(node_state_shape(f))            # the visited node's state H
        vo = Signal(signed(f.v_bits))
        m.d.comb += [hn.eq(Mux(cur.net, hn_c, hn_f)), vo.eq(Mux(cur.net, vo_c, vo_f))]
        vn, vn_f, vn_c = node_voltage(f, hn), node_voltage(f, hn_f), node_voltage(f, hn_c)
        ov = overdrive(m, f, g_e, cur.vt)
        va, vb = Mux(cur.plus, vo, vn), Mux(cur.plus, vn, vo)
        ua, ub = edge_ends(m, f, ov, va, vb, "x")
        d_f = Mux(cur.plus, vo_f - vn_f, vn_f - vo_f)
        d_c = Mux(cur.plus, vo_c - vn_c, vn_c - vo_c)
        if f.noise_mul:
            n_f, n_c = self._noise(m, x)
            d_f, d_c = d_f + n_f, d_c + n_c
        factors = (*operands_from_ends(m, ua, ub, va, vb, "x"), *gate_operands(m, f, d_f, d_c))
        gain = cur.k if f.has_gains else UNIT_GAIN
        if uses_conductance(f):
            x.cond_bits = end_conductance_bits(f, len(ov))
            factors += (wire(m, end_conductance(f, Mux(cur.plus, ub, ua), gain), "cond_x",
                             unsigned(x.cond_bits)),)
        chip = {k: getattr(cur, k) for k in ("k", "offset") if k in self._chip_fields()}
        if vel is not None:
            chip["vel"] = vel
        return self._stage_registers(m, x, "p", {
            "plus": cur.plus, "first": cur.first, "last": cur.last, "node": cur.node,
            "net": cur.net, "term": cur.term, "vn": hn, "gate": cur.gate & x.learn,
            "edge": cur.edge, "g": g_e, "clamp": cur.clamp, **chip}, factors)

    def _noise(self, m, x):
        """The read noise of the visited edge's drops (free, clamped), from its generator's
        state in a memory; an edge's last visit of a learning tick writes the advanced
        state back (``docs/semantics.md``, "Read noise"), and a reset restores the first
        states from a ROM, as it does the gates."""
        mem, wr = x.mems["noise"]
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += rd.addr.eq(Mux(x.run, x.pre.edge, x.cur.edge))
        nxt, n_f, n_c = noise_step(m, self.fmt, rd.data, "x")
        restoring = x.busy & (x.clear >= 1) & (x.clear <= self.n_edges)
        m.d.comb += [wr.addr.eq(Mux(x.busy, x.clear - 1, x.cur.edge)),
                     wr.data.eq(Mux(x.busy, x.noise_rom.data, nxt)),
                     wr.en.eq(restoring | (x.run & x.cur.noise & x.learn))]
        return n_f, n_c

    def _product_stage(self, m, x, p):
        """Stage 2, products: the edge term and the gate step, and their saturation."""
        f = self.fmt
        udiff, usum, vdiff, gminus, gplus = p.results[:5]
        s, s_clipped = edge_product(m, f, udiff, usum, vdiff, "x", self.mult_bits,
                                    gain=p.k if f.has_gains else UNIT_GAIN)
        dg, dg_clipped = gate_product(m, f, gminus, gplus, mult_bits=self.mult_bits,
                                      offset=p.offset if f.has_offsets else 0)
        flags = Signal(SatFlags.size)
        m.d.comb += flags.eq(Mux(s_clipped & p.term, SAT_MASK["term"], 0)
                             | Mux(p.gate & dg_clipped, SAT_MASK["dg"], 0))
        q = self._stage_registers(m, x, "q", {k: getattr(p, k) for k in self._visit_fields(x)},
                                  [s, dg, flags, *p.results[5:]])
        q.s, q.dg, q.flags = q.results[:3]
        q.cond = q.results[3] if len(q.results) > 3 else None
        return q

    def _sum_stage(self, m, x, q):
        """Stage 3, sum: the running sum of the node's terms (``jacobi``: and of their
        conductances; the new gate is written by :meth:`_commit`); returns the stage's
        registers."""
        N, v_shape, acc_shape = self.n_nodes, node_state_shape(self.fmt), signed(self.acc_width)
        r = SimpleNamespace(last=Signal(name="r_last"), node=Signal(range(N), name="r_node"),
                            net=Signal(name="r_net"), vn=Signal(v_shape, name="r_vn"),
                            clamp=Signal(range(len(x.clamp_nodes) + 1), name="r_clamp"),
                            total=Signal(acc_shape, name="r_total"), shift=None, vel=None)
        sums = [("total", acc_shape, Mux(q.plus, q.s, -q.s))]
        if q.cond is not None:
            # a node's conductance: at most ``degree`` end conductances
            sums.append(("cond", x.cond_bits + self.max_degree.bit_length(), q.cond))
        totals = {}
        for name, shape, term in sums:
            acc = Signal(shape, name=f"r_{name}_acc")
            totals[name] = total = Signal(shape, name=f"r_{name}_next")
            m.d.comb += total.eq(Mux(q.first, 0, acc) + term)
            with m.If(x.run):
                m.d.sync += acc.eq(total)
        with m.If(x.run):
            m.d.sync += r.total.eq(totals["total"])
        if q.cond is not None:
            # the jacobi step's shift from the conductance, here rather than in the node
            # unit (whose path it lengthened): registered beside the sum
            shift = conductance_shift(m, self.fmt, totals["cond"], "x")
            r.shift = Signal.like(shift, name="r_shift")
            with m.If(x.run):
                m.d.sync += r.shift.eq(shift)
        with m.If(x.run):
            m.d.sync += [r.last.eq(q.last), r.node.eq(q.node), r.net.eq(q.net),
                         r.vn.eq(q.vn), r.clamp.eq(q.clamp)]
        if self.fmt.relax == "momentum":
            r.vel = Signal.like(q.vel, name="r_vel")
            with m.If(x.run):
                m.d.sync += r.vel.eq(q.vel)
        return r

    def _node_stage(self, m, x, q, r):
        """Stage 4, node unit: after a node's last term, its new voltage (or the clamp)
        into the other half of the memory; the new gate; returns the node's flags."""
        f, E, busy, clear, bank = self.fmt, self.n_edges, x.busy, x.clear, x.bank
        v_new, node_flags = node_step(m, f, r.vn, r.total, "x", shift=r.shift, vel=r.vel)
        clamped = select(r.clamp, {i + 1: x.clamp_values[n]
                                   for i, n in enumerate(x.clamp_nodes)})
        # what the node unit writes (into the half of the network ``r.net``), for
        # ``moved`` (judged on the voltages, the top bits of the states)
        x.written = SimpleNamespace(en=x.run & r.last, old=node_voltage(f, r.vn),
                                    new=node_voltage(f, Mux(r.clamp != 0, clamped, v_new)))
        _, vf_wr = x.mems["vf"]
        _, vc_wr = x.mems["vc"]
        clearing_nodes = busy & (clear < x.node_depth)
        m.d.comb += [
            vf_wr.addr.eq(Mux(busy, clear, Cat(r.node, ~bank))),
            vf_wr.data.eq(Mux(busy, 0, v_new)),
            vf_wr.en.eq(clearing_nodes | (x.run & r.last & ~r.net)),
            vc_wr.addr.eq(Mux(busy, clear, Cat(r.node, ~bank))),
            vc_wr.data.eq(Mux(busy, 0, Mux(r.clamp != 0, clamped, v_new))),
            vc_wr.en.eq(clearing_nodes | (x.run & r.last & r.net)),
        ]
        if f.relax == "momentum":
            # the move made (a clamped node's velocity stays 0), beside the new state
            _, m_wr = x.mems["m"]
            vel = Mux(r.clamp != 0, 0, node_velocity(m, f, r.vn, v_new, "x"))
            m.d.comb += [m_wr.addr.eq(Mux(busy, clear, Cat(r.node, r.net))),
                         m_wr.data.eq(Mux(busy, 0, vel)),
                         m_wr.en.eq(clearing_nodes | (x.run & r.last))]
        with m.If(x.run & r.last & ~r.net):
            with m.Switch(r.node):
                for n in x.out_nodes:
                    with m.Case(n):
                        m.d.sync += x.vf_out_next[n].eq(node_voltage(f, v_new))
        _, g_wr = x.mems["g"]
        gate = self.gate
        restoring = busy & (clear != 0) & ~above(clear, E)      # the ROM read takes a cycle
        m.d.comb += [                                   # a controller write wins
            g_wr.addr.eq(Mux(gate.we, gate.addr, Mux(busy, clear - 1, q.edge))),
            g_wr.data.eq(Mux(gate.we, gate.data,
                             Mux(busy, x.rom_rd.data, gate_apply(m, f, q.g, q.dg)))),
            g_wr.en.eq(gate.we | restoring | (x.run & q.gate)),
        ]
        return node_flags

    def _commit(self, m, x, q, r, node_flags):
        """Commit: the other half of the memory becomes the state; drives; free outputs;
        then the flags, ticks and samples."""
        st = x.st
        with m.If(x.commit):
            m.d.sync += [x.bank.eq(~x.bank), *[x.vd[i].eq(st.drive[i]) for i in range(len(x.vd))],
                         *[x.vf_out[n].eq(x.vf_out_next[n]) for n in x.out_nodes]]
        tick_flags = Signal(SatFlags.size)
        m.d.comb += tick_flags.eq(q.flags | Mux(r.last, node_flags, 0)
                                  | Mux(x.end & any_of(x.clamp_flags), SAT_MASK["v"], 0))
        self._status_and_samples(m, st, x.commit, tick_flags, x.out_values, x.run)

    def _moved(self, m, x):
        """``control.moved``: whether the tick moved a node by more than ``still_lsb``.

        Each of the node unit's writes (a settling or clamped node of one network) is
        registered and compared in the next cycle, off the node unit's path, and ORed into
        ``moved_acc``; the last write of a tick is compared in its commit cycle, where the
        driven nodes (their drives against their state at t) join. The flag is given with
        ``tick_done`` and held until the next tick commits.
        """
        f, st = self.fmt, x.st
        written = self._written_moved(m, x)
        driven = any_of([node_moved(m, f, x.vd[i], st.drive[i], f"d{i}")
                         for i in range(len(x.vd))])
        moved_acc = Signal()
        moved_q = Signal()
        tick_moved = wire(m, moved_acc | written | driven, "tick_moved")
        with m.If(x.commit):
            m.d.sync += [moved_acc.eq(0), moved_q.eq(tick_moved)]
        with m.Elif(written):
            m.d.sync += moved_acc.eq(1)
        m.d.comb += self.control.moved.eq(Mux(x.commit, tick_moved, moved_q))

    def _written_moved(self, m, x):
        """Whether the node unit's write of the cycle before moved its node (``x.written``
        registered, then compared)."""
        f, w = self.fmt, x.written
        en_q = Signal(name="moved_en")
        old_q = Signal(signed(f.v_bits), name="moved_old")
        new_q = Signal(signed(f.v_bits), name="moved_new")
        m.d.sync += [en_q.eq(w.en), old_q.eq(w.old), new_q.eq(w.new)]
        return wire(m, en_q & node_moved(m, f, old_q, new_q, "w"), "moved_written")

    def _readback(self, m, x):
        """Readback of the state at t (registered reads, as the memories give them)."""
        N = self.n_nodes
        g_mem, g_wr = x.mems["g"]
        g_rd = g_mem.read_port(transparent_for=(g_wr,))
        m.d.comb += [g_rd.addr.eq(self.gate.raddr), self.gate.rdata.eq(g_rd.data)]
        node_q = Signal(range(max(N, 2)))
        m.d.sync += node_q.eq(self.node_raddr)
        # the driven node's register by its slot: comparisons with the few driven nodes
        # rather than a multiplexer of all N
        driven_q = wire(m, any_of([node_q == n for n in x.driven]), "rb_driven")
        vd_q = mux_tree(select(node_q, x.driven), x.vd)
        for name, out in (("vf", self.v_free_rdata), ("vc", self.v_clamped_rdata)):
            mem, wr = x.mems[name]
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(Cat(self.node_raddr, x.bank)),
                         out.eq(Mux(driven_q, vd_q, node_voltage(self.fmt, rd.data)))]
