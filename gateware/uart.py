"""UART receiver and transmitter, 8N1, with byte streams.

Cycle-exact models: :class:`clln.host.protocol.UartRxModel` and ``UartTxModel``.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class _BitTimed(wiring.Component):
    """A UART half: ``divisor`` clock cycles per bit."""

    def __init__(self, divisor):
        if divisor < 4:
            raise ValueError(f"divisor must be >= 4, got {divisor}")
        self.divisor = divisor
        super().__init__()


class UARTTx(_BitTimed):
    """8N1 transmitter: one start bit, eight data bits LSB first, one stop bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4); see :func:`clln.protocol.uart_divisor`.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; accepted only while idle (``10 * divisor + 1`` cycles per byte).
    tx : Out(1)
        The line, idle high, driven straight from a flip-flop.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        cnt = Signal(range(self.divisor))
        bits = Signal(range(10))
        busy = Signal()
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq(~busy)]
        with m.If(~busy):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), cnt.eq(self.divisor - 1),
                             bits.eq(9), busy.eq(1)]
        with m.Elif(cnt == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), cnt.eq(self.divisor - 1)]
            with m.If(bits == 0):
                m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += bits.eq(bits - 1)
        with m.Else():
            m.d.sync += cnt.eq(cnt - 1)
        return m


class UARTRx(_BitTimed):
    """8N1 receiver: 2-flop synchroniser, samples each bit in its middle.

    A low start bit that is high again at its middle is ignored. A low stop bit drops the
    byte, pulses ``framing_error`` and waits for the line to go high. A byte completed
    while the previous one still waits on ``o`` is dropped and pulses ``overrun``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : In(1)
        The line (asynchronous).
    o : Out(stream.Signature(8))
        Received bytes.
    framing_error, overrun : Out(1)
        One-cycle pulses.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync = Signal(2, init=0b11)
        m.d.sync += sync.eq(Cat(self.rx, sync[0]))
        s = sync[1]
        cnt = Signal(range(d))
        bit = Signal(3)
        shreg = Signal(8)
        deliver = Signal()
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s):
                    m.d.sync += cnt.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(cnt == 0):
                    m.d.sync += [cnt.eq(d - 1), bit.eq(0)]
                    with m.If(~s):
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("DATA"):
                with m.If(cnt == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], s)), cnt.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("STOP"):
                with m.If(cnt == 0):
                    with m.If(s):
                        m.d.comb += deliver.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("BREAK"):
                with m.If(s):
                    m.next = "IDLE"

        with m.If(deliver):
            with m.If(self.o.valid & ~self.o.ready):
                m.d.sync += self.overrun.eq(1)
            with m.Else():
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(shreg)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
