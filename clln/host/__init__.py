"""Host side of the board link: the device driver and its transports (``clln.host``).

The protocol it speaks is specified in :mod:`clln.protocol`; see ``docs/protocol.md``.
"""
