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

Node voltages (two halves: the state at t and the next state, swapped on commit) and gates
live in memories, which synthesis maps to block RAM; only the driven nodes and the free
outputs are registers.
"""

from collections import namedtuple
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import any_of, mux_tree, select
from .cells import (
    edge_operands,
    edge_product,
    gate_apply,
    gate_operands,
    gate_product,
    node_step,
    overdrive,
)
from .parallel import Fabric

__all__ = ["SerialFabric", "Visit", "serial_schedule", "serial_cycles_per_tick"]

#: One cycle of the serial schedule: accumulate the term of ``edge`` into ``node`` in
#: network ``net`` (0 free, 1 clamped); ``other`` is the edge's other end, ``plus`` is 1
#: when ``node`` is the edge's ``b`` end (the term counts positive). ``first``/``last``
#: open and close a node's sum; ``gate`` updates the edge's gate (when learning); ``term``
#: is 0 for a gate-only visit (an edge with no settling end).
Visit = namedtuple("Visit", "node other edge net plus first last gate term")


#: Cycles of a tick beyond its visits: three drain the pipeline, one commits.
PIPELINE_CYCLES = 4


def serial_cycles_per_tick(cfg):
    """Clock cycles of one tick of ``cfg``'s serial fabric."""
    return len(serial_schedule(cfg)) + PIPELINE_CYCLES


