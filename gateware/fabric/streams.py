"""The pipelined fabric: several independent networks interleaved, one tick per cycle.

A tick of a fully parallel fabric is one long combinational loop (node voltages ->
edge terms -> node sums -> new voltages), which no register can cut without changing
the dynamics. ``[fabric] streams = C`` instead cuts it with ``C - 1`` pipeline registers
and fills the pipeline with ``C`` independent networks (streams), as C-slow retiming
does: stream ``s`` starts from the gates of seed ``learning.seed + s`` and has its own
drive and target registers, whose values its slot takes along from the issue. Every
clock cycle one stream's tick enters
the pipeline and another's leaves it, so the fabric makes ``C`` ticks every ``C`` cycles
at a clock about ``C`` times faster than the one-cycle tick's; each stream's bits are
those of :class:`~.fabric.Fabric` (``docs/semantics.md``) for its seed.

The state of every stream (node states of both networks, the voltages with
``node_extra_bits`` more fraction bits, which the edges read the top bits of; gates) lives
in the ring
itself: a state register closes the loop behind the last cut, so the ring holds ``C``
slots, one per stream, and turns by one slot every cycle whether ticks run or not. A
slot with no tick passes its state unchanged; there is no bank of registers, no read
multiplexer and no clock enable on the state. Gate writes and gate reads wait for
their stream's slot to pass the state register.

``[schedule] relax = "jacobi"`` spreads the node step over the same stages: each settling
node's conductance beside the products (from the operands, which hold every end's ``u``),
its shift beside the edge terms, the sum rounded and shifted in place of ``kappa * sum``,
the step kept within the span and the voltage within the box in the last stage.
``relax = "momentum"`` adds each settling node's velocity to what the ring carries (none
for a node clamped in the clamped network: its velocity is 0); the velocity is decayed
beside the shift of the sum (in the stage of ``kappa``) and added to the state there, so
the last stage adds only the step (as ``jacobi``'s) and takes the new velocity from the
same comparisons as the new state (``hi - H``, ``lo - H`` or step plus decay: a
multiplexer, no subtraction after the box).
Ticks are issued by *lanes* (``lanes[s]``, one per stream: each stream on its own
schedule, its ``tick_done`` and ``moved`` at its tick's write-back; what the board system
uses) or in joint rounds (``control``: one tick of every stream, the benches' port).
``control.moved`` is the OR over the streams of a round's ticks (ORed as they are written
back): a round's own once ``busy`` is low after it; at a round's ``tick_done`` (the
cycle its last tick enters the pipeline) the round before's.
"""

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from clln.nonideal import NOISE_MEAN, noise_states

from .arith import (
    above,
    any_of,
    below,
    const_mul,
    mux_tree,
    register,
    replicas,
    round_half,
    split_mul,
    tree_sum,
    wire,
)
from .cells import (
    UNIT_GAIN,
    apply_gain,
    bounded_usum_bits,
    clamp_errors,
    clamp_finish,
    clamp_scale,
    conductance_shift,
    edge_finish,
    edge_operands,
    edge_raw_product,
    end_conductance_bits,
    gate_clamp,
    gate_operands,
    gate_round,
    gate_scale,
    impairment_values,
    jacobi_apply,
    jacobi_shift,
    jacobi_span,
    momentum_decay,
    node_apply,
    node_moved,
    node_round,
    node_scale,
    node_state,
    node_state_shape,
    node_sum,
    node_voltage,
    noise_bits,
    noise_step,
    output_value,
    overdrive,
    uses_conductance,
    velocity_shape,
)
from .parallel import Fabric
from .ports import SAT_MASK, ControlSignature, SatFlags, sat_bits

__all__ = ["StreamFabric", "CUTS", "pipeline_cuts"]

#: Places a pipeline register can cut the tick, in the order they are used: after the
#: edge terms (beside them, the gate steps times lr and the clamped outputs; ``jacobi``:
#: each node's shift), after ``kappa * sum`` (``jacobi``: the sum rounded and shifted),
#: after the operands (beside them, the output errors), after the products (beside them,
#: the errors times eta; ``jacobi``: the nodes' conductances), after the node sums
#: (beside them, the gate steps rounded), after the overdrives, after the new state
#: (node steps rounded and applied, gates stepped, and which nodes moved). With all
#: seven (8 streams) no stage has more than about two adders in a row.
CUTS = ("terms", "kappa", "operands", "products", "sums", "overdrive", "steps")
#: The cuts in the order a tick passes them, after the state register.
PIPELINE_ORDER = ("overdrive", "operands", "products", "terms", "sums", "kappa", "steps")


