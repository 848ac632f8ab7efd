"""cocotb bench of the simulated board: bytes from a TCP socket to ``rx``, ``tx`` to it.

Started by :class:`clln.sim.benches.board.SimBoardTransport`, which passes the port, the
UART divisor and the chunk size in ``CLLN_BOARD`` (JSON). The test ends when the host
closes the connection; it then writes ``stats.json`` (cycles, seconds) next to it.
"""

import json
import os
import select
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time


class TxMonitor:
    """Decodes 8N1 bytes from ``tx`` (start-bit edge, then mid-bit samples)."""

    def __init__(self, dut, bit_ns, sock):
        self.dut, self.bit_ns, self.sock = dut, bit_ns, sock
        self.busy = False
        self.count = 0

    async def run(self):
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            self.busy = True
            await Timer(self.bit_ns // 2, unit="ns")
            value = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                value |= int(tx.value) << i
            await Timer(self.bit_ns, unit="ns")        # middle of the stop bit
            self.sock.sendall(bytes([value]))
            self.count += 1
            self.busy = False


async def send_byte(dut, value, bit_ns):
    for bit in [0] + [(value >> i) & 1 for i in range(8)] + [1]:
        dut.rx.value = bit
        await Timer(bit_ns, unit="ns")


@cocotb.test()
async def serve(dut):
    """Serve the host until it closes the connection."""
    spec = json.loads(os.environ["CLLN_BOARD"])
    period = spec["period_ns"]
    bit_ns = spec["divisor"] * period
    chunk_ns = spec["chunk"] * period
    sock = socket.create_connection(("127.0.0.1", spec["port"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    # the simulator's own clock (cocotb's default here is a Python coroutine, about 10k
    # cycles/s); rx changes on the bench's bit timers, which the UART synchronises anyway
    Clock(dut.clk, period, unit="ns", impl="gpi").start(start_high=False)
    dut.rx.value = 1
    dut.rst.value = 1
    await Timer(3 * period, unit="ns")
    dut.rst.value = 0
    await Timer(period, unit="ns")
    mon = TxMonitor(dut, bit_ns, sock)
    cocotb.start_soon(mon.run())
    t0 = time.perf_counter()
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            data = None
        if data == b"":
            break
        if data:
            for b in data:
                await send_byte(dut, b, bit_ns)
            continue
        if int(dut.idle.value) and not mon.busy:
            select.select([sock], [], [], 0.05)   # nothing to simulate: wait for the host
        else:                                     # a chunk, or less when the system goes idle
            await First(Timer(chunk_ns, unit="ns"), RisingEdge(dut.idle))
    cycles = get_sim_time(unit="ns") / period
    with open("stats.json", "w") as fh:
        json.dump({"cycles": cycles, "seconds": time.perf_counter() - t0,
                   "tx_bytes": mon.count}, fh)
    sock.close()
