"""Frame layer of the host link: COBS decoder/encoder and CRC-16/CCITT-FALSE checker/generator.

Byte-exact models live in :mod:`clln.host.protocol` (``CobsDecoderModel``,
``CrcCheckerModel``, ``cobs_encode``, ``crc16``); ``docs/protocol.md`` has the format.

Receive path: bytes -> :class:`COBSDecoder` -> :data:`Token` stream -> :class:`CRCChecker`
-> :data:`Token` stream of the frame without its CRC, closed by an end token whose ``data``
is a :class:`~clln.host.protocol.Status`. Send path: :data:`Byte` stream (``last`` marks
the end of a packet) -> :class:`CRCGenerator` -> :class:`COBSEncoder` -> bytes.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import crc as crc_lib
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from clln.protocol import CRC_INIT, CRC_POLY, MAX_REQUEST, MIN_REQUEST, Status

from .fabric.arith import above, below

#: A decoded frame byte (``end`` = 0), or the end of a frame (``end`` = 1, ``data`` = status).
Token = data.StructLayout({"data": 8, "end": 1})
#: A byte of an outgoing packet; ``last`` marks its final byte.
Byte = data.StructLayout({"data": 8, "last": 1})


#: CRC-16/CCITT-FALSE (:func:`clln.protocol.crc16`) over bytes, for
#: :mod:`amaranth.lib.crc`: MSB first, no reflection, no final XOR.
CRC16 = crc_lib.Algorithm(crc_width=16, polynomial=CRC_POLY, initial_crc=CRC_INIT,
                          reflect_input=False, reflect_output=False,
                          xor_output=0)(data_width=8)


class _Output:
    """An output register on a stream: ``free`` when it can take a new payload this cycle."""

    def __init__(self, m, o):
        self.m, self.o = m, o
        self.free = ~o.valid | o.ready
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)

    def put(self, value=None, **fields):
        self.m.d.sync += self.o.valid.eq(1)
        if value is not None:
            self.m.d.sync += self.o.payload.eq(value)
        for k, v in fields.items():
            self.m.d.sync += getattr(self.o.payload, k).eq(v)


class COBSDecoder(wiring.Component):
    """COBS decoder with 0x00 as frame delimiter (model: ``CobsDecoderModel``).

    Emits one token per input byte at most: data bytes (an implied zero goes out when the
    next code byte arrives), then an end token with status OK, BAD_COBS (frame ended inside
    a block) or LINE_ERROR (``line_error`` pulsed during the frame). Empty frames vanish.

    Members
    -------
    i : In(stream.Signature(8))
        Encoded bytes.
    line_error : In(1)
        Pulse: the UART lost a byte of the current frame.
    o : Out(stream.Signature(Token))
    """

    i: In(stream.Signature(8))
    line_error: In(1)
    o: Out(stream.Signature(Token))

    def elaborate(self, platform):
        m = Module()
        remaining = Signal(8)
        pending_zero = Signal()
        in_frame = Signal()
        line_err = Signal()
        out = _Output(m, self.o)
        m.d.comb += self.i.ready.eq(out.free)
        b = self.i.payload
        with m.If(self.i.valid & self.i.ready):
            with m.If(b == 0):
                with m.If(in_frame):
                    status = Mux(line_err, Status.LINE_ERROR,
                                 Mux(remaining != 0, Status.BAD_COBS, Status.OK))
                    out.put(data=status, end=1)
                m.d.sync += [remaining.eq(0), pending_zero.eq(0), in_frame.eq(0),
                             line_err.eq(0)]
            with m.Elif(remaining == 0):
                with m.If(pending_zero):
                    out.put(data=0, end=0)
                m.d.sync += [remaining.eq(b - 1), pending_zero.eq(b != 0xFF), in_frame.eq(1)]
            with m.Else():
                out.put(data=b, end=0)
                m.d.sync += [remaining.eq(remaining - 1), in_frame.eq(1)]
        with m.If(self.line_error):
            m.d.sync += [line_err.eq(1), in_frame.eq(1)]
        return m


class CRCChecker(wiring.Component):
    """Strips and checks the trailing CRC-16 of each frame (model: ``CrcCheckerModel``).

    Delays data by two bytes so the CRC never leaves; the end token carries the decoder's
    error if any, else TRUNCATED (fewer than ``min_length`` bytes), TOO_LONG (more than
    ``max_length``), BAD_CRC, or OK. Bytes past ``max_length`` still flow out.

    Parameters
    ----------
    min_length, max_length : int
        Bounds of the decoded frame length, CRC included.

    Members
    -------
    i : In(stream.Signature(Token))
    o : Out(stream.Signature(Token))
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(Token))

    def __init__(self, min_length=MIN_REQUEST, max_length=MAX_REQUEST):
        if not 2 <= min_length <= max_length:
            raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, "
                             f"{max_length}")
        self.min_length, self.max_length = min_length, max_length
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16.create()
        count = Signal(range(self.max_length + 2))
        older, newer = Signal(8), Signal(8)
        out = _Output(m, self.o)
        m.d.comb += self.i.ready.eq(out.free)
        tok = self.i.payload
        m.d.comb += crc.data.eq(tok.data)
        with m.If(self.i.valid & self.i.ready):
            with m.If(tok.end):
                status = Mux(tok.data != Status.OK, tok.data,
                             Mux(below(count, self.min_length), Status.TRUNCATED,
                                 Mux(above(count, self.max_length), Status.TOO_LONG,
                                     Mux(crc.crc != 0, Status.BAD_CRC, Status.OK))))
                out.put(data=status, end=1)
                m.d.comb += crc.start.eq(1)
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.comb += crc.valid.eq(1)
                m.d.sync += [older.eq(newer), newer.eq(tok.data)]
                with m.If(count != self.max_length + 1):
                    m.d.sync += count.eq(count + 1)
                with m.If(~below(count, 2)):
                    out.put(data=older, end=0)
        return m


