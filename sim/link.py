"""Golden models of the link gateware: UART, COBS decoder and CRC checker.

:class:`UartRxModel`, :class:`UartTxModel`, :class:`CobsDecoderModel` and
:class:`CrcCheckerModel` are the cycle- or byte-exact models that ``clln.gateware.uart``
and ``clln.gateware.framing`` are tested against; the frame format itself is specified
in :mod:`clln.protocol`.
"""

from clln.protocol import DELIMITER, MAX_REQUEST, MIN_REQUEST, Status, crc16_byte


class CobsDecoderModel:
    """Byte-exact model of ``COBSDecoder``: feed encoded bytes, get data and end tokens.

    :meth:`feed` returns a list of ``("data", byte)`` and ``("end", Status)`` tokens.
    An empty frame (two delimiters in a row) yields nothing. A line error
    (:meth:`line_error`) turns the end status of the current frame into LINE_ERROR.
    """

    def __init__(self):
        self.remaining, self.pending_zero, self.in_frame, self.line_err = 0, False, False, False

    def line_error(self):
        self.line_err = self.in_frame = True

    def feed(self, byte):
        if byte == DELIMITER:
            tokens = []
            if self.in_frame:
                status = (Status.LINE_ERROR if self.line_err else
                          Status.BAD_COBS if self.remaining else Status.OK)
                tokens.append(("end", status))
            self.__init__()
            return tokens
        self.in_frame = True
        if self.remaining == 0:
            tokens = [("data", 0)] if self.pending_zero else []
            self.remaining, self.pending_zero = byte - 1, byte != 0xFF
            return tokens
        self.remaining -= 1
        return [("data", byte)]


class CrcCheckerModel:
    """Byte-exact model of ``CRCChecker``: strips and checks the CRC, bounds the length.

    Consumes the tokens of :class:`CobsDecoderModel`; emits the frame's bytes without the
    two CRC bytes, then ``("end", status)``.
    """

    def __init__(self, min_length=MIN_REQUEST, max_length=MAX_REQUEST):
        self.min_length, self.max_length = min_length, max_length
        self._reset()

    def _reset(self):
        self.crc, self.count, self.delay = 0xFFFF, 0, []

    def feed(self, token):
        kind, v = token
        if kind == "end":
            if v != Status.OK:
                status = v
            elif self.count < self.min_length:
                status = Status.TRUNCATED
            elif self.count > self.max_length:
                status = Status.TOO_LONG
            elif self.crc != 0:
                status = Status.BAD_CRC
            else:
                status = Status.OK
            self._reset()
            return [("end", status)]
        self.crc = crc16_byte(self.crc, v)
        self.count = min(self.count + 1, self.max_length + 1)
        self.delay.append(v)
        return [("data", self.delay.pop(0))] if len(self.delay) > 2 else []


class UartTxModel:
    """Cycle-exact model of ``UARTTx``; :meth:`step` takes the inputs of one cycle.

    Returns ``(ready, tx)`` as seen during that cycle, then advances the state.
    """

    def __init__(self, divisor):
        self.div, self.shreg, self.cnt, self.bits, self.busy = divisor, 0x3FF, 0, 0, False

    def step(self, valid, data):
        ready, tx = not self.busy, self.shreg & 1
        if not self.busy:
            if valid:
                self.shreg, self.cnt, self.bits, self.busy = (
                    0x200 | (data << 1), self.div - 1, 9, True)
        elif self.cnt == 0:
            self.shreg = (self.shreg >> 1) | 0x200
            self.cnt = self.div - 1
            if self.bits == 0:
                self.busy = False
            else:
                self.bits -= 1
        else:
            self.cnt -= 1
        return int(ready), tx


class UartRxModel:
    """Cycle-exact model of ``UARTRx`` (2-flop synchroniser, mid-bit sampling).

    :meth:`step` takes ``(rx, ready)`` of one cycle and returns
    ``(valid, data, framing_error, overrun)`` as seen during that cycle.
    """

    IDLE, START, DATA, STOP, BREAK = range(5)

    def __init__(self, divisor):
        self.div = divisor
        self.sync = [1, 1]
        self.state, self.cnt, self.bit, self.shreg = self.IDLE, 0, 0, 0
        self.valid, self.data, self.ferr, self.ovr = 0, 0, 0, 0

    def step(self, rx, ready):
        out = (self.valid, self.data, self.ferr, self.ovr)
        s = self.sync[1]
        self.sync = [rx, self.sync[0]]
        self.ferr = self.ovr = 0
        deliver = False
        if self.state == self.IDLE:
            if s == 0:
                self.cnt, self.state = self.div // 2 - 1, self.START
        elif self.state == self.START:
            if self.cnt == 0:
                self.state = self.DATA if s == 0 else self.IDLE
                self.cnt, self.bit = self.div - 1, 0
            else:
                self.cnt -= 1
        elif self.state == self.DATA:
            if self.cnt == 0:
                self.shreg = (self.shreg >> 1) | (s << 7)
                self.cnt = self.div - 1
                if self.bit == 7:
                    self.state = self.STOP
                self.bit = (self.bit + 1) & 7
            else:
                self.cnt -= 1
        elif self.state == self.STOP:
            if self.cnt == 0:
                if s:
                    deliver, self.state = True, self.IDLE
                else:
                    self.ferr, self.state = 1, self.BREAK
            else:
                self.cnt -= 1
        elif s:
            self.state = self.IDLE
        if deliver:
            if self.valid and not ready:
                self.ovr = 1
            else:
                self.valid, self.data = 1, self.shreg
        elif self.valid and ready:
            self.valid = 0
        return out


def uart_line(data, divisor, idle=0):
    """Line levels, one per clock cycle, of ``data`` sent 8N1 with ``idle`` cycles between bytes."""
    line = []
    for b in data:
        bits = [0] + [(b >> i) & 1 for i in range(8)] + [1]
        for bit in bits:
            line += [bit] * divisor
        line += [1] * idle
    return line


