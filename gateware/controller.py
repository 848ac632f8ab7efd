"""On-chip training controller (:class:`Controller`).

It holds the dataset in block RAM and runs the presentation schedule of
``docs/semantics.md`` on a :class:`~clln.gateware.fabric.Fabric` (settle ticks with
learning off, for a fixed count or until the fabric is still, then learning ticks), in
cyclic or LFSR order, for N epochs or until
stopped; it sums the squared output errors per epoch and records the free outputs of
every example. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.protocol import Mode

from .fabric.ports import ControlSignature
from .memory import sync_read_port

__all__ = ["CommandSignature", "Controller", "lfsr_widths", "PHASE_BITS", "EPOCH_BITS"]

#: Bits of the phase (settle, learn ticks) and epoch counters; the command port's fields
#: are wider (the protocol's u32), the handler refuses what these cannot hold.
PHASE_BITS = p.MAX_PHASE_TICKS.bit_length()
EPOCH_BITS = p.MAX_RUN_EPOCHS.bit_length()


def _pow2(n):
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def lfsr_widths(max_examples):
    """LFSR widths the hardware supports: ``2 .. max(2, bit_length(max_examples))``."""
    return list(range(2, max(2, max_examples.bit_length()) + 1))


def _lfsr_next(state, width):
    """Amaranth expression: one step of the width-bit Fibonacci LFSR (``protocol.lfsr_step``)."""
    fb = state[p.LFSR_TAPS[width][0] - 1]
    for t in p.LFSR_TAPS[width][1:]:
        fb = fb ^ state[t - 1]
    return Cat(fb, state[:width - 1])


class CommandSignature(wiring.Signature):
    """What the command handler drives on the controller, and what it reads back.

    Written from the handler's side (``Out`` there, ``In`` on the :class:`Controller`).
    Dataset writes (``ds_*``), schedule writes (``sched_*`` latched by ``sched_we``),
    ``start`` (with ``start_epochs`` and ``start_learn``), ``stop``, ``clear``, the
    outputs memory read port (``out_*``, one cycle of latency); back: ``busy``, the run
    state (``ticks``, ``cycles`` of the run, ...) and the schedule registers (see
    :class:`Controller`).

    Parameters
    ----------
    max_examples : int
    row : int
        Values of a dataset row (inputs then targets).
    n_values : int
        Output values of an example (``streams * n_outputs``).
    v_bits : int
    streams : int
    error_bits : int
    """

    def __init__(self, max_examples, row, n_values, v_bits, streams, error_bits):
        self.params = (max_examples, row, n_values, v_bits, streams, error_bits)
        (self.max_examples, self.row, self.n_values, self.v_bits, self.streams,
         self.error_bits) = self.params
        ex_shape = range(max(max_examples, 2))
        super().__init__({
            "ds_we": Out(1), "ds_example": Out(ex_shape), "ds_index": Out(range(max(row, 2))),
            "ds_data": Out(signed(v_bits)),
            "sched_we": Out(1), "sched_settle": Out(32), "sched_learn": Out(32),
            "sched_epochs": Out(32), "sched_n": Out(16), "sched_order": Out(1),
            "sched_seed": Out(32), "sched_still": Out(8),
            "start": Out(1), "start_epochs": Out(32), "start_learn": Out(1), "stop": Out(1),
            "clear": Out(1),
            "out_example": Out(ex_shape), "out_index": Out(range(max(n_values, 2))),
            "out_data": In(signed(v_bits + 1)),
            "busy": In(1), "mode": In(2), "epoch": In(32), "example": In(ex_shape),
            "ticks": In(64), "cycles": In(64),
            "error_sum": In(data.ArrayLayout(error_bits, streams)),
            "settle": In(32), "learn_ticks": In(32), "epochs": In(32),
        })

    def __eq__(self, other):
        return isinstance(other, CommandSignature) and self.params == other.params

    def __hash__(self):
        return hash((CommandSignature, self.params))

    def __repr__(self):
        return f"CommandSignature{self.params}"


class Controller(wiring.Component):
    """Runs the schedule on the fabric, from a dataset in block RAM.

    Parameters
    ----------
    cfg : clln.config.Config
    fmt : clln.formats.Formats
    max_examples : int
        Rows of the dataset memory (and of the outputs memory).
    counter_bits : int
        Width of the tick and cycle counters (``protocol.counter_bits``; they wrap).
    stream : int, optional
        Make it the controller of stream ``stream`` alone of a pipelined fabric (its lane,
        :class:`~.stream_control.StreamController`): one network's outputs and error sum,
        the LFSR reset from ``learning.seed + stream``, and ``moved`` with no lag (a lane
        reports it with its tick's write-back).

    Attributes
    ----------
    error_bits : int
        Width of the error sums. An epoch's sum has at most ``max_examples * n_outputs``
        squares of an error below ``3 * 2**(v_bits - 1)``, so the sum saturates at
        ``2**64 - 1`` only when that bound does not fit 64 bits.

    Members
    -------
    command : In(CommandSignature(...))
        From the command handler: dataset writes (``ds_*``, one value per cycle:
        ``index`` < n_inputs is a drive value, then the targets; only while idle),
        schedule writes (``sched_*`` latched by ``sched_we``, which also reloads the LFSR
        from the seed: ``sched_seed`` is read bit by bit until ``busy`` falls;
        ``sched_n`` must be ``1 .. max_examples`` and ``sched_settle + sched_learn >= 1``,
        as the command handler checks; ``sched_still`` > 0 ends a settle phase after that
        many consecutive ticks without ``fabric.moved``, ``sched_settle`` being the cap;
        the pipelined fabric's joint port reports ``moved`` a tick late,
        ``cfg.fabric.still_lag``; its lanes, with ``stream``, do not),
        ``start`` (with ``start_epochs``, 0 = until stopped, and ``start_learn``; clears
        ``cycles``, which then counts the cycles of the run and stays when it ends),
        ``stop`` (honoured at the next tick boundary), ``clear`` (idle only: pulses
        ``fabric.clear``, clears the tick and cycle counters, epoch, example, error sums
        and outputs memory and reloads the LFSR), the outputs memory read port (``out_*``,
        one cycle of latency) and status.
    fabric : Out(ControlSignature(...))
        To the fabric (``sample_data`` is valid only with ``sample_we``).

    The dataset memory starts with the config's dataset and the schedule registers with
    the config's schedule.
    """

    def __init__(self, cfg, fmt, max_examples, stream=None, counter_bits=64):
        self.cfg, self.fmt = cfg, fmt
        self.counter_bits = counter_bits
        self.max_examples = max_examples
        self.n_inputs = len(cfg.io.inputs)
        self.n_outputs = len(cfg.io.outputs)
        self.n_driven = len(cfg.driven_nodes())
        self.streams = cfg.fabric.streams if stream is None else 1
        self.seed_offset = stream or 0
        self.still_lag = cfg.fabric.still_lag if stream is None else 0
        self.row = self.n_inputs + self.n_outputs
        self.row_stride = _pow2(self.row)
        self.out_stride = _pow2(self.streams * self.n_outputs)
        n_ex = min(len(cfg.task.x), max_examples)
        if n_ex < 1:
            raise ValueError("the dataset has no example")
        self.default_n = n_ex
        # |output - target| of a signed(v_bits + 1) output and a signed(v_bits) target
        self.diff_max = (3 << (fmt.v_bits - 1)) - 1
        self.error_bound = max_examples * self.n_outputs * self.diff_max ** 2
        self.error_bits = min(64, self.error_bound.bit_length())
        self.command_signature = CommandSignature(
            max_examples, self.row, self.streams * self.n_outputs, fmt.v_bits, self.streams,
            self.error_bits)
        self.control_signature = ControlSignature(
            self.n_driven + self.n_outputs, fmt.v_bits, self.streams * self.n_outputs)
        super().__init__({
            "command": In(self.command_signature),
            "fabric": Out(self.control_signature),
        })

    def _dataset_init(self):
        cfg, fmt = self.cfg, self.fmt
        x = fmt.volts_to_v(cfg.task.x)
        y = fmt.volts_to_v(cfg.task.y)
        init = [0] * (self.max_examples * self.row_stride)
        for i in range(min(len(x), self.max_examples)):
            for j, value in enumerate(list(x[i]) + list(y[i])):
                init[i * self.row_stride + j] = int(value)
        return init

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()
        self._memories(m, s)
        self._schedule_registers(m, s)
        self._lfsr_order(m, s)
        self._run_state(m, s)
        self._counters(m, s)
        self._dataset_reads(m, s)
        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                self._idle(m, s)
            with m.State("WIPE"):
                self._wipe(m, s)
            with m.State("SEED"):
                self._seed(m, s)
            with m.State("SELECT"):
                self._select(m, s)
            with m.State("LOAD"):
                self._load(m, s)
            with m.State("TICKS"):
                self._ticks(m, s)
            with m.State("OBS_DIFF"):
                self._observe_diff(m, s)
            with m.State("OBS_ABS"):
                self._observe_abs(m, s)
            with m.State("OBS_SQ"):
                self._observe_square(m, s)
            with m.State("END"):
                self._end_example(m, s)
        self._clears(m, s)
        m.d.comb += self.command.busy.eq((s.mode != Mode.IDLE) | fsm.ongoing("SEED") |
                                         fsm.ongoing("WIPE") | self.fabric.busy)
        return m

    # ---------------------------------------------------------------- parts

    def _memories(self, m, s):
        """The dataset memory (written by the handler) and the outputs memory (read by it)."""
        fmt, cmd = self.fmt, self.command
        v = signed(fmt.v_bits)
        m.submodules.dataset = ds = Memory(shape=v, depth=self.max_examples * self.row_stride,
                                           init=self._dataset_init())
        m.submodules.outmem = om = Memory(shape=signed(fmt.v_bits + 1),
                                          depth=self.max_examples * self.out_stride, init=[])
        s.ds_w, s.ds_r = ds.write_port(), sync_read_port(m, ds, "ds")
        s.om_w, om_r = om.write_port(), om.read_port()
        s.rs, s.os_ = self.row_stride.bit_length() - 1, self.out_stride.bit_length() - 1
        m.d.comb += [s.ds_w.en.eq(cmd.ds_we), s.ds_w.data.eq(cmd.ds_data),
                     s.ds_w.addr.eq((cmd.ds_example << s.rs) | cmd.ds_index),
                     om_r.addr.eq((cmd.out_example << s.os_) | cmd.out_index),
                     cmd.out_data.eq(om_r.data)]

    def _schedule_registers(self, m, s):
        """Schedule registers (reset: the config's schedule) and the seed's reduction."""
        cfg = self.cfg
        sch = cfg.schedule
        # counted in PHASE_BITS and EPOCH_BITS: the handler refuses more (protocol.MAX_*)
        s.settle = Signal(PHASE_BITS, init=sch.settle_ticks, name="settle")
        s.learn_t = Signal(PHASE_BITS, init=sch.learn_ticks, name="learn_t")
        s.epochs = Signal(EPOCH_BITS, init=min(cfg.learning.epochs, p.MAX_RUN_EPOCHS),
                          name="epochs")
        s.still = Signal(8, init=sch.still_ticks if sch.settle == "still" else 0, name="still")
        s.n_ex = Signal(range(self.max_examples + 1), init=self.default_n, name="n_ex")
        s.order = Signal(name="order")
        s.widths = lfsr_widths(self.max_examples)
        s.wmax = s.widths[-1]
        w0 = max(2, self.default_n.bit_length())
        seed0 = (cfg.learning.seed + self.seed_offset) % (1 << 32)
        s.lfsr = Signal(s.wmax, init=seed0 % ((1 << w0) - 1) + 1, name="lfsr")
        # seed reduction: rem = seed mod (2^w - 1) by restoring division, kept for RESET
        s.rem = Signal(s.wmax, init=seed0 % ((1 << w0) - 1), name="rem")
        s.reseed = Signal(name="reseed")    # SEED divides sched_seed (else only waits)
        s.n_out = self.max_examples * self.out_stride
        # WIPE: the address (down to 0); SEED
        s.steps = Signal(range(max(33, s.n_out)), name="steps")
        m.d.comb += [self.command.settle.eq(s.settle), self.command.learn_ticks.eq(s.learn_t),
                     self.command.epochs.eq(s.epochs)]

    def _lfsr_order(self, m, s):
        """The LFSR's width w = max(2, bit_length(n_ex)) and modulus 2**w - 1."""
        s.lfsr_next = Signal(s.wmax, name="lfsr_next")
        s.modulus = Signal(s.wmax, name="modulus")
        m.d.comb += [s.lfsr_next.eq(_lfsr_next(s.lfsr, s.wmax)),
                     s.modulus.eq((1 << s.wmax) - 1)]
        for w in reversed(s.widths[:-1]):
            with m.If(s.n_ex < (1 << w)):
                m.d.comb += [s.lfsr_next.eq(_lfsr_next(s.lfsr[:w], w)),
                             s.modulus.eq((1 << w) - 1)]

    def _run_state(self, m, s):
        """Run state: mode, epoch, example, phase, error sums, observation and squarer."""
        K, C, cmd = self.n_outputs, self.streams, self.command
        ex_shape = range(max(self.max_examples, 2))
        s.mode = Signal(2, name="mode")
        s.training = s.mode == Mode.TRAINING
        s.epoch = Signal(EPOCH_BITS, name="epoch")         # wraps in runs until STOP
        s.run_epochs = Signal(EPOCH_BITS, name="run_epochs")
        s.ex = Signal(ex_shape, name="ex")              # example being presented
        s.ex_count = Signal(ex_shape, name="ex_count")  # examples done in this epoch
        s.j = Signal(range(self.row + 1), name="j")
        # An example's ticks come in two phases, the settle phase (settle_ticks, or until
        # still, at most settle_ticks) then learn_ticks (learning on when training;
        # inference runs both with learning off, then observes).
        # ticks left in this phase, the current one included (its length when it begins:
        # a phase has at least one tick, as the schedule's checks ensure); ``fresh``: no
        # tick of it done yet
        s.left = Signal(PHASE_BITS, name="left")
        s.fresh = Signal(name="fresh")
        s.learn_phase = Signal(name="learn_phase")
        s.observed = Signal(name="observed")
        s.stop_req = Signal(name="stop_req")
        # per stream: the epoch's error so far, the last epoch's
        s.err_acc = [Signal(self.error_bits, name=f"err_acc{i}") for i in range(C)]
        s.last_err = [Signal(self.error_bits, name=f"last_err{i}") for i in range(C)]
        # Output being observed (0 outside OBS_*): output k of stream si, flat index kf.
        s.k = Signal(range(max(K, 2)), name="k")
        s.si = Signal(range(max(C, 2)), name="si")
        s.kf = Signal(range(max(K * C, 2)), name="kf")
        # squarer: mcand = |d| << i, mplier = |d| >> i
        s.mag_bits = self.diff_max.bit_length()
        s.mcand = Signal(2 * s.mag_bits - 1, name="mcand")
        s.mplier = Signal(s.mag_bits, name="mplier")
        s.out_q = Signal(signed(self.fmt.v_bits + 1), name="out_q")     # the output observed

        s.starting = Signal(name="starting")
        s.epoch_done = Signal(name="epoch_done")
        m.d.comb += [cmd.mode.eq(s.mode), cmd.epoch.eq(s.epoch), cmd.example.eq(s.ex)]
        m.d.comb += [cmd.error_sum[i].eq(s.last_err[i]) for i in range(C)]
        with m.If(cmd.stop):
            m.d.sync += s.stop_req.eq(1)

    def _counters(self, m, s):
        """The tick and cycle counters, and the ends of a phase: its count, or still."""
        cmd = self.command
        s.ticks = Signal(self.counter_bits, name="ticks")
        # cycles of the current / last run
        s.cycles = Signal(self.counter_bits, name="cycles")
        # consecutive ticks of this settle phase that moved no node (``_ticks`` counts them)
        s.quiet = Signal(8, name="quiet")
        # ``fabric.moved`` as it is about this phase's ticks: with a lag of 1 (pipelined
        # fabric), at the phase's first tick_done it is about the tick before the phase
        s.moved = Signal(name="moved")
        m.d.comb += s.moved.eq(self.fabric.moved | (s.fresh if self.still_lag else 0))
        s.phase_end = Signal(name="phase_end")          # this tick ends the phase's count
        # this tick completes ``still`` quiet ticks: it ends a settle phase before its cap
        s.still_end = Signal(name="still_end")
        m.d.comb += [s.phase_end.eq(s.left == 1),
                     s.still_end.eq(~s.learn_phase & (s.still != 0) & ~s.moved &
                                    (s.quiet + 1 == s.still)),
                     cmd.ticks.eq(s.ticks), cmd.cycles.eq(s.cycles)]
        with m.If(self.fabric.tick_done):
            m.d.sync += s.ticks.eq(s.ticks + 1)
        with m.If(s.mode != Mode.IDLE):               # frozen when the run ends
            m.d.sync += s.cycles.eq(s.cycles + 1)

    def _dataset_reads(self, m, s):
        """Dataset reads: the row of the example while loading it, else the target of the
        output observed next (read one cycle ahead), so no target is kept in registers."""
        K, n_in, fab = self.n_outputs, self.n_inputs, self.fabric
        s.in_obs_sq = Signal(name="in_obs_sq")
        prev = s.j - 1
        s.k_next = Mux(s.k == K - 1, 0, s.k + 1)
        m.d.comb += [s.ds_r.addr.eq((s.ex << s.rs) | (n_in + Mux(s.in_obs_sq, s.k_next, s.k))),
                     fab.sample_data.eq(s.ds_r.data),
                     fab.sample_addr.eq(Mux(prev < n_in, prev, prev - n_in + self.n_driven))]

    @staticmethod
    def _begin_phase(m, s, learning):
        """Start a phase (all its ticks left, no quiet tick yet) of settle ticks or,
        ``learning``, of learn ticks."""
        m.d.sync += [s.left.eq(Mux(learning, s.learn_t, s.settle)), s.fresh.eq(1),
                     s.quiet.eq(0), s.learn_phase.eq(learning)]

    @staticmethod
    def _begin_example(m, s):
        m.d.sync += s.j.eq(0)
        m.next = "SELECT"

    # ---------------------------------------------------------------- schedule phases

    def _idle(self, m, s):
        """Idle: take a schedule write, a clear or a start."""
        cmd = self.command
        m.d.sync += s.stop_req.eq(0)
        with m.If(cmd.sched_we):
            m.d.sync += [s.settle.eq(cmd.sched_settle), s.learn_t.eq(cmd.sched_learn),
                         s.epochs.eq(cmd.sched_epochs), s.n_ex.eq(cmd.sched_n),
                         s.order.eq(cmd.sched_order), s.still.eq(cmd.sched_still),
                         s.rem.eq(0), s.reseed.eq(1), s.steps.eq(32)]
            m.next = "SEED"
        with m.Elif(cmd.clear):
            m.d.comb += self.fabric.clear.eq(1)
            m.d.sync += [s.reseed.eq(0), s.steps.eq(s.n_out - 1)]
            m.next = "WIPE"
        with m.Elif(cmd.start):
            m.d.comb += s.starting.eq(1)
            m.d.sync += [s.mode.eq(Mux(cmd.start_learn, Mode.TRAINING, Mode.EVALUATING)),
                         s.run_epochs.eq(cmd.start_epochs), s.ex_count.eq(0)]
            self._begin_example(m, s)

    def _wipe(self, m, s):
        """Clear: zero the outputs memory, address ``steps`` down to 0."""
        m.d.comb += [s.om_w.en.eq(1), s.om_w.addr.eq(s.steps), s.om_w.data.eq(0)]
        m.d.sync += s.steps.eq(s.steps - 1)
        with m.If(s.steps == 0):
            m.d.sync += s.steps.eq(32)
            m.next = "SEED"

    def _seed(self, m, s):
        """32 steps, sched_seed's bit steps - 1 at step steps (reduced if ``reseed``)."""
        with m.If(s.steps == 0):
            m.d.sync += s.lfsr.eq(s.rem + 1)
            m.next = "IDLE"
        with m.Else():
            shifted = Cat(Cat(Const(0, 1), self.command.sched_seed).bit_select(s.steps, 1),
                          s.rem)
            m.d.sync += s.steps.eq(s.steps - 1)
            with m.If(s.reseed):
                m.d.sync += s.rem.eq(Mux(shifted >= s.modulus, shifted - s.modulus, shifted))

    def _select(self, m, s):
        """The next example: cyclic, or the LFSR's next state within ``1 .. n_ex``."""
        with m.If(s.stop_req):
            m.d.sync += s.mode.eq(Mode.IDLE)
            m.next = "IDLE"
        with m.Elif(s.order == 0):
            m.d.sync += s.ex.eq(s.ex_count)
            m.next = "LOAD"
        with m.Else():
            m.d.sync += s.lfsr.eq(s.lfsr_next)
            with m.If(s.lfsr <= s.n_ex):
                m.d.sync += s.ex.eq(s.lfsr - 1)
                m.next = "LOAD"

    def _load(self, m, s):
        """Write the example's row into the fabric's sample registers."""
        # a pipelined fabric reads the drives until its last tick has left
        m.d.comb += s.ds_r.addr.eq((s.ex << s.rs) | s.j)
        with m.If(~self.fabric.busy):
            with m.If(s.j != 0):
                m.d.comb += self.fabric.sample_we.eq(1)
            m.d.sync += s.j.eq(s.j + 1)
            with m.If(s.j == self.row):
                m.d.sync += s.observed.eq(0)
                self._begin_phase(m, s, s.settle == 0)
                m.next = "TICKS"

    def _ticks(self, m, s):
        """Run the phase's ticks (a settle phase until still, at most its count); then the
        next phase, the observation or the end."""
        fab = self.fabric
        m.d.comb += [fab.run.eq(1), fab.learn.eq(s.learn_phase & s.training)]
        with m.If(fab.tick_done):
            m.d.sync += [s.left.eq(s.left - 1), s.fresh.eq(0),
                         s.quiet.eq(Mux(s.moved, 0, s.quiet + 1))]
            with m.If(s.stop_req):
                m.d.sync += s.mode.eq(Mode.IDLE)
                m.next = "IDLE"
            with m.Elif(s.phase_end | s.still_end):
                with m.If(~s.learn_phase & ~s.training & (s.learn_t != 0)):
                    # inference: the learn ticks follow, learning off
                    self._begin_phase(m, s, 1)
                with m.Elif(s.observed):
                    m.next = "END"
                with m.Else():
                    m.next = "OBS_DIFF"

    # ---------------------------------------------------------------- error accumulation

    def _observe_diff(self, m, s):
        """Record output kf in the outputs memory and register it."""
        # the output is recorded and registered, its error taken in OBS_ABS: the output
        # multiplexer and the error's adders in one cycle were the longest path of the
        # 8-stream board system
        fab, K, C = self.fabric, self.n_outputs, self.streams
        out_k = Signal(signed(self.fmt.v_bits + 1))
        m.d.comb += out_k.eq(fab.outputs[s.kf] if K * C > 1 else fab.outputs[0])
        m.d.comb += [s.om_w.addr.eq((s.ex << s.os_) | s.kf), s.om_w.data.eq(out_k)]
        with m.If(~fab.busy):                   # the outputs once the ticks are out
            m.d.comb += s.om_w.en.eq(1)
            m.d.sync += s.out_q.eq(out_k)
            m.next = "OBS_ABS"

    def _observe_abs(self, m, s):
        """|output - target| into the squarer."""
        d = Signal(signed(self.fmt.v_bits + 2))
        m.d.comb += d.eq(s.out_q - s.ds_r.data)
        mag = Mux(d < 0, -d, d)[:s.mag_bits]        # |d| <= diff_max
        m.d.sync += [s.mcand.eq(mag), s.mplier.eq(mag)]
        m.next = "OBS_SQ"

    def _observe_square(self, m, s):
        """Serial shift-add square, summed straight into the epoch's error; then the next
        output, the learn phase or the end of the example."""
        K, C = self.n_outputs, self.streams
        m.d.comb += s.in_obs_sq.eq(1)
        with m.If(s.mplier == 0):
            with m.If(s.kf == K * C - 1):
                m.d.sync += [s.observed.eq(1), s.k.eq(0), s.si.eq(0), s.kf.eq(0)]
                with m.If(s.learn_phase | ~s.training | (s.learn_t == 0)):
                    m.next = "END"
                with m.Else():
                    self._begin_phase(m, s, 1)
                    m.next = "TICKS"
            with m.Else():
                m.d.sync += [s.k.eq(s.k_next), s.kf.eq(s.kf + 1)]
                with m.If(s.k == K - 1):
                    m.d.sync += s.si.eq(s.si + 1)
                m.next = "OBS_DIFF"
        with m.Else():
            with m.If(s.mplier[0]):
                total = Signal(self.error_bits + 1)
                acc = Array(s.err_acc)[s.si] if C > 1 else s.err_acc[0]
                m.d.comb += total.eq(acc + s.mcand)
                if self.error_bound >> 64:
                    total = Mux(total[64], (1 << 64) - 1, total[:64])
                m.d.sync += acc.eq(total)
            m.d.sync += [s.mcand.eq(s.mcand << 1), s.mplier.eq(s.mplier >> 1)]

    def _end_example(self, m, s):
        """Count the example (and the epoch); stop, or begin the next example."""
        last_ex = s.ex_count + 1 == s.n_ex
        with m.If(last_ex):
            m.d.comb += s.epoch_done.eq(1)
            m.d.sync += [last.eq(acc) for last, acc in zip(s.last_err, s.err_acc, strict=True)]
            m.d.sync += [s.ex_count.eq(0), s.epoch.eq(s.epoch + 1)]
        with m.Else():
            m.d.sync += s.ex_count.eq(s.ex_count + 1)
        with m.If(s.stop_req | (last_ex & (s.run_epochs != 0) &
                                (s.epoch + 1 == s.run_epochs))):
            m.d.sync += s.mode.eq(Mode.IDLE)
            m.next = "IDLE"
        with m.Else():
            self._begin_example(m, s)

    def _clears(self, m, s):
        """Clears come last and alone, so that they map onto the flip-flops' reset."""
        clear = self.fabric.clear
        with m.If(clear):
            m.d.sync += [s.ticks.eq(0), s.ex.eq(0)] + [last.eq(0) for last in s.last_err]
        with m.If(clear | s.starting):
            m.d.sync += [s.epoch.eq(0), s.cycles.eq(0)]
        with m.If(clear | s.starting | s.epoch_done):
            m.d.sync += [acc.eq(0) for acc in s.err_acc]
