"""A link-only design: answers IDENTIFY over the UART, refuses everything else.

It exercises the whole host link (UART, COBS, CRC, replies) on a board before any fabric
exists; :func:`demo_response` is its golden model.
"""

from amaranth import Array, Const, Module, Mux, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.protocol import Command, Status

from ..gateware.framing import Byte, Token
from ..gateware.link import HostLink


def demo_response(encoded, identity):
    """Reply frame (delimiter included) the demo sends for one received frame."""
    try:
        body = p.check_frame(encoded, p.MIN_REQUEST, p.MAX_REQUEST)
    except p.FrameError as e:
        return p.encode_reply(0, 0, e.status)
    rid, cmd = body[1], body[2]
    if body[0] != p.PROTOCOL_VERSION:
        return p.encode_reply(rid, cmd, Status.BAD_VERSION)
    if cmd != Command.IDENTIFY:
        return p.encode_reply(rid, cmd, Status.UNKNOWN_COMMAND)
    if len(body) != 3:
        return p.encode_reply(rid, cmd, Status.BAD_LENGTH)
    return p.encode_reply(rid, cmd, Status.OK, identity.pack())


class IdentifyResponder(wiring.Component):
    """Consumes checked frame tokens and streams out the reply packet (before CRC).

    Members
    -------
    i : In(stream.Signature(Token))
    o : Out(stream.Signature(Byte))
    """

    i: In(stream.Signature(Token))
    o: Out(stream.Signature(Byte))

    def __init__(self, identity):
        self.identity = identity.pack()
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(p.MAX_REQUEST + 2))
        version, rid, cmd, status = Signal(8), Signal(8), Signal(8), Signal(8)
        idx = Signal(range(len(self.identity) + 5))
        ident = Array(Const(b, 8) for b in self.identity)
        n_ident = len(self.identity)
        with m.FSM():
            with m.State("RECV"):
                m.d.comb += self.i.ready.eq(1)
                tok = self.i.payload
                with m.If(self.i.valid & tok.end):
                    with m.If(tok.data != Status.OK):
                        m.d.sync += [status.eq(tok.data), rid.eq(0), cmd.eq(0)]
                    with m.Elif(version != p.PROTOCOL_VERSION):
                        m.d.sync += status.eq(Status.BAD_VERSION)
                    with m.Elif(cmd != Command.IDENTIFY):
                        m.d.sync += status.eq(Status.UNKNOWN_COMMAND)
                    with m.Elif(count != 3):
                        m.d.sync += status.eq(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += status.eq(Status.OK)
                    m.d.sync += [count.eq(0), idx.eq(0)]
                    m.next = "SEND"
                with m.Elif(self.i.valid):
                    with m.If(count == 0):
                        m.d.sync += version.eq(tok.data)
                    with m.If(count == 1):
                        m.d.sync += rid.eq(tok.data)
                    with m.If(count == 2):
                        m.d.sync += cmd.eq(tok.data)
                    with m.If(count != p.MAX_REQUEST + 1):
                        m.d.sync += count.eq(count + 1)
            with m.State("SEND"):
                header = Array([Const(p.PROTOCOL_VERSION, 8), rid, cmd, status])
                last = Mux(status == Status.OK, idx == 3 + n_ident, idx == 3)
                m.d.comb += [self.o.valid.eq(1), self.o.payload.last.eq(last)]
                with m.If(idx < 4):
                    m.d.comb += self.o.payload.data.eq(header[idx[:2]])
                with m.Else():
                    m.d.comb += self.o.payload.data.eq(ident[idx - 4])
                with m.If(self.o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(last):
                        m.next = "RECV"
        return m


class LinkDemo(wiring.Component):
    """UART -> COBS -> CRC -> :class:`IdentifyResponder` -> CRC -> COBS -> UART.

    Parameters
    ----------
    divisor : int
        UART clock cycles per bit.
    fifo_depth : int
        Receive FIFO, bytes (requests that arrive while a reply is sent).
    identity : clln.host.protocol.Identity
        What IDENTIFY answers.

    Members
    -------
    rx : In(1)
    tx : Out(1)
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, divisor, identity, fifo_depth=256):
        self.divisor, self.identity, self.fifo_depth = divisor, identity, fifo_depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        m.submodules.resp = resp = IdentifyResponder(self.identity)
        wiring.connect(m, link.requests, resp.i)
        wiring.connect(m, resp.o, link.replies)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        return m


class BoardLinkDemo(wiring.Component):
    """:class:`LinkDemo` wired to the board's ``uart`` resource (for :func:`build`)."""

    def __init__(self, clk_hz, identity, baud=115200):
        self.divisor = p.uart_divisor(clk_hz, baud)
        self.identity = identity
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = LinkDemo(self.divisor, self.identity)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx_buf.i), tx_buf.o.eq(link.tx)]
        return m
