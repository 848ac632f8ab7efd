"""The banked fabric: P edge units, node state, gates and node sums in block RAM.

``[fabric] banked = true`` with ``edge_units = P`` (``--fabric banked:P``). A tick has an
edge pass and a node pass (``docs/gateware.md``, "Banked fabric"):

- **Edge pass** (``C = ceil(E / P)`` cycles): unit u owns the edges ``u C .. u C + C - 1``
  (a build-time partition), one a cycle, in *both* networks: it reads ``V_F[a], V_F[b],
  V_C[a], V_C[b]`` (every unit has its own read ports on the node memory, which synthesis
  replicates: no conflicts) and its edge's gate from its own gate bank, computes both edge
  terms and the gate step (:class:`~.cells.EdgeCell`), writes the new gate back into its
  bank, and adds ``-s`` to a's sum in its *A bank* and ``+s`` to b's in its *B bank* (each
  network; ``jacobi``, ``momentum``: the end conductances too). A bank is a
  read-modify-write one cycle deep whose read is transparent for its write, so two edges
  of a unit at one node in consecutive cycles add up; the first of a unit's edges at a
  node in a tick writes its term rather than adding it (a build-time bit), so no bank is
  ever cleared, and an address no edge writes stays 0.
- **Node pass** (one settling node a cycle): the 2P banks' sums of the node (and its
  state, and ``momentum``'s velocities), summed and registered; then both networks' node
  steps (:class:`~.cells.NodeCell`), the clamp of a clamped output, and the next state
  written into the other half of the node memory. A commit cycle swaps the halves and
  takes the drives, as in the serial fabric.

``cycles_per_tick = ceil(E / P) + N_s + 4`` (:func:`banked_cycles_per_tick`, ``N_s`` the
settling nodes): one cycle ahead of the node pass for the edge pipeline's last sums, two
of node pass pipeline, one to compare the last node's move, one to commit.
"""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from clln.errors import ConfigError

from ..memory import sync_read_port
from .arith import any_of, const_mul, mux_tree, select, tree_sum, wire
from .cells import (
    EdgeCell,
    NodeCell,
    impairment_shapes,
    impairment_values,
    node_conductance_bits,
    node_moved,
    node_state_shape,
    node_voltage,
    uses_conductance,
    velocity_shape,
)
from .parallel import Fabric
from .ports import SAT_MASK, SatFlags, sat_bits
from .serial import SerialFabric

__all__ = ["BankedFabric", "banked_cycles_per_tick", "check_banked", "edge_partition"]

#: Cycles of a tick beyond the edge pass and the node pass (see the module notes).
EXTRA_CYCLES = 4


