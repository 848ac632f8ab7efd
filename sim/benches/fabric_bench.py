"""cocotb bench of the fabric against the fixed-point golden model.

Run by :func:`clln.sim.benches.runner.verify`, which passes the config and the run
parameters in the ``CLLN_BENCH`` environment variable (JSON, see
:func:`~clln.sim.benches.runner.load_bench_config`). Three parts, as in cocotb's examples:

- :class:`FabricDriver` writes samples and gates and runs ticks on the DUT, and records
  the DUT's state after every tick (flat vectors, or the serial fabric's read ports);
- :class:`ModelRun` runs the same stimulus on :class:`~clln.sim.fixed.FixedPointModel`
  (one seed per stream of a pipelined fabric);
- :class:`Checker` compares every node voltage of both networks, every gate, the free
  outputs, the tick counter and the saturation flags, at every tick, and ``moved`` of
  every tick (vectorised, after the run).

``moved`` is read by :class:`MovedMonitor` in every cycle in which ``tick_done`` is high
(a tick, or a round of ticks of a pipelined fabric, commits), through the tick-by-tick
and the free-running part alike; the model's is :func:`clln.sim.fixed.seeds_moved` of its
states before and after each tick, ORed over the streams, and reported
``cfg.fabric.still_lag`` ticks late (:func:`clln.sim.fixed.moved_as_reported`).

Ports are the Verilog names of the fabric's signature members (:data:`PORT`:
``control__run``, ``gate__we``, ``status__ticks``, ...). The run has two parts: tick by
tick (``run`` drops after every tick, or round of ticks of
a pipelined fabric, and the state is read once ``busy`` is low), then free running: a
few ticks back to back with ``run`` held high and ``learn`` switching between them, as
the hardware runs, compared once at the end.
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly
from cocotb.utils import get_sim_time

from clln.sim.fixed import moved_as_reported, seeds_moved

from .runner import ENV, load_bench_config
from .stimulus import FREE_RUN, Stimulus, make_model, restore, unpack

#: Verilog port of each signature member the bench drives or reads (the fabric's
#: ``control``, ``gate`` and ``status`` members, flattened as Amaranth names them: the
#: manifest's ``ports`` lists them with their ``member`` paths).
PORT = {
    "run": "control__run", "learn": "control__learn", "clear": "control__clear",
    "sample_we": "control__sample_we", "sample_addr": "control__sample_addr",
    "sample_data": "control__sample_data", "outputs": "control__outputs",
    "busy": "control__busy", "tick_done": "control__tick_done", "moved": "control__moved",
    "gate_we": "gate__we", "gate_addr": "gate__addr", "gate_data": "gate__data",
    "gate_raddr": "gate__raddr", "gate_rdata": "gate__rdata",
    "ticks": "status__ticks", "sat_flags": "status__sat_flags",
    "clear_flags": "status__clear_flags",
}


class FabricDriver:
    """Drives the fabric's controller ports; one method call per transaction.

    Parameters
    ----------
    dut : cocotb handle of the fabric's top level
    info : dict
        Sizes of the fabric (``cycles_per_tick``, ``streams``, ``nodes``, ``edges``,
        ``widths``).

    Notes
    -----
    ``learn`` holds its value on a tick's first cycle only (the fabric samples it there)
    and the opposite one on the others, which a fabric that reads it later gets wrong.
    Ports are named as in :data:`PORT` (``self.port("run")`` is ``control__run``).
    """

    def __init__(self, dut, info):
        self.dut, self.info = dut, info
        self.drain_cycles = 0       # the most cycles ``busy`` stayed high after a tick
        self.raw = {"v_free": [], "v_clamped": [], "gates": [], "outputs": [], "ticks": [],
                    "sat_flags": []}

    def port(self, name):
        """The DUT's handle of a signature member (a key of :data:`PORT`)."""
        return getattr(self.dut, PORT[name])

    async def reset(self):
        d = self.dut
        for name in ("run", "learn", "sample_we", "gate_we", "clear_flags", "clear"):
            self.port(name).value = 0
        # a pipelined fabric's per-stream lanes are not used here (the joint port is)
        for s in range(self.info["streams"] if self.info["streams"] > 1 else 0):
            for name in ("run", "learn", "sample_we", "clear"):
                getattr(d, f"lanes__{s}__{name}").value = 0
        d.rst.value = 1
        for _ in range(2):
            await FallingEdge(d.clk)
        d.rst.value = 0
        await FallingEdge(d.clk)
        while self.port("busy").value:       # the serial fabric clears its RAM
            await FallingEdge(d.clk)

    async def write_sample(self, drive, target):
        """Write every drive register and target (the tick is paused meanwhile)."""
        p = self.port
        p("run").value = 0
        p("sample_we").value = 1
        for addr, value in enumerate(list(drive) + list(target)):
            p("sample_addr").value = addr
            p("sample_data").value = int(value)
            await FallingEdge(self.dut.clk)
        p("sample_we").value = 0

    async def write_gate(self, index, value):
        """Overwrite (restore) one gate; ``index`` is ``stream * E + edge``.

        A pipelined fabric takes the write when that stream's slot comes round: ``busy``
        until then.
        """
        p = self.port
        p("run").value = 0
        p("gate_we").value = 1
        p("gate_addr").value = int(index)
        p("gate_data").value = int(value)
        await FallingEdge(self.dut.clk)
        p("gate_we").value = 0
        while self.info["streams"] > 1 and p("busy").value:   # until it reaches its stream
            await FallingEdge(self.dut.clk)

    async def tick(self, learn):
        """Run one tick (``cycles_per_tick`` cycles) with ``learn``.

        A pipelined fabric (several streams) then stops and drains: ``run`` drops and the
        call returns once ``busy`` is low, when every stream's tick has been written back.
        Other fabrics keep ``run`` high (the next call continues without a pause).
        """
        self.port("run").value = 1
        await self.cycles(learn)
        if self.info["streams"] > 1:
            await self.drain()

    async def cycles(self, learn):
        """The cycles of one tick (``run`` high), ``learn`` valid on the first one only."""
        for c in range(self.info["cycles_per_tick"]):
            self.port("learn").value = int(learn) if c == 0 else int(not learn)
            await FallingEdge(self.dut.clk)

    async def drain(self):
        """Drop ``run`` and wait until no tick is in flight (``busy`` low)."""
        self.port("run").value = 0
        cycles = 0
        while self.port("busy").value:
            await FallingEdge(self.dut.clk)
            cycles += 1
        self.drain_cycles = max(self.drain_cycles, cycles)

    async def free_run(self, learns):
        """Run ``len(learns)`` ticks back to back with ``run`` held high (as the hardware
        does), then stop and drain."""
        self.port("run").value = 1
        for learn in learns:
            await self.cycles(learn)
        await self.drain()

    async def sample(self):
        """Record the DUT's state as raw flat integers (decoded later).

        A fabric without flat state ports (the serial one) is read through its
        registered read ports, one node and one edge per cycle, while paused.
        """
        d, raw, p = self.dut, self.raw, self.port
        if hasattr(d, "v_free"):
            for name in ("v_free", "v_clamped", "gates"):
                raw[name].append(getattr(d, name).value.to_unsigned())
        else:
            n, e = self.info["nodes"], self.info["edges"]
            wv, wg = self.info["widths"]["v"], self.info["widths"]["g"]
            flat = {"v_free": 0, "v_clamped": 0, "gates": 0}
            p("run").value = 0
            for i in range(max(n, e)):
                d.node_raddr.value = min(i, n - 1)
                p("gate_raddr").value = min(i, e - 1)
                await FallingEdge(d.clk)
                if i < n:
                    flat["v_free"] |= d.v_free_rdata.value.to_unsigned() << (i * wv)
                    flat["v_clamped"] |= d.v_clamped_rdata.value.to_unsigned() << (i * wv)
                if i < e:
                    flat["gates"] |= p("gate_rdata").value.to_unsigned() << (i * wg)
            for name, value in flat.items():
                raw[name].append(value)
        for name in ("outputs", "ticks", "sat_flags"):
            raw[name].append(p(name).value.to_unsigned())


