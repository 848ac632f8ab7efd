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
from .fabric import make_fabric
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
    """The n bytes of unsigned ``value`` (zero-extended), most significant byte first
    (byte 0 in the low bits of the result)."""
    wide = Cat(value, Const(0, 8 * n - len(value))) if len(value) < 8 * n else value
    return Cat(*[wide[8 * (n - 1 - b):8 * (n - b)] for b in range(n)])


class Controller(wiring.Component):
    """Runs the schedule on the fabric, from a dataset in block RAM.

    Parameters
    ----------
    cfg : clln.config.Config
    fmt : clln.formats.Formats
    max_examples : int
        Rows of the dataset memory (and of the outputs memory).

    Notes
    -----
    Ports: dataset writes (``ds_*``, one value per cycle: ``index`` < n_inputs is a
    drive value, then the targets), schedule writes (``sched_*`` latched by ``sched_we``,
    which also reloads the LFSR from the seed), ``start`` (with ``start_epochs``, 0 =
    until stopped, and ``start_learn``), ``stop`` (honoured at the next tick boundary),
    ``clear`` (idle only: pulses ``fabric_reset``, with which the system resets the
    fabric, clears the tick counter, epoch, example, error sums and outputs memory and
    reloads the LFSR), the outputs memory read port (``out_*``, one cycle of latency)
    and status. ``f_*`` connect to the fabric. The dataset memory starts with the
    config's dataset and the schedule registers with the config's schedule.
    """

    def __init__(self, cfg, fmt, max_examples):
        self.cfg, self.fmt = cfg, fmt
        self.max_examples = max_examples
        self.n_inputs = len(cfg.io.inputs)
        self.n_outputs = len(cfg.io.outputs)
        self.n_driven = len(cfg.driven_nodes())
        self.row = self.n_inputs + self.n_outputs
        self.row_stride = _pow2(self.row)
        self.out_stride = _pow2(self.n_outputs)
        n_ex = min(len(cfg.task.x), max_examples)
        if n_ex < 1:
            raise ValueError("the dataset has no example")
        self.default_n = n_ex
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
            "out_example": In(ex_shape), "out_index": In(range(max(self.n_outputs, 2))),
            "out_data": Out(signed(fmt.v_bits + 1)),
            "busy": Out(1), "mode": Out(2), "epoch": Out(32), "example": Out(16),
            "ticks": Out(64), "error_sum": Out(64), "settle": Out(32), "learn_ticks": Out(32),
            "epochs": Out(32),
            "f_run": Out(1), "f_learn": Out(1), "f_sample_we": Out(1),
            "f_sample_addr": Out(range(max(self.n_driven + self.n_outputs, 2))),
            "f_sample_data": Out(v), "f_tick_done": In(1),
            "f_outputs": In(data.ArrayLayout(signed(fmt.v_bits + 1), self.n_outputs)),
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
        K, n_in, W = self.n_outputs, self.n_inputs, self.row
        v = signed(fmt.v_bits)

        m.submodules.dataset = ds = Memory(shape=v, depth=self.max_examples * self.row_stride,
                                           init=self._dataset_init())
        m.submodules.outmem = om = Memory(shape=signed(fmt.v_bits + 1),
                                          depth=self.max_examples * self.out_stride, init=[])
        ds_w, ds_r = ds.write_port(), ds.read_port()
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
        n_ex = Signal(16, init=self.default_n)
        order = Signal()
        widths = lfsr_widths(self.max_examples)
        wmax = widths[-1]
        w0 = max(2, self.default_n.bit_length())
        seed0 = cfg.learning.seed
        lfsr = Signal(wmax, init=seed0 % ((1 << w0) - 1) + 1)
        lfsr_w = Signal(range(wmax + 1), init=w0)
        seed = Signal(32, init=seed0)
        wipe = Signal(range(self.max_examples * self.out_stride))
        m.d.comb += [self.settle.eq(settle), self.learn_ticks.eq(learn_t),
                     self.epochs.eq(epochs)]

        lfsr_next = Signal(wmax)
        m.d.comb += lfsr_next.eq(lfsr)
        for w in widths:
            with m.If(lfsr_w == w):
                m.d.comb += lfsr_next.eq(_lfsr_next(lfsr[:w], w))

        # Run state.
        mode = Signal(2)
        epoch = Signal(32)
        run_epochs = Signal(32)
        training = Signal()
        ex = Signal(16)           # example being presented
        ex_count = Signal(16)     # examples done in this epoch
        j = Signal(range(W + 1))
        remaining = Signal(33)
        learn_phase = Signal()
        observed = Signal()
        stop_req = Signal()
        ticks = Signal(64)
        err_acc = Signal(64)
        last_err = Signal(64)
        targets = [Signal(v, name=f"tgt{k}") for k in range(K)]
        k = Signal(range(max(K, 2)))
        diff_abs = Signal(fmt.v_bits + 2)
        mcand = Signal(2 * (fmt.v_bits + 2))
        mplier = Signal(fmt.v_bits + 2)
        sq = Signal(2 * (fmt.v_bits + 2))
        # seed reduction: lfsr = seed mod (2^w - 1) + 1, by restoring division
        seed_sr = Signal(32)
        rem = Signal(wmax + 1)
        modulus = Signal(wmax + 1)
        bitn = Signal(range(33))

        eff_settle = Mux(training, settle, settle + learn_t)
        eff_learn = Mux(training, learn_t, 0)

        m.d.comb += [self.mode.eq(mode), self.epoch.eq(epoch), self.example.eq(ex),
                     self.ticks.eq(ticks), self.error_sum.eq(last_err)]

        with m.If(self.f_tick_done):
            m.d.sync += ticks.eq(ticks + 1)
        with m.If(self.stop):
            m.d.sync += stop_req.eq(1)

        def begin_example(m):
            m.d.sync += j.eq(0)
            m.next = "SELECT"

        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                m.d.sync += stop_req.eq(0)
                with m.If(self.sched_we):
                    w = Signal(range(wmax + 1))
                    m.d.comb += w.eq(wmax)
                    for ww in reversed(widths):
                        with m.If(self.sched_n < (1 << ww)):
                            m.d.comb += w.eq(ww)
                    m.d.sync += [settle.eq(self.sched_settle), learn_t.eq(self.sched_learn),
                                 epochs.eq(self.sched_epochs), n_ex.eq(self.sched_n),
                                 order.eq(self.sched_order), lfsr_w.eq(w),
                                 modulus.eq((1 << w) - 1), seed_sr.eq(self.sched_seed),
                                 seed.eq(self.sched_seed), rem.eq(0), bitn.eq(32)]
                    m.next = "SEED"
                with m.Elif(self.clear):
                    m.d.comb += self.fabric_reset.eq(1)
                    m.d.sync += [ticks.eq(0), epoch.eq(0), ex.eq(0), last_err.eq(0),
                                 err_acc.eq(0), modulus.eq((1 << lfsr_w) - 1), seed_sr.eq(seed),
                                 rem.eq(0), bitn.eq(32), wipe.eq(0)]
                    m.next = "WIPE"
                with m.Elif(self.start):
                    m.d.sync += [mode.eq(Mux(self.start_learn, MODE_TRAIN, MODE_EVAL)),
                                 training.eq(self.start_learn), run_epochs.eq(self.start_epochs),
                                 epoch.eq(0), ex_count.eq(0), err_acc.eq(0)]
                    begin_example(m)
            with m.State("WIPE"):
                m.d.comb += [om_w.en.eq(1), om_w.addr.eq(wipe), om_w.data.eq(0)]
                m.d.sync += wipe.eq(wipe + 1)
                with m.If(wipe == self.max_examples * self.out_stride - 1):
                    m.next = "SEED"
            with m.State("SEED"):
                with m.If(bitn == 0):
                    m.d.sync += lfsr.eq(rem + 1)
                    m.next = "IDLE"
                with m.Else():
                    shifted = Cat(seed_sr[31], rem[:wmax])
                    m.d.sync += [rem.eq(Mux(shifted >= modulus, shifted - modulus, shifted)),
                                 seed_sr.eq(seed_sr << 1), bitn.eq(bitn - 1)]
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
                m.d.comb += ds_r.addr.eq((ex << rs) | j)
                with m.If(j != 0):
                    prev = j - 1
                    m.d.comb += [self.f_sample_we.eq(1), self.f_sample_data.eq(ds_r.data),
                                 self.f_sample_addr.eq(Mux(prev < n_in, prev,
                                                           prev - n_in + self.n_driven))]
                    for kk in range(K):
                        with m.If(prev == n_in + kk):
                            m.d.sync += targets[kk].eq(ds_r.data)
                m.d.sync += j.eq(j + 1)
                with m.If(j == W):
                    m.d.sync += observed.eq(0)
                    with m.If(eff_settle != 0):
                        m.d.sync += [remaining.eq(eff_settle), learn_phase.eq(0)]
                    with m.Else():
                        m.d.sync += [remaining.eq(eff_learn), learn_phase.eq(1)]
                    m.next = "TICKS"
            with m.State("TICKS"):
                m.d.comb += [self.f_run.eq(1), self.f_learn.eq(learn_phase & training)]
                with m.If(self.f_tick_done):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(stop_req):
                        m.d.sync += mode.eq(MODE_IDLE)
                        m.next = "IDLE"
                    with m.Elif(remaining == 1):
                        with m.If(observed):
                            m.next = "END"
                        with m.Else():
                            m.d.sync += k.eq(0)
                            m.next = "OBS_DIFF"
            with m.State("OBS_DIFF"):
                out_k = Signal(signed(fmt.v_bits + 1))
                tgt_k = Signal(v)
                m.d.comb += [out_k.eq(self.f_outputs[k] if K > 1 else self.f_outputs[0]),
                             tgt_k.eq(Array(targets)[k] if K > 1 else targets[0])]
                d = Signal(signed(fmt.v_bits + 2))
                m.d.comb += [d.eq(out_k - tgt_k),
                             om_w.en.eq(1), om_w.addr.eq((ex << os_) | k), om_w.data.eq(out_k)]
                m.d.sync += [diff_abs.eq(Mux(d < 0, -d, d)), mcand.eq(Mux(d < 0, -d, d)),
                             mplier.eq(Mux(d < 0, -d, d)), sq.eq(0)]
                m.next = "OBS_SQ"
            with m.State("OBS_SQ"):
                with m.If(mplier == 0):
                    total = Signal(65)
                    m.d.comb += total.eq(err_acc + sq)
                    m.d.sync += err_acc.eq(Mux(total[64], (1 << 64) - 1, total[:64]))
                    with m.If(k == K - 1):
                        m.d.sync += observed.eq(1)
                        with m.If(learn_phase | (eff_learn == 0)):
                            m.next = "END"
                        with m.Else():
                            m.d.sync += [remaining.eq(eff_learn), learn_phase.eq(1)]
                            m.next = "TICKS"
                    with m.Else():
                        m.d.sync += k.eq(k + 1)
                        m.next = "OBS_DIFF"
                with m.Else():
                    with m.If(mplier[0]):
                        m.d.sync += sq.eq(sq + mcand)
                    m.d.sync += [mcand.eq(mcand << 1), mplier.eq(mplier >> 1)]
            with m.State("END"):
                last_ex = ex_count + 1 == n_ex
                with m.If(last_ex):
                    m.d.sync += [last_err.eq(err_acc), err_acc.eq(0), ex_count.eq(0),
                                 epoch.eq(epoch + 1)]
                with m.Else():
                    m.d.sync += ex_count.eq(ex_count + 1)
                with m.If(stop_req | (last_ex & (run_epochs != 0) & (epoch + 1 == run_epochs))):
                    m.d.sync += mode.eq(MODE_IDLE)
                    m.next = "IDLE"
                with m.Else():
                    begin_example(m)
        m.d.comb += self.busy.eq((mode != MODE_IDLE) | fsm.ongoing("SEED") |
                                 fsm.ongoing("WIPE"))
        return m