def banked_cycles_per_tick(cfg):
    """Clock cycles of one tick of ``cfg``'s banked fabric:
    ``ceil(E / P) + N_s + 4`` (``N_s``: the nodes that are not driven)."""
    P, E = cfg.fabric.edge_units, cfg.network.n_edges
    return -(-E // P) + cfg.network.n_nodes - len(cfg.driven_nodes()) + EXTRA_CYCLES


def check_banked(cfg):
    """Refuse what the banked fabric cannot build (before it is made: an elaboratable
    that fails in its constructor is never used): edge units outside ``1 .. E``, read
    noise."""
    P, E = cfg.fabric.edge_units, cfg.network.n_edges
    if not 1 <= P <= E:
        raise ConfigError(cfg.source, "fabric.edge_units", f"the banked fabric needs 1 "
                          f"to {E} edge units (the edges), got {P}")
    if cfg.nonideal.read_noise:
        raise ConfigError(cfg.source, "nonideal.read_noise", "read noise is not "
                          "implemented in the banked fabric; use the serial fabric")


def edge_partition(n_edges, units):
    """``(C, slots)``: unit u's edges are ``slots[u]`` (its slot c holds edge ``u C + c``,
    ``C = ceil(E / P)`` slots each, the last units' may be fewer)."""
    C = -(-n_edges // units)
    return C, [list(range(u * C, min(n_edges, (u + 1) * C))) for u in range(units)]


def divide_by(m, e, C, n, name):
    """``(e // C, e % C)`` of a value ``e < n`` by a constant ``C``: a product by a
    reciprocal (``e M >> s``, checked exact for every ``e < n`` here) and its rest, shifts
    and adds (no divider, no multiplier block)."""
    if C == 1:
        return e, 0
    for s in range(1, 64):
        M = -(-(1 << s) // C)
        if all((i * M) >> s == i // C for i in range(n)):
            break
    quot = wire(m, const_mul(e, M) >> s, f"{name}_unit", range(max(-(-n // C), 2)))
    rest = wire(m, e - const_mul(quot, C), f"{name}_slot", range(max(C, 2)))
    return quot, rest


class BankedFabric(SerialFabric):
    """A fabric of P edge units and one node unit; its state lives in block RAM.

    Parameters are those of :class:`~.fabric.Fabric` (``cfg.fabric.edge_units`` is P).

    Attributes
    ----------
    slots : int
        ``C = ceil(E / P)``, the edge pass's cycles.
    settling : list of int
        The nodes of the node pass, in order (those not driven).
    cycles_per_tick : int
        ``C + len(settling) + 4``.

    Notes
    -----
    The ports are the serial fabric's (:class:`~.serial.SerialFabric`): node voltages
    through ``node_raddr``, gates through ``gate.raddr`` (one cycle), ``busy`` while the
    memories are cleared after a reset (``max(2 * 2**ceil(log2 N), C) + 1`` cycles).
    Read noise is not implemented (refused by :func:`check_banked`, which
    :func:`~clln.gateware.fabric.make_fabric` calls).
    """

    RELAXATIONS = ("euler", "jacobi", "momentum")

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None):
        # the serial fabric's ports and registers, not its schedule; no loaded graph
        self.capacity = None
        Fabric.__init__(self, cfg, fmt, seed, mult_bits)
        self.edge_units = P = cfg.fabric.edge_units
        self.slots, self.unit_edges = edge_partition(self.n_edges, P)
        driven = set(self.driven_nodes)
        self.settling = [n for n in range(self.n_nodes) if n not in driven]
        self.cycles_per_tick = banked_cycles_per_tick(cfg)
        self.max_degree = int(cfg.network.degrees().max())
        self.cond_width = node_conductance_bits(self.fmt, self.max_degree)

    def elaborate(self, platform):
        m = Module()
        x = self._registers(m)
        x.edge_flags, x.gate_writes, x.node_sums = [], [], []
        self._steps(m, x)
        self._memories(m, x)
        for u in range(self.edge_units):
            self._edge_unit(m, x, u)
        self._node_pass(m, x)
        self._finish_tick(m, x)
        self._readback(m, x)
        return ResetInserter({"sync": self.control.clear})(m)

    # ---------------------------------------------------------------- schedule

    def _row_layout(self, x):
        """A schedule row: every unit's edge of this step, and the node pass's node."""
        f, N, D = self.fmt, self.n_nodes, max(len(x.vd), 1)
        unit = data.StructLayout({
            "valid": 1, "a": range(N), "b": range(N), "first_a": 1, "first_b": 1,
            "a_driven": 1, "b_driven": 1, "a_slot": range(D), "b_slot": range(D),
            "vt": signed(f.v_bits), **impairment_shapes(f)})
        return data.StructLayout({
            "units": data.ArrayLayout(unit, self.edge_units), "nvalid": 1,
            "node": range(N), "clamp": range(len(x.clamp_nodes) + 1)})

    def _rows(self, x):
        """The schedule: row s < C has slot s of every unit; row ``C + 1 + i`` the
        node pass's i-th node; the others do nothing."""
        edges = [tuple(int(v) for v in e) for e in self.cfg.network.edges]
        idle_unit = self._unit_row(x, edges, 0, set(), set())
        idle_unit.update(valid=0, first_a=0, first_b=0)
        rows = [{"units": [dict(idle_unit) for _ in range(self.edge_units)], "nvalid": 0,
                 "node": self.settling[0], "clamp": 0} for _ in range(self.cycles_per_tick)]
        for u, my_edges in enumerate(self.unit_edges):
            seen_a, seen_b = set(), set()
            for c, e in enumerate(my_edges):
                rows[c]["units"][u] = self._unit_row(x, edges, e, seen_a, seen_b)
        for i, n in enumerate(self.settling):
            rows[self.slots + 1 + i].update(
                nvalid=1, node=n, clamp=x.clamp_nodes.index(n) + 1
                if n in x.clamp_values else 0)
        return rows

    def _unit_row(self, x, edges, e, seen_a, seen_b):
        """Edge ``e``'s fields for its unit (``seen_a``/``seen_b``: the nodes the unit's
        A and B banks already hold a sum of this tick; updated)."""
        a, b = edges[e]
        row = {"valid": 1, "a": a, "b": b, "first_a": int(a not in seen_a),
               "first_b": int(b not in seen_b), "a_driven": int(a in x.driven),
               "b_driven": int(b in x.driven), "a_slot": x.driven.get(a, 0),
               "b_slot": x.driven.get(b, 0), "vt": int(self.fmt.vt_q[e]),
               **impairment_values(self.fmt, e)}
        seen_a.add(a)
        seen_b.add(b)
        return row

    def _steps(self, m, x):
        """The step counter and the schedule ROM: ``x.row`` is the row of ``step``
        (read a cycle ahead), ``x.row_q``/``x.row_qq`` those of the two steps before;
        ``learn`` sampled on the first step; ``run``, ``end``, ``commit``."""
        S, ctl = self.cycles_per_tick, self.control
        layout = self._row_layout(x)
        x.step = step = Signal(range(S))
        x.end = step == S - 1
        x.run, x.busy, x.commit, x.bank = Signal(), Signal(), Signal(), Signal()
        m.d.comb += x.commit.eq(x.run & x.end)
        rom = Memory(shape=layout, depth=S, init=self._rows(x))
        m.submodules.schedule = rom
        rd = sync_read_port(m, rom, "schedule")
        nxt = Mux(x.end, 0, step + 1)
        m.d.comb += rd.addr.eq(Mux(x.run, nxt, step))
        x.row = rd.data
        x.row_q = Signal(layout, name="row_q")
        x.row_qq = Signal(layout, name="row_qq")
        x.slot_q = Signal(range(S), name="slot_q")
        x.learn_q = Signal()
        with m.If(x.run):
            m.d.sync += [step.eq(nxt), x.row_q.eq(x.row), x.row_qq.eq(x.row_q),
                         x.slot_q.eq(step)]
            with m.If(step == 0):
                m.d.sync += x.learn_q.eq(ctl.learn)

    # ---------------------------------------------------------------- memories

    def _sum_layout(self):
        """A sum bank's word: both networks' sums (and end conductances)."""
        acc = signed(self.acc_width)
        fields = {"f": acc, "c": acc}
        if uses_conductance(self.fmt):
            fields.update(gf=unsigned(self.cond_width), gc=unsigned(self.cond_width))
        return data.StructLayout(fields)

    def _memories(self, m, x):
        """Node states (both networks in a word) at {half, node}; ``momentum``: velocities
        at node; every unit's gate bank and A and B sum banks; the clearing after a
        reset (node states 0, gates from a ROM) with ``busy``."""
        f, N, P, C = self.fmt, self.n_nodes, self.edge_units, self.slots
        h = f.h_bits
        node_bits = max(1, (N - 1).bit_length())
        x.node_depth = 2 << node_bits
        x.node_mem = Memory(shape=unsigned(2 * h), depth=x.node_depth, init=[])
        m.submodules.node_mem = x.node_mem
        x.node_wr = x.node_mem.write_port()
        if f.relax == "momentum":
            x.vel_mem = Memory(shape=unsigned(2 * f.m_bits), depth=1 << node_bits, init=[])
            m.submodules.vel_mem = x.vel_mem
            x.vel_wr = x.vel_mem.write_port()
        depth = max(C, 2)
        bank_init = [[int(self.gate_init[e]) for e in edges] for edges in self.unit_edges]
        x.gate_mems, x.sum_mems = [], []
        for u in range(P):
            mem = Memory(shape=signed(f.g_bits), depth=depth, init=bank_init[u])
            m.submodules[f"gate_bank{u}"] = mem
            x.gate_mems.append((mem, mem.write_port()))
            sums = []
            for side in ("a", "b"):
                mem = Memory(shape=self._sum_layout(), depth=N, init=[])
                m.submodules[f"sum_{side}{u}"] = mem
                sums.append((mem, mem.write_port()))
            x.sum_mems.append(sums)
        clear_len = max(x.node_depth, C)
        x.clear = Signal(range(clear_len + 2))
        m.d.comb += [x.busy.eq(x.clear != clear_len + 1), self.control.busy.eq(x.busy),
                     x.run.eq(self.control.run & ~x.busy)]
        with m.If(x.busy):
            m.d.sync += x.clear.eq(x.clear + 1)
        x.clearing_nodes = x.busy & (x.clear < x.node_depth)
        g_rows = [sum((bank_init[u][c] if c < len(bank_init[u]) else 0) % (1 << f.g_bits)
                      << (u * f.g_bits) for u in range(P)) for c in range(depth)]
        gate_rom = Memory(shape=unsigned(P * f.g_bits), depth=depth, init=g_rows)
        gate_rom.attrs["rom_style"] = "block"
        m.submodules.gate_rom = gate_rom
        x.gate_rom = sync_read_port(m, gate_rom, "gate_rom")
        m.d.comb += x.gate_rom.addr.eq(x.clear)
        x.restoring = x.busy & (x.clear != 0) & (x.clear <= C)

    def _node_read(self, m, x, addr, name):
        """A read port of the node memory at ``{bank, addr}`` (held while paused):
        ``(free, clamped)`` node states."""
        rd = x.node_mem.read_port()
        m.d.comb += [rd.addr.eq(Cat(addr, x.bank)), rd.en.eq(x.run)]
        h = self.fmt.h_bits
        return (wire(m, rd.data[:h], f"{name}_hf", signed(h)),
                wire(m, rd.data[h:], f"{name}_hc", signed(h)))

    # ---------------------------------------------------------------- edge pass

    def _edge_unit(self, m, x, u):
        """Edge unit u: reads (step s), the edge cell (s + 1, also the gate write),
        the sums (s + 2)."""
        f = self.fmt
        row, q, qq = x.row.units[u], x.row_q.units[u], x.row_qq.units[u]
        ends = {}
        for end in ("a", "b"):
            hf, hc = self._node_read(m, x, getattr(row, end), f"u{u}{end}")
            vd = mux_tree(getattr(q, f"{end}_slot"), x.vd)
            driven = getattr(q, f"{end}_driven")
            ends[end] = [Mux(driven, vd, node_voltage(f, hf)),
                         Mux(driven, vd, node_voltage(f, hc))]
        g_mem, g_wr = x.gate_mems[u]
        g_rd = g_mem.read_port()
        m.d.comb += [g_rd.addr.eq(x.step), g_rd.en.eq(x.run)]
        cell = EdgeCell(f, self.mult_bits)
        m.submodules[f"edge{u}"] = cell
        m.d.comb += [cell.va_f.eq(ends["a"][0]), cell.vb_f.eq(ends["b"][0]),
                     cell.va_c.eq(ends["a"][1]), cell.vb_c.eq(ends["b"][1]),
                     cell.g.eq(g_rd.data), cell.vt.eq(q.vt), cell.learn.eq(x.learn_q)]
        m.d.comb += [getattr(cell, name).eq(getattr(q, name)) for name in impairment_shapes(f)]
        x.edge_flags.append(Mux(q.valid, sat_bits(term=cell.sat_term, dg=cell.sat_dg), 0))
        x.gate_writes.append((g_wr, x.slot_q, cell.g_next, x.run & q.valid))
        outs = ["s_f", "s_c"]
        if uses_conductance(f):
            outs += ["cond_a_f", "cond_a_c", "cond_b_f", "cond_b_c"]
        regs = {}
        for name in outs:
            port = getattr(cell, name)
            regs[name] = Signal(port.shape(), name=f"u{u}_{name}")
            with m.If(x.run):
                m.d.sync += regs[name].eq(port)
        for side, (mem, wr) in zip(("a", "b"), x.sum_mems[u], strict=True):
            self._sum_bank(m, x, mem, wr, side, q, qq, regs)

    def _sum_bank(self, m, x, mem, wr, side, q, qq, regs):
        """One sum bank's read-modify-write: read at the end ``side`` of the unit's edge
        (or the node pass's node), add (B) or subtract (A) the term a cycle later."""
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += [rd.addr.eq(Mux(x.row.nvalid, x.row.node, getattr(q, side))),
                     rd.en.eq(x.run)]
        x.node_sums.append(rd.data)
        first = getattr(qq, f"first_{side}")
        m.d.comb += [wr.addr.eq(getattr(qq, side)),
                     wr.en.eq(x.run & qq.valid & ~getattr(qq, f"{side}_driven"))]
        for net in ("f", "c"):
            old = Mux(first, 0, getattr(rd.data, net))
            term = regs[f"s_{net}"]
            m.d.comb += getattr(wr.data, net).eq(old + term if side == "b" else old - term)
            if uses_conductance(self.fmt):
                old = Mux(first, 0, getattr(rd.data, f"g{net}"))
                m.d.comb += getattr(wr.data, f"g{net}").eq(old + regs[f"cond_{side}_{net}"])

    # ---------------------------------------------------------------- node pass

    def _node_pass(self, m, x):
        """Stage 1 (step ``C + 1 + i``): reads of node i's sums, state and velocities;
        stage 2: the sums added up and registered; stage 3: :meth:`_node_unit`."""
        f = self.fmt
        hf, hc = self._node_read(m, x, x.row.node, "np")
        vel = None
        if f.relax == "momentum":
            rd = x.vel_mem.read_port()
            m.d.comb += [rd.addr.eq(x.row.node), rd.en.eq(x.run)]
            vel = rd.data
        acc, cw = signed(self.acc_width), unsigned(self.cond_width)
        # the exact sums wrap in their width, as the node's whole sum fits it
        values = {"acc_f": (tree_sum([s.f for s in x.node_sums]), acc),
                  "acc_c": (tree_sum([s.c for s in x.node_sums]), acc),
                  "v_f": (hf, signed(f.h_bits)), "v_c": (hc, signed(f.h_bits))}
        if uses_conductance(f):
            values.update(cond_f=(tree_sum([s.gf for s in x.node_sums]), cw),
                          cond_c=(tree_sum([s.gc for s in x.node_sums]), cw))
        if vel is not None:
            values.update(m_f=(vel[:f.m_bits], velocity_shape(f)),
                          m_c=(vel[f.m_bits:], velocity_shape(f)))
        r = {}
        for name, (value, shape) in values.items():
            r[name] = Signal(shape, name=f"np_{name}")
            with m.If(x.run):
                m.d.sync += r[name].eq(value)
        self._node_unit(m, x, r)

    def _node_unit(self, m, x, r):
        """Both networks' node steps of the node in ``x.row_qq``, the clamp, the writes
        of the next state (and velocities), the free outputs' next voltages, and what
        :meth:`_finish_tick` compares for ``moved``."""
        f, qq = self.fmt, x.row_qq
        cell = NodeCell(f, self.acc_width, self.cond_width if uses_conductance(f) else None)
        m.submodules.node_unit = cell
        m.d.comb += [getattr(cell, name).eq(value) for name, value in r.items()]
        clamped = select(qq.clamp, {i + 1: x.clamp_values[n]
                                    for i, n in enumerate(x.clamp_nodes)})
        is_clamped = qq.clamp != 0
        vc_new = wire(m, Mux(is_clamped, clamped, cell.v_c_next), "np_vc_new",
                      node_state_shape(f))
        write = x.run & qq.nvalid
        m.d.comb += [
            x.node_wr.addr.eq(Mux(x.busy, x.clear, Cat(qq.node, ~x.bank))),
            x.node_wr.data.eq(Mux(x.busy, 0, Cat(cell.v_f_next, vc_new))),
            x.node_wr.en.eq(x.clearing_nodes | write)]
        if f.relax == "momentum":
            # a clamped node keeps no velocity
            m_c = wire(m, Mux(is_clamped, 0, cell.m_c_next), "np_mc_new", velocity_shape(f))
            m.d.comb += [
                x.vel_wr.addr.eq(Mux(x.busy, x.clear, qq.node)),
                x.vel_wr.data.eq(Mux(x.busy, 0, Cat(cell.m_f_next, m_c))),
                x.vel_wr.en.eq(x.clearing_nodes | write)]
        with m.If(write):
            with m.Switch(qq.node):
                for n in x.out_nodes:
                    with m.Case(n):
                        m.d.sync += x.vf_out_next[n].eq(node_voltage(f, cell.v_f_next))
        x.node_flags = Mux(qq.nvalid, cell.flags, 0)
        x.written = [(write, node_voltage(f, r["v_f"]), node_voltage(f, cell.v_f_next)),
                     (write, node_voltage(f, r["v_c"]), node_voltage(f, vc_new))]

    # ---------------------------------------------------------------- commit

    def _finish_tick(self, m, x):
        """Gate writes (a controller write wins); commit: the other half becomes the
        state, drives, free outputs; flags, ticks, samples and ``moved`` (the serial
        fabric's: the node unit's writes compared a cycle later, the drives at commit)."""
        f, st, gate = self.fmt, x.st, self.gate
        unit_w, slot_w = divide_by(m, gate.addr, self.slots, self.n_edges, "gate_w")
        for u, (wr, slot, g_next, en) in enumerate(x.gate_writes):
            mine = gate.we & (unit_w == u)
            m.d.comb += [
                wr.addr.eq(Mux(mine, slot_w, Mux(x.busy, x.clear - 1, slot))),
                wr.data.eq(Mux(mine, gate.data, Mux(
                    x.busy, x.gate_rom.data[u * f.g_bits:(u + 1) * f.g_bits], g_next))),
                wr.en.eq(mine | x.restoring | en)]
        with m.If(x.commit):
            m.d.sync += [x.bank.eq(~x.bank),
                         *[x.vd[i].eq(st.drive[i]) for i in range(len(x.vd))],
                         *[x.vf_out[n].eq(x.vf_out_next[n]) for n in x.out_nodes]]
        tick_flags = Signal(SatFlags.size)
        m.d.comb += tick_flags.eq(any_of(x.edge_flags) | x.node_flags
                                  | Mux(x.end & any_of(x.clamp_flags), SAT_MASK["v"], 0))
        self._status_and_samples(m, st, x.commit, tick_flags, x.out_values, x.run)
        self._moved(m, x)

    def _written_moved(self, m, x):
        """Whether the node unit's writes of the cycle before (both networks) moved their
        node: registered, then compared (the serial fabric's ``moved`` takes it)."""
        f, written = self.fmt, []
        for i, (en, old, new) in enumerate(x.written):
            en_q, old_q, new_q = Signal(), Signal(old.shape()), Signal(new.shape())
            m.d.sync += [en_q.eq(en), old_q.eq(old), new_q.eq(new)]
            written.append(en_q & node_moved(m, f, old_q, new_q, f"w{i}"))
        return wire(m, any_of(written), "moved_written")

    def _readback(self, m, x):
        """Readback of the state at t: a node (both networks) and a gate, one cycle."""
        f, N = self.fmt, self.n_nodes
        unit_r, slot_r = divide_by(m, self.gate.raddr, self.slots, self.n_edges, "gate_r")
        unit_q = Signal(range(max(self.edge_units, 2)))
        m.d.sync += unit_q.eq(unit_r)
        banks = []
        for mem, wr in x.gate_mems:
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += rd.addr.eq(slot_r)
            banks.append(rd.data)
        m.d.comb += self.gate.rdata.eq(mux_tree(unit_q, banks))
        node_q = Signal(range(max(N, 2)))
        m.d.sync += node_q.eq(self.node_raddr)
        driven_q = wire(m, any_of([node_q == n for n in x.driven]), "rb_driven")
        vd_q = mux_tree(select(node_q, x.driven), x.vd)
        rd = x.node_mem.read_port()
        m.d.comb += rd.addr.eq(Cat(self.node_raddr, x.bank))
        h = f.h_bits
        for out, word in ((self.v_free_rdata, rd.data[:h]), (self.v_clamped_rdata, rd.data[h:])):
            m.d.comb += out.eq(Mux(driven_q, vd_q, node_voltage(f, word.as_signed())))

