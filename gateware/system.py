"""The whole board system (:class:`System`): UART + framing + command handler +
controller + fabric. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln import schedule as sch
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
    capacity : clln.schedule.Capacity or str, optional
        ``NODES:EDGES``: the serial fabric whose graph the host loads at run time
        (``docs/gateware.md``, "The graph loaded at run time"); ``cfg`` (its I/O placed
        first, :func:`clln.schedule.relabel`) is its graph at power-up and fixes the rest.

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
                 mult_bits=None, clock_hz=0, capacity=None):
        original = cfg
        self.capacity = None if capacity is None else sch.parse_capacity(capacity)
        if self.capacity:
            sch.check_capacity(cfg, self.capacity, int(cfg.network.degrees().max()))
            cfg = sch.relabel(cfg)
        self.cfg = cfg
        self.mult_bits = mult_bits
        self.fmt = fmt if fmt is not None else Formats.from_config(cfg)
        self.divisor = divisor
        self.max_examples = max_examples or p.default_max_examples(cfg)
        self.seed = seed
        self.fifo_depth = fifo_depth
        self.identity = p.Identity.from_config(original, self.fmt, self.max_examples,
                                               clock_hz)
        if self.capacity:
            self.identity = sch.capacity_identity(self.identity, cfg, self.fmt, self.capacity,
                                                  int(cfg.network.degrees().max()))
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fabric = fab = make_fabric(self.cfg, self.fmt, seed=self.seed,
                                                mult_bits=self.mult_bits,
                                                capacity=self.capacity)
        m.submodules.ctrl = ctrl = make_controller(self.cfg, self.fmt, self.max_examples,
                                                   p.counter_bits(self.identity.clock_hz))
        graph = {}
        if self.capacity:
            cfg = self.cfg
            limits = sch.row_limits(fab.row_fields, self.capacity, len(cfg.driven_nodes()),
                                    len(sch.output_nodes(cfg)))
            graph = dict(graph=fab.graph.signature.flip(),
                         row_limits=[(lo, n, most) for _, lo, n, most in limits],
                         n_rows=fab.cycles_per_tick)
        m.submodules.handler = hnd = CommandHandler(
            self.identity, ctrl.command_signature, fab.gate.signature.flip(),
            fab.gate_read_latency, **graph)
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        wiring.connect(m, link.requests, hnd.i)
        wiring.connect(m, hnd.o, link.replies)
        wiring.connect(m, hnd.ctrl, ctrl.command)
        connect_controller(m, ctrl, fab)
        wiring.connect(m, hnd.gates, fab.gate)
        if self.capacity:
            wiring.connect(m, hnd.graph, fab.graph)
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
