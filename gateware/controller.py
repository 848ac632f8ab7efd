"""On-chip training controller, command handler and the whole board system.

- :class:`Controller` holds the dataset in block RAM and runs the presentation schedule
  of ``docs/semantics.md`` on a :class:`~clln.gateware.fabric.Fabric` (settle ticks with
  learning off, then learning ticks), in cyclic or LFSR order, for N epochs or until
  stopped; it sums the squared output errors per epoch and records the free outputs of
  every example.
- :class:`CommandHandler` implements the commands of ``docs/protocol.md`` on the frame
  tokens of :class:`~clln.gateware.framing.CRCChecker`.
- :class:`System` is UART + framing + command handler + controller + fabric.

The golden model of all three is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``). This module imports no golden model.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln.formats import Formats

from ..host import protocol as p
from ..host.protocol import Command, Status
from .fabric import const_mul, make_fabric
from .framing import Byte, Token
from .link import HostLink

__all__ = ["Controller", "CommandHandler", "System", "lfsr_widths", "MODE_IDLE",
           "MODE_TRAIN", "MODE_EVAL"]

MODE_IDLE, MODE_TRAIN, MODE_EVAL = 0, 1, 2


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


def _big_endian(value, n):
    """The n bytes of unsigned ``value`` (zero-extended), most significant byte first."""
    wide = Cat(value, Const(0, 8 * n - len(value))) if len(value) < 8 * n else value
    return [wide[8 * (n - 1 - b):8 * (n - b)] for b in range(n)]


class _ReadPort:
    """``addr`` and one cycle later ``data``, like a synchronous read port."""

    def __init__(self, addr, data):
        self.addr, self.data = addr, data


def _read_port(m, memory, name):
    """A synchronous read port of ``memory`` that needs no read/write collision logic.

    A combinational port and a reset-less register, which yosys merges into the block
    RAM's read port; with the memory's ``no_rw_check`` attribute it adds no logic for a
    read of the address written in the same cycle (old data in simulation). Only for
    memories never read there when it matters.
    """
    memory.attrs["no_rw_check"] = 1
    port = memory.read_port(domain="comb")
    data = Signal.like(port.data, name=f"{name}_rdata", reset_less=True)
    m.d.sync += data.eq(port.data)
    return _ReadPort(port.addr, data)


class Controller(wiring.Component):
    """Runs the schedule on the fabric, from a dataset in block RAM.

    Parameters
    ----------
    cfg : clln.config.Config
    fmt : clln.formats.Formats
    max_examples : int
        Rows of the dataset memory (and of the outputs memory).

    Attributes
    ----------
    error_bits : int
        Width of the error sums. An epoch's sum has at most ``max_examples * n_outputs``
        squares of an error below ``3 * 2**(v_bits - 1)``, so the sum saturates at
        ``2**64 - 1`` only when that bound does not fit 64 bits.

    Notes
    -----
    Ports: dataset writes (``ds_*``, one value per cycle: ``index`` < n_inputs is a
    drive value, then the targets; only while idle), schedule writes (``sched_*`` latched
    by ``sched_we``, which also reloads the LFSR from the seed: ``sched_seed`` is read
    bit by bit until ``busy`` falls; ``sched_n`` must be ``1 .. max_examples`` and
    ``sched_settle + sched_learn >= 1``, as the command handler checks), ``start`` (with
    ``start_epochs``, 0 = until stopped, and ``start_learn``), ``stop`` (honoured at the
    next tick boundary), ``clear`` (idle only: pulses ``fabric_reset``, with which the
    system resets the fabric, clears the tick counter, epoch, example, error sums and
    outputs memory and reloads the LFSR), the outputs memory read port (``out_*``, one
    cycle of latency) and status. ``f_*`` connect to the fabric (``f_sample_data`` is
    valid only with ``f_sample_we``). The dataset memory starts with the config's dataset
    and the schedule registers with the config's schedule.
    """

    def __init__(self, cfg, fmt, max_examples):
        self.cfg, self.fmt = cfg, fmt
        self.max_examples = max_examples
        self.n_inputs = len(cfg.io.inputs)
        self.n_outputs = len(cfg.io.outputs)
        self.n_driven = len(cfg.driven_nodes())
        self.streams = cfg.fabric.streams
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
        v = signed(fmt.v_bits)
        ex_shape = range(max(max_examples, 2))
        super().__init__({
            "ds_we": In(1), "ds_example": In(ex_shape), "ds_index": In(range(max(self.row, 2))),
            "ds_data": In(v),
            "sched_we": In(1), "sched_settle": In(32), "sched_learn": In(32),
            "sched_epochs": In(32), "sched_n": In(16), "sched_order": In(1),
            "sched_seed": In(32),
            "start": In(1), "start_epochs": In(32), "start_learn": In(1), "stop": In(1),
            "clear": In(1), "fabric_reset": Out(1),
            "out_example": In(ex_shape),
            "out_index": In(range(max(self.streams * self.n_outputs, 2))),
            "out_data": Out(signed(fmt.v_bits + 1)),
            "busy": Out(1), "mode": Out(2), "epoch": Out(32), "example": Out(ex_shape),
            "ticks": Out(64), "error_sum": Out(data.ArrayLayout(self.error_bits, self.streams)),
            "settle": Out(32),
            "learn_ticks": Out(32), "epochs": Out(32),
            "f_run": Out(1), "f_learn": Out(1), "f_sample_we": Out(1),
            "f_sample_addr": Out(range(max(self.n_driven + self.n_outputs, 2))),
            "f_sample_data": Out(v), "f_tick_done": In(1), "f_busy": In(1),
            "f_outputs": In(data.ArrayLayout(signed(fmt.v_bits + 1),
                                             self.streams * self.n_outputs)),
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
        cfg, fmt = self.cfg, self.fmt
        K, n_in, W, C = self.n_outputs, self.n_inputs, self.row, self.streams
        v = signed(fmt.v_bits)
        ex_shape = range(max(self.max_examples, 2))

        m.submodules.dataset = ds = Memory(shape=v, depth=self.max_examples * self.row_stride,
                                           init=self._dataset_init())
        m.submodules.outmem = om = Memory(shape=signed(fmt.v_bits + 1),
                                          depth=self.max_examples * self.out_stride, init=[])
        ds_w, ds_r = ds.write_port(), _read_port(m, ds, "ds")
        om_w, om_r = om.write_port(), om.read_port()
        rs, os_ = self.row_stride.bit_length() - 1, self.out_stride.bit_length() - 1
        m.d.comb += [ds_w.en.eq(self.ds_we), ds_w.data.eq(self.ds_data),
                     ds_w.addr.eq((self.ds_example << rs) | self.ds_index),
                     om_r.addr.eq((self.out_example << os_) | self.out_index),
                     self.out_data.eq(om_r.data)]

        # Schedule registers (reset: the config's schedule).
        sch = cfg.schedule
        settle = Signal(32, init=sch.settle_ticks)
        learn_t = Signal(32, init=sch.learn_ticks)
        epochs = Signal(32, init=cfg.learning.epochs)
        n_ex = Signal(range(self.max_examples + 1), init=self.default_n)
        order = Signal()
        widths = lfsr_widths(self.max_examples)
        wmax = widths[-1]
        w0 = max(2, self.default_n.bit_length())
        seed0 = cfg.learning.seed
        lfsr = Signal(wmax, init=seed0 % ((1 << w0) - 1) + 1)
        # seed reduction: rem = seed mod (2^w - 1) by restoring division, kept for RESET
        rem = Signal(wmax, init=seed0 % ((1 << w0) - 1))
        reseed = Signal()               # SEED divides sched_seed (else only waits)
        n_out = self.max_examples * self.out_stride
        steps = Signal(range(max(33, n_out)))      # WIPE: the address (down to 0); SEED
        m.d.comb += [self.settle.eq(settle), self.learn_ticks.eq(learn_t),
                     self.epochs.eq(epochs)]

        # The LFSR's width w = max(2, bit_length(n_ex)) and modulus 2**w - 1.
        lfsr_next = Signal(wmax)
        modulus = Signal(wmax)
        m.d.comb += [lfsr_next.eq(_lfsr_next(lfsr, wmax)), modulus.eq((1 << wmax) - 1)]
        for w in reversed(widths[:-1]):
            with m.If(n_ex < (1 << w)):
                m.d.comb += [lfsr_next.eq(_lfsr_next(lfsr[:w], w)), modulus.eq((1 << w) - 1)]

        # Run state.
        mode = Signal(2)
        training = mode == MODE_TRAIN
        epoch = Signal(32)
        run_epochs = Signal(32)
        ex = Signal(ex_shape)           # example being presented
        ex_count = Signal(ex_shape)     # examples done in this epoch
        j = Signal(range(W + 1))
        # An example's ticks come in two phases, settle_ticks then learn_ticks (learning on
        # when training; inference runs both with learning off, then observes).
        elapsed = Signal(32)            # ticks done in this phase
        # the phase's length minus 1, set with ``learn_phase``: ``phase_end`` is then an
        # equality, with no adder in front of it (-1 for a phase of 0 ticks: never ends,
        # as ``elapsed + 1 == 0`` never holds)
        phase_last = Signal(signed(33))
        learn_phase = Signal()
        observed = Signal()
        stop_req = Signal()
        ticks = Signal(64)
        # per stream: the epoch's error so far, the last epoch's
        err_acc = [Signal(self.error_bits, name=f"err_acc{i}") for i in range(C)]
        last_err = [Signal(self.error_bits, name=f"last_err{i}") for i in range(C)]
        # Output being observed (0 outside OBS_*): output k of stream si, flat index kf.
        k = Signal(range(max(K, 2)))
        si = Signal(range(max(C, 2)))
        kf = Signal(range(max(K * C, 2)))
        # squarer: mcand = |d| << i, mplier = |d| >> i
        mag_bits = self.diff_max.bit_length()
        mcand = Signal(2 * mag_bits - 1)
        mplier = Signal(mag_bits)
        out_q = Signal(signed(fmt.v_bits + 1))      # the output observed

        m.d.comb += [self.mode.eq(mode), self.epoch.eq(epoch), self.example.eq(ex),
                     self.ticks.eq(ticks)]
        m.d.comb += [self.error_sum[i].eq(last_err[i]) for i in range(C)]

        starting = Signal()
        epoch_done = Signal()
        phase_end = Signal()            # this tick ends the phase
        m.d.comb += phase_end.eq(elapsed == phase_last)

        def begin_phase(m, learning):
            """Start a phase (``elapsed`` 0) of settle ticks or, ``learning``, of learn
            ticks."""
            m.d.sync += [elapsed.eq(0), learn_phase.eq(learning),
                         phase_last.eq(Mux(learning, learn_t, settle) - 1)]

        with m.If(self.f_tick_done):
            m.d.sync += ticks.eq(ticks + 1)
        with m.If(self.stop):
            m.d.sync += stop_req.eq(1)

        # Dataset reads: the row of the example while loading it, else the target of the
        # output observed next (read one cycle ahead), so no target is kept in registers.
        in_obs_sq = Signal()
        prev = j - 1
        k_next = Mux(k == K - 1, 0, k + 1)
        m.d.comb += [ds_r.addr.eq((ex << rs) | (n_in + Mux(in_obs_sq, k_next, k))),
                     self.f_sample_data.eq(ds_r.data),
                     self.f_sample_addr.eq(Mux(prev < n_in, prev, prev - n_in + self.n_driven))]

        def begin_example(m):
            m.d.sync += j.eq(0)
            m.next = "SELECT"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                m.d.sync += stop_req.eq(0)
                with m.If(self.sched_we):
                    m.d.sync += [settle.eq(self.sched_settle), learn_t.eq(self.sched_learn),
                                 epochs.eq(self.sched_epochs), n_ex.eq(self.sched_n),
                                 order.eq(self.sched_order), rem.eq(0), reseed.eq(1),
                                 steps.eq(32)]
                    m.next = "SEED"
                with m.Elif(self.clear):
                    m.d.comb += self.fabric_reset.eq(1)
                    m.d.sync += [reseed.eq(0), steps.eq(n_out - 1)]
                    m.next = "WIPE"
                with m.Elif(self.start):
                    m.d.comb += starting.eq(1)
                    m.d.sync += [mode.eq(Mux(self.start_learn, MODE_TRAIN, MODE_EVAL)),
                                 run_epochs.eq(self.start_epochs), ex_count.eq(0)]
                    begin_example(m)
            with m.State("WIPE"):
                m.d.comb += [om_w.en.eq(1), om_w.addr.eq(steps), om_w.data.eq(0)]
                m.d.sync += steps.eq(steps - 1)
                with m.If(steps == 0):
                    m.d.sync += steps.eq(32)
                    m.next = "SEED"
            with m.State("SEED"):
                # 32 steps, sched_seed's bit steps - 1 at step steps
                with m.If(steps == 0):
                    m.d.sync += lfsr.eq(rem + 1)
                    m.next = "IDLE"
                with m.Else():
                    shifted = Cat(Cat(Const(0, 1), self.sched_seed).bit_select(steps, 1), rem)
                    m.d.sync += steps.eq(steps - 1)
                    with m.If(reseed):
                        m.d.sync += rem.eq(Mux(shifted >= modulus, shifted - modulus, shifted))
            with m.State("SELECT"):
                with m.If(stop_req):
                    m.d.sync += mode.eq(MODE_IDLE)
                    m.next = "IDLE"
                with m.Elif(order == 0):
                    m.d.sync += ex.eq(ex_count)
                    m.next = "LOAD"
                with m.Else():
                    m.d.sync += lfsr.eq(lfsr_next)
                    with m.If(lfsr <= n_ex):
                        m.d.sync += ex.eq(lfsr - 1)
                        m.next = "LOAD"
            with m.State("LOAD"):
                # a pipelined fabric reads the drives until its last tick has left
                m.d.comb += ds_r.addr.eq((ex << rs) | j)
                with m.If(~self.f_busy):
                    with m.If(j != 0):
                        m.d.comb += self.f_sample_we.eq(1)
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == W):
                        m.d.sync += observed.eq(0)
                        begin_phase(m, settle == 0)
                        m.next = "TICKS"
            with m.State("TICKS"):
                m.d.comb += [self.f_run.eq(1), self.f_learn.eq(learn_phase & training)]
                with m.If(self.f_tick_done):
                    m.d.sync += elapsed.eq(elapsed + 1)
                    with m.If(stop_req):
                        m.d.sync += mode.eq(MODE_IDLE)
                        m.next = "IDLE"
                    with m.Elif(phase_end):
                        with m.If(~learn_phase & ~training & (learn_t != 0)):
                            # inference: the learn ticks follow, learning off
                            begin_phase(m, 1)
                        with m.Elif(observed):
                            m.next = "END"
                        with m.Else():
                            m.next = "OBS_DIFF"
            with m.State("OBS_DIFF"):
                # the output is recorded and registered, its error taken in OBS_ABS: the
                # output multiplexer and the error's adders in one cycle were the longest
                # path of the 8-stream board system
                out_k = Signal(signed(fmt.v_bits + 1))
                m.d.comb += out_k.eq(self.f_outputs[kf] if K * C > 1 else self.f_outputs[0])
                m.d.comb += [om_w.addr.eq((ex << os_) | kf), om_w.data.eq(out_k)]
                with m.If(~self.f_busy):                # the outputs once the ticks are out
                    m.d.comb += om_w.en.eq(1)
                    m.d.sync += out_q.eq(out_k)
                    m.next = "OBS_ABS"
            with m.State("OBS_ABS"):
                d = Signal(signed(fmt.v_bits + 2))
                m.d.comb += d.eq(out_q - ds_r.data)
                mag = Mux(d < 0, -d, d)[:mag_bits]      # |d| <= diff_max
                m.d.sync += [mcand.eq(mag), mplier.eq(mag)]
                m.next = "OBS_SQ"
            with m.State("OBS_SQ"):
                # serial shift-add square, summed straight into the epoch's error
                m.d.comb += in_obs_sq.eq(1)
                with m.If(mplier == 0):
                    with m.If(kf == K * C - 1):
                        m.d.sync += [observed.eq(1), k.eq(0), si.eq(0), kf.eq(0)]
                        with m.If(learn_phase | ~training | (learn_t == 0)):
                            m.next = "END"
                        with m.Else():
                            begin_phase(m, 1)
                            m.next = "TICKS"
                    with m.Else():
                        m.d.sync += [k.eq(k_next), kf.eq(kf + 1)]
                        with m.If(k == K - 1):
                            m.d.sync += si.eq(si + 1)
                        m.next = "OBS_DIFF"
                with m.Else():
                    with m.If(mplier[0]):
                        total = Signal(self.error_bits + 1)
                        m.d.comb += total.eq(Array(err_acc)[si] + mcand)
                        if self.error_bound >> 64:
                            total = Mux(total[64], (1 << 64) - 1, total[:64])
                        m.d.sync += Array(err_acc)[si].eq(total)
                    m.d.sync += [mcand.eq(mcand << 1), mplier.eq(mplier >> 1)]
            with m.State("END"):
                last_ex = ex_count + 1 == n_ex
                with m.If(last_ex):
                    m.d.comb += epoch_done.eq(1)
                    m.d.sync += [last.eq(acc) for last, acc in zip(last_err, err_acc)]
                    m.d.sync += [ex_count.eq(0), epoch.eq(epoch + 1)]
                with m.Else():
                    m.d.sync += ex_count.eq(ex_count + 1)
                with m.If(stop_req | (last_ex & (run_epochs != 0) & (epoch + 1 == run_epochs))):
                    m.d.sync += mode.eq(MODE_IDLE)
                    m.next = "IDLE"
                with m.Else():
                    begin_example(m)

        # Clears come last and alone, so that they map onto the flip-flops' reset.
        with m.If(self.fabric_reset):
            m.d.sync += [ticks.eq(0), ex.eq(0)] + [last.eq(0) for last in last_err]
        with m.If(self.fabric_reset | starting):
            m.d.sync += epoch.eq(0)
        with m.If(self.fabric_reset | starting | epoch_done):
            m.d.sync += [acc.eq(0) for acc in err_acc]
        m.d.comb += self.busy.eq((mode != MODE_IDLE) | fsm.ongoing("SEED") |
                                 fsm.ongoing("WIPE") | self.f_busy)
        return m


class CommandHandler(wiring.Component):
    """The protocol's commands, from checked frame tokens to reply packets (before CRC).

    Parameters
    ----------
    identity : clln.host.protocol.Identity
    ctrl : Controller
    fabric : clln.gateware.fabric.Fabric
        The handler drives ``ctrl``'s dataset, schedule, start and stop inputs and the
        outputs read port, and ``fabric``'s gate write and read ports.

    Members
    -------
    i : In(stream.Signature(Token))
    o : Out(stream.Signature(Byte))

    Notes
    -----
    A request is buffered whole (payload in a 256-byte memory, its first 19 bytes also in
    registers), checked (frame status, version, command, length, ranges and every value,
    busy) and only then executed, so an error reply changes no state. The data inputs of
    ``ctrl`` and ``fabric`` carry the request's fields at all times; only the strobes
    (``sched_we``, ``start``, ``ds_we``, ``gate_we``, ...) are decoded.
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(Byte))
    busy: Out(1)

    #: Payload bytes kept in registers (the longest fixed payload, WRITE_SCHEDULE's).
    HEADER_BYTES = 19

    def __init__(self, identity, ctrl, fabric):
        self.identity, self.ctrl, self.fabric = identity, ctrl, fabric
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        ident, ctrl, fab = self.identity, self.ctrl, self.fabric
        W = ctrl.row
        K = ctrl.n_outputs * ctrl.streams     # output values per example
        E = fab.n_edges * fab.streams         # gates
        maxex = ctrl.max_examples
        ex_bytes = ident.example_bytes
        vb = ctrl.fmt.v_bits

        m.submodules.buf = buf = Memory(shape=8, depth=p.MAX_PAYLOAD, init=[])
        bw, br = buf.write_port(), _read_port(m, buf, "buf")

        count = Signal(range(p.MAX_REQUEST + 2))
        fetch_wait = Signal(range(fab.gate_read_latency))
        version_ok = Signal()
        rid, cmd = Signal(8), Signal(8)
        status = Signal(4)              # the frame's status (end token), then the reply's

        # READ_STATUS has no payload: its snapshot, taken when the request is checked,
        # shares the registers of the payload's first bytes.
        status_fields = [(ctrl.mode, 1), (ctrl.epoch, 4), (ctrl.example, 2), (ctrl.ticks, 8),
                         *((ctrl.error_sum[i], 8) for i in range(ctrl.streams)),
                         (fab.sat_flags, 1)]
        snap_value = Cat(*(value for value, _ in status_fields))
        hold = Signal(max(8 * self.HEADER_BYTES, len(snap_value)))
        hdr = [hold[8 * i:8 * i + 8] for i in range(self.HEADER_BYTES)]
        status_bytes, at = [], 0
        for value, n in status_fields:
            status_bytes += _big_endian(hold[at:at + len(value)], n)
            at += len(value)

        def u(lo, n):
            """Big-endian unsigned field of the payload bytes lo .. lo+n-1."""
            return Cat(*reversed(hdr[lo:lo + n]))

        def payload_is(n):
            """The payload has n bytes (count includes the 3 header bytes)."""
            return count == 3 + n

        first, cnt = u(0, 2), u(2, 1)
        tok = self.i.payload
        is_cmd = {c: cmd == c for c in Command}

        # Word loop (validate / execute / reply): word wi of n_words, at column col of
        # the row of example (or gate) pos.
        wi = Signal(range(p.MAX_PAYLOAD // 4 + 1))
        n_words = Signal(range(p.MAX_PAYLOAD // 4 + 1))     # as checked: fits
        word = Signal(32)
        pos = Signal(range(max(maxex, E, 2)))
        col = Signal(range(max(W, K, 2)))
        last_col = Signal()
        executing = Signal()
        ident_bytes = list(ident.pack())
        idx = Signal(range(max(len(ident_bytes), len(status_bytes)) + 1))   # byte index
        fixed_byte, fixed_ready = Signal(8), Signal()    # FIXED's byte at idx, registered
        with m.Switch(cmd):
            with m.Case(Command.WRITE_DATASET):
                m.d.comb += [n_words.eq(const_mul(cnt, W)), last_col.eq(col == W - 1)]
            with m.Case(Command.READ_OUTPUTS):
                m.d.comb += [n_words.eq(const_mul(cnt, K)), last_col.eq(col == K - 1)]
            with m.Default():
                m.d.comb += [n_words.eq(cnt), last_col.eq(1)]

        def next_column(m):
            with m.If(last_col):
                m.d.sync += [col.eq(0), pos.eq(pos + 1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)

        def rewind(m):
            m.d.sync += [wi.eq(0), pos.eq(first), col.eq(0)]

        value_s = word.as_signed()
        m.d.comb += [
            ctrl.ds_example.eq(pos), ctrl.ds_index.eq(col), ctrl.ds_data.eq(word),
            fab.gate_addr.eq(pos), fab.gate_data.eq(word), fab.gate_raddr.eq(pos),
            ctrl.out_example.eq(pos), ctrl.out_index.eq(col),
            ctrl.sched_settle.eq(u(0, 4)), ctrl.sched_learn.eq(u(4, 4)),
            ctrl.sched_epochs.eq(u(8, 4)), ctrl.sched_n.eq(u(12, 2)),
            ctrl.sched_order.eq(hdr[14]), ctrl.sched_seed.eq(u(15, 4)),
            ctrl.start_epochs.eq(Mux(is_cmd[Command.RUN_EPOCHS], u(0, 4), ctrl.epochs)),
            ctrl.start_learn.eq(~is_cmd[Command.RUN_EPOCHS] | hdr[4][0]),
        ]

        with m.FSM(name="cmd") as fsm:
            with m.State("RECV"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & tok.end):
                    m.d.sync += status.eq(tok.data)     # a frame status: below 16
                    m.next = "CHECK"
                with m.Elif(self.i.valid):
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += version_ok.eq(tok.data == p.PROTOCOL_VERSION)
                        with m.Case(1):
                            m.d.sync += rid.eq(tok.data)
                        with m.Case(2):
                            m.d.sync += cmd.eq(tok.data)
                        for i in range(self.HEADER_BYTES):
                            with m.Case(3 + i):
                                m.d.sync += hdr[i].eq(tok.data)
                    with m.If((count >= 3) & (count < 3 + p.MAX_PAYLOAD)):
                        m.d.comb += [bw.en.eq(1), bw.addr.eq(count - 3), bw.data.eq(tok.data)]
                    with m.If(count != p.MAX_REQUEST + 1):
                        m.d.sync += count.eq(count + 1)

            with m.State("CHECK"):
                rewind(m)
                m.d.sync += [idx.eq(0), executing.eq(0)]
                with m.If(is_cmd[Command.READ_STATUS]):
                    m.d.sync += hold[:len(snap_value)].eq(snap_value)

                def reply(st):
                    m.d.sync += status.eq(st)
                    m.next = "REPLY"

                bad_len = Signal()
                bad_range = Signal()
                validate = Signal()
                needs_idle = Signal()
                with m.Switch(cmd):
                    with m.Case(Command.IDENTIFY, Command.START, Command.STOP,
                                Command.READ_STATUS, Command.RESET):
                        m.d.comb += bad_len.eq(~payload_is(0))
                    with m.Case(Command.WRITE_DATASET):
                        m.d.comb += [bad_len.eq(~payload_is(3 + const_mul(cnt, ex_bytes))),
                                     bad_range.eq((cnt == 0) | (first + cnt > maxex)),
                                     validate.eq(1)]
                    with m.Case(Command.WRITE_SCHEDULE):
                        n = u(12, 2)
                        m.d.comb += [bad_len.eq(~payload_is(19)),
                                     bad_range.eq(((u(0, 4) == 0) & (u(4, 4) == 0)) |
                                                  (n == 0) | (n > maxex) | (hdr[14] > 1))]
                    with m.Case(Command.READ_GATES):
                        m.d.comb += [bad_len.eq(~payload_is(3)),
                                     bad_range.eq((cnt == 0) | (first + cnt > E) |
                                                  (cnt > p.MAX_PAYLOAD // 4))]
                    with m.Case(Command.WRITE_GATES):
                        m.d.comb += [bad_len.eq(~payload_is(3 + (cnt << 2))),
                                     bad_range.eq((cnt == 0) | (first + cnt > E)),
                                     validate.eq(1)]
                    with m.Case(Command.RUN_EPOCHS):
                        m.d.comb += [bad_len.eq(~payload_is(5)), bad_range.eq(hdr[4] > 1)]
                    with m.Case(Command.READ_OUTPUTS):
                        m.d.comb += [bad_len.eq(~payload_is(3)),
                                     bad_range.eq((cnt == 0) | (first + cnt > maxex) |
                                                  (const_mul(cnt, K) > p.MAX_PAYLOAD // 4))]
                m.d.comb += needs_idle.eq(
                    is_cmd[Command.WRITE_DATASET] | is_cmd[Command.WRITE_SCHEDULE] |
                    is_cmd[Command.WRITE_GATES] | is_cmd[Command.START] |
                    is_cmd[Command.RUN_EPOCHS] | is_cmd[Command.RESET])
                known = (cmd >= min(Command)) & (cmd <= max(Command))
                with m.If(status != Status.OK):
                    m.d.sync += [rid.eq(0), cmd.eq(0)]
                    m.next = "REPLY"
                with m.Elif(~version_ok):
                    reply(Status.BAD_VERSION)
                with m.Elif(~known):
                    reply(Status.UNKNOWN_COMMAND)
                with m.Elif(bad_len):
                    reply(Status.BAD_LENGTH)
                with m.Elif(bad_range):
                    reply(Status.OUT_OF_RANGE)
                with m.Elif(validate):
                    m.next = "WORDS"
                with m.Elif(needs_idle & ctrl.busy):
                    reply(Status.BUSY)
                with m.Else():
                    m.next = "EXEC"

            # Read the payload's i32 values (after first u16, count u8) one by one; the
            # first pass validates every value, the second executes.
            with m.State("WORDS"):
                # idx: the byte read (0 .. 3), one cycle before it arrives
                m.d.comb += br.addr.eq(3 + Cat(idx[:2], wi))
                with m.If(idx != 0):
                    m.d.sync += word.eq(Cat(br.data, word[:24]))
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == 4):
                    m.d.sync += idx.eq(0)
                    m.next = "WORD"
            with m.State("WORD"):
                is_ds = is_cmd[Command.WRITE_DATASET]
                fits_v = word[vb - 1:].all() | ~word[vb - 1:].any()     # signed(v_bits)
                ok = Mux(is_ds, fits_v,
                         (value_s >= ident.gate_min_q) & (value_s <= ident.gate_max_q))
                done = wi + 1 == n_words
                with m.If(executing):
                    # a pipelined fabric is busy until its last gate write has landed
                    with m.If(is_ds | ~ctrl.busy):
                        m.d.sync += wi.eq(wi + 1)
                        next_column(m)
                        with m.If(is_ds):
                            m.d.comb += ctrl.ds_we.eq(1)
                        with m.Else():
                            m.d.comb += fab.gate_we.eq(1)
                        with m.If(done):
                            m.d.sync += status.eq(Status.OK)
                            m.next = "WAIT"
                        with m.Else():
                            m.next = "WORDS"
                with m.Elif(~ok):
                    m.d.sync += status.eq(Status.OUT_OF_RANGE)
                    m.next = "REPLY"
                with m.Elif(done):
                    rewind(m)
                    with m.If(ctrl.busy):
                        m.d.sync += status.eq(Status.BUSY)
                        m.next = "REPLY"
                    with m.Else():
                        m.d.sync += executing.eq(1)
                        m.next = "WORDS"
                with m.Else():
                    m.d.sync += wi.eq(wi + 1)
                    m.next = "WORDS"

            with m.State("EXEC"):
                m.d.sync += status.eq(Status.OK)
                with m.Switch(cmd):
                    with m.Case(Command.WRITE_SCHEDULE):
                        m.d.comb += ctrl.sched_we.eq(1)
                    with m.Case(Command.START, Command.RUN_EPOCHS):
                        m.d.comb += ctrl.start.eq(1)
                    with m.Case(Command.STOP):
                        m.d.comb += ctrl.stop.eq(1)
                    with m.Case(Command.RESET):
                        m.d.comb += ctrl.clear.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                # a schedule write reduces the seed in the controller, a pipelined fabric
                # lands the last gate written: reply once idle again (a start makes it
                # busy on purpose)
                with m.If(~ctrl.busy | ~(is_cmd[Command.WRITE_SCHEDULE] |
                                         is_cmd[Command.RESET] | is_cmd[Command.WRITE_GATES])):
                    m.next = "REPLY"

            # Replies: the header, then constants (IDENTIFY), the snapshot (READ_STATUS)
            # or words (READ_GATES, READ_OUTPUTS; wi, pos and col as CHECK left them).
            with m.State("REPLY"):
                header = Array([Const(p.PROTOCOL_VERSION, 8), rid, cmd, status])
                ok = status == Status.OK
                has_fixed = ok & (is_cmd[Command.IDENTIFY] | is_cmd[Command.READ_STATUS])
                has_words = ok & (is_cmd[Command.READ_GATES] | is_cmd[Command.READ_OUTPUTS])
                last = (idx == 3) & ~has_fixed & ~has_words
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(header[idx[:2]]),
                             self.o.payload.last.eq(last)]
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        with m.If(has_fixed):
                            m.next = "FIXED"
                        with m.Elif(has_words):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "DONE"
            with m.State("FIXED"):
                # The byte at idx is selected from up to 80 (with 8 streams' error sums)
                # into a register, and offered the cycle after: 2 cycles a byte, and no
                # long path from idx through that selection into the link's CRC.
                ib = Array(Const(b, 8) for b in ident_bytes)[idx]
                sb = 0          # an OR of masked bytes takes fewer LUTs than an Array here
                for i, b in enumerate(status_bytes):
                    sb = sb | Mux(idx == i, b, 0)
                is_id = is_cmd[Command.IDENTIFY]
                n = Mux(is_id, len(ident_bytes), len(status_bytes))
                last = idx == n - 1
                m.d.sync += [fixed_byte.eq(Mux(is_id, ib, sb)), fixed_ready.eq(1)]
                m.d.comb += [self.o.valid.eq(fixed_ready),
                             self.o.payload.data.eq(fixed_byte),
                             self.o.payload.last.eq(last)]
                with m.If(self.o.ready & fixed_ready):
                    m.d.sync += [idx.eq(idx + 1), fixed_ready.eq(0)]
                    with m.If(last):
                        m.next = "DONE"
            with m.State("FETCH"):
                # gate_raddr / out_* follow pos and col; a gate read takes the fabric's
                # gate_read_latency cycles (the outputs, one)
                with m.If(fetch_wait == fab.gate_read_latency - 1):
                    m.d.sync += fetch_wait.eq(0)
                    m.next = "LATCH"
                with m.Else():
                    m.d.sync += fetch_wait.eq(fetch_wait + 1)
            with m.State("LATCH"):
                m.d.sync += [word.eq(Mux(is_cmd[Command.READ_GATES], fab.gate_rdata,
                                         ctrl.out_data)), idx.eq(0)]
                next_column(m)
                m.next = "SEND"
            with m.State("SEND"):
                last = (idx == 3) & (wi + 1 == n_words)
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(word[24:]),
                             self.o.payload.last.eq(last)]
                with m.If(self.o.ready):
                    m.d.sync += [idx.eq(idx + 1), word.eq(word << 8)]
                    with m.If(idx == 3):
                        m.d.sync += wi.eq(wi + 1)
                        with m.If(last):
                            m.next = "DONE"
                        with m.Else():
                            m.next = "FETCH"
            with m.State("DONE"):
                m.d.sync += [count.eq(0), idx.eq(0)]
                m.next = "RECV"
        m.d.comb += self.busy.eq(~fsm.ongoing("RECV") | (count != 0))
        return m


class System(wiring.Component):
    """The board system: UART, framing, command handler, controller and fabric.

    Parameters
    ----------
    cfg : clln.config.Config
    divisor : int
        UART clock cycles per bit (>= 4).
    max_examples : int, optional
        Dataset capacity; default the config's dataset size, at least 16.
    seed : int, optional
        Seed of the fabric's reset gates (default ``learning.seed``).
    fmt : clln.formats.Formats, optional
    fifo_depth : int
        Receive FIFO in bytes.
    mult_bits : int, optional
        Operand bits of the target's multiplier blocks (see ``make_fabric``).

    Members
    -------
    rx : In(1)
    tx : Out(1)
    idle : Out(1)
        Controller idle and no request or reply in progress for the last 64 cycles (for
        benches and an LED).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    idle: Out(1)

    def __init__(self, cfg, divisor, max_examples=None, seed=None, fmt=None, fifo_depth=512,
                 mult_bits=None):
        self.cfg = cfg
        self.mult_bits = mult_bits
        self.fmt = fmt if fmt is not None else Formats.from_config(cfg)
        self.divisor = divisor
        self.max_examples = max_examples or max(16, len(cfg.task.x))
        self.seed = seed
        self.fifo_depth = fifo_depth
        self.identity = p.Identity.from_config(cfg, self.fmt, self.max_examples)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        fab = make_fabric(self.cfg, self.fmt, seed=self.seed, mult_bits=self.mult_bits)
        m.submodules.ctrl = ctrl = Controller(self.cfg, self.fmt, self.max_examples)
        if hasattr(fab, "clear"):
            # the pipelined fabric clears itself, with no reset net on its datapath
            m.submodules.fabric = fab
            m.d.comb += fab.clear.eq(ctrl.fabric_reset)
        else:
            m.submodules.fabric = ResetInserter(ctrl.fabric_reset)(fab)
        m.submodules.handler = hnd = CommandHandler(self.identity, ctrl, fab)
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        wiring.connect(m, link.requests, hnd.i)
        wiring.connect(m, hnd.o, link.replies)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [fab.run.eq(ctrl.f_run), fab.learn.eq(ctrl.f_learn),
                     fab.sample_we.eq(ctrl.f_sample_we), fab.sample_addr.eq(ctrl.f_sample_addr),
                     fab.sample_data.eq(ctrl.f_sample_data), ctrl.f_tick_done.eq(fab.tick_done),
                     ctrl.f_outputs.eq(fab.outputs),
                     ctrl.f_busy.eq(fab.busy if hasattr(fab, "busy") else 0)]
        quiet = Signal(range(65))
        active = ctrl.busy | hnd.busy | link.busy
        with m.If(active):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != 64):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.idle.eq(quiet == 64)
        return m
