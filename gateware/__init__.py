"""Gateware of the clln fabric, in Amaranth (``clln.gateware``)."""