class MovedMonitor:
    """Records ``moved`` in every cycle of ``tick_done``: once per committed tick (a round
    of ticks of a pipelined fabric), whoever drives the fabric meanwhile.

    Each cycle is read after the falling edge, once the driver's inputs of that cycle
    have settled (``ReadOnly``), so the values are those the next rising edge commits.
    """

    def __init__(self, dut, port):
        self.dut, self.port = dut, port
        self.moved = []
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._watch())

    def stop(self):
        if self._task is not None:
            self._task.cancel()

    async def _watch(self):
        tick_done, moved = self.port("tick_done"), self.port("moved")
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            if tick_done.value == 1:
                self.moved.append(int(moved.value))


class ModelRun:
    """The golden model driven by the same :class:`Stimulus` as the DUT.

    Attributes
    ----------
    expected : dict of ndarray
        ``v_free``, ``v_clamped`` (rows, streams * nodes), ``gates`` (rows, streams *
        edges), ``outputs`` (rows, streams * outputs: ``VF[p]`` or ``VF[p] - VF[m]``),
        stream after stream as in the DUT's flat ports, ``ticks`` and
        ``sat_flags`` (rows,; the flags of all streams ORed): the state before tick 0,
        after every tick, and (a last row when there is a free-running part) after it.
    labels : ndarray of int (rows,)
        The tick count of every row.
    moved : ndarray of int (ticks + free rounds,)
        Whether each tick (of the tick-by-tick part, then of the free-running one)
        moved some node of either network of some stream by more than ``still_lsb``.
    """

    def __init__(self, model, stim, outputs):
        self.model = model
        exp = {name: [] for name in ("v_free", "v_clamped", "gates", "outputs", "ticks",
                                     "sat_flags")}
        plus = [p for p, _ in outputs]
        minus = [mi for _, mi in outputs]

        def record(ticks):
            vf = model.v_free
            out = vf[:, plus] - np.where(np.array(minus) >= 0, vf[:, minus], 0)
            exp["outputs"].append(out.ravel())
            exp["v_free"].append(model.v_free.ravel().copy())
            exp["v_clamped"].append(model.v_clamped.ravel().copy())
            exp["gates"].append(model.gates.ravel().copy())
            exp["ticks"].append(ticks)
            exp["sat_flags"].append(int(np.bitwise_or.reduce(model.flags)))

        moved = []

        def tick(example, learn):
            before = model.v_free.copy(), model.v_clamped.copy()
            model.run(1, int(example), bool(learn))
            moved.append(int(seeds_moved(*before, model.v_free, model.v_clamped,
                                         model.constants.still_lsb).any()))

        record(0)
        for t in range(stim.ticks):
            if t in stim.restores:
                restore(model, *stim.restores[t])
            tick(stim.example[t], stim.learn[t])
            record(t + 1)
        for learn in stim.free_learn:
            tick(stim.free_example, learn)
        if len(stim.free_learn):
            record(stim.ticks + len(stim.free_learn))
        self.expected = {k: np.array(v, np.int64) for k, v in exp.items()}
        self.labels = self.expected["ticks"].copy()
        self.moved = np.array(moved, np.int64)


