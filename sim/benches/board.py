"""A simulated board: :class:`~clln.gateware.system.System` under cocotb + Verilator.

:class:`SimBoardTransport` is a :class:`clln.host.driver.Transport`: the same
:class:`~clln.host.driver.Device` code that talks to a serial port talks to the Verilated
system, and every byte goes through the simulated UART (bit by bit on ``rx`` and ``tx``).

The simulator runs in its own process (started by ``cocotb_tools.runner`` in a thread of
this one); its bench (``clln.sim.benches.system_bench``) connects back to a TCP socket on
127.0.0.1, drives the bytes it receives onto ``rx``, and sends back what it decodes from
``tx``. While the system is idle the simulation waits for the host and does not advance;
otherwise it runs in chunks of clock cycles.
"""

import json
import socket
import threading
import time
from pathlib import Path

from clln.errors import CllnError
from clln.protocol import Identity, Transport

from .runner import controlled_runner, simulator_env

#: Environment variable that carries the bench's parameters (JSON).
ENV = "CLLN_BOARD"
#: Clock period of the simulation, ns (the clock rate only scales simulated time).
PERIOD_NS = 10


class SimBoardTransport(Transport):
    """The board system in Verilator, seen as a byte pipe.

    Parameters
    ----------
    system : dict
        What ``clln.gateware.export.generate_system`` returned: the paths of the system's
        Verilog and of its manifest (top, UART divisor, identity).
    build_dir : str or Path, optional
        Where Verilator builds and runs; default beside the Verilog.
    opt : str, optional
        C++ optimisation of the Verilated model (``-O0`` builds faster, runs ~5x slower).
    chunk : int
        Clock cycles simulated between two looks at the socket while the system is busy.

    Attributes
    ----------
    build_seconds : float
    identity : clln.protocol.Identity
        What the simulated system answers to IDENTIFY.
    """

    def __init__(self, system, build_dir=None, opt=None, chunk=4096, start_timeout=120.0):
        path = Path(system["verilog"]).resolve()
        info = json.loads(Path(system["manifest"]).read_text())
        top, divisor = info["top"], info["divisor"]
        self.identity = Identity.unpack(bytes.fromhex(info["identity"]))
        build = Path(build_dir).resolve() if build_dir else path.parent
        build = self.build_dir = build
        build.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with simulator_env("verilator", opt=opt):
            runner = controlled_runner("verilator")
            try:
                runner.build(sources=[path], hdl_toplevel=top, build_dir=build / "sim_build",
                             build_args=["-Wno-fatal"], always=True,
                             timescale=("1ns", "1ps"), log_file=build / "build.log")
            except Exception as e:
                raise CllnError(f"verilator build failed ({e}); see {build / 'build.log'}"
                                ) from None
        self.build_seconds = time.perf_counter() - t0

        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        port = self.server.getsockname()[1]
        env = {ENV: json.dumps({"port": port, "divisor": divisor, "chunk": chunk,
                                "period_ns": PERIOD_NS})}
        self.error = None

        def run():
            try:
                runner.test(test_module="clln.sim.benches.system_bench", hdl_toplevel=top,
                            extra_env=env, build_dir=build / "sim_build", test_dir=build,
                            results_xml=str(build / "results.xml"), log_file=build / "test.log",
                            timescale=("1ns", "1ps"))
            except (Exception, SystemExit) as e:   # the runner exits on a failed test
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.server.settimeout(start_timeout)
        try:
            self.conn, _ = self.server.accept()
        except socket.timeout:
            raise CllnError(f"the simulated board did not start; see {build / 'test.log'}"
                            ) from None
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data):
        self.conn.sendall(bytes(data))

    def read(self, timeout):
        self.conn.settimeout(max(timeout, 1e-3))
        try:
            data = self.conn.recv(65536)
        except socket.timeout:
            return b""
        if not data:
            raise CllnError(f"the simulated board stopped; see {self.build_dir / 'test.log'}")
        return data

    def stats(self):
        """``cycles``, ``seconds``, ``tx_bytes`` of the bench (dict; after :meth:`close`)."""
        path = self.build_dir / "stats.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def close(self):
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None
            self.thread.join(timeout=30)
            self.server.close()
