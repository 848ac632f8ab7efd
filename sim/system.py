"""Golden model of the board system: command handler, training controller and fabric.

:class:`SystemModel` answers request bytes with reply bytes exactly as
``clln.gateware.system.System`` does after its UART (``docs/controller.md``), and
keeps the controller's state: dataset, schedule, LFSR, error sums, recorded outputs,
and a :class:`~clln.sim.fixed.FixedPointModel` for the fabric. It imports no gateware.

Streams: a fabric built with ``[fabric] streams = C`` holds C networks, one per seed
``seed .. seed + C - 1``, which share the dataset and the schedule and run it each on
its own: stream s has its own drive and target registers, example order (the LFSR
reloaded from the schedule's seed plus s), settle phases, learn ticks, observations and
error sums, so that it is, bit for bit, the single-network system of seed ``seed + s``
given the schedule seed plus s. A run ends when every stream has run its epochs. The
model runs each stream as its own :class:`TwinModel`; gates and recorded outputs are
stream-major.

Node state: the fabric has no node write port, so nothing ever restores node voltages.
Every pass (training or inference) starts from the node state the previous pass left,
unlike :meth:`clln.sim.ticks.TickModel.evaluate`, which restores it.

Cycles: the model is tick-exact, not cycle-exact. READ_STATUS' cycle counter (the clock
cycles of the last run) is always 0 here; a test compares every other field and checks
the gateware's count on its own (at least the run's ticks times the fabric's cycles per
tick, growing while it runs, frozen after).
"""

from dataclasses import replace

import numpy as np

from clln import protocol as p
from clln import schedule as sch
from clln.formats import Formats
from clln.protocol import Command, FrameError, Mode, Order, Status

from .fixed import FixedPointModel, edge_constants, run_ticks

__all__ = ["SystemModel", "TwinModel"]

U64 = (1 << 64) - 1


class TwinModel(FixedPointModel):
    """:class:`FixedPointModel` of one network (one stream of the fabric) whose drive and
    target come from its registers.

    Parameters
    ----------
    cfg : clln.config.Config
    seed : int
        Seed of the network's initial gates.

    Attributes
    ----------
    drive : ndarray of int64 (nodes,)
        The fabric's drive registers (inputs 0 V and rails at reset).
    target : ndarray of int64 (outputs,)
    """

    def __init__(self, cfg, seed, vt=None):
        super().__init__(cfg, [seed])
        if vt is not None:              # a loaded graph's thresholds, from its rows
            self.formats = replace(self.formats, vt_q=vt[0], vt_c_q=vt[1])
            self.edges = edge_constants(cfg, self.formats)
        fmt = self.formats
        self.drive = np.zeros(self.problem.n_nodes, np.int64)
        for node, volts in cfg.io.rails:
            self.drive[node] = int(fmt.volts_to_v(volts))
        self.target = np.zeros(len(cfg.io.outputs), np.int64)

    def _kernel(self, n_ticks, example, learn, still_ticks, used):
        pr = self.problem
        run_ticks(self.h_free, self.h_clamped, self.m_free, self.m_clamped, self.gates, n_ticks,
                  learn, pr.edge_a, pr.edge_b, self.edges, pr.driven, self.drive, pr.out_plus,
                  pr.out_minus, self.target, self.constants, self.flags, still_ticks, False, 0,
                  used)

    def outputs_q(self):
        """Free outputs in voltage LSBs (``VF[p]`` or ``VF[p] - VF[m]``), int64
        (outputs,)."""
        pr, vf = self.problem, self.v_free[0]
        minus = np.where(pr.out_minus >= 0, vf[np.maximum(pr.out_minus, 0)], 0)
        return vf[pr.out_plus] - minus


class _Stream:
    """The controller state of one stream: its network, LFSR, example and epoch."""

    def __init__(self, cfg, seed, offset, graph=None):
        if graph is None:
            self.twin = TwinModel(cfg, seed)
        else:                           # a capacity bitstream: the graph loaded
            self.twin = TwinModel(graph.cfg, seed, graph.vt)
            self.twin.gates[0] = graph.init[:graph.cfg.network.n_edges]
        self.offset = offset                # the LFSR's seed is the schedule's plus this
        self.lfsr = self.lfsr_width = 0
        self.example = self.epoch = self.error_sum = 0


