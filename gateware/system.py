"""The whole board system (:class:`System`): UART + framing + command handler +
controller + fabric. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.formats import Formats

from .fabric import make_fabric
from .handler import CommandHandler
from .link import HostLink
from .stream_control import connect_controller, make_controller


class System(wiring.Component):
    """The board system: UART, framing, command handler, controller and fabric.

    Parameters
    ----------
    cfg : clln.config.Config
    divisor : int
        UART clock cycles per bit (>= 4).
    max_examples : int, optional
        Dataset capacity (default :func:`clln.protocol.default_max_examples`).
    seed : int, optional
        Seed of the fabric's reset gates (default ``learning.seed``).
    fmt : clln.formats.Formats, optional
    fifo_depth : int
        Receive FIFO in bytes.
    mult_bits : int, optional
        Operand bits of the target's multiplier blocks (see ``make_fabric``).
    clock_hz : float
        The clock the system runs at, reported by IDENTIFY (rounded to Hz; 0: not known,
        as in a simulation); the tick and cycle counters are ``protocol.counter_bits`` of
        it wide.

    Members
    -------
    rx : In(1)
    tx : Out(1)
    idle : Out(1)
        Controller idle and no request or reply in progress for the last 64 cycles (for
        benches and an LED).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    idle: Out(1)

    def __init__(self, cfg, divisor, max_examples=None, seed=None, fmt=None, fifo_depth=512,
                 mult_bits=None, clock_hz=0):
        self.cfg = cfg
        self.mult_bits = mult_bits
        self.fmt = fmt if fmt is not None else Formats.from_config(cfg)
        self.divisor = divisor
        self.max_examples = max_examples or p.default_max_examples(cfg)
        self.seed = seed
        self.fifo_depth = fifo_depth
        self.identity = p.Identity.from_config(cfg, self.fmt, self.max_examples, clock_hz)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = fab = make_fabric(self.cfg, self.fmt, seed=self.seed,
                                                mult_bits=self.mult_bits)
        m.submodules.ctrl = ctrl = make_controller(self.cfg, self.fmt, self.max_examples,
                                                   p.counter_bits(self.identity.clock_hz))
        m.submodules.handler = hnd = CommandHandler(
            self.identity, ctrl.command_signature, fab.gate.signature.flip(),
            fab.gate_read_latency)
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        wiring.connect(m, link.requests, hnd.i)
        wiring.connect(m, hnd.o, link.replies)
        wiring.connect(m, hnd.ctrl, ctrl.command)
        connect_controller(m, ctrl, fab)
        wiring.connect(m, hnd.gates, fab.gate)
        wiring.connect(m, fab.status, hnd.fabric_status)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        quiet = Signal(range(65))
        active = ctrl.command.busy | hnd.busy | link.busy
        with m.If(active):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != 64):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.idle.eq(quiet == 64)
        return m
