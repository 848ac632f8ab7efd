"""Block RAM helpers shared by the controller and the command handler."""

from amaranth.hdl import Signal

__all__ = ["ReadPort", "sync_read_port"]


class ReadPort:
    """``addr`` and one cycle later ``data``, like a synchronous read port."""

    def __init__(self, addr, data, en=None):
        self.addr, self.data, self.en = addr, data, en


def sync_read_port(m, memory, name, enable=False):
    """A synchronous read port of ``memory`` that needs no read/write collision logic.

    A combinational port and a reset-less register, which yosys merges into the block
    RAM's read port; with the memory's ``no_rw_check`` attribute it adds no logic for a
    read of the address written in the same cycle (old data in simulation). Only for
    memories never read there when it matters.
    """
    memory.attrs["no_rw_check"] = 1
    port = memory.read_port(domain="comb")
    data = Signal.like(port.data, name=f"{name}_rdata", reset_less=True)
    if not enable:
        m.d.sync += data.eq(port.data)
        return ReadPort(port.addr, data)
    en = Signal(name=f"{name}_ren")
    with m.If(en):
        m.d.sync += data.eq(port.data)
    return ReadPort(port.addr, data, en)
