"""The host link: UART, receive FIFO, COBS framing and CRC, as one component.

Requests come out checked (:class:`~clln.gateware.framing.CRCChecker` tokens); reply
packets go in before their CRC. The command handler of a board design sits between.
"""

from amaranth import Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from clln.protocol import MAX_REQUEST, MIN_REQUEST

from .framing import Byte, COBSDecoder, COBSEncoder, CRCChecker, CRCGenerator, Token
from .uart import UARTRx, UARTTx


class HostLink(wiring.Component):
    """UART -> FIFO -> COBS -> CRC check -> ``requests``; ``replies`` -> CRC -> COBS -> UART.

    Parameters
    ----------
    divisor : int
        UART clock cycles per bit.
    fifo_depth : int
        Receive FIFO, bytes (requests that arrive while a reply is sent).

    Members
    -------
    rx : In(1)
    tx : Out(1)
    requests : Out(stream.Signature(Token))
        Checked frame tokens (status on the ``end`` token).
    replies : In(stream.Signature(Byte))
        Reply packets, without CRC.
    busy : Out(1)
        A byte or frame is somewhere in the link (or the line is not idle).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    requests: Out(stream.Signature(Token))
    replies: In(stream.Signature(Byte))
    busy: Out(1)

    def __init__(self, divisor, fifo_depth=256):
        self.divisor, self.fifo_depth = divisor, fifo_depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.dec = dec = COBSDecoder()
        m.submodules.chk = chk = CRCChecker(MIN_REQUEST, MAX_REQUEST)
        m.submodules.gen = gen = CRCGenerator()
        m.submodules.enc = enc = COBSEncoder()
        m.submodules.utx = utx = UARTTx(self.divisor)
        # requests arriving while a reply goes out wait here instead of overrunning the UART;
        # line errors travel in band (bit 8) so they stay with the bytes of their frame
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=9, depth=self.fifo_depth)
        err = urx.framing_error | urx.overrun
        m.d.comb += [fifo.w_data.eq(Cat(urx.o.payload, err)), fifo.w_en.eq(urx.o.valid | err),
                     urx.o.ready.eq(fifo.w_rdy & ~err)]
        is_err = fifo.r_data[8]
        m.d.comb += [dec.i.payload.eq(fifo.r_data[:8]), dec.i.valid.eq(fifo.r_rdy & ~is_err),
                     dec.line_error.eq(fifo.r_rdy & is_err),
                     fifo.r_en.eq(Mux(is_err, 1, dec.i.ready))]
        wiring.connect(m, dec.o, chk.i)
        wiring.connect(m, chk.o, wiring.flipped(self.requests))
        wiring.connect(m, wiring.flipped(self.replies), gen.i)
        wiring.connect(m, gen.o, enc.i)
        wiring.connect(m, enc.o, utx.i)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        m.d.comb += self.busy.eq(fifo.r_rdy | ~utx.i.ready | enc.o.valid | dec.o.valid |
                                 chk.o.valid | self.replies.valid | gen.o.valid | ~self.rx)
        return m
