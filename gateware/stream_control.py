"""Independent schedules for the streams of a pipelined fabric (:class:`StreamController`).

With ``[fabric] streams = C`` every stream runs the schedule on its own: a
:class:`~.controller.Controller` per stream (its own dataset copy, example order, settle
phases, learn ticks, observations and error sum) drives that stream's lane of the
:class:`~.fabric.streams.StreamFabric` (``lanes[s]``). :class:`StreamController` puts
them behind the one command interface of a controller, so the command handler is the
same for every fabric. Its golden model is :class:`clln.sim.system.SystemModel`
(``docs/controller.md``).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from clln.errors import ConfigError
from clln.protocol import Mode

from .controller import CommandSignature, Controller

__all__ = ["StreamController", "make_controller", "connect_controller", "check_streams"]

#: What the command handler writes, passed on to every stream's controller alike (the
#: seed is passed on plus the stream, the output index split into stream and output).
BROADCAST = ("ds_we", "ds_example", "ds_index", "ds_data", "sched_we", "sched_settle",
             "sched_learn", "sched_epochs", "sched_n", "sched_order", "sched_still", "start",
             "start_epochs", "start_learn", "stop", "clear", "out_example")


def check_streams(cfg):
    """Refuse what a board of several streams does not implement: read noise (each
    stream would need its own noise generators)."""
    if cfg.fabric.streams > 1 and cfg.nonideal.read_noise:
        raise ConfigError(cfg.source, "nonideal.read_noise",
                          "read noise is not implemented for a board of several streams "
                          "(each stream would need its own noise generators); leave out "
                          "read_noise or [fabric] streams")


def make_controller(cfg, fmt, max_examples, counter_bits=64):
    """The controller of ``cfg``'s fabric: a :class:`StreamController` for a fabric of
    several streams (:func:`check_streams` first), else a
    :class:`~.controller.Controller`; tick and cycle counters of ``counter_bits``."""
    if cfg.fabric.streams > 1:
        check_streams(cfg)
        return StreamController(cfg, fmt, max_examples, counter_bits)
    return Controller(cfg, fmt, max_examples, counter_bits=counter_bits)


def connect_controller(m, ctrl, fabric):
    """Wire a controller of :func:`make_controller` to its fabric."""
    if isinstance(ctrl, StreamController):
        for s in range(ctrl.streams):
            wiring.connect(m, ctrl.fabric[s], fabric.lanes[s])
        m.d.comb += ctrl.fabric_busy.eq(fabric.control.busy)
    else:
        wiring.connect(m, ctrl.fabric, fabric.control)


class StreamController(wiring.Component):
    """One :class:`~.controller.Controller` per stream, behind one command interface.

    Parameters
    ----------
    cfg : clln.config.Config
        With ``[fabric] streams = C > 1``.
    fmt : clln.formats.Formats
    max_examples : int
    counter_bits : int
        Width of the tick and cycle counters (``protocol.counter_bits``).

    Members
    -------
    command : In(CommandSignature(...))
        As :class:`~.controller.Controller`'s, for C streams. Every write goes to every
        stream's controller; stream s's LFSR seed is ``(sched_seed + s) mod 2**32``
        (reset: ``learning.seed + s``). Back: ``busy`` while any stream's controller is
        busy or the fabric is; ``mode`` the run's while any stream runs (a run ends when
        every stream has run its epochs); ``epoch``, ``example`` and ``ticks`` are stream
        0's; ``error_sum`` has every stream's; ``cycles`` counts the cycles of the run
        (while any stream runs); ``out_data`` is output ``out_index % K`` of stream
        ``out_index // K`` (K outputs a stream).
    fabric : Out(ControlSignature(...)).array(C)
        Stream s's controller to the fabric's ``lanes[s]``.
    fabric_busy : In(1)
        The fabric's ``control.busy`` (gate writes, the wipe after a clear).
    """

    def __init__(self, cfg, fmt, max_examples, counter_bits=64):
        self.cfg, self.fmt, self.streams = cfg, fmt, cfg.fabric.streams
        self.n_outputs = len(cfg.io.outputs)
        self.counter_bits = counter_bits
        self.controllers = [Controller(cfg, fmt, max_examples, stream=s,
                                       counter_bits=counter_bits)
                            for s in range(self.streams)]
        first = self.controllers[0]
        self.error_bits, self.max_examples = first.error_bits, max_examples
        self.command_signature = CommandSignature(
            max_examples, first.row, self.streams * self.n_outputs, fmt.v_bits, self.streams,
            self.error_bits)
        self.control_signature = first.control_signature
        super().__init__({
            "command": In(self.command_signature),
            "fabric": Out(self.control_signature).array(self.streams),
            "fabric_busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cmd, K = self.command, self.n_outputs
        # the output read: stream and output of out_index, the stream kept for the data a
        # cycle later
        out_stream = Signal(range(self.streams), name="out_stream")
        out_k = Signal(range(max(K, 2)), name="out_k")
        read_stream = Signal(range(self.streams), name="read_stream")
        with m.Switch(cmd.out_index):
            for i in range(self.streams * K):
                with m.Case(i):
                    m.d.comb += [out_stream.eq(i // K), out_k.eq(i % K)]
        m.d.sync += read_stream.eq(out_stream)
        mode = 0
        for s, ctrl in enumerate(self.controllers):
            m.submodules[f"stream{s}"] = ctrl
            wiring.connect(m, ctrl.fabric, wiring.flipped(self.fabric[s]))
            lane = ctrl.command
            m.d.comb += [getattr(lane, name).eq(getattr(cmd, name)) for name in BROADCAST]
            m.d.comb += [lane.sched_seed.eq((cmd.sched_seed + s)[:32]), lane.out_index.eq(out_k),
                         cmd.error_sum[s].eq(lane.error_sum[0])]
            mode = mode | lane.mode
        first = self.controllers[0].command
        data = first.out_data
        for s, ctrl in enumerate(self.controllers[1:], start=1):
            data = Mux(read_stream == s, ctrl.command.out_data, data)
        busy = self.fabric_busy
        for ctrl in self.controllers:
            busy = busy | ctrl.command.busy
        cycles = Signal(self.counter_bits, name="cycles")
        with m.If(cmd.mode != Mode.IDLE):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(cmd.start | cmd.clear):
            m.d.sync += cycles.eq(0)
        m.d.comb += [cmd.mode.eq(mode), cmd.busy.eq(busy), cmd.out_data.eq(data),
                     cmd.cycles.eq(cycles), cmd.epoch.eq(first.epoch),
                     cmd.example.eq(first.example), cmd.ticks.eq(first.ticks),
                     cmd.settle.eq(first.settle), cmd.learn_ticks.eq(first.learn_ticks),
                     cmd.epochs.eq(first.epochs)]
        return m