class CRCGenerator(wiring.Component):
    """Appends the CRC-16/CCITT-FALSE (big-endian) to each packet.

    Members
    -------
    i : In(stream.Signature(Byte))
    o : Out(stream.Signature(Byte))
        The packet then its two CRC bytes; ``last`` moves to the CRC's low byte.
    """

    i: In(stream.Signature(Byte))
    o: Out(stream.Signature(Byte))

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16.create()
        out = _Output(m, self.o)
        m.d.comb += crc.data.eq(self.i.payload.data)
        with m.FSM():
            with m.State("PASS"):
                m.d.comb += self.i.ready.eq(out.free)
                with m.If(self.i.valid & self.i.ready):
                    out.put(data=self.i.payload.data, last=0)
                    m.d.comb += crc.valid.eq(1)
                    with m.If(self.i.payload.last):
                        m.next = "HIGH"
            with m.State("HIGH"):
                with m.If(out.free):
                    out.put(data=crc.crc[8:], last=0)
                    m.next = "LOW"
            with m.State("LOW"):
                with m.If(out.free):
                    out.put(data=crc.crc[:8], last=1)
                    m.d.comb += crc.start.eq(1)
                    m.next = "PASS"
        return m


class COBSEncoder(wiring.Component):
    """COBS encoder that ends each packet with the 0x00 delimiter (model: ``cobs_encode``).

    Buffers up to 254 bytes of a block in a memory, then sends the block's code byte and
    the block; input stalls while a block goes out.

    Members
    -------
    i : In(stream.Signature(Byte))
    o : Out(stream.Signature(8))
    """

    i: In(stream.Signature(Byte))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=254, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        n = Signal(range(255))       # bytes in the block being filled
        code = Signal(8)
        idx = Signal(range(255))
        tail = Signal(2)             # after the block: 0 nothing, 1 delimiter, 2 0x01 then it
        out = _Output(m, self.o)
        b, last = self.i.payload.data, self.i.payload.last

        m.d.comb += [wp.addr.eq(n), wp.data.eq(b)]
        with m.FSM():
            with m.State("FILL"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(b == 0):
                        m.d.sync += [code.eq(n + 1), tail.eq(Mux(last, 2, 0))]
                        m.next = "CODE"
                    with m.Else():
                        m.d.comb += wp.en.eq(1)
                        with m.If(n == 253):
                            m.d.sync += [code.eq(0xFF), tail.eq(last)]
                            m.next = "CODE"
                        with m.Elif(last):
                            m.d.sync += [code.eq(n + 2), tail.eq(1)]
                            m.next = "CODE"
                        with m.Else():
                            m.d.sync += n.eq(n + 1)
            with m.State("CODE"):
                m.d.comb += rp.addr.eq(0)
                with m.If(out.free):
                    out.put(code)
                    m.d.sync += idx.eq(0)
                    with m.If(code == 1):
                        m.next = "TAIL"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                load = out.free
                m.d.comb += rp.addr.eq(Mux(load, idx + 1, idx))
                with m.If(load):
                    out.put(rp.data)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 2 == code):
                        m.next = "TAIL"
            with m.State("TAIL"):
                m.d.sync += n.eq(0)
                with m.If(tail == 0):
                    m.next = "FILL"
                with m.Elif(out.free):
                    out.put(Mux(tail == 2, 1, 0))
                    m.d.sync += tail.eq(tail - 1)
                    with m.If(tail == 1):
                        m.next = "FILL"
        return m
