"""Golden model of the board system: command handler, training controller and fabric.

:class:`SystemModel` answers request bytes with reply bytes exactly as
``clln.gateware.system.System`` does after its UART (``docs/controller.md``), and
keeps the controller's state: dataset, schedule, LFSR, error sums, recorded outputs,
and a :class:`~clln.sim.fixed.FixedPointModel` for the fabric. It imports no gateware.

Streams: a fabric built with ``[fabric] streams = C`` holds C networks, one per seed
``seed .. seed + C - 1``, which share the dataset, the schedule and the drive and
target registers and differ only by their gates. The model runs them as the C seeds of
one :class:`~clln.sim.fixed.FixedPointModel`; gates and recorded outputs are stream-major.

Node state: the fabric has no node write port, so nothing ever restores node voltages.
Every pass (training or inference) starts from the node state the previous pass left,
unlike :meth:`clln.sim.ticks.TickModel.evaluate`, which restores it.

Cycles: the model is tick-exact, not cycle-exact. READ_STATUS' cycle counter (the clock
cycles of the last run) is always 0 here; a test compares every other field and checks
the gateware's count on its own (at least the run's ticks times the fabric's cycles per
tick, growing while it runs, frozen after).
"""

import numpy as np

from clln import protocol as p
from clln.protocol import Command, FrameError, Mode, Order, Status

from .fixed import FixedPointModel, run_ticks

__all__ = ["SystemModel", "TwinModel"]

U64 = (1 << 64) - 1


class TwinModel(FixedPointModel):
    """:class:`FixedPointModel` whose drive and target come from registers shared by all
    its seeds (the streams of the fabric).

    Parameters
    ----------
    cfg : clln.config.Config
    seeds : sequence of int
        One network (stream) per seed.

    Attributes
    ----------
    drive : ndarray of int64 (nodes,)
        The fabric's drive registers (inputs 0 V and rails at reset).
    target : ndarray of int64 (outputs,)
    """

    def __init__(self, cfg, seeds):
        super().__init__(cfg, seeds)
        fmt = self.formats
        self.drive = np.zeros(self.problem.n_nodes, np.int64)
        for node, volts in cfg.io.rails:
            self.drive[node] = int(fmt.volts_to_v(volts))
        self.target = np.zeros(len(cfg.io.outputs), np.int64)

    def _kernel(self, n_ticks, example, learn, still_ticks, used):
        # the streams settle together: the fabric stops when every stream is still (as it
        # knows it, ``still_lag`` ticks late)
        pr = self.problem
        run_ticks(self.h_free, self.h_clamped, self.m_free, self.m_clamped, self.gates, n_ticks,
                  learn, pr.edge_a, pr.edge_b, self.edges, pr.driven, self.drive, pr.out_plus,
                  pr.out_minus, self.target, self.constants, self.flags, still_ticks, True,
                  self.cfg.fabric.still_lag, used)

    def outputs_q(self):
        """Free outputs in voltage LSBs (``VF[p]`` or ``VF[p] - VF[m]``), int64
        (seeds, outputs)."""
        pr, vf = self.problem, self.v_free
        minus = np.where(pr.out_minus >= 0, vf[:, np.maximum(pr.out_minus, 0)], 0)
        return vf[:, pr.out_plus] - minus