class Checker:
    """Compares the recorded DUT state with the model's, value by value.

    ``labels`` are the tick counts of the rows (default 0, 1, ...); ``sizes`` maps a
    flat state vector's name to its elements per stream (``nodes`` or ``edges``): a
    mismatch there also names its stream and element.
    """

    def __init__(self, expected, got, labels=None, sizes=None):
        self.expected, self.got = expected, got
        rows = len(next(iter(expected.values())))
        self.labels = np.arange(rows) if labels is None else np.asarray(labels)
        self.sizes = sizes or {}

    def report(self):
        """``compared``, ``mismatches``, ``first_mismatch`` (or None) and ``by_signal``
        (mismatches of each compared vector that has some)."""
        compared = mismatches = 0
        first = None
        by_signal = {}
        for name, exp in self.expected.items():
            got = self.got[name]
            if got.shape != exp.shape:
                raise AssertionError(f"{name}: got shape {got.shape}, expected {exp.shape}")
            exp2, got2 = exp.reshape(len(exp), -1), got.reshape(len(got), -1)
            bad = exp2 != got2
            compared += bad.size
            mismatches += int(bad.sum())
            if bad.any():
                by_signal[name] = int(bad.sum())
                t, i = np.argwhere(bad)[0]
                signal = f"{name}[{i}]" if exp.ndim > 1 else name
                cand = {"tick": int(self.labels[t]), "signal": signal,
                        "expected": int(exp2[t, i]), "got": int(got2[t, i])}
                if name in self.sizes and exp2.shape[1] > self.sizes[name]:
                    cand["stream"], cand["element"] = (int(x) for x in
                                                       divmod(i, self.sizes[name]))
                if first is None or cand["tick"] < first["tick"]:
                    first = cand
        return {"compared": compared, "mismatches": mismatches, "first_mismatch": first,
                "by_signal": by_signal}


def merge_reports(*reports):
    """One :meth:`Checker.report` of several: counts added, the earliest first mismatch."""
    firsts = [r["first_mismatch"] for r in reports if r["first_mismatch"] is not None]
    return {"compared": sum(r["compared"] for r in reports),
            "mismatches": sum(r["mismatches"] for r in reports),
            "first_mismatch": min(firsts, key=lambda f: f["tick"]) if firsts else None,
            "by_signal": {k: v for r in reports for k, v in r["by_signal"].items()}}