class _Graph:
    """A capacity bitstream's graph (``clln.schedule``): the schedule RAM (packed rows),
    the initial gates, the row count of a tick, and what the model runs: the config the
    rows committed last decode to (:func:`clln.schedule.graph_from_rows`) and their
    thresholds. ``spare``: the gates beyond the graph's edges (untouched by its ticks)."""

    def __init__(self, cfg, fmt, capacity, seed):
        self.capacity, self.base = capacity, cfg
        self.n_driven, self.n_clamp = len(cfg.driven_nodes()), len(sch.output_nodes(cfg))
        self.fields = sch.row_fields(capacity, fmt.v_bits, self.n_driven, self.n_clamp)
        self.words = sch.row_words(self.fields)
        packed = [sch.pack_row(r, self.fields) for r in sch.schedule_rows(cfg, fmt)]
        self.ram = packed + [packed[-1]] * (sch.max_rows(capacity) - len(packed))
        self.n_rows = len(packed)
        E = cfg.network.n_edges
        self.init = np.zeros(capacity.edges, np.int64)
        self.init[:E] = fmt.volts_to_g(cfg.learning.initial_gates(E, seed))
        self.spare = self.init.copy()
        self.cfg, self.vt = cfg, (fmt.vt_q, fmt.vt_c_q)

    def check_row(self, word):
        """OUT_OF_RANGE for a row whose node, edge, slot or clamp index is beyond the
        bitstream's (or whose unused top bits are set)."""
        r = sch.unpack_row(word, self.fields)
        bad = [k for k, _, _, most in sch.row_limits(self.fields, self.capacity,
                                                      self.n_driven, self.n_clamp)
               if r[k] >= most]
        if bad or word >> sum(b for _, b, _ in self.fields):
            raise FrameError(Status.OUT_OF_RANGE, f"row field {(bad or ['unused bits'])[0]}")

    def commit(self, n_rows):
        """Decode rows ``0 .. n_rows - 1`` into the graph the model runs."""
        rows = [sch.unpack_row(w, self.fields) for w in self.ram[:n_rows]]
        graph = sch.graph_from_rows(rows)
        if graph is not None:
            edges, vt_q, vt_c_q = graph
            net = replace(self.base.network, topology="edges", n_nodes=int(edges.max()) + 1,
                          edges=edges, rows=0, cols=0)
            cfg = replace(self.base, network=net)
            fmt = replace(Formats.from_config(cfg), vt_q=vt_q, vt_c_q=vt_c_q)
            if [{k: r[k] for k, _, _ in self.fields} for r in sch.schedule_rows(cfg, fmt)
                    ] == rows:
                self.cfg, self.vt, self.n_rows = cfg, (vt_q, vt_c_q), n_rows
                return
        # the gateware runs any rows; its model only those of a graph's schedule
        raise FrameError(Status.OUT_OF_RANGE, "the rows are no graph's schedule")


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
    capacity : clln.schedule.Capacity or str, optional
        A capacity bitstream's (``NODES:EDGES``): ``cfg`` (its I/O placed first,
        :func:`clln.schedule.relabel`) is the graph at power-up, and WRITE_GRAPH,
        WRITE_INIT_GATES and COMMIT_GRAPH load another (one stream only).

    Attributes
    ----------
    seeds : list of int
        Seed of the reset gates of each stream.
    outputs : ndarray of int64 (max_examples, streams * outputs)
        Recorded free outputs, column ``s * n_outputs + k``.
    error_sums : list of int
        Last epoch error sum of each stream (LSB^2, saturating at 2**64 - 1).
    """

    def __init__(self, cfg, max_examples=None, seed=None, clock_hz=0, capacity=None):
        original = cfg
        self.max_examples = max_examples or p.default_max_examples(cfg)
        self.build_seed = cfg.learning.seed if seed is None else seed
        self.seeds = [self.build_seed + s for s in range(cfg.fabric.streams)]
        self.graph = None
        if capacity is not None:
            capacity = sch.parse_capacity(capacity)
            sch.check_capacity(cfg, capacity, int(cfg.network.degrees().max()))
            cfg = sch.relabel(cfg)
            self.graph = _Graph(cfg, Formats.from_config(cfg), capacity, self.build_seed)
        self.cfg = cfg
        self.streams = [_Stream(cfg, sd, s, self.graph) for s, sd in enumerate(self.seeds)]
        fmt = self.fmt = self.streams[0].twin.formats
        self.identity = p.Identity.from_config(original, fmt, self.max_examples, clock_hz)
        if capacity is not None:
            self.identity = sch.capacity_identity(self.identity, cfg, fmt, capacity,
                                                  int(cfg.network.degrees().max()))
        # the tick counter wraps as the gateware's (protocol.counter_bits)
        self.tick_mask = (1 << p.counter_bits(self.identity.clock_hz)) - 1
        self.n_inputs, self.n_outputs = len(cfg.io.inputs), len(cfg.io.outputs)
        self.inputs = list(cfg.io.inputs)
        self.dataset = np.zeros((self.max_examples, self.n_inputs + self.n_outputs), np.int64)
        n = min(len(cfg.task.x), self.max_examples)
        self.dataset[:n, :self.n_inputs] = fmt.volts_to_v(cfg.task.x)[:n]
        self.dataset[:n, self.n_inputs:] = fmt.volts_to_v(cfg.task.y)[:n]
        self.schedule = p.ScheduleParams.from_config(cfg, n)
        self._reload_lfsr()
        self.outputs = np.zeros((self.max_examples, self.identity.n_output_values), np.int64)
        self.mode = Mode.IDLE
        self._rx = bytearray()

    @property
    def twin(self):
        """Stream 0's network (:class:`TwinModel`), the one READ_STATUS' ticks count."""
        return self.streams[0].twin

    @property
    def twins(self):
        """Every stream's network, in stream order."""
        return [st.twin for st in self.streams]

    @property
    def epoch(self):
        """Epochs stream 0 completed in the current or last run."""
        return self.streams[0].epoch

    @property
    def example(self):
        """The example stream 0 presents (or presented last)."""
        return self.streams[0].example

    @property
    def error_sums(self):
        """Last epoch error sum of each stream."""
        return [st.error_sum for st in self.streams]

    # -- controller ---------------------------------------------------------------------
    def _reload_lfsr(self):
        """Stream s's LFSR from ``(seed + s) mod 2**32`` (``protocol.lfsr_seed_state``)."""
        n = self.schedule.n_examples
        for st in self.streams:
            st.lfsr_width = max(2, n.bit_length())
            st.lfsr = p.lfsr_seed_state(self.schedule.seed, st.offset, st.lfsr_width)

    def _select(self, st, ex_count):
        if self.schedule.order == Order.CYCLIC:
            return ex_count
        while True:
            cur = st.lfsr
            st.lfsr = p.lfsr_step(cur, st.lfsr_width)
            if cur <= self.schedule.n_examples:
                return cur - 1

    def write_dataset(self, first, drives, targets):
        """Store examples (voltage LSBs) from row ``first`` on."""
        rows = np.concatenate([np.asarray(drives), np.asarray(targets)], axis=1)
        self.dataset[first:first + len(rows)] = rows

    def write_schedule(self, params):
        """Latch a :class:`~clln.host.protocol.ScheduleParams` and reload the LFSRs."""
        self.schedule = params
        self._reload_lfsr()

    def run(self, epochs, learn):
        """Run ``epochs`` epochs (training if ``learn``, else inference) to completion, every
        stream on its own (the run ends when the last stream has run its epochs).

        Each example of a stream: the settle phase with learning off (``settle_ticks``
        ticks, or with the schedule's ``still_ticks > 0`` until that many consecutive ticks
        moved no node of that stream, at most ``settle_ticks``), then ``learn_ticks`` ticks
        with learning on (training) or off (inference). Training observes the outputs at
        the end of the settle phase (at the end of the example without settle ticks),
        inference at the end of the example.

        ``epochs = 0`` (until stopped) cannot be modelled: the model only enters the mode
        (and answers BUSY) until :meth:`stop`.
        """
        self.mode = Mode.TRAINING if learn else Mode.EVALUATING
        for st in self.streams:
            st.epoch = 0
        if epochs == 0:
            return
        for s, st in enumerate(self.streams):
            for _ in range(epochs):
                self._epoch(s, st, learn)
        self.mode = Mode.IDLE

    def _epoch(self, s, st, learn):
        """One epoch of stream ``s`` (state ``st``)."""
        sch, tw, n_in = self.schedule, st.twin, self.n_inputs
        err = 0
        for ex_count in range(sch.n_examples):
            ex = st.example = self._select(st, ex_count)
            row = self.dataset[ex]
            tw.drive[self.inputs] = row[:n_in]
            tw.target[:] = row[n_in:]
            # training observes after settling, evaluation after the whole example
            tw.run(sch.settle_ticks, 0, False, still_ticks=sch.still_ticks)
            if sch.settle_ticks and learn:
                err = self._observe(s, ex, err)
            tw.run(sch.learn_ticks, 0, learn)
            if not (sch.settle_ticks and learn):
                err = self._observe(s, ex, err)
        st.error_sum = err
        st.epoch += 1

    def _observe(self, s, ex, err):
        """Record stream ``s``'s outputs of example ``ex``; return its error sum ``err``
        with their squared errors added."""
        tw, K = self.streams[s].twin, self.n_outputs
        out = tw.outputs_q()
        self.outputs[ex, s * K:(s + 1) * K] = out
        for o, t in zip(out.tolist(), tw.target.tolist(), strict=True):
            err = min(err + (o - t) ** 2, U64)
        return err

    def stop(self):
        self.mode = Mode.IDLE

    def reset(self):
        """RESET: new networks (bitstream's gates, nodes 0), counters and outputs cleared,
        LFSRs reloaded."""
        self.streams = [_Stream(self.cfg, sd, s, self.graph) for s, sd in enumerate(self.seeds)]
        if self.graph is not None:
            self.graph.spare = self.graph.init.copy()
        self.outputs[:] = 0
        self._reload_lfsr()

    @property
    def busy(self):
        return self.mode != Mode.IDLE

    @property
    def gates(self):
        """Gates (gate LSBs) of all streams, int64 (streams * edges,), index
        ``s * n_edges + e``; a capacity bitstream's: its capacity's edges, those beyond
        the loaded graph's untouched by its ticks."""
        table = np.concatenate([tw.gates[0] for tw in self.twins])
        if self.graph is not None:
            table = np.concatenate([table, self.graph.spare[len(table):]])
        return table

    def write_gates(self, first, gates):
        """Gates ``first ..`` of the stream-major table (gate LSBs)."""
        table = self.gates
        table[first:first + len(gates)] = gates
        E = self.twin.gates.shape[1]
        for s, tw in enumerate(self.twins):
            tw.gates[0] = table[s * E:(s + 1) * E]
        if self.graph is not None:
            self.graph.spare = table.copy()

    def status(self):
        """The :class:`~clln.host.protocol.DeviceStatus` READ_STATUS reports (with
        ``cycles`` 0: the model counts no clock cycles): stream 0's epoch, example and
        ticks, every stream's error sum, the OR of their flags."""
        flags = int(np.bitwise_or.reduce([int(tw.flags[0]) for tw in self.twins]))
        return p.DeviceStatus(self.mode, self.epoch, self.example,
                              self.twin.ticks & self.tick_mask, tuple(self.error_sums), flags)

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
            self.write_gates(first, gates)
            return b""
        if cmd in p.GRAPH_COMMANDS:
            return self._graph_command(cmd, payload, idle)
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

    def _graph_command(self, cmd, payload, idle):
        """WRITE_GRAPH, WRITE_INIT_GATES, COMMIT_GRAPH (a capacity bitstream's)."""
        graph, ident = self.graph, self.identity
        if graph is None:
            raise FrameError(Status.UNKNOWN_COMMAND)
        if cmd == Command.WRITE_GRAPH:
            first, rows = p.unpack_write_graph(payload, ident, graph.words)
            for word in rows:
                graph.check_row(word)
            idle()
            graph.ram[first:first + len(rows)] = rows
        elif cmd == Command.WRITE_INIT_GATES:
            first, gates = p.unpack_write_gates(payload, ident)
            idle()
            graph.init[first:first + len(gates)] = gates
        else:
            n_rows, hash_value = p.unpack_commit(payload, ident, sch.PIPELINE_CYCLES + 1)
            idle()
            graph.commit(n_rows)
            self.identity = replace(ident, config_hash=hash_value)
            self.reset()
        return b""
