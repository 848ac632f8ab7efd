"""The whole board system (:class:`System`): UART + framing + command handler +
controller + fabric. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from clln import protocol as p
from clln.formats import Formats

from .controller import Controller
from .fabric import make_fabric
from .handler import CommandHandler
from .link import HostLink


class System(wiring.Component):
    """The board system: UART, framing, command handler, controller and fabric.

    Parameters
    ----------
    cfg : clln.config.Config
    divisor : int
        UART clock cycles per bit (>= 4).
    max_examples : int, optional
        Dataset capacity; default the config's dataset size, at least 16.
    seed : int, optional
        Seed of the fabric's reset gates (default ``learning.seed``).
    fmt : clln.formats.Formats, optional
    fifo_depth : int
        Receive FIFO in bytes.
    mult_bits : int, optional
        Operand bits of the target's multiplier blocks (see ``make_fabric``).

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
                 mult_bits=None):
        self.cfg = cfg
        self.mult_bits = mult_bits
        self.fmt = fmt if fmt is not None else Formats.from_config(cfg)
        self.divisor = divisor
        self.max_examples = max_examples or max(16, len(cfg.task.x))
        self.seed = seed
        self.fifo_depth = fifo_depth
        self.identity = p.Identity.from_config(cfg, self.fmt, self.max_examples)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        fab = make_fabric(self.cfg, self.fmt, seed=self.seed, mult_bits=self.mult_bits)
        m.submodules.ctrl = ctrl = Controller(self.cfg, self.fmt, self.max_examples)
        if hasattr(fab, "clear"):
            # the pipelined fabric clears itself, with no reset net on its datapath
            m.submodules.fabric = fab
            m.d.comb += fab.clear.eq(ctrl.fabric_reset)
        else:
            m.submodules.fabric = ResetInserter(ctrl.fabric_reset)(fab)
        m.submodules.handler = hnd = CommandHandler(self.identity, ctrl, fab)
        m.submodules.link = link = HostLink(self.divisor, self.fifo_depth)
        wiring.connect(m, link.requests, hnd.i)
        wiring.connect(m, hnd.o, link.replies)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [fab.run.eq(ctrl.f_run), fab.learn.eq(ctrl.f_learn),
                     fab.sample_we.eq(ctrl.f_sample_we), fab.sample_addr.eq(ctrl.f_sample_addr),
                     fab.sample_data.eq(ctrl.f_sample_data), ctrl.f_tick_done.eq(fab.tick_done),
                     ctrl.f_outputs.eq(fab.outputs),
                     ctrl.f_busy.eq(fab.busy if hasattr(fab, "busy") else 0)]
        quiet = Signal(range(65))
        active = ctrl.busy | hnd.busy | link.busy
        with m.If(active):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != 64):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.idle.eq(quiet == 64)
        return m
