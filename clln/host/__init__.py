"""Host side of the board link: frame protocol and device driver (``clln.host``).

``protocol`` is also the golden model of the link gateware (UART, COBS, CRC);
see ``docs/protocol.md``.
"""
