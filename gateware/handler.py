"""Command handler (:class:`CommandHandler`): the commands of ``docs/protocol.md`` on the
frame tokens of :class:`~clln.gateware.framing.CRCChecker`, driving the controller and
the fabric. Its golden model is :class:`clln.sim.system.SystemModel`.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.protocol import Command, Status

from .fabric.arith import const_mul
from .framing import Byte, Token
from .memory import sync_read_port


def big_endian(value, n):
    """The n bytes of unsigned ``value`` (zero-extended), most significant byte first."""
    wide = Cat(value, Const(0, 8 * n - len(value))) if len(value) < 8 * n else value
    return [wide[8 * (n - 1 - b):8 * (n - b)] for b in range(n)]


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
        bw, br = buf.write_port(), sync_read_port(m, buf, "buf")

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
            status_bytes += big_endian(hold[at:at + len(value)], n)
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
