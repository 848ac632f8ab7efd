"""A simulated board: :class:`~clln.gateware.controller.System` under cocotb + Verilator.

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

from amaranth.back import verilog

from clln.errors import CllnError
from clln.formats import Formats, check_tick_stability
from clln.host.driver import Transport

from .runner import simulator_env

#: Environment variable that carries the bench's parameters (JSON).
ENV = "CLLN_BOARD"
TOP = "clln_system"
#: Clock period of the simulation, ns (the clock rate only scales simulated time).
PERIOD_NS = 10


def export_system(cfg, out_dir, divisor=4, max_examples=None, seed=None):
    """Write the Verilog of ``System`` for ``cfg``; return ``(path, system)``."""
    from clln.gateware.controller import System
    fmt = Formats.from_config(cfg)
    check_tick_stability(cfg, fmt.kappa)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    system = System(cfg, divisor, max_examples=max_examples, seed=seed, fmt=fmt)
    text = verilog.convert(system, name=TOP, emit_src=False)
    path = out_dir / f"{TOP}.v"
    path.write_text(text)
    return path, system


class SimBoardTransport(Transport):
    """The board system in Verilator, seen as a byte pipe.

    Parameters
    ----------
    cfg : clln.config.Config
    build_dir : str or Path, optional
        Default ``build/simboard/<name>``.
    divisor : int
        UART clock cycles per bit of the simulated system (>= 4; small is fast).
    max_examples, seed : int, optional
        As for :class:`~clln.gateware.controller.System`.
    opt : str, optional
        C++ optimisation of the Verilated model (``-O0`` builds faster, runs ~5x slower).
    chunk : int
        Clock cycles simulated between two looks at the socket while the system is busy.

    Attributes
    ----------
    build_seconds : float
    identity : clln.host.protocol.Identity
        What the simulated system answers to IDENTIFY.
    """

    def __init__(self, cfg, build_dir=None, divisor=4, max_examples=None, seed=None, opt=None,
                 chunk=4096, start_timeout=120.0):
        from cocotb_tools.runner import get_runner
        self.cfg = cfg
        build = Path(build_dir) if build_dir else Path("build/simboard") / cfg.name
        build = self.build_dir = build.resolve()
        build.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        path, system = export_system(cfg, build / "hdl", divisor, max_examples, seed)
        self.identity = system.identity
        with simulator_env("verilator", opt=opt):
            runner = get_runner("verilator")
            try:
                runner.build(sources=[path], hdl_toplevel=TOP, build_dir=build / "sim_build",
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
                runner.test(test_module="clln.sim.benches.system_bench", hdl_toplevel=TOP,
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