def moved_report(expected, got):
    """:meth:`Checker.report` of the ``moved`` flags, one per tick (labelled 1, 2, ...):
    a tick the DUT did not report counts as a mismatch (``got`` -1), one it reported
    beyond the expected ones is left to the tick counter's comparison."""
    seen = np.full(len(expected), -1, np.int64)
    n = min(len(expected), len(got))
    seen[:n] = np.asarray(got, np.int64)[:n]
    return Checker({"moved": expected}, {"moved": seen},
                   np.arange(1, len(expected) + 1)).report()


@cocotb.test()
async def fabric_matches_golden_model(dut):
    """Every node voltage, gate and output of the DUT (of every stream) equals the golden
    model's at every tick, and after the free-running ticks."""
    bench = load_bench_config(os.environ[ENV])
    cfg, params = bench["cfg"], bench["params"]
    model = make_model(cfg, params)
    stim = Stimulus(cfg, model, params["ticks"], params.get("free_rounds", len(FREE_RUN)))
    streams = stim.streams
    info = {"cycles_per_tick": params["cycles_per_tick"], "widths": params["widths"],
            "nodes": cfg.network.n_nodes, "edges": cfg.network.n_edges, "streams": streams}
    widths = params["widths"]

    t0 = time.perf_counter()
    model_run = ModelRun(model, stim, [tuple(o) for o in cfg.io.outputs])
    expected = model_run.expected
    t_model = time.perf_counter() - t0

    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    drv = FabricDriver(dut, info)
    await drv.reset()
    monitor = MovedMonitor(dut, drv.port)
    monitor.start()
    t0 = time.perf_counter()
    cycles0 = get_sim_time(unit="ns")
    await drv.write_sample(stim.drive[stim.example[0]], stim.target[stim.example[0]])
    await drv.sample()
    for t in range(stim.ticks):
        if t in stim.restores:
            await drv.write_gate(*stim.restores[t])
        if t > 0 and stim.example[t] != stim.example[t - 1]:
            ex = stim.example[t]
            await drv.write_sample(stim.drive[ex], stim.target[ex])
        await drv.tick(stim.learn[t])
        await drv.sample()
    drv.port("run").value = 0
    if len(stim.free_learn):
        ex = stim.free_example
        await drv.write_sample(stim.drive[ex], stim.target[ex])
        await drv.free_run(stim.free_learn)
        await drv.sample()
    monitor.stop()
    seconds = time.perf_counter() - t0
    cycles = (get_sim_time(unit="ns") - cycles0) / 10

    n, e, k = cfg.network.n_nodes, cfg.network.n_edges, len(cfg.io.outputs)
    got = {
        "v_free": unpack(drv.raw["v_free"], widths["v"], streams * n),
        "v_clamped": unpack(drv.raw["v_clamped"], widths["v"], streams * n),
        "gates": unpack(drv.raw["gates"], widths["g"], streams * e),
        "outputs": unpack(drv.raw["outputs"], widths["v"] + 1, streams * k),
        "ticks": np.array(drv.raw["ticks"], np.int64),
        "sat_flags": np.array(drv.raw["sat_flags"], np.int64),
    }
    result = merge_reports(
        Checker(expected, got, model_run.labels,
                {"v_free": n, "v_clamped": n, "gates": e, "outputs": k}).report(),
        moved_report(moved_as_reported(model_run.moved, cfg.fabric.still_lag), monitor.moved))
    result.update(moved_ticks=int(model_run.moved.sum()),
                  quiet_ticks=int(len(model_run.moved) - model_run.moved.sum()),
                  reported_ticks=len(monitor.moved))
    result.update(ticks=stim.ticks, free_rounds=len(stim.free_learn), streams=streams,
                  seeds=[int(x) for x in model.seeds], drain_cycles=drv.drain_cycles,
                  cycles=int(cycles), seconds=seconds,
                  ticks_per_s=(stim.ticks + len(stim.free_learn)) / seconds
                  if seconds else None,
                  cycles_per_s=cycles / seconds if seconds else None, model_seconds=t_model,
                  saturated=bool(expected["sat_flags"][-1]))
    with open(params["result"], "w") as fh:
        json.dump(result, fh)
    if result["mismatches"]:
        raise AssertionError(f"{result['mismatches']} mismatches, first: "
                             f"{result['first_mismatch']}")