def serial_schedule(cfg):
    """The visits of one tick, in order (the drain and commit cycles are not listed).

    Parameters
    ----------
    cfg : clln.config.Config

    Returns
    -------
    list of Visit
    """
    edges = [tuple(int(x) for x in e) for e in cfg.network.edges]
    driven = set(cfg.driven_nodes())
    incident = {n: [] for n in range(cfg.network.n_nodes)}
    for e, (a, b) in enumerate(edges):
        incident[a].append(e)
        incident[b].append(e)
    visits = []
    for n in range(cfg.network.n_nodes):
        if n in driven:
            continue
        for net in (0, 1):
            group = incident[n]
            for i, e in enumerate(group):
                a, b = edges[e]
                visits.append(Visit(n, a if n == b else b, e, net, int(n == b), int(i == 0),
                                    int(i == len(group) - 1), 0, 1))
    last_visit = {v.edge: i for i, v in enumerate(visits)}
    for i in last_visit.values():
        visits[i] = visits[i]._replace(gate=1)
    for e, (a, b) in enumerate(edges):
        if e not in last_visit:                      # both ends driven: only the gate
            visits.append(Visit(a, b, e, 0, 0, 0, 0, 1, 0))
    return visits


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
    are the voltages of that node one cycle later), gates through ``gate_raddr``. Node
    voltages and gates are kept in memories (block RAM). After a reset (and at start) the
    fabric clears them, one address per cycle (``max(2 * 2**ceil(log2 N), E) + 1``
    cycles), with ``busy`` high; ``run`` waits until it is done.
    """

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None):
        super().__init__(cfg, fmt, seed, mult_bits)
        self.schedule = serial_schedule(cfg)
        self.edge_units = 1
        self.cycles_per_tick = len(self.schedule) + PIPELINE_CYCLES

    def _members(self):
        v = signed(self.fmt.v_bits)
        return {**self._control_members(), "node_raddr": In(range(max(self.n_nodes, 2))),
                "v_free_rdata": Out(v), "v_clamped_rdata": Out(v), "busy": Out(1)}

    def elaborate(self, platform):
        f = self.fmt
        m = Module()
        N, E, S = self.n_nodes, self.n_edges, self.cycles_per_tick
        st = SimpleNamespace(**self._io_registers())
        v_shape, g_shape = signed(f.v_bits), signed(f.g_bits)
        driven = {n: i for i, n in enumerate(self.driven_nodes)}
        # A driven node's state (the same in both networks) is a register; so is the
        # free voltage of every output node, which the clamp and ``outputs`` read.
        vd = [Signal(v_shape, name=f"vd{n}") for n in self.driven_nodes]
        out_nodes = sorted({n for p, q in self.cfg.io.outputs for n in (p, q) if n >= 0})
        vf_out = {n: Signal(v_shape, name=f"vf_out{n}") for n in out_nodes}
        vf_out_next = {n: Signal(v_shape, name=f"vf_out_next{n}") for n in out_nodes}

        # The clamped voltage of each clamped output node, from the free outputs at t.
        clamp_values = {}
        clamp_flags, out_values = self._clamp(m, SimpleNamespace(vf=vf_out, target=st.target),
                                              clamp_values)
        clamp_nodes = sorted(clamp_values)

        # The schedule as registered fields: ``cur`` is the visit in stage 1, ``pre`` the
        # next one (whose memory reads are issued one cycle ahead).
        layout = data.StructLayout({
            "node": range(N), "other": range(N), "edge": range(E), "net": 1, "plus": 1,
            "first": 1, "last": 1, "gate": 1, "term": 1, "vt": v_shape,
            "node_driven": 1, "other_driven": 1, "clamp": range(len(clamp_nodes) + 1)})
        rows = [dict(v._asdict(), vt=int(f.vt_q[v.edge]), node_driven=int(v.node in driven),
                     other_driven=int(v.other in driven),
                     clamp=clamp_nodes.index(v.node) + 1 if v.net and v.node in clamp_values
                     else 0)
                for v in self.schedule]
        idle = dict.fromkeys(layout.members, 0)
        rows += [idle] * PIPELINE_CYCLES            # drain the pipeline, then commit
        step = Signal(range(S))
        cur = Signal(layout, init=rows[0])
        pre = Signal(layout, init=rows[1 % S])
        end = step == S - 1
        learn_q = Signal()
        learn = Mux(step == 0, self.learn, learn_q)
        run = Signal()                              # ``run`` unless clearing (below)
        bank = Signal()                             # memory half that holds the state at t
        commit = Signal()
        m.d.comb += commit.eq(run & end)
        with m.If(run):
            m.d.sync += [step.eq(Mux(end, 0, step + 1)), cur.eq(pre)]
            with m.If(step == 0):
                m.d.sync += learn_q.eq(self.learn)
            with m.Switch(step):
                for i in range(S):
                    with m.Case(i):
                        m.d.sync += pre.eq(layout.const(rows[(i + 2) % S]))

        # Memories: node voltages at {bank, node}, gates at edge. Running, the engine
        # reads ``pre``'s operands; paused, ``cur``'s, so a gate written meanwhile is seen.
        node_bits = max(1, (N - 1).bit_length())
        gate_init = [int(x) for x in self.gate_init]
        mems = {}
        for name, shape, depth, init in (("vf", v_shape, 2 << node_bits, []),
                                         ("vc", v_shape, 2 << node_bits, []),
                                         ("g", g_shape, E, gate_init)):
            mem = Memory(shape=shape, depth=depth, init=init)
            m.submodules[f"{name}_mem"] = mem
            wr = mem.write_port()
            mems[name] = (mem, wr)
        # After a reset the memories are cleared (node voltages 0, the initial gates from
        # a ROM), one address per cycle; meanwhile ``busy`` is high and ``run`` is ignored.
        node_depth = 2 << node_bits
        clear_len = max(node_depth, E)
        clear = Signal(range(clear_len + 2))
        busy = Signal()
        m.d.comb += [busy.eq(clear != clear_len + 1), self.busy.eq(busy)]
        with m.If(busy):
            m.d.sync += clear.eq(clear + 1)
        m.submodules.gate_rom = gate_rom = Memory(shape=g_shape, depth=E, init=gate_init)
        rom_rd = gate_rom.read_port()
        m.d.comb += [rom_rd.addr.eq(clear), run.eq(self.run & ~busy)]

        at = SimpleNamespace(**{k: Mux(run, getattr(pre, k), getattr(cur, k))
                                for k in ("node", "other", "edge")})
        read_bank = Mux(commit, ~bank, bank)

        def engine_read(name, addr):
            mem, wr = mems[name]
            port = mem.read_port(transparent_for=(wr,))
            m.d.comb += port.addr.eq(addr)
            return port.data

        # A driven node's voltage comes from its register (the same in both networks).
        vd_by_node = [vd[driven[n]] if n in driven else 0 for n in range(N)]
        vd_node, vd_other = mux_tree(cur.node, vd_by_node), mux_tree(cur.other, vd_by_node)

        def node_value(name, addr, is_driven, from_register):
            return Mux(is_driven, from_register, engine_read(name, Cat(addr, read_bank)))

        vn_f = node_value("vf", at.node, cur.node_driven, vd_node)
        vo_f = node_value("vf", at.other, cur.other_driven, vd_other)
        vn_c = node_value("vc", at.node, cur.node_driven, vd_node)
        vo_c = node_value("vc", at.other, cur.other_driven, vd_other)
        g_e = engine_read("g", at.edge)

        # Stage 1, operands: the factors of one edge's term in one network and of its
        # gate step.
        vn = Signal(v_shape)
        vo = Signal(v_shape)
        m.d.comb += [vn.eq(Mux(cur.net, vn_c, vn_f)), vo.eq(Mux(cur.net, vo_c, vo_f))]
        ov = overdrive(m, f, g_e, cur.vt)
        factors = (*edge_operands(m, f, ov, Mux(cur.plus, vo, vn), Mux(cur.plus, vn, vo), "x"),
                   *gate_operands(m, f, Mux(cur.plus, vo_f - vn_f, vn_f - vo_f),
                                  Mux(cur.plus, vo_c - vn_c, vn_c - vo_c)))

        # Pipeline registers (they hold while ``run`` is low): what the later stages need
        # of the visit, and the stage's results.
        control = {"plus": 1, "first": 1, "last": 1, "node": range(N), "net": 1, "term": 1,
                   "vn": v_shape, "gate": 1, "edge": range(E), "g": g_shape,
                   "clamp": range(len(clamp_nodes) + 1)}

        def stage_registers(tag, values, results):
            regs = SimpleNamespace(**{k: Signal(shape, name=f"{tag}_{k}")
                                      for k, shape in control.items()})
            regs.results = [Signal(r.shape(), name=f"{tag}_r{i}") for i, r in enumerate(results)]
            with m.If(run):
                m.d.sync += [getattr(regs, k).eq(v) for k, v in values.items()]
                m.d.sync += [r.eq(v) for r, v in zip(regs.results, results)]
            return regs

        p = stage_registers("p", {
            "plus": cur.plus, "first": cur.first, "last": cur.last, "node": cur.node,
            "net": cur.net, "term": cur.term, "vn": vn, "gate": cur.gate & learn,
            "edge": cur.edge, "g": g_e, "clamp": cur.clamp}, factors)

        # Stage 2, products: the edge term and the gate step.
        udiff, usum, vdiff, gminus, gplus = p.results
        s, s_clipped = edge_product(m, f, udiff, usum, vdiff, "x", self.mult_bits)
        dg, dg_clipped = gate_product(m, f, gminus, gplus, mult_bits=self.mult_bits)
        flags = Signal(5)
        m.d.comb += flags.eq(Mux(s_clipped & p.term, 1, 0) | Mux(p.gate & dg_clipped, 16, 0))
        q = stage_registers("q", {k: getattr(p, k) for k in control}, [s, dg, flags])
        q.s, q.dg, q.flags = q.results

        # Stage 3, sum: the running sum of the node's terms; the new gate (below).
        acc = Signal(signed(self.acc_width))
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(Mux(q.first, 0, acc) + Mux(q.plus, q.s, -q.s))
        with m.If(run):
            m.d.sync += acc.eq(total)
        r = SimpleNamespace(last=Signal(name="r_last"), node=Signal(range(N), name="r_node"),
                            net=Signal(name="r_net"), vn=Signal(v_shape, name="r_vn"),
                            clamp=Signal(range(len(clamp_nodes) + 1), name="r_clamp"),
                            total=Signal(signed(self.acc_width), name="r_total"))
        with m.If(run):
            m.d.sync += [r.last.eq(q.last), r.node.eq(q.node), r.net.eq(q.net),
                         r.vn.eq(q.vn), r.clamp.eq(q.clamp), r.total.eq(total)]

        # Stage 4, node unit: after a node's last term, its new voltage (or the clamp)
        # into the other half of the memory.
        v_new, node_flags = node_step(m, f, r.vn, r.total, "x")
        clamped = select(r.clamp, {i + 1: clamp_values[n] for i, n in enumerate(clamp_nodes)})
        _, vf_wr = mems["vf"]
        _, vc_wr = mems["vc"]
        clearing_nodes = busy & (clear < node_depth)
        m.d.comb += [
            vf_wr.addr.eq(Mux(busy, clear, Cat(r.node, ~bank))),
            vf_wr.data.eq(Mux(busy, 0, v_new)),
            vf_wr.en.eq(clearing_nodes | (run & r.last & ~r.net)),
            vc_wr.addr.eq(Mux(busy, clear, Cat(r.node, ~bank))),
            vc_wr.data.eq(Mux(busy, 0, Mux(r.clamp != 0, clamped, v_new))),
            vc_wr.en.eq(clearing_nodes | (run & r.last & r.net)),
        ]
        with m.If(run & r.last & ~r.net):
            with m.Switch(r.node):
                for n in out_nodes:
                    with m.Case(n):
                        m.d.sync += vf_out_next[n].eq(v_new)
        _, g_wr = mems["g"]
        restoring = busy & (clear >= 1) & (clear <= E)      # the ROM read takes a cycle
        m.d.comb += [                                   # a controller write wins
            g_wr.addr.eq(Mux(self.gate_we, self.gate_addr, Mux(busy, clear - 1, q.edge))),
            g_wr.data.eq(Mux(self.gate_we, self.gate_data,
                             Mux(busy, rom_rd.data, gate_apply(m, f, q.g, q.dg)))),
            g_wr.en.eq(self.gate_we | restoring | (run & q.gate)),
        ]

        # Commit: the other half of the memory becomes the state; drives; free outputs.
        with m.If(commit):
            m.d.sync += [bank.eq(~bank), *[vd[i].eq(st.drive[i]) for i in range(len(vd))],
                         *[vf_out[n].eq(vf_out_next[n]) for n in out_nodes]]
        tick_flags = Signal(5)
        m.d.comb += tick_flags.eq(q.flags | Mux(r.last, node_flags, 0)
                                  | Mux(end & any_of(clamp_flags), 8, 0))
        self._status_and_samples(m, st, commit, tick_flags, out_values, run)

        # Readback of the state at t (registered reads, as the memories give them).
        g_mem, g_wr = mems["g"]
        g_rd = g_mem.read_port(transparent_for=(g_wr,))
        m.d.comb += [g_rd.addr.eq(self.gate_raddr), self.gate_rdata.eq(g_rd.data)]
        node_q = Signal(range(max(N, 2)))
        m.d.sync += node_q.eq(self.node_raddr)
        for name, out in (("vf", self.v_free_rdata), ("vc", self.v_clamped_rdata)):
            mem, wr = mems[name]
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(Cat(self.node_raddr, bank)),
                         out.eq(Mux(select(node_q, {n: 1 for n in driven}),
                                    mux_tree(node_q, vd_by_node), rd.data))]
        return m