class CommandHandler(wiring.Component):
    """The protocol's commands, from checked frame tokens to reply packets (before CRC).

    Parameters
    ----------
    identity : clln.host.protocol.Identity
    ctrl : Controller
    fabric : clln.gateware.fabric.Fabric
        The handler drives ``ctrl``'s dataset, schedule, start and stop inputs and the
        outputs read port, and ``fabric``'s gate write port and ``clear_flags``.

    Members
    -------
    i : In(stream.Signature(Token))
    o : Out(stream.Signature(Byte))

    Notes
    -----
    A request is buffered whole (payload in a 256-byte memory), checked (frame status,
    version, command, length, ranges and every value, busy) and only then executed, so an
    error reply changes no state.
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(Byte))
    busy: Out(1)

    def __init__(self, identity, ctrl, fabric):
        self.identity, self.ctrl, self.fabric = identity, ctrl, fabric
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        ident, ctrl, fab = self.identity, self.ctrl, self.fabric
        fmt = ctrl.fmt
        K = ctrl.n_outputs
        E = fab.n_edges
        maxex = ctrl.max_examples
        ex_bytes = ident.example_bytes

        m.submodules.buf = buf = Memory(shape=8, depth=p.MAX_PAYLOAD, init=[])
        bw, br = buf.write_port(), buf.read_port()

        count = Signal(range(p.MAX_REQUEST + 2))
        version, rid, cmd, status, fstatus = (Signal(8, name=n) for n in
                                              ("version", "rid", "cmd", "status", "fstatus"))
        hdr = [Signal(8, name=f"hdr{i}") for i in range(19)]

        def u(lo, n):
            """Big-endian unsigned field of the payload bytes lo .. lo+n-1."""
            return Cat(*reversed(hdr[lo:lo + n]))

        plen = Signal(range(p.MAX_REQUEST + 2))
        m.d.comb += plen.eq(count - 3)
        first, cnt = u(0, 2), u(2, 1)

        # Word loop (validate / execute / reply): word index wi of n_words.
        wi = Signal(16)
        n_words = Signal(16)
        wb = Signal(3)
        word = Signal(32)
        ex_i = Signal(16)
        col = Signal(range(max(ctrl.row, K, 2) + 1))
        executing = Signal()
        idx = Signal(range(64))
        snapshot = Signal(24 * 8)

        tok = self.i.payload
        is_cmd = {c: cmd == c for c in Command}

        # Reply payload sizes (bytes) of the fixed replies.
        ident_bytes = list(ident.pack())
        status_fields = [(ctrl.mode, 1), (ctrl.epoch, 4), (ctrl.example, 2), (ctrl.ticks, 8),
                         (ctrl.error_sum, 8), (fab.sat_flags, 1)]
        snap_value = Cat(*[_big_endian(f, n) for f, n in status_fields])

        value_s = word.as_signed()
        v_lo, v_hi = -(1 << (fmt.v_bits - 1)), (1 << (fmt.v_bits - 1)) - 1

        with m.FSM(name="cmd") as fsm:
            with m.State("RECV"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & tok.end):
                    m.d.sync += fstatus.eq(tok.data)
                    m.next = "CHECK"
                with m.Elif(self.i.valid):
                    with m.Switch(count):
                        with m.Case(0):
                            m.d.sync += version.eq(tok.data)
                        with m.Case(1):
                            m.d.sync += rid.eq(tok.data)
                        with m.Case(2):
                            m.d.sync += cmd.eq(tok.data)
                        for i in range(19):
                            with m.Case(3 + i):
                                m.d.sync += hdr[i].eq(tok.data)
                    with m.If((count >= 3) & (count < 3 + p.MAX_PAYLOAD)):
                        m.d.comb += [bw.en.eq(1), bw.addr.eq(count - 3), bw.data.eq(tok.data)]
                    with m.If(count != p.MAX_REQUEST + 1):
                        m.d.sync += count.eq(count + 1)

            with m.State("CHECK"):
                m.d.sync += [snapshot.eq(snap_value), wi.eq(0), wb.eq(0), ex_i.eq(0),
                             col.eq(0), idx.eq(0), executing.eq(0)]

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
                        m.d.comb += bad_len.eq(plen != 0)
                    with m.Case(Command.WRITE_DATASET):
                        m.d.comb += [bad_len.eq((plen < 3) | (plen != 3 + cnt * ex_bytes)),
                                     bad_range.eq((cnt == 0) | (first + cnt > maxex)),
                                     validate.eq(1)]
                        m.d.sync += n_words.eq(cnt * (ctrl.row))
                    with m.Case(Command.WRITE_SCHEDULE):
                        n = u(12, 2)
                        m.d.comb += [bad_len.eq(plen != 19),
                                     bad_range.eq(((u(0, 4) == 0) & (u(4, 4) == 0)) |
                                                  (n == 0) | (n > maxex) | (hdr[14] > 1))]
                    with m.Case(Command.READ_GATES):
                        m.d.comb += [bad_len.eq(plen != 3),
                                     bad_range.eq((cnt == 0) | (first + cnt > E) |
                                                  (cnt > p.MAX_PAYLOAD // 4))]
                        m.d.sync += n_words.eq(cnt)
                    with m.Case(Command.WRITE_GATES):
                        m.d.comb += [bad_len.eq((plen < 3) | (plen != 3 + cnt * 4)),
                                     bad_range.eq((cnt == 0) | (first + cnt > E)),
                                     validate.eq(1)]
                        m.d.sync += n_words.eq(cnt)
                    with m.Case(Command.RUN_EPOCHS):
                        m.d.comb += [bad_len.eq(plen != 5), bad_range.eq(hdr[4] > 1)]
                    with m.Case(Command.READ_OUTPUTS):
                        m.d.comb += [bad_len.eq(plen != 3),
                                     bad_range.eq((cnt == 0) | (first + cnt > maxex) |
                                                  (cnt * K > p.MAX_PAYLOAD // 4))]
                        m.d.sync += n_words.eq(cnt * K)
                m.d.comb += needs_idle.eq(
                    is_cmd[Command.WRITE_DATASET] | is_cmd[Command.WRITE_SCHEDULE] |
                    is_cmd[Command.WRITE_GATES] | is_cmd[Command.START] |
                    is_cmd[Command.RUN_EPOCHS] | is_cmd[Command.RESET])
                known = (cmd >= min(Command)) & (cmd <= max(Command))
                with m.If(fstatus != Status.OK):
                    m.d.sync += [rid.eq(0), cmd.eq(0)]
                    reply(fstatus)
                with m.Elif(version != p.PROTOCOL_VERSION):
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
                m.d.comb += br.addr.eq(3 + (wi << 2) + wb)
                with m.If(wb != 0):
                    m.d.sync += word.eq(Cat(br.data, word[:24]))
                m.d.sync += wb.eq(wb + 1)
                with m.If(wb == 4):
                    m.d.sync += wb.eq(0)
                    m.next = "WORD"
            with m.State("WORD"):
                is_ds = is_cmd[Command.WRITE_DATASET]
                ok = Mux(is_ds, (value_s >= v_lo) & (value_s <= v_hi),
                         (value_s >= ident.gate_min_q) & (value_s <= ident.gate_max_q))
                done = wi + 1 == n_words
                m.d.sync += wi.eq(wi + 1)
                with m.If(executing):
                    with m.If(is_ds):
                        m.d.comb += [ctrl.ds_we.eq(1), ctrl.ds_example.eq(first + ex_i),
                                     ctrl.ds_index.eq(col), ctrl.ds_data.eq(word)]
                        with m.If(col == ctrl.row - 1):
                            m.d.sync += [col.eq(0), ex_i.eq(ex_i + 1)]
                        with m.Else():
                            m.d.sync += col.eq(col + 1)
                    with m.Else():
                        m.d.comb += [fab.gate_we.eq(1), fab.gate_addr.eq(first + wi),
                                     fab.gate_data.eq(word)]
                    with m.If(done):
                        m.d.sync += status.eq(Status.OK)
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "WORDS"
                with m.Elif(~ok):
                    m.d.sync += status.eq(Status.OUT_OF_RANGE)
                    m.next = "REPLY"
                with m.Elif(done):
                    m.d.sync += wi.eq(0)
                    with m.If(ctrl.busy):
                        m.d.sync += status.eq(Status.BUSY)
                        m.next = "REPLY"
                    with m.Else():
                        m.d.sync += executing.eq(1)
                        m.next = "WORDS"
                with m.Else():
                    m.next = "WORDS"

            with m.State("EXEC"):
                m.d.sync += status.eq(Status.OK)
                with m.Switch(cmd):
                    with m.Case(Command.WRITE_SCHEDULE):
                        m.d.comb += [ctrl.sched_we.eq(1), ctrl.sched_settle.eq(u(0, 4)),
                                     ctrl.sched_learn.eq(u(4, 4)), ctrl.sched_epochs.eq(u(8, 4)),
                                     ctrl.sched_n.eq(u(12, 2)), ctrl.sched_order.eq(hdr[14]),
                                     ctrl.sched_seed.eq(u(15, 4))]
                    with m.Case(Command.START):
                        m.d.comb += [ctrl.start.eq(1), ctrl.start_epochs.eq(ctrl.epochs),
                                     ctrl.start_learn.eq(1)]
                    with m.Case(Command.RUN_EPOCHS):
                        m.d.comb += [ctrl.start.eq(1), ctrl.start_epochs.eq(u(0, 4)),
                                     ctrl.start_learn.eq(hdr[4][0])]
                    with m.Case(Command.STOP):
                        m.d.comb += ctrl.stop.eq(1)
                    with m.Case(Command.RESET):
                        m.d.comb += ctrl.clear.eq(1)
                m.next = "WAIT"
            with m.State("WAIT"):
                # a schedule write reduces the seed in the controller: reply once it is idle
                # again (a start makes it busy on purpose)
                with m.If(~ctrl.busy | ~(is_cmd[Command.WRITE_SCHEDULE] |
                                         is_cmd[Command.RESET])):
                    m.next = "REPLY"

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
                        m.d.sync += [idx.eq(0), wi.eq(0), ex_i.eq(0), col.eq(0)]
                        with m.If(has_fixed):
                            m.next = "FIXED"
                        with m.Elif(has_words):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "DONE"
            with m.State("FIXED"):
                ib = Array(Const(b, 8) for b in ident_bytes)
                sb = Array(snapshot[8 * i:8 * i + 8] for i in range(24))
                is_id = is_cmd[Command.IDENTIFY]
                n = Mux(is_id, len(ident_bytes), 24)
                last = idx == n - 1
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.data.eq(Mux(is_id, ib[idx], sb[idx])),
                             self.o.payload.last.eq(last)]
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(last):
                        m.next = "DONE"
            with m.State("FETCH"):
                m.d.comb += [ctrl.out_example.eq(first + ex_i), ctrl.out_index.eq(col)]
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += [ctrl.out_example.eq(first + ex_i), ctrl.out_index.eq(col)]
                gate = Signal(signed(fmt.g_bits))
                m.d.comb += gate.eq(fab.gates[first + wi])
                m.d.sync += [word.eq(Mux(is_cmd[Command.READ_GATES], gate, ctrl.out_data)),
                             idx.eq(0)]
                with m.If(col == K - 1):
                    m.d.sync += [col.eq(0), ex_i.eq(ex_i + 1)]
                with m.Else():
                    m.d.sync += col.eq(col + 1)
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

    def __init__(self, cfg, divisor, max_examples=None, seed=None, fmt=None, fifo_depth=512):
        self.cfg = cfg
        self.fmt = fmt if fmt is not None else Formats.from_config(cfg)
        self.divisor = divisor
        self.max_examples = max_examples or max(16, len(cfg.task.x))
        self.seed = seed
        self.fifo_depth = fifo_depth
        self.identity = p.Identity.from_config(cfg, self.fmt, self.max_examples)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        fab = make_fabric(self.cfg, self.fmt, seed=self.seed)
        m.submodules.ctrl = ctrl = Controller(self.cfg, self.fmt, self.max_examples)
        m.submodules.fabric = ResetInserter(ctrl.fabric_reset)(fab)
        m.submodules.handler = hnd = CommandHandler(self.identity, ctrl, fab)
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        wiring.connect(m, link.requests, hnd.i)
        wiring.connect(m, hnd.o, link.replies)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [fab.run.eq(ctrl.f_run), fab.learn.eq(ctrl.f_learn),
                     fab.sample_we.eq(ctrl.f_sample_we), fab.sample_addr.eq(ctrl.f_sample_addr),
                     fab.sample_data.eq(ctrl.f_sample_data), ctrl.f_tick_done.eq(fab.tick_done),
                     ctrl.f_outputs.eq(fab.outputs)]
        quiet = Signal(range(65))
        active = ctrl.busy | hnd.busy | link.busy
        with m.If(active):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != 64):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.idle.eq(quiet == 64)
        return m