#: Edges per group of the gate readout (a power of two): each group picks its gate into a
#: register, then the addressed group's is taken.
READ_GROUP = 8


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
    The members are those of :class:`~.parallel.Fabric`, for ``C`` networks (``run``,
    ``busy`` ... are ``control``'s, ``sat_flags`` ``status``'s):

    - ``lanes[s]`` (``ControlSignature`` of one network): the slot of stream s ticks as it
      passes the state register while the lane's ``run`` is high (with its ``learn``),
      unless a joint round runs; ``tick_done`` and ``moved`` (that tick's) in the cycle
      its new state is written back; ``busy`` from the issue until ``outputs`` (its K)
      hold the tick's state; sample writes write stream s's registers; ``clear`` as
      ``control.clear``.
    - ``run``/``learn``: sampled when a round begins; a round issues one tick of every
      stream, one per cycle (beginning with whichever stream's slot is at the state
      register: the streams are independent, so the order is free), and always
      completes. ``tick_done`` is high in a round's last cycle and ``ticks`` counts rounds
      (ticks of each stream).
    - ``busy``: high while a tick is in the pipeline, while a gate write waits for its
      stream's slot, and for a cycle after the last write-back, while the copies behind
      ``outputs`` and the state ports follow. Drive and target registers are read by the
      ticks in flight, so change them (and read ``outputs`` or the state) only while
      ``busy`` is low.
    - ``gate.addr``/``gate.raddr`` address ``s * E + e``; ``outputs`` has ``s * K + k``;
      ``v_free``, ``v_clamped`` and ``gates`` hold stream after stream (copies, taken as
      each slot passes the state register; a board build that does not read them has
      none). Write a gate only while ``busy`` is low: the write waits (``busy``) until
      its stream's slot comes round, at most ``C + 3`` cycles, and replaces that slot's
      new value of the gate (so it would drop a running tick's step of that gate). A
      written gate is kept within ``[gate_min, gate_max]``, as learning keeps gates, so
      that every gate always is (which bounds the edge terms' factors, see
      ``bounded_usum_bits``; the protocol refuses other gates anyway).
    - ``gate.rdata`` is the gate at ``gate.raddr`` ``gate_read_latency`` (``C + 3``)
      cycles earlier: the address is registered, then split into stream and edge, then
      the stream's slot comes round, then its group's gate is selected.
    - ``sat_flags``: sticky flags of all streams together.
    - ``moved``: whether some node of some stream moved by more than ``still_lsb`` in a
      round; the round's once ``busy`` is low after it, the round before's at a round's
      ``tick_done`` (a round's ticks are still in the pipeline then).
    - ``control.clear`` (as the domain's reset) restores every stream: registered twice, it
      restores the control registers and drops the ticks in flight; the ring has no
      reset, so each slot is wiped as it enters the state register over the next ``C``
      cycles (``busy`` from the cycle after ``clear`` until the turn is done).
    """

    #: The ``[schedule] relax`` values this fabric implements.
    RELAXATIONS = ("euler", "jacobi", "momentum")

    def __init__(self, cfg, fmt=None, seed=None, mult_bits=None):
        self.streams = cfg.fabric.streams
        self.cuts = pipeline_cuts(self.streams)
        super().__init__(cfg, fmt, seed, mult_bits)
        seed = cfg.learning.seed if seed is None else seed
        self.seeds = [seed + s for s in range(self.streams)]
        self.stream_gate_init = [self.fmt.volts_to_g(cfg.learning.initial_gates(self.n_edges, s))
                                 for s in self.seeds]
        self.edge_units, self.cycles_per_tick = self.n_edges, self.streams
        self.max_degree = int(cfg.network.degrees().max())
        # the address is registered, then split, then the stream's slot comes round (C
        # cycles at most)
        self.gate_read_latency = self.streams + 3

    def _members(self):
        v, g = signed(self.fmt.v_bits), signed(self.fmt.g_bits)
        C, N, E = self.streams, self.n_nodes, self.n_edges
        return {
            **self._seam_members(),
            "lanes": In(ControlSignature(self.n_samples, self.fmt.v_bits,
                                         self.n_outputs)).array(C),
            "v_free": Out(data.ArrayLayout(v, C * N)),
            "v_clamped": Out(data.ArrayLayout(v, C * N)),
            "gates": Out(data.ArrayLayout(g, C * E)),
        }

    def elaborate(self, platform):
        m = Module()
        ctx = self._ring(m)
        self._clear_and_wipe(m, ctx)
        self._issue(m, ctx)
        x = dict(zip(ctx.carry, (ctx.valid, ctx.rend, ctx.learn, ctx.slot_drive,
                                 ctx.slot_target, ctx.state.vf, ctx.state.vc, ctx.state.g)
                     + ((ctx.state.m,) if ctx.vel_keys else ()),
                     strict=True))
        x = self._overdrive_stage(m, ctx, x)
        x = self._operand_stage(m, ctx, x)
        x = self._product_stage(m, ctx, x)
        x = self._term_stage(m, ctx, x)
        x = self._sum_stage(m, ctx, x)
        x = self._kappa_stage(m, ctx, x)
        x = self._step_stage(m, ctx, x)
        wr = self._write_back(m, ctx, x)
        moved_regs = self._round_moved(m, x)
        out_values, mirror = self._stream_copies(m, ctx)
        self._status_and_samples(m, ctx.io, ctx.tick_done, x["flags"] | any_of(x["sat"]),
                                 out_values, run=x["valid"])
        lane_regs = self._lanes(m, ctx, x, out_values)
        written = Signal()
        m.d.sync += written.eq(x["valid"] | wr.en.any() | ctx.wipe_g[0])
        m.d.comb += self.control.busy.eq(
            (ctx.count != 0) | any_of(ctx.valids) | written | wr.accepted | wr.pending
            | wr.en.any() | ctx.wipe_next)

        # A clear restores what the domain's reset does (last: it wins); the state
        # follows over the turn of the wipe.
        with m.If(ctx.clear):
            io = ctx.io
            resets = [ctx.count, ctx.learn_q, written, wr.accepted, wr.pending, wr.en,
                      io.flags, io.ticks, *ctx.valids, *moved_regs, *lane_regs,
                      *(r for regs in ctx.drives + ctx.targets for r in regs),
                      *out_values, *ctx.noise_regs,
                      *(r for copy in mirror for r in copy.vf + copy.vc + copy.g)]
            m.d.sync += [r.eq(r.init) for r in resets]
        self._gate_reads(m, ctx)
        self._state_ports(m, mirror)
        return m

    def _ring(self, m):
        """The elaboration's namespace, with the ring's state register and ``phase``.

        The ring: the state register, then the cuts in pipeline order; the slot in the
        k-th register after the state register holds stream ``phase - k`` (mod C). The
        ring's registers (state, pipeline, ``phase``) have no reset: a clear
        (``control.clear`` or the domain's reset) instead wipes each slot as it enters
        the state register, over one turn of the ring (:meth:`_clear_and_wipe`). So no
        reset net reaches the tens of thousands of flip-flops of the datapath.
        """
        f, C, N, E = self.fmt, self.streams, self.n_nodes, self.n_edges
        v_shape, g_shape = node_state_shape(f), signed(f.g_bits)    # node states H
        ctx = SimpleNamespace(
            edges=[tuple(int(v) for v in e) for e in np.asarray(self.cfg.network.edges)],
            io=SimpleNamespace(**self._io_registers()),
            ring=[cut for cut in PIPELINE_ORDER if cut in self.cuts],
            valids=[],
            # ``carry`` names what travels with a slot around the ring (``rend``: the
            # round's last tick; ``drive`` and ``target``: its stream's, taken at the issue)
            carry=("valid", "rend", "learn", "drive", "target", "vf", "vc", "g"))
        # each stream's drive and target registers (the joint sample writes write all)
        io = self._io_registers()
        ctx.drives = [[Signal.like(r, name=f"s{s}_{r.name}") for r in io["drive"]]
                      for s in range(C)]
        ctx.targets = [[Signal.like(r, name=f"s{s}_{r.name}") for r in io["target"]]
                       for s in range(C)]
        ctx.io.drive, ctx.io.target = [], []        # written by :meth:`_lanes` instead
        ctx.state = SimpleNamespace(
            vf=[Signal(v_shape, name=f"state_vf{n}", reset_less=True) for n in range(N)],
            vc=[Signal(v_shape, name=f"state_vc{n}", reset_less=True) for n in range(N)],
            g=[Signal(g_shape, name=f"state_g{e}", init=int(self.stream_gate_init[0][e]),
                      reset_less=True) for e in range(E)])
        # ``momentum``: the velocities of ``ctx.vel_keys`` travel with the slot too
        ctx.state.m, ctx.vel_keys = [], []
        if f.relax == "momentum":
            clamped = {n for out in self.cfg.io.outputs for n in out if n >= 0}
            ctx.vel_keys = [(tag, n) for tag, n in self._settling_keys()
                            if not (tag == "c" and n in clamped)]
            ctx.state.m = [Signal(velocity_shape(f), name=f"state_m{tag}{n}", reset_less=True)
                           for tag, n in ctx.vel_keys]
            ctx.carry += ("m",)
        ctx.phase = Signal(range(C), reset_less=True)   # the stream in the state register
        m.d.sync += ctx.phase.eq(_next_stream(ctx.phase, 1, C))
        return ctx

    def _clear_and_wipe(self, m, ctx):
        """``control.clear`` registered twice (``ctx.clear``), and the wipe of one turn of
        the ring after it or the domain's reset (``wipe_next``, ``wipe_v``, ``wipe_g``)."""
        C, N, E = self.streams, self.n_nodes, self.n_edges
        # ``clear`` is registered first: it comes from the controller's logic and would
        # otherwise reach across the ring in the same cycle. The turn of the wipe begins
        # a cycle later, with the restore of the control registers (``clear``).
        clear_q = Signal(name="clear_q")
        m.d.sync += clear_q.eq(self.control.clear | any_of([lane.clear for lane in self.lanes]))
        ctx.clear = Signal(name="clear_qq")
        m.d.sync += ctx.clear.eq(clear_q)
        restart = wire(m, clear_q | ResetSignal(), "restart")
        wiping = Signal(range(C), reset_less=True)  # cycles of the turn left after next
        with m.If(restart):
            m.d.sync += wiping.eq(C - 1)
        with m.Elif(wiping != 0):
            m.d.sync += wiping.eq(wiping - 1)
        ctx.wipe_next = wire(m, restart | (wiping != 0), "wipe_next")
        # the wipe in one register per node and per edge of the state (kept apart: one
        # flip-flop for all would drive its 1,800 loads across the chip)
        ctx.wipe_v = replicas(m, ctx.wipe_next, "wipe_v", N)
        ctx.wipe_g = replicas(m, ctx.wipe_next, "wipe_g", E)

    def _issue(self, m, ctx):
        """Issue: a joint round (``control.run``) takes C cycles, one tick of every
        stream, beginning with the stream in the state register (the streams are
        independent: order is free); outside a round, the stream in the state register
        ticks if its lane's ``run`` is high, with its lane's ``learn``. The slot takes its
        stream's drive and target values along (``slot_drive``, ``slot_target``)."""
        C, ctl, lanes = self.streams, self.control, self.lanes
        ctx.count = count = Signal(range(C))
        ctx.learn_q = Signal()
        first = count == 0
        ctx.valid = Signal()
        ctx.learn = Signal()
        ctx.joint = joint = Signal(name="joint_valid")
        lane_run = mux_tree(ctx.phase, [lane.run for lane in lanes])
        lane_learn = mux_tree(ctx.phase, [lane.learn for lane in lanes])
        m.d.comb += [joint.eq(Mux(first, ctl.run & ~ctx.wipe_next, 1)),
                     ctx.valid.eq(joint | (first & ~ctl.run & lane_run & ~ctx.wipe_next)),
                     ctx.learn.eq(Mux(first, Mux(ctl.run, ctl.learn, lane_learn), ctx.learn_q))]
        ctx.slot_drive = [wire(m, mux_tree(ctx.phase, [d[i] for d in ctx.drives]),
                               f"slot_drive{i}") for i in range(len(ctx.drives[0]))]
        ctx.slot_target = [wire(m, mux_tree(ctx.phase, [t[k] for t in ctx.targets]),
                                f"slot_target{k}") for k in range(len(ctx.targets[0]))]
        with m.If(joint):
            m.d.sync += count.eq(Mux(count == C - 1, 0, count + 1))
            with m.If(first):
                m.d.sync += ctx.learn_q.eq(ctl.learn)
        ctx.tick_done = Signal()
        ctx.rend = wire(m, count == C - 1, "round_end")
        m.d.comb += ctx.tick_done.eq(joint & ctx.rend)

    def _stage(self, m, ctx, cut, values):
        """``values`` (a dict of values or lists of values), registered at ``cut`` (if the
        fabric has that cut)."""
        if cut not in self.cuts:
            return values
        behind = (self.streams - 1 - ctx.ring.index(cut)) % self.streams  # at power-up
        out = {}
        # ``*_each``: lists of one value, registered in as many kept-apart copies
        replicated = {key: value[0] for key, value in values.items() if key.endswith("_each")}
        for key, value in values.items():
            if key in replicated:
                continue
            if key == "g":
                out[key] = [register(m, v, f"{cut}_g{i}", int(self.stream_gate_init[behind][i]))
                            for i, v in enumerate(value)]
            elif isinstance(value, list):
                out[key] = [register(m, v, f"{cut}_{key}{i}") for i, v in enumerate(value)]
            else:
                # ``valid`` is reset: a clear drops the ticks in flight
                out[key] = register(m, value, f"{cut}_{key}", reset_less=key != "valid")
        for key, value in replicated.items():
            out[key] = replicas(m, value, f"{cut}_{key}", len(values[key]))
        ctx.valids.append(out["valid"])
        return out

    @staticmethod
    def _keep(ctx, x, *names):
        """What of ``x`` travels on: the ``carry`` and ``names``."""
        return {k: x[k] for k in ctx.carry + names}

    def _overdrive_stage(self, m, ctx, x):
        """Overdrives (twin thresholds: the clamped transistors' too, ``ov_c``)."""
        f = self.fmt
        ov = [overdrive(m, f, x["g"][e], int(f.vt_q[e]), name=f"ov{e}")
              for e in range(self.n_edges)]
        ctx.ov_bits = len(ov[0]) if ov else f.v_bits
        values = {**self._keep(ctx, x), "ov": ov}
        if f.twin_thresholds:
            values["ov_c"] = [overdrive(m, f, x["g"][e], int(f.vt_c_q[e]), name=f"ov_c{e}")
                              for e in range(self.n_edges)]
        return self._stage(m, ctx, "overdrive", values)

    def _operand_stage(self, m, ctx, x):
        """Operands; beside them, the errors of the free outputs (the clamped outputs come
        from the free outputs at t; the clamp is spread over stages with time to spare)."""
        f = self.fmt
        udiff_f, usum_f, vdiff_f, udiff_c, usum_c, vdiff_c, minus, plus = ([] for _ in range(8))
        ov_c = x.get("ov_c", x["ov"])
        noise = self._noise_bank(m, ctx)
        vf, vc = self._voltages(x["vf"]), self._voltages(x["vc"])
        for e, (a, b) in enumerate(ctx.edges):
            for tag, v, ov, ud, us, vd in (("f", vf, x["ov"], udiff_f, usum_f, vdiff_f),
                                           ("c", vc, ov_c, udiff_c, usum_c, vdiff_c)):
                o1, o2, o3 = edge_operands(m, f, ov[e], v[a], v[b], f"{tag}{e}")
                ud.append(o1), us.append(o2), vd.append(o3)
            d_f, d_c = vdiff_f[e], vdiff_c[e]
            if noise[e] is not None:
                d_f, d_c = d_f + noise[e][0], d_c + noise[e][1]
            mi, pl = gate_operands(m, f, d_f, d_c, f"dg{e}")
            minus.append(mi), plus.append(pl)
        errors = [wire(m, err, f"cl_err{k}") for k, err in
                  enumerate(clamp_errors(self.cfg.io.outputs, x["target"], vf))]
        ctx.carry = tuple(k for k in ctx.carry if k != "target")    # used up
        return self._stage(m, ctx, "operands", {
            **self._keep(ctx, x), "udiff_f": udiff_f, "usum_f": usum_f, "vdiff_f": vdiff_f,
            "udiff_c": udiff_c, "usum_c": usum_c, "vdiff_c": vdiff_c, "minus": minus,
            "plus": plus, "cl_err": errors})

    def _product_stage(self, m, ctx, x):
        """Products (a multiplier block each with ``mult_bits``); the errors times eta."""
        f, E, mb = self.fmt, self.n_edges, self.mult_bits
        usum_bits = bounded_usum_bits(f)
        products = {
            "p_f": [edge_raw_product(x["udiff_f"][e], x["usum_f"][e], f, mb, usum_bits)
                    for e in range(E)],
            "p_c": [edge_raw_product(x["udiff_c"][e], x["usum_c"][e], f, mb, usum_bits)
                    for e in range(E)],
            "q": [split_mul(x["minus"][e], x["plus"][e], mb) for e in range(E)]}
        cl_scaled = [wire(m, clamp_scale(f, err), f"cl_scaled{k}")
                     for k, err in enumerate(x["cl_err"])]
        if uses_conductance(f):
            products["cond"] = self._conductances(m, ctx, x)
        return self._stage(m, ctx, "products", {
            **self._keep(ctx, x), **products, "vdiff_f": x["vdiff_f"],
            "vdiff_c": x["vdiff_c"], "cl_scaled": cl_scaled})

    def _settling_keys(self):
        """``(network, node)`` of every settling node's sums, in the order of the lists
        that carry them (``acc``, ``cond``, ``shift``, ``scaled``, ``moved``)."""
        settling = [n for n in range(self.n_nodes) if n not in self.driven_nodes]
        return sorted((tag, n) for tag in ("f", "c") for n in settling)

    def _conductances(self, m, ctx, x):
        """``jacobi``: every settling node's conductance ``D = sum of 2 u + leak_q`` over
        its edge ends, beside the products. The operands hold each end's ``u``:
        ``2 u_b = usum + udiff`` and ``2 u_a = usum - udiff``, exactly (times the edge's
        constant gain, if not 1); the leaks of the node's edges are one constant."""
        f = self.fmt
        bits = end_conductance_bits(f, ctx.ov_bits) + self.max_degree.bit_length()
        cond = []
        for tag, n in self._settling_keys():
            usum, udiff = x[f"usum_{tag}"], x[f"udiff_{tag}"]
            gain = [self._gain(e, tag) for e in range(self.n_edges)]
            ends = [apply_gain(usum[e] + udiff[e], gain[e])
                    for e, (_, b) in enumerate(ctx.edges) if b == n]
            ends += [apply_gain(usum[e] - udiff[e], gain[e])
                     for e, (a, _) in enumerate(ctx.edges) if a == n]
            leak = f.leak_q * len(ends)
            cond.append(wire(m, tree_sum(ends + ([Const(leak)] if leak else [])),
                             f"cond{tag}{n}", unsigned(bits)))
        return cond

    def _term_stage(self, m, ctx, x):
        """Edge terms (times their constant gains); the gate products (plus the edge's
        learning-rule offset) times lr, and the gate leak's droop; the clamped outputs
        (``ctx.clamp_nodes`` in ``x["clamp"]``, which travels on with the ``flags``)."""
        f, E = self.fmt, self.n_edges
        s_f, s_c, term_sat = [], [], []
        for e in range(E):
            t_f, sat_f = edge_finish(m, f, x["p_f"][e], x["vdiff_f"][e], f"f{e}",
                                     self._gain(e, "f"))
            t_c, sat_c = edge_finish(m, f, x["p_c"][e], x["vdiff_c"][e], f"c{e}",
                                     self._gain(e, "c"))
            s_f.append(t_f), s_c.append(t_c)
            term_sat += [sat_f, sat_c]
        dg_scaled = [wire(m, self._gate_scale(e, x["q"][e]), f"dg_scaled{e}")
                     for e in range(E)]
        clamp = {}
        clamp_flags = clamp_finish(m, f, self.cfg.io.outputs, self._voltages(x["vf"]),
                                   x["cl_scaled"], clamp)
        ctx.clamp_nodes = sorted(clamp)
        # saturation bits are registered one by one and ORed into ``flags`` by the next
        # stage, so no stage gathers bits from all over the datapath into one register
        sat = ([Mux(s, SAT_MASK["term"], 0) for s in term_sat]
               + [sat_bits(v=s) for s in clamp_flags])
        values = {**self._keep(ctx, x), "flags": Const(0, SatFlags.size), "sat": sat,
                  "s_f": s_f, "s_c": s_c, "dg_scaled": dg_scaled,
                  "clamp": [clamp[n] for n in ctx.clamp_nodes]}
        if f.droop_mul:
            # the gate leak's step toward rest_q, from the gate at t (the stage has time)
            values["droop"] = [wire(m, const_mul(f.rest_q - x["g"][e], f.droop_mul,
                                                 round_half(f.droop_shift)) >> f.droop_shift,
                                    f"droop{e}") for e in range(E)]
        ctx.carry += ("flags", "clamp")
        if uses_conductance(f):
            # the shift of each node's jacobi step, from its conductance
            values["shift"] = [conductance_shift(m, f, cond, f"{tag}{n}") for (tag, n), cond
                               in zip(self._settling_keys(), x["cond"], strict=True)]
            ctx.carry += ("shift",)
        return self._stage(m, ctx, "terms", values)

    def _gain(self, e, tag):
        """The constant relative gain (``UNIT_GAIN`` = 1, 0 when dead) of edge ``e``'s
        transistor of network ``tag``."""
        return impairment_values(self.fmt, e).get(f"k_{tag}", UNIT_GAIN)

    def _gate_scale(self, e, q):
        """:func:`~.cells.gate_scale` of edge ``e``'s gate product ``q`` plus its
        learning-rule offset: ``(q + offset) lr_mul`` and the rounding constant, with
        ``offset lr_mul`` folded into that constant (no adder more)."""
        f = self.fmt
        offset = int(f.offset_q[e])
        if not offset:
            return gate_scale(f, q)
        return const_mul(q, f.lr_mul, offset * f.lr_mul + round_half(f.learn_shift))

    def _noise_bank(self, m, ctx):
        """The read noise on each edge's free and clamped drop (a list of pairs, None for
        an edge without: no noise, or a frozen gate, which never uses it).

        One bank of generators for all streams, as the model draws one pair per edge and
        learning tick for every seed: registers hold the generator's state and the noise
        of the current round (``docs/semantics.md``, "Read noise"; the first round's at
        power-up), and take the next draw once the round's last tick, if it learns, has
        left the stage of the operands (where each of a round's ticks adds the noise). The
        next round's first tick comes at least a cycle later. The advance is known a cycle
        ahead (from the issue: with no cut after the overdrives, as the round's second-last
        tick issues) and held in a register per edge, kept apart. The clear and the
        domain's reset restore the registers (``ctx.noise_regs``)."""
        f, C, E = self.fmt, self.streams, self.n_edges
        ctx.noise_regs = []
        if not f.noise_mul:
            return [None] * E
        if "overdrive" in self.cuts:        # the operands a cycle after the issue
            ahead = ctx.tick_done & ctx.learn
        else:                               # the round's last tick issues next cycle
            ahead = ctx.joint & (ctx.count == C - 2) & ctx.learn
        first, shape, noise = noise_states(self.cfg), signed(noise_bits(f)), []
        for e in range(E):
            if f.frozen[e]:
                noise.append(None)
                continue
            advance = Signal(name=f"noise_advance{e}", attrs={"keep": 1})
            m.d.sync += advance.eq(ahead)
            state, n_f, n_c = (Signal(sh, name=f"{name}{e}", init=value) for sh, name, value
                               in zip((unsigned(32), shape, shape), ("noise", "noise_f",
                                                                      "noise_c"),
                                      _noise_draw(f, int(first[e])), strict=True))
            with m.If(advance):
                m.d.sync += [reg.eq(value) for reg, value
                             in zip((state, n_f, n_c), noise_step(m, f, state, str(e)),
                                    strict=True)]
            ctx.noise_regs += [advance, state, n_f, n_c]
            noise.append((n_f, n_c))
        return noise

    def _sum_stage(self, m, ctx, x):
        """Node sums (exact) of the settling nodes (keys ``ctx.acc_keys``); the gate steps
        rounded (plus the droop)."""
        f, E = self.fmt, self.n_edges
        settling = [n for n in range(self.n_nodes) if n not in self.driven_nodes]
        acc = {(tag, n): wire(m, node_sum(ctx.edges, n, dict(enumerate(x[f"s_{tag}"]))),
                               f"acc{tag}{n}", signed(self.acc_width))
               for tag in ("f", "c") for n in settling}
        ctx.acc_keys = sorted(acc)
        assert ctx.acc_keys == self._settling_keys()
        dg, sat = [], []
        for e in range(E):
            d, sat_d = gate_round(m, f, x["dg_scaled"][e], f"dg{e}")
            if f.droop_mul:
                d = wire(m, d + x["droop"][e], f"dg_droop{e}")
            dg.append(d)
            if not f.frozen[e]:                 # a frozen gate does not learn
                sat.append(Mux(x["learn"] & sat_d, SAT_MASK["dg"], 0))
        return self._stage(m, ctx, "sums", {
            **self._keep(ctx, x), "flags": x["flags"] | any_of(x["sat"]), "sat": sat,
            "dg": dg, "acc": [acc[key] for key in ctx.acc_keys],
            # a copy of valid per node sum and of valid & learn per edge
            "valid_each": [x["valid"]] * len(acc),
            "learning_each": [x["valid"] & x["learn"]] * E})

    def _kappa_stage(self, m, ctx, x):
        """Node steps: ``kappa * acc`` (and the rounding constant), or under ``jacobi``
        ``sat(acc)`` rounded and shifted by the node's shift; the gates stepped.

        A slot with no tick takes sums and gate steps of 0, so that its state passes the
        last stage unchanged with no multiplexer there: the new voltage
        ``v + round(kappa 0)`` is ``v`` (``jacobi``: ``v + round_shift(0, s)``, ``v``
        within the box), the new gate ``clamp(g + 0)`` is ``g`` (gates always are within
        their bounds). (The zeros come before the adders: zeros
        straight into a register would become its synchronous reset, a control signal
        that ECP5 slices share, which hampers their packing.)
        """
        f = self.fmt
        sat, scaled = [], []
        shifts = x["shift"] if uses_conductance(f) else [None] * len(ctx.acc_keys)
        valid_of = {}
        for (tag, n), acc, valid_copy, shift in zip(ctx.acc_keys, x["acc"], x["valid_each"],
                                                    shifts, strict=True):
            valid_of[tag, n] = valid_copy
            acc = Mux(valid_copy, acc, 0)
            if uses_conductance(f):
                # the clip to the span (``jacobi_span``) follows in the last stage
                sc, sat_acc = jacobi_shift(m, f, acc, shift, f"{tag}{n}")
            else:
                sc, sat_acc = node_scale(m, f, acc, f"{tag}{n}")
            scaled.append(wire(m, sc, f"scaled{tag}{n}"))
            sat.append(Mux(sat_acc, SAT_MASK["acc"], 0))
        g_sum = [x["g"][e] if f.frozen[e] else
                 wire(m, x["g"][e] + Mux(x["learning_each"][e], x["dg"][e], 0), f"g_sum{e}")
                 for e in range(self.n_edges)]
        kept = {k: v for k, v in self._keep(ctx, x).items() if k != "shift"}
        values = {**kept, "g": g_sum, "flags": x["flags"] | any_of(x["sat"]), "sat": sat,
                  "scaled": scaled}
        if f.relax == "momentum":
            # the decayed velocities, 0 in a slot with no tick (as the sums), and each
            # added to its node's state: the last stage then adds only the step
            states = {"f": x["vf"], "c": x["vc"]}
            values["decay"], values["hdecay"] = [], []
            for (tag, n), vel in zip(ctx.vel_keys, x["m"], strict=True):
                decay = momentum_decay(m, f, Mux(valid_of[tag, n], vel, 0), f"{tag}{n}")
                values["decay"].append(decay)
                values["hdecay"].append(wire(m, states[tag][n] + decay, f"hdecay{tag}{n}"))
        return self._stage(m, ctx, "kappa", values)

    def _step_stage(self, m, ctx, x):
        """The stream's new state: node steps rounded and applied, gates kept within their
        bounds; a slot with no tick (``valid`` low) keeps its state (the driven and
        clamped nodes through a multiplexer, the others by their steps of 0). Beside it,
        whether each node moves by more than ``still_lsb`` (``moved``, one bit per node
        and network: a driven node's once, as it is the same in both)."""
        f, N, E = self.fmt, self.n_nodes, self.n_edges
        v_shape, g_shape = node_state_shape(f), signed(f.g_bits)
        scaled = dict(zip(ctx.acc_keys, x["scaled"], strict=True))
        sat, ticking = [], x["valid"]
        v_old = {"f": x["vf"], "c": x["vc"]}
        v_next, moved = {}, {}
        for i, n in enumerate(self.driven_nodes):
            drive = x["drive"][i]
            v_next["f", n] = Mux(ticking, node_state(f, drive), x["vf"][n])
            v_next["c", n] = Mux(ticking, node_state(f, drive), x["vc"][n])
            moved["f", n] = node_moved(m, f, node_voltage(f, x["vf"][n]), drive, f"f{n}")
        vel = {}
        if f.relax == "momentum":
            vel = {key: (v, d, hd) for key, v, d, hd in zip(ctx.vel_keys, x["m"], x["decay"],
                                                            x["hdecay"], strict=True)}
        m_next = {}
        for tag, n in ctx.acc_keys:
            if f.relax == "momentum":
                h = v_old[tag][n]
                v_next[tag, n], moved[tag, n], m_next[tag, n] = self._momentum_step(
                    m, h, scaled[tag, n], *vel.get((tag, n), (None, 0, h)), ticking,
                    f"{tag}{n}")
                continue
            v_next[tag, n], moved[tag, n], fl = self._settling_step(
                m, v_old[tag][n], scaled[tag, n], ticking, f"{tag}{n}")
            sat.append(fl)
        for n, value in zip(ctx.clamp_nodes, x["clamp"], strict=True):
            v_next["c", n] = Mux(ticking, node_state(f, value), x["vc"][n])
            moved["c", n] = node_moved(m, f, node_voltage(f, x["vc"][n]), value, f"c{n}")
        vf_next = [wire(m, v_next["f", n], f"vf_next{n}", v_shape) for n in range(N)]
        vc_next = [wire(m, v_next["c", n], f"vc_next{n}", v_shape) for n in range(N)]
        g_next = [wire(m, gate_clamp(f, x["g"][e]), f"g_next{e}", g_shape) for e in range(E)]
        values = {"valid": x["valid"], "rend": x["rend"], "flags": x["flags"] | any_of(x["sat"]),
                  "sat": sat, "vf": vf_next, "vc": vc_next, "g": g_next,
                  "moved": [moved[key] for key in sorted(moved)]}
        if f.relax == "momentum":
            values["m"] = [m_next[key] for key in ctx.vel_keys]
        return self._stage(m, ctx, "steps", values)

    def _momentum_step(self, m, h, scaled, vel, decay, hdecay, ticking, tag):
        """A settling node's new state under ``momentum``: ``hdecay`` (its state plus its
        decayed velocity ``decay``, from the stage of ``kappa``; ``h`` and 0 for a clamped
        node, whose ``vel`` is None) plus its step (``scaled`` kept within the span),
        within the box; whether it moves by more than ``still_lsb`` (the voltages
        compared); and its new velocity, ``H' - H`` from the comparisons that give ``H'``
        (``hi - H``, ``lo - H`` or step plus decay, an adder beside the state's), kept in a
        slot with no tick (None for a clamped node). A slot with no tick has a step and
        decay of 0."""
        f = self.fmt
        F = f.node_extra_bits
        lo, hi = f.box_lo_q << F, f.box_hi_q << F
        dh = jacobi_span(m, f, scaled, tag)
        total = wire(m, hdecay + dh, f"vsum_{tag}")
        over, under = above(total, hi), below(total, lo)
        h_next = Signal(node_state_shape(f), name=f"v_{tag}")
        m.d.comb += h_next.eq(Mux(over, hi, Mux(under, lo, total)))
        if not f.box_lo_q <= 0 <= f.box_hi_q:
            h_next = Mux(ticking, h_next, h)
        moved = node_moved(m, f, node_voltage(f, h), node_voltage(f, h_next), tag)
        if vel is None:
            return h_next, moved, None
        move = Mux(over, hi - h, Mux(under, lo - h, wire(m, decay + dh, f"mstep_{tag}")))
        return h_next, moved, wire(m, Mux(ticking, move, vel), f"m_next_{tag}",
                                   velocity_shape(f))

    def _settling_step(self, m, v, scaled, ticking, tag):
        """A settling node's new state from its ``scaled`` sum (``euler``: ``kappa *
        acc`` plus the rounding constant; ``jacobi``: ``acc << F`` rounded and shifted),
        whether it moves by more than ``still_lsb`` (:func:`step_moved`; with
        ``node_extra_bits`` the voltages, the states' top bits, compared) and its
        saturation flags.

        ``jacobi``: a slot with no tick steps by 0, which keeps a voltage within the box;
        a box without 0 (the power-up and wiped voltage) takes a multiplexer on ``ticking``.
        """
        f = self.fmt
        if f.relax == "jacobi":
            dv = jacobi_span(m, f, scaled, tag)
            v_next, _ = jacobi_apply(m, f, v, dv, tag)
            if not f.box_lo_q <= 0 <= f.box_hi_q:
                v_next = Mux(ticking, v_next, v)
            if f.node_extra_bits:
                return v_next, node_moved(m, f, node_voltage(f, v), node_voltage(f, v_next),
                                          tag), 0
            lo, hi, flags = f.box_lo_q, f.box_hi_q, 0
        else:
            dv, sat_dv = node_round(m, f, scaled, tag)
            v_next, fl = node_apply(m, f, v, dv, tag)
            lo, hi = -(1 << (f.v_bits - 1)), (1 << (f.v_bits - 1)) - 1
            flags = Mux(sat_dv, SAT_MASK["dv"], 0) | fl
        return v_next, step_moved(m, f, v, dv, lo, hi, tag), flags

    def _round_moved(self, m, x):
        """``control.moved``: the OR over the streams of their ticks' ``moved`` bits, per
        round. As each tick is written back its bits are ORed into ``acc``; with the
        round's last tick (``rend``) the OR goes to ``moved``, held until the next round's
        last tick is in. So ``moved`` is a round's once ``busy`` is low after it, and at
        the ``tick_done`` of a round it is the round before's (the last tick of that one
        is written back in the cycle before, running back to back or not). Returns the
        registers a clear restores."""
        acc, moved = Signal(name="moved_acc"), Signal(name="moved_round")
        tick_moved = wire(m, any_of(x["moved"]), "tick_moved")
        with m.If(x["valid"]):
            m.d.sync += acc.eq(Mux(x["rend"], 0, acc | tick_moved))
            with m.If(x["rend"]):
                m.d.sync += moved.eq(acc | tick_moved)
        m.d.comb += self.control.moved.eq(moved)
        return [acc, moved]

    def _lanes(self, m, ctx, x, out_values):
        """Each stream's lane: its sample writes (a joint write writes every stream's
        register), its outputs, ``tick_done`` and ``moved`` in the cycle its tick's new
        state is written back (the slot entering the state register holds stream
        ``phase + 1``), ``busy`` from its tick's issue until the copies behind its
        outputs hold the tick's state (or while the ring is wiped). Returns the registers
        a clear restores."""
        C, K, ctl = self.streams, self.n_outputs, self.control
        tick_moved = wire(m, any_of(x["moved"]), "lane_moved")
        pending = []
        for s, lane in enumerate(self.lanes):
            regs = ctx.drives[s] + ctx.targets[s]
            addr = Mux(lane.sample_we, lane.sample_addr, ctl.sample_addr)
            value = Mux(lane.sample_we, lane.sample_data, ctl.sample_data)
            with m.If(lane.sample_we | ctl.sample_we):
                with m.Switch(addr):
                    for i, reg in enumerate(regs):
                        with m.Case(i):
                            m.d.sync += reg.eq(value)
            here = ctx.phase == s
            busy = Signal(name=f"s{s}_pending")
            with m.If(ctx.valid & here):
                m.d.sync += busy.eq(1)
            with m.Elif(here):                  # its copies take the state it has now
                m.d.sync += busy.eq(0)
            pending.append(busy)
            back = wire(m, x["valid"] & (ctx.phase == (s - 1) % C), f"s{s}_back")
            m.d.comb += [lane.tick_done.eq(back), lane.moved.eq(tick_moved),
                         lane.busy.eq(busy | ctx.wipe_next)]
            m.d.comb += [lane.outputs[k].eq(out_values[s * K + k]) for k in range(K)]
        return pending

    def _write_back(self, m, ctx, x):
        """Back into the state register; a gate write waits for its stream's slot and
        takes the place of that gate's new value. Returns the gate write
        (:meth:`_gate_writes`)."""
        C, N, E, state = self.streams, self.n_nodes, self.n_edges, ctx.state
        wr = self._gate_writes(m, ctx.phase)
        # A wipe gives the slot entering (stream ``phase + 1``) its initial state; that
        # stream in a copy per edge, taken a cycle ahead.
        entering = replicas(m, _next_stream(ctx.phase, 2, C), "entering", E, init=1 % C)
        m.d.sync += [state.vf[n].eq(Mux(ctx.wipe_v[n], 0, x["vf"][n])) for n in range(N)]
        m.d.sync += [state.vc[n].eq(Mux(ctx.wipe_v[n], 0, x["vc"][n])) for n in range(N)]
        if ctx.vel_keys:
            m.d.sync += [reg.eq(Mux(ctx.wipe_v[n], 0, value)) for reg, (_, n), value
                         in zip(state.m, ctx.vel_keys, x["m"], strict=True)]
        m.d.sync += [state.g[e].eq(Mux(ctx.wipe_g[e],
                                       mux_tree(entering[e], [int(init[e]) for init
                                                              in self.stream_gate_init]),
                                       Mux(wr.en[e], wr.data, x["g"][e])))
                     for e in range(E)]
        return wr

    def _stream_copies(self, m, ctx):
        """Outputs and the state of every stream, copied as its slot leaves the state
        register (the controller's error path then starts at a register): one cycle
        behind the write-back, so ``busy`` lasts a cycle longer.

        Returns
        -------
        (out_values, mirror)
            The output registers of all streams; each stream's copy (``vf``, ``vc``, ``g``).
        """
        f, cfg, state = self.fmt, self.cfg, ctx.state
        v_shape, g_shape = signed(f.v_bits), signed(f.g_bits)
        out_values, mirror = [], []
        for s in range(self.streams):
            here = wire(m, ctx.phase == s, f"s{s}_here")
            regs = [Signal(signed(f.v_bits + 1), name=f"s{s}_out{k}")
                    for k in range(len(cfg.io.outputs))]
            copy = SimpleNamespace(
                vf=[Signal(v_shape, name=f"s{s}_vf{n}") for n in range(self.n_nodes)],
                vc=[Signal(v_shape, name=f"s{s}_vc{n}") for n in range(self.n_nodes)],
                g=[Signal(g_shape, name=f"s{s}_g{e}", init=int(self.stream_gate_init[s][e]))
                   for e in range(self.n_edges)])
            with m.If(here):
                m.d.sync += [reg.eq(output_value(self._voltages(state.vf), p, mi))
                             for reg, (p, mi) in zip(regs, cfg.io.outputs, strict=True)]
                for name, values in (("vf", self._voltages(state.vf)),
                                     ("vc", self._voltages(state.vc)), ("g", state.g)):
                    m.d.sync += [a.eq(b) for a, b in zip(getattr(copy, name), values,
                                                         strict=True)]
            out_values += regs
            mirror.append(copy)
        return out_values, mirror

    def _voltages(self, states):
        """The voltages of node states (their top bits: :func:`~.cells.node_voltage`)."""
        return [node_voltage(self.fmt, h) for h in states]

    def _gate_reads(self, m, ctx):
        """Gate reads: the address registered, then split into stream and edge; each
        group of READ_GROUP edges selects its gate of the slot in the state register
        (with a copy of the edge of its own: the gates lie all over the part), and the
        addressed group's gate is captured a cycle later if that slot was the stream's."""
        C, E = self.streams, self.n_edges
        rd_addr = Signal.like(self.gate.raddr, name="rd_addr")
        rd_stream = Signal(range(C), name="rd_stream")
        stream, edge = _split_address(rd_addr, E, C)
        m.d.sync += [rd_addr.eq(self.gate.raddr), rd_stream.eq(stream)]
        groups = [ctx.state.g[i:i + READ_GROUP] for i in range(0, E, READ_GROUP)]
        rd_edge = replicas(m, edge, "rd_edge", len(groups) + 1)
        low = READ_GROUP.bit_length() - 1
        picked = [register(m, mux_tree(rd_edge[k][:low], group), f"rd_group{k}")
                  for k, group in enumerate(groups)]
        picked_stream = register(m, ctx.phase, "rd_group_stream")
        with m.If(picked_stream == rd_stream):
            m.d.sync += self.gate.rdata.eq(mux_tree(rd_edge[-1][low:], picked))

    def _state_ports(self, m, mirror):
        """``v_free``, ``v_clamped``, ``gates``: the copies, stream after stream."""
        C, N, E = self.streams, self.n_nodes, self.n_edges
        m.d.comb += [self.v_free[s * N + n].eq(mirror[s].vf[n])
                     for s in range(C) for n in range(N)]
        m.d.comb += [self.v_clamped[s * N + n].eq(mirror[s].vc[n])
                     for s in range(C) for n in range(N)]
        m.d.comb += [self.gates[s * E + e].eq(mirror[s].g[e])
                     for s in range(C) for e in range(E)]

    def _gate_writes(self, m, phase):
        """The pending gate write: accepted from ``gate.we`` (address and value
        registered), its address split into stream and edge in the next cycle, then fired
        (``en``, one bit per edge, registered) in the cycle its stream's slot enters the
        state register."""
        C, E = self.streams, self.n_edges
        wr = SimpleNamespace(accepted=Signal(name="wr_accepted"),
                             addr=Signal.like(self.gate.addr, name="wr_addr"),
                             pending=Signal(name="wr_pending"),
                             stream=Signal(range(C), name="wr_stream"),
                             edge=Signal(E, name="wr_edge"),
                             data=Signal(signed(self.fmt.g_bits), name="wr_data"),
                             en=Signal(E, name="wr_en"))
        # the slot entering the state register in the next cycle holds stream phase + 2
        fire = wr.pending & ~wr.en.any() & (wr.stream == _next_stream(phase, 2, C))
        m.d.sync += wr.en.eq(Mux(fire, wr.edge, 0))
        with m.If(wr.en.any()):
            m.d.sync += wr.pending.eq(0)
        with m.If(wr.accepted):
            stream, edge = _split_address(wr.addr, E, C)
            m.d.sync += [wr.accepted.eq(0), wr.pending.eq(1), wr.stream.eq(stream),
                         wr.edge.eq(Cat(edge == e for e in range(E)))]
        with m.If(self.gate.we):
            m.d.sync += [wr.accepted.eq(1), wr.addr.eq(self.gate.addr),
                         wr.data.eq(gate_clamp(self.fmt, self.gate.data))]
        return wr


def step_moved(m, f, v, dv, lo, hi, tag):
    """Whether ``v -> min(max(v + dv, lo), hi)`` moves by more than ``still_lsb`` (1 bit),
    as :func:`~.cells.node_moved` of the two, but with no subtraction after the new
    value: unclipped the move is ``dv``; clipped, ``hi - v`` or ``lo - v``, compared from
    ``v`` alone. The bit is ready when the new value is."""
    lsb, total = f.still_lsb, wire(m, v + dv, f"mv_total_{tag}")

    def far(bound):
        return (v > bound + lsb) | (v < bound - lsb)

    return wire(m, Mux(total > hi, far(hi), Mux(total < lo, far(lo), (dv > lsb) | (dv < -lsb))),
                f"moves_{tag}", 1)


def _noise_draw(f, state):
    """One learning tick of an edge's read-noise generator from ``state`` (Python ints, as
    :func:`~.cells.noise_step`): ``(next_state, n_f, n_c)``."""
    def xorshift32(v):
        v ^= (v << 13) & 0xFFFFFFFF
        v ^= v >> 17
        return v ^ (v << 5) & 0xFFFFFFFF

    def noise(word):
        total = sum(word >> 8 * i & 255 for i in range(4)) - NOISE_MEAN
        return total * f.noise_mul + round_half(f.noise_shift) >> f.noise_shift

    w1 = xorshift32(state)
    w2 = xorshift32(w1)
    return w2, noise(w1), noise(w2)


def _next_stream(phase, k, streams):
    """``(phase + k) % streams`` (an expression; ``phase < streams``)."""
    k %= streams
    if k == 0:
        return phase
    return Mux(phase >= streams - k, phase - (streams - k), phase + k)


def _split_address(addr, edges, streams):
    """``(addr // edges, addr % edges)`` of a gate address ``stream * edges + edge``
    (expressions; ``addr < streams * edges``)."""
    stream = tree_sum([addr >= s * edges for s in range(1, streams)])
    return stream, addr - const_mul(stream, edges)