class SystemModel:
    """The system behind the UART, request bytes in, reply bytes out.

    Parameters
    ----------
    cfg : clln.config.Config
    max_examples : int, optional
        Dataset capacity (default :func:`clln.protocol.default_max_examples`).
    seed : int, optional
        Seed of the reset gates of stream 0 (default ``learning.seed``); stream s has
        those of ``seed + s`` (``cfg.fabric.streams`` streams).
    clock_hz : float
        The clock IDENTIFY reports (as ``System``'s; 0: not known).

    Attributes
    ----------
    seeds : list of int
        Seed of the reset gates of each stream.
    outputs : ndarray of int64 (max_examples, streams * outputs)
        Recorded free outputs, column ``s * n_outputs + k``.
    error_sums : list of int
        Last epoch error sum of each stream (LSB^2, saturating at 2**64 - 1).
    """

    def __init__(self, cfg, max_examples=None, seed=None, clock_hz=0):
        self.cfg = cfg
        self.max_examples = max_examples or p.default_max_examples(cfg)
        self.build_seed = cfg.learning.seed if seed is None else seed
        self.seeds = [self.build_seed + s for s in range(cfg.fabric.streams)]
        self.twin = TwinModel(cfg, self.seeds)
        fmt = self.fmt = self.twin.formats
        self.identity = p.Identity.from_config(cfg, fmt, self.max_examples, clock_hz)
        self.n_inputs, self.n_outputs = len(cfg.io.inputs), len(cfg.io.outputs)
        self.inputs = list(cfg.io.inputs)
        self.dataset = np.zeros((self.max_examples, self.n_inputs + self.n_outputs), np.int64)
        n = min(len(cfg.task.x), self.max_examples)
        self.dataset[:n, :self.n_inputs] = fmt.volts_to_v(cfg.task.x)[:n]
        self.dataset[:n, self.n_inputs:] = fmt.volts_to_v(cfg.task.y)[:n]
        self.schedule = p.ScheduleParams.from_config(cfg, n)
        self._reload_lfsr()
        self.outputs = np.zeros((self.max_examples, self.identity.n_output_values), np.int64)
        self.mode, self.epoch, self.example = Mode.IDLE, 0, 0
        self.error_sums = [0] * len(self.seeds)
        self._rx = bytearray()

    # -- controller ---------------------------------------------------------------------
    def _reload_lfsr(self):
        n = self.schedule.n_examples
        self.lfsr_width = max(2, n.bit_length())
        self.lfsr = self.schedule.seed % ((1 << self.lfsr_width) - 1) + 1

    def _select(self, ex_count):
        if self.schedule.order == Order.CYCLIC:
            return ex_count
        while True:
            cur = self.lfsr
            self.lfsr = p.lfsr_step(cur, self.lfsr_width)
            if cur <= self.schedule.n_examples:
                return cur - 1

    def write_dataset(self, first, drives, targets):
        """Store examples (voltage LSBs) from row ``first`` on."""
        rows = np.concatenate([np.asarray(drives), np.asarray(targets)], axis=1)
        self.dataset[first:first + len(rows)] = rows

    def write_schedule(self, params):
        """Latch a :class:`~clln.host.protocol.ScheduleParams` and reload the LFSR."""
        self.schedule = params
        self._reload_lfsr()

    def run(self, epochs, learn):
        """Run ``epochs`` epochs (training if ``learn``, else inference) to completion.

        Each example: the settle phase with learning off (``settle_ticks`` ticks, or with
        the schedule's ``still_ticks > 0`` until that many consecutive ticks moved no node
        of any stream, at most ``settle_ticks``), then ``learn_ticks`` ticks with learning
        on (training) or off (inference). Training observes the outputs at the end of the
        settle phase (at the end of the example without settle ticks), inference at the
        end of the example.

        ``epochs = 0`` (until stopped) cannot be modelled: the model only enters the mode
        (and answers BUSY) until :meth:`stop`.
        """
        self.mode = Mode.TRAINING if learn else Mode.EVALUATING
        self.epoch = 0
        if epochs == 0:
            return
        sch, tw = self.schedule, self.twin
        n_in = self.n_inputs
        for _ in range(epochs):
            err = [0] * len(self.seeds)
            for ex_count in range(sch.n_examples):
                ex = self.example = self._select(ex_count)
                row = self.dataset[ex]
                tw.drive[self.inputs] = row[:n_in]
                tw.target[:] = row[n_in:]
                # training observes after settling, evaluation after the whole example
                tw.run(sch.settle_ticks, 0, False, still_ticks=sch.still_ticks)
                if sch.settle_ticks and learn:
                    err = self._observe(ex, err)
                tw.run(sch.learn_ticks, 0, learn)
                if not (sch.settle_ticks and learn):
                    err = self._observe(ex, err)
            self.error_sums = err
            self.epoch += 1
        self.mode = Mode.IDLE

    def _observe(self, ex, err):
        """Record example ``ex``'s outputs; return the error sums ``err`` (one per stream)
        with its squared errors added."""
        out = self.twin.outputs_q()
        self.outputs[ex] = out.ravel()
        target = self.twin.target.tolist()
        sums = []
        for e, row in zip(err, out.tolist(), strict=True):
            for o, t in zip(row, target, strict=True):
                e = min(e + (o - t) ** 2, U64)
            sums.append(e)
        return sums

    def stop(self):
        self.mode = Mode.IDLE

    def reset(self):
        """RESET: a new fabric (bitstream's gates, nodes 0), counters and outputs cleared,
        LFSR reloaded."""
        self.twin = TwinModel(self.cfg, self.seeds)
        self.epoch, self.example = 0, 0
        self.error_sums = [0] * len(self.seeds)
        self.outputs[:] = 0
        self._reload_lfsr()

    @property
    def busy(self):
        return self.mode != Mode.IDLE

    @property
    def gates(self):
        """Gates (gate LSBs) of all streams, int64 (streams * edges,), index
        ``s * n_edges + e``."""
        return self.twin.gates.ravel()

    def status(self):
        """The :class:`~clln.host.protocol.DeviceStatus` READ_STATUS reports (with
        ``cycles`` 0: the model counts no clock cycles)."""
        return p.DeviceStatus(self.mode, self.epoch, self.example, self.twin.ticks,
                              tuple(self.error_sums), int(np.bitwise_or.reduce(self.twin.flags)))

    # -- command handler ----------------------------------------------------------------
    def respond(self, data):
        """Feed received bytes; return the reply bytes (frames with delimiters)."""
        out = bytearray()
        for b in bytes(data):
            if b != p.DELIMITER:
                self._rx.append(b)
                continue
            if self._rx:
                out += self.handle_frame(bytes(self._rx))
            self._rx.clear()
        return bytes(out)

    def handle_frame(self, encoded):
        """Reply (framed) to one encoded frame without its delimiter."""
        try:
            body = p.check_frame(encoded, p.MIN_REQUEST, p.MAX_REQUEST)
        except FrameError as e:
            return p.encode_reply(0, 0, e.status)
        version, rid, cmd, payload = body[0], body[1], body[2], body[3:]
        try:
            if version != p.PROTOCOL_VERSION:
                raise FrameError(Status.BAD_VERSION)
            if cmd not in Command._value2member_map_:
                raise FrameError(Status.UNKNOWN_COMMAND)
            reply = self._command(Command(cmd), payload)
        except FrameError as e:
            return p.encode_reply(rid, cmd, e.status)
        return p.encode_reply(rid, cmd, Status.OK, reply)

    def _command(self, cmd, payload):
        ident = self.identity
        if cmd in p.REQUEST_LENGTHS and p.REQUEST_LENGTHS[cmd] == 0 and payload:
            raise FrameError(Status.BAD_LENGTH)
        needs_idle = cmd in p.IDLE_ONLY

        def idle():
            if needs_idle and self.busy:
                raise FrameError(Status.BUSY)

        if cmd == Command.IDENTIFY:
            return ident.pack()
        if cmd == Command.READ_STATUS:
            return self.status().pack()
        if cmd == Command.STOP:
            self.stop()
            return b""
        if cmd == Command.RESET:
            idle()
            self.reset()
            return b""
        if cmd == Command.START:
            idle()
            self.run(self.schedule.epochs, True)
            return b""
        if cmd == Command.RUN_EPOCHS:
            epochs, learn = p.unpack_run(payload)
            idle()
            self.run(epochs, learn)
            return b""
        if cmd == Command.WRITE_SCHEDULE:
            params = p.ScheduleParams.unpack(payload, ident)
            idle()
            self.write_schedule(params)
            return b""
        if cmd == Command.WRITE_DATASET:
            first, drives, targets = p.unpack_write_dataset(payload, ident)
            idle()
            self.write_dataset(first, drives, targets)
            return b""
        if cmd == Command.WRITE_GATES:
            first, gates = p.unpack_write_gates(payload, ident)
            idle()
            self.twin.gates.flat[first:first + len(gates)] = gates
            return b""
        if cmd == Command.READ_GATES:
            first, count = p.unpack_range(payload, ident.n_gates, cmd)
            if count > p.MAX_PAYLOAD // 4:
                raise FrameError(Status.OUT_OF_RANGE)
            return p.pack_values(self.gates[first:first + count])
        if cmd == Command.READ_OUTPUTS:
            first, count = p.unpack_range(payload, ident.max_examples, cmd)
            if count * ident.n_output_values > p.MAX_PAYLOAD // 4:
                raise FrameError(Status.OUT_OF_RANGE)
            return p.pack_values(self.outputs[first:first + count])
        raise FrameError(Status.UNKNOWN_COMMAND)  # pragma: no cover
