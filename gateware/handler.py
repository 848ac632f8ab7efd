"""Command handler (:class:`CommandHandler`): the commands of ``docs/protocol.md`` on the
frame tokens of :class:`~clln.gateware.framing.CRCChecker`, driving the controller and
the fabric's gate port. Its golden model is :class:`clln.sim.system.SystemModel`.
"""

import struct
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.protocol import Command, Status
from clln.schedule import PIPELINE_CYCLES

from .fabric.arith import above, below, const_mul
from .fabric.ports import StatusSignature
from .framing import Byte, Token
from .memory import sync_read_port

__all__ = ["CommandHandler", "big_endian"]

#: Bytes of the ``first`` u16, ``count`` u8 prefix of a range payload.
RANGE_BYTES = struct.calcsize(p.RANGE_FORMAT)
#: Bytes of a request's header (version, request id, command).
REQUEST_HEADER = 3


def big_endian(value, n):
    """The n bytes of unsigned ``value`` (zero-extended), most significant byte first."""
    wide = Cat(value, Const(0, 8 * n - len(value))) if len(value) < 8 * n else value
    return [wide[8 * (n - 1 - b):8 * (n - b)] for b in range(n)]


class CommandHandler(wiring.Component):
    """The protocol's commands, from checked frame tokens to reply packets (before CRC).

    Parameters
    ----------
    identity : clln.protocol.Identity
    command : clln.gateware.controller.CommandSignature
        The controller's command port (:attr:`Controller.command_signature`).
    gates : clln.gateware.fabric.ports.GatePortSignature
        The fabric's gate port.
    gate_read_latency : int
        Cycles from ``gates.raddr`` to ``gates.rdata`` (the fabric's).
    graph : clln.gateware.fabric.ports.GraphPortSignature, optional
        A capacity fabric's graph port: the handler then serves WRITE_GRAPH,
        WRITE_INIT_GATES and COMMIT_GRAPH and holds the row count and the loaded config's
        hash (IDENTIFY's), which no RESET clears.
    row_limits : list of (lo, bits, most), optional
        The row fields WRITE_GRAPH checks (``value < most`` at bits ``lo ..``), with
        ``graph``.
    n_rows : int
        With ``graph``: the rows of a tick of the graph at power-up.

    Members
    -------
    i : In(stream.Signature(Token))
    o : Out(stream.Signature(Byte))
    busy : Out(1)
    ctrl : Out(command)
        Drives the controller's dataset, schedule, start, stop and clear inputs and the
        outputs read port; reads its status.
    gates : Out(gates)
        The fabric's gate write and read ports.
    fabric_status : In(StatusSignature())
        The fabric's saturation flags (for READ_STATUS); ``clear_flags`` is held at 0
        (RESET clears the fabric through the controller).

    Notes
    -----
    A request is buffered whole (payload in a 256-byte memory, its first bytes, up to the
    longest fixed payload, also in registers), checked (frame status, version, command,
    length, ranges and every value, busy) and only then executed, so an error reply
    changes no state. The data inputs of the controller and the gate port carry the
    request's fields at all times; only the strobes (``sched_we``, ``start``, ``ds_we``,
    ``gates.we``, ...) are decoded.
    """

    #: Payload bytes kept in registers (the longest fixed payload, WRITE_SCHEDULE's).
    HEADER_BYTES = max(p.REQUEST_LENGTHS.values())

    def __init__(self, identity, command, gates, gate_read_latency, graph=None,
                 row_limits=(), n_rows=0):
        self.identity = identity
        self.command_signature, self.gate_signature = command, gates
        self.gate_read_latency = gate_read_latency
        self.graph_signature, self.row_limits = graph, list(row_limits)
        self.graph_init_rows = n_rows
        #: u32 words of a WRITE_GRAPH row (1 without a graph port)
        self.row_words = -(-graph.row_bits // 32) if graph else 1
        super().__init__({
            "i": In(stream.Signature(Token)),
            "o": Out(stream.Signature(Byte)),
            "busy": Out(1),
            "ctrl": Out(command),
            "gates": Out(gates),
            "fabric_status": In(StatusSignature()),
            **({"graph": Out(graph)} if graph else {}),
        })

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()
        self._request_registers(m, s)
        self._status_snapshot(m, s)
        self._payload_fields(m, s)
        self._word_loop(m, s)
        self._drive_ports(m, s)
        with m.FSM(name="cmd") as fsm:
            with m.State("RECV"):
                self._receive(m, s)
            with m.State("ALIGN"):
                self._align(m, s)
            with m.State("CHECK"):
                self._check(m, s)
            with m.State("WORDS"):
                self._read_word(m, s)
            with m.State("WORD"):
                self._validate_or_write_word(m, s)
            with m.State("EXEC"):
                self._execute(m, s)
            with m.State("WAIT"):
                self._wait_until_landed(m, s)
            with m.State("REPLY"):
                self._reply_header(m, s)
            with m.State("FIXED"):
                self._reply_fixed(m, s)
            with m.State("FETCH"):
                self._fetch_wait(m, s)
            with m.State("LATCH"):
                self._latch_word(m, s)
            with m.State("SEND"):
                self._send_word(m, s)
            with m.State("DONE"):
                m.d.sync += [s.count.eq(0), s.idx.eq(0), s.shifted.eq(0)]
                m.next = "RECV"
        m.d.comb += self.busy.eq(~fsm.ongoing("RECV") | (s.count != 0))
        return m

    # ---------------------------------------------------------------- registers

    def _request_registers(self, m, s):
        """The payload buffer and the request's header registers."""
        m.submodules.buf = buf = Memory(shape=8, depth=p.MAX_PAYLOAD, init=[])
        s.bw, s.br = buf.write_port(), sync_read_port(m, buf, "buf")
        s.count = Signal(range(p.MAX_REQUEST + 2), name="count")
        s.fetch_wait = Signal(range(self.gate_read_latency), name="fetch_wait")
        s.version_ok = Signal(name="version_ok")
        s.rid, s.cmd = Signal(8, name="rid"), Signal(8, name="cmd")
        # the frame's status (end token), then the reply's
        s.status = Signal(4, name="status")
        s.is_cmd = {c: s.cmd == c for c in Command}

    def _status_snapshot(self, m, s):
        """One shift register, ``hold``, for the request's first payload bytes and the
        fixed replies: payload bytes shift in at its bottom byte (the first
        ``HEADER_BYTES``, padded with zeros to that many in ALIGN, so that payload byte i
        ends at byte ``HEADER_BYTES - 1 - i``); IDENTIFY's constants or READ_STATUS'
        snapshot (taken when the request is checked) are loaded with their first byte at
        the top, and shift out of its top byte."""
        ctrl = self.ctrl
        status_fields = [(ctrl.mode, 1), (ctrl.epoch, 4), (ctrl.example, 2),
                         (ctrl.ticks, 8), (ctrl.cycles, 8),
                         *((ctrl.error_sum[i], 8) for i in range(self.command_signature.streams)),
                         (self.fabric_status.sat_flags.as_value(), 1)]
        status_bytes = [b for value, n in status_fields for b in big_endian(value, n)]
        s.ident_bytes = [Const(b, 8) for b in self.identity.pack()]
        if self.graph_signature:
            # the loaded config's hash (IDENTIFY's bytes 1 .. 4), and the rows of a tick
            s.hash = Signal(32, init=self.identity.config_hash, name="graph_hash")
            s.n_rows = Signal(range(self.graph_signature.depth + 1), name="graph_rows",
                              init=self.graph_init_rows)
            s.ident_bytes[1:5] = big_endian(s.hash, 4)
        s.n_status, s.n_ident = len(status_bytes), len(s.ident_bytes)
        n = max(self.HEADER_BYTES, s.n_status, s.n_ident)
        s.hold = Signal(8 * n, name="hold")
        s.hdr = [s.hold[8 * (self.HEADER_BYTES - 1 - i):8 * (self.HEADER_BYTES - i)]
                 for i in range(self.HEADER_BYTES)]
        s.shifted = Signal(range(self.HEADER_BYTES + 1), name="shifted")

        def loaded(byte_values):
            """``hold`` with these bytes, the first at the top."""
            return Cat(Const(0, 8 * (n - len(byte_values))), *reversed(byte_values))

        # one load and one shift for the whole register (its enable), from the states
        s.load, s.shift, s.shift_byte = Signal(name="load"), Signal(name="shift"), Signal(8)
        with m.If(s.load):
            m.d.sync += s.hold.eq(Mux(s.is_cmd[Command.READ_STATUS], loaded(status_bytes),
                                      loaded(s.ident_bytes)))
        with m.Elif(s.shift):
            m.d.sync += s.hold.eq(Cat(s.shift_byte, s.hold[:-8]))

    @staticmethod
    def _shift_in(m, s, byte):
        """Shift ``byte`` into ``hold``'s bottom (its top byte leaves)."""
        m.d.comb += [s.shift.eq(1), s.shift_byte.eq(byte)]

    def _payload_fields(self, m, s):
        """The payload's fields in the header registers, at the protocol's offsets."""
        def u(lo, n):
            """Big-endian unsigned field of the payload bytes lo .. lo+n-1."""
            return Cat(*reversed(s.hdr[lo:lo + n]))

        s.u = u
        s.first, s.cnt = (u(*p.RANGE_FIELDS[name]) for name in ("first", "count"))
        s.sched = {name: u(*at) for name, at in p.SCHEDULE_FIELDS.items()}
        s.commit = {name: u(*at) for name, at in p.COMMIT_FIELDS.items()}
        s.run = {name: u(*at) for name, at in p.RUN_FIELDS.items()}

    def _word_loop(self, m, s):
        """Word loop (validate / execute / reply): word wi of n_words, at column col of
        the row of example (or gate) pos."""
        W, K = self.command_signature.row, self.command_signature.n_values
        E, maxex = self.gate_signature.n_gates, self.command_signature.max_examples
        R, D = self.row_words, self.graph_signature.depth if self.graph_signature else 0
        s.wi = Signal(range(p.MAX_PAYLOAD // 4 + 1), name="wi")
        s.n_words = Signal(range(p.MAX_PAYLOAD // 4 + 1), name="n_words")  # as checked: fits
        s.word = Signal(32, name="word")
        s.pos = Signal(range(max(maxex, E, D, 2)), name="pos")
        s.col = Signal(range(max(W, K, R, 2)), name="col")
        s.last_col = Signal(name="last_col")
        s.executing = Signal(name="executing")
        s.idx = Signal(range(max(s.n_ident, s.n_status) + 1), name="idx")   # byte index
        with m.Switch(s.cmd):
            with m.Case(Command.WRITE_DATASET):
                m.d.comb += [s.n_words.eq(const_mul(s.cnt, W)), s.last_col.eq(s.col == W - 1)]
            with m.Case(Command.READ_OUTPUTS):
                m.d.comb += [s.n_words.eq(const_mul(s.cnt, K)), s.last_col.eq(s.col == K - 1)]
            with m.Case(Command.WRITE_GRAPH):
                m.d.comb += [s.n_words.eq(const_mul(s.cnt, R)), s.last_col.eq(s.col == R - 1)]
            with m.Default():
                m.d.comb += [s.n_words.eq(s.cnt), s.last_col.eq(1)]

    @staticmethod
    def _next_column(m, s):
        with m.If(s.last_col):
            m.d.sync += [s.col.eq(0), s.pos.eq(s.pos + 1)]
        with m.Else():
            m.d.sync += s.col.eq(s.col + 1)

    @staticmethod
    def _rewind(m, s):
        m.d.sync += [s.wi.eq(0), s.pos.eq(s.first), s.col.eq(0)]

    def _drive_ports(self, m, s):
        """The data inputs of the controller and the gate port: the request's fields."""
        ctrl, gates, sched, run = self.ctrl, self.gates, s.sched, s.run
        is_run = s.is_cmd[Command.RUN_EPOCHS]
        m.d.comb += [
            ctrl.ds_example.eq(s.pos), ctrl.ds_index.eq(s.col), ctrl.ds_data.eq(s.word),
            gates.addr.eq(s.pos), gates.data.eq(s.word), gates.raddr.eq(s.pos),
            ctrl.out_example.eq(s.pos), ctrl.out_index.eq(s.col),
            ctrl.sched_settle.eq(sched["settle_ticks"]),
            ctrl.sched_learn.eq(sched["learn_ticks"]),
            ctrl.sched_epochs.eq(sched["epochs"]), ctrl.sched_n.eq(sched["n_examples"]),
            ctrl.sched_order.eq(sched["order"]), ctrl.sched_seed.eq(sched["seed"]),
            ctrl.sched_still.eq(sched["still_ticks"]),
            ctrl.start_epochs.eq(Mux(is_run, run["epochs"], ctrl.epochs)),
            ctrl.start_learn.eq(~is_run | run["learn"][0]),
            self.fabric_status.clear_flags.eq(0),
        ]
        if self.graph_signature:
            g = self.graph
            s.row = Signal(32 * self.row_words, name="graph_row")   # the row's words so far
            s.full_row = Cat(s.word, s.row)[:32 * self.row_words]   # with the last word
            m.d.comb += [g.row_addr.eq(s.pos), g.row_data.eq(s.full_row),
                         g.init_addr.eq(s.pos), g.init_data.eq(s.word),
                         g.n_rows.eq(s.n_rows)]

    # ---------------------------------------------------------------- receive and check

    def _receive(self, m, s):
        """Take the request's tokens: header bytes, payload into the buffer (its first
        bytes also into ``hold``), then the end token with the frame's status."""
        tok = self.i.payload
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid & tok.end):
            m.d.sync += s.status.eq(tok.data)     # a frame status: below 16
            m.next = "ALIGN"
        with m.Elif(self.i.valid):
            with m.Switch(s.count):
                with m.Case(0):
                    m.d.sync += s.version_ok.eq(tok.data == p.PROTOCOL_VERSION)
                with m.Case(1):
                    m.d.sync += s.rid.eq(tok.data)
                with m.Case(2):
                    m.d.sync += s.cmd.eq(tok.data)
            with m.If(~below(s.count, REQUEST_HEADER) & (s.shifted != self.HEADER_BYTES)):
                self._shift_in(m, s, tok.data)
                m.d.sync += s.shifted.eq(s.shifted + 1)
            with m.If(~below(s.count, REQUEST_HEADER) &
                      below(s.count, REQUEST_HEADER + p.MAX_PAYLOAD)):
                m.d.comb += [s.bw.en.eq(1), s.bw.addr.eq(s.count - REQUEST_HEADER),
                             s.bw.data.eq(tok.data)]
            with m.If(s.count != p.MAX_REQUEST + 1):
                m.d.sync += s.count.eq(s.count + 1)

    def _length_and_range_checks(self, m, s, bad_len, bad_range, validate):
        """Per command: a wrong payload length, a range out of bounds, values to check."""
        cs = self.command_signature
        maxex, K, E = cs.max_examples, cs.n_values, self.gate_signature.n_gates
        first, cnt, sched, run = s.first, s.cnt, s.sched, s.run
        end = Signal(len(first) + 1, name="range_end")      # first + count
        m.d.comb += end.eq(first + cnt)

        def payload_is(n):
            """The payload has n bytes (count includes the request's header bytes)."""
            return s.count == REQUEST_HEADER + n

        fixed = p.REQUEST_LENGTHS
        with m.Switch(s.cmd):
            with m.Case(*(c for c, n in fixed.items() if n == 0)):
                m.d.comb += bad_len.eq(~payload_is(0))
            with m.Case(Command.WRITE_DATASET):
                m.d.comb += [bad_len.eq(~payload_is(
                                 RANGE_BYTES + const_mul(cnt, self.identity.example_bytes))),
                             bad_range.eq((cnt == 0) | above(end, maxex)),
                             validate.eq(1)]
            with m.Case(Command.WRITE_SCHEDULE):
                n = sched["n_examples"]
                m.d.comb += [bad_len.eq(~payload_is(fixed[Command.WRITE_SCHEDULE])),
                             bad_range.eq(((sched["settle_ticks"] == 0) &
                                           (sched["learn_ticks"] == 0)) |
                                          (n == 0) | above(n, maxex) | above(sched["order"], 1) |
                                          above(sched["settle_ticks"], p.MAX_PHASE_TICKS) |
                                          above(sched["learn_ticks"], p.MAX_PHASE_TICKS) |
                                          above(sched["epochs"], p.MAX_RUN_EPOCHS))]
            with m.Case(Command.READ_GATES):
                m.d.comb += [bad_len.eq(~payload_is(fixed[Command.READ_GATES])),
                             bad_range.eq((cnt == 0) | above(end, E) |
                                          above(cnt, p.MAX_PAYLOAD // 4))]
            with m.Case(Command.WRITE_GATES):
                m.d.comb += [bad_len.eq(~payload_is(RANGE_BYTES + (cnt << 2))),
                             bad_range.eq((cnt == 0) | above(end, E)),
                             validate.eq(1)]
            with m.Case(Command.RUN_EPOCHS):
                m.d.comb += [bad_len.eq(~payload_is(fixed[Command.RUN_EPOCHS])),
                             bad_range.eq(above(run["learn"], 1) |
                                          above(run["epochs"], p.MAX_RUN_EPOCHS))]
            with m.Case(Command.READ_OUTPUTS):
                m.d.comb += [bad_len.eq(~payload_is(fixed[Command.READ_OUTPUTS])),
                             bad_range.eq((cnt == 0) | above(end, maxex) |
                                          above(const_mul(cnt, K), p.MAX_PAYLOAD // 4))]
        if self.graph_signature:
            self._graph_checks(m, s, end, payload_is, bad_len, bad_range, validate)

    def _graph_checks(self, m, s, end, payload_is, bad_len, bad_range, validate):
        """The graph commands' length and range checks."""
        D, E, R = self.graph_signature.depth, self.gate_signature.n_gates, self.row_words
        cnt, n_rows = s.cnt, s.commit["n_rows"]
        with m.Switch(s.cmd):
            with m.Case(Command.WRITE_GRAPH):
                m.d.comb += [bad_len.eq(~payload_is(RANGE_BYTES + const_mul(cnt, 4 * R))),
                             bad_range.eq((cnt == 0) | above(end, D)), validate.eq(1)]
            with m.Case(Command.WRITE_INIT_GATES):
                m.d.comb += [bad_len.eq(~payload_is(RANGE_BYTES + (cnt << 2))),
                             bad_range.eq((cnt == 0) | above(end, E)), validate.eq(1)]
            with m.Case(Command.COMMIT_GRAPH):
                m.d.comb += [bad_len.eq(~payload_is(p.REQUEST_LENGTHS[Command.COMMIT_GRAPH])),
                             bad_range.eq(below(n_rows, PIPELINE_CYCLES + 1) |
                                          above(n_rows, D))]

    def _align(self, m, s):
        """Pad ``hold`` with zeros to ``HEADER_BYTES`` payload bytes: the fields are then
        at fixed places."""
        with m.If(s.shifted != self.HEADER_BYTES):
            self._shift_in(m, s, 0)
            m.d.sync += s.shifted.eq(s.shifted + 1)
        with m.Else():
            m.next = "CHECK"

    def _check(self, m, s):
        """Check the request (frame status, version, command, length, range, busy); on
        to the values' check, the execution or the error reply."""
        self._rewind(m, s)
        m.d.sync += [s.idx.eq(0), s.executing.eq(0)]
        m.d.comb += s.load.eq(s.is_cmd[Command.READ_STATUS] | s.is_cmd[Command.IDENTIFY])

        def reply(st):
            m.d.sync += s.status.eq(st)
            m.next = "REPLY"

        bad_len, bad_range = Signal(name="bad_len"), Signal(name="bad_range")
        validate, needs_idle = Signal(name="validate"), Signal(name="needs_idle")
        self._length_and_range_checks(m, s, bad_len, bad_range, validate)
        m.d.comb += needs_idle.eq(Cat(*(s.is_cmd[c] for c in sorted(p.IDLE_ONLY))).any())
        known = ~below(s.cmd, min(Command)) & ~above(s.cmd, max(Command))
        if not self.graph_signature:            # a fixed graph: no graph commands
            known = known & below(s.cmd, min(p.GRAPH_COMMANDS))
        with m.If(s.status != Status.OK):
            m.d.sync += [s.rid.eq(0), s.cmd.eq(0)]
            m.next = "REPLY"
        with m.Elif(~s.version_ok):
            reply(Status.BAD_VERSION)
        with m.Elif(~known):
            reply(Status.UNKNOWN_COMMAND)
        with m.Elif(bad_len):
            reply(Status.BAD_LENGTH)
        with m.Elif(bad_range):
            reply(Status.OUT_OF_RANGE)
        with m.Elif(validate):
            m.next = "WORDS"
        with m.Elif(needs_idle & self.ctrl.busy):
            reply(Status.BUSY)
        with m.Else():
            m.next = "EXEC"

    # ---------------------------------------------------------------- commands

    def _read_word(self, m, s):
        """Read the payload's i32 value wi (after the range prefix) from the buffer; the
        first pass validates every value, the second executes."""
        # idx: the byte read (0 .. 3), one cycle before it arrives
        m.d.comb += s.br.addr.eq(RANGE_BYTES + Cat(s.idx[:2], s.wi))
        with m.If(s.idx != 0):
            m.d.sync += s.word.eq(Cat(s.br.data, s.word[:24]))
        m.d.sync += s.idx.eq(s.idx + 1)
        with m.If(s.idx == 4):
            m.d.sync += s.idx.eq(0)
            m.next = "WORD"

    def _validate_or_write_word(self, m, s):
        """WRITE_DATASET / WRITE_GATES (WRITE_GRAPH / WRITE_INIT_GATES): check the word
        (first pass) or write it."""
        vb, word = self.command_signature.v_bits, s.word
        value_s = word.as_signed()
        is_ds = s.is_cmd[Command.WRITE_DATASET]
        fits_v = word[vb - 1:].all() | ~word[vb - 1:].any()     # signed(v_bits)
        ok = Mux(is_ds, fits_v, ~below(value_s, self.identity.gate_min_q) &
                 ~above(value_s, self.identity.gate_max_q))
        no_wait = is_ds
        if self.graph_signature:
            is_row, is_init = s.is_cmd[Command.WRITE_GRAPH], s.is_cmd[Command.WRITE_INIT_GATES]
            ok = Mux(is_row, ~s.last_col | self._row_ok(s), ok)
            no_wait = is_ds | is_row | is_init
            m.d.sync += s.row.eq(Cat(word, s.row[:-32]))    # shifted in on both passes
        done = s.wi + 1 == s.n_words
        with m.If(s.executing):
            # a pipelined fabric is busy until its last gate write has landed
            with m.If(no_wait | ~self.ctrl.busy):
                m.d.sync += s.wi.eq(s.wi + 1)
                self._next_column(m, s)
                with m.If(is_ds):
                    m.d.comb += self.ctrl.ds_we.eq(1)
                if self.graph_signature:
                    with m.Elif(is_row):
                        m.d.comb += self.graph.row_we.eq(s.last_col)
                    with m.Elif(is_init):
                        m.d.comb += self.graph.init_we.eq(1)
                with m.Else():
                    m.d.comb += self.gates.we.eq(1)
                with m.If(done):
                    m.d.sync += s.status.eq(Status.OK)
                    m.next = "WAIT"
                with m.Else():
                    m.next = "WORDS"
        with m.Elif(~ok):
            m.d.sync += s.status.eq(Status.OUT_OF_RANGE)
            m.next = "REPLY"
        with m.Elif(done):
            self._rewind(m, s)
            with m.If(self.ctrl.busy):
                m.d.sync += s.status.eq(Status.BUSY)
                m.next = "REPLY"
            with m.Else():
                m.d.sync += s.executing.eq(1)
                m.next = "WORDS"
        with m.Else():
            m.d.sync += s.wi.eq(s.wi + 1)
            if self.graph_signature:            # a row is checked on its last word
                self._next_column(m, s)
            m.next = "WORDS"

    def _row_ok(self, s):
        """The row of WRITE_GRAPH (complete with its last word) has every index field
        within its bound and its unused top bits 0."""
        row, bits = s.full_row, self.graph_signature.row_bits
        ok = [row[lo:lo + n] < most for lo, n, most in self.row_limits if most < 1 << n]
        if len(row) > bits:
            ok.append(~row[bits:].any())
        return Cat(*ok).all() if ok else Const(1)

    def _execute(self, m, s):
        """The strobe of a command without values."""
        ctrl = self.ctrl
        m.d.sync += s.status.eq(Status.OK)
        with m.Switch(s.cmd):
            with m.Case(Command.WRITE_SCHEDULE):
                m.d.comb += ctrl.sched_we.eq(1)
            with m.Case(Command.START, Command.RUN_EPOCHS):
                m.d.comb += ctrl.start.eq(1)
            with m.Case(Command.STOP):
                m.d.comb += ctrl.stop.eq(1)
            with m.Case(Command.RESET):
                m.d.comb += ctrl.clear.eq(1)
            if self.graph_signature:
                with m.Case(Command.COMMIT_GRAPH):     # the new graph, then a RESET
                    m.d.sync += [s.n_rows.eq(s.commit["n_rows"]),
                                 s.hash.eq(s.commit["config_hash"])]
                    m.d.comb += ctrl.clear.eq(1)
        m.next = "WAIT"

    def _wait_until_landed(self, m, s):
        """A schedule write reduces the seed in the controller, a pipelined fabric lands
        the last gate written: reply once idle again (a start makes it busy on purpose)."""
        is_cmd = s.is_cmd
        with m.If(~self.ctrl.busy | ~(is_cmd[Command.WRITE_SCHEDULE] |
                                      is_cmd[Command.RESET] | is_cmd[Command.WRITE_GATES] |
                                      is_cmd[Command.COMMIT_GRAPH])):
            m.next = "REPLY"

    # ---------------------------------------------------------------- reply

    def _reply_header(self, m, s):
        """Replies: the header, then constants (IDENTIFY), the snapshot (READ_STATUS) or
        words (READ_GATES, READ_OUTPUTS; wi, pos and col as CHECK left them)."""
        idx, is_cmd = s.idx, s.is_cmd
        header = Array([Const(p.PROTOCOL_VERSION, 8), s.rid, s.cmd, s.status])
        ok = s.status == Status.OK
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

    def _reply_fixed(self, m, s):
        """IDENTIFY's constants or READ_STATUS' snapshot, from ``hold``'s top byte (a
        register: no path from idx into the link's CRC but ``last``)."""
        idx = s.idx
        n = Mux(s.is_cmd[Command.IDENTIFY], s.n_ident, s.n_status)
        last = idx == n - 1
        m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(s.hold[-8:]),
                     self.o.payload.last.eq(last)]
        with m.If(self.o.ready):
            self._shift_in(m, s, 0)
            m.d.sync += idx.eq(idx + 1)
            with m.If(last):
                m.next = "DONE"

    def _fetch_wait(self, m, s):
        """gates.raddr / out_* follow pos and col; a gate read takes gate_read_latency
        cycles (the outputs, one)."""
        with m.If(s.fetch_wait == self.gate_read_latency - 1):
            m.d.sync += s.fetch_wait.eq(0)
            m.next = "LATCH"
        with m.Else():
            m.d.sync += s.fetch_wait.eq(s.fetch_wait + 1)

    def _latch_word(self, m, s):
        m.d.sync += [s.word.eq(Mux(s.is_cmd[Command.READ_GATES], self.gates.rdata,
                                   self.ctrl.out_data)), s.idx.eq(0)]
        self._next_column(m, s)
        m.next = "SEND"

    def _send_word(self, m, s):
        """The word's 4 bytes, most significant first; then the next word or the end."""
        idx = s.idx
        last = (idx == 3) & (s.wi + 1 == s.n_words)
        m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(s.word[24:]),
                     self.o.payload.last.eq(last)]
        with m.If(self.o.ready):
            m.d.sync += [idx.eq(idx + 1), s.word.eq(s.word << 8)]
            with m.If(idx == 3):
                m.d.sync += s.wi.eq(s.wi + 1)
                with m.If(last):
                    m.next = "DONE"
                with m.Else():
                    m.next = "FETCH"
