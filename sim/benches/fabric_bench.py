"""cocotb bench of the fabric against the fixed-point golden model.

Run by :func:`clln.sim.benches.runner.verify`, which passes the config and the run
parameters in the ``CLLN_BENCH`` environment variable (JSON, see
:func:`~clln.sim.benches.runner.load_bench_config`). Three parts, as in cocotb's examples:

- :class:`FabricDriver` writes samples and gates and runs ticks on the DUT, and records
  the DUT's state after every tick (flat vectors, or the serial fabric's read ports);
- :class:`ModelRun` runs the same stimulus on :class:`~clln.sim.fixed.FixedPointModel`;
- :class:`Checker` compares every node voltage of both networks, every gate, the tick
  counter and the saturation flags, at every tick (vectorised, after the run).
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge
from cocotb.utils import get_sim_time

from .runner import ENV, load_bench_config
from .stimulus import Stimulus, make_model, unpack


class FabricDriver:
    """Drives the fabric's controller ports; one method call per transaction.

    Parameters
    ----------
    dut : cocotb handle of the fabric's top level
    info : dict
        Sizes of the fabric (``n_driven``, ``cycles_per_tick``).
    """

    def __init__(self, dut, info):
        self.dut, self.info = dut, info
        self.raw = {"v_free": [], "v_clamped": [], "gates": [], "ticks": [], "sat_flags": []}

    async def reset(self):
        d = self.dut
        for name in ("run", "learn", "sample_we", "gate_we", "clear_flags"):
            getattr(d, name).value = 0
        d.rst.value = 1
        for _ in range(2):
            await FallingEdge(d.clk)
        d.rst.value = 0
        await FallingEdge(d.clk)
        while hasattr(d, "busy") and d.busy.value:        # the serial fabric clears its RAM
            await FallingEdge(d.clk)

    async def write_sample(self, drive, target):
        """Write every drive register and target (the tick is paused meanwhile)."""
        d = self.dut
        d.run.value = 0
        d.sample_we.value = 1
        for addr, value in enumerate(list(drive) + list(target)):
            d.sample_addr.value = addr
            d.sample_data.value = int(value)
            await FallingEdge(d.clk)
        d.sample_we.value = 0

    async def write_gate(self, edge, value):
        """Overwrite (restore) one gate."""
        d = self.dut
        d.run.value = 0
        d.gate_we.value = 1
        d.gate_addr.value = int(edge)
        d.gate_data.value = int(value)
        await FallingEdge(d.clk)
        d.gate_we.value = 0

    async def tick(self, learn):
        """Run one tick (``cycles_per_tick`` cycles) with ``learn``."""
        d = self.dut
        d.learn.value = int(learn)
        d.run.value = 1
        for _ in range(self.info["cycles_per_tick"]):
            await FallingEdge(d.clk)

    async def sample(self):
        """Record the DUT's state as raw flat integers (decoded later).

        A fabric without flat state ports (the serial one) is read through its
        registered read ports, one node and one edge per cycle, while paused.
        """
        d, raw = self.dut, self.raw
        if hasattr(d, "v_free"):
            for name in ("v_free", "v_clamped", "gates"):
                raw[name].append(getattr(d, name).value.to_unsigned())
        else:
            n, e = self.info["nodes"], self.info["edges"]
            wv, wg = self.info["widths"]["v"], self.info["widths"]["g"]
            flat = {"v_free": 0, "v_clamped": 0, "gates": 0}
            d.run.value = 0
            for i in range(max(n, e)):
                d.node_raddr.value = min(i, n - 1)
                d.gate_raddr.value = min(i, e - 1)
                await FallingEdge(d.clk)
                if i < n:
                    flat["v_free"] |= d.v_free_rdata.value.to_unsigned() << (i * wv)
                    flat["v_clamped"] |= d.v_clamped_rdata.value.to_unsigned() << (i * wv)
                if i < e:
                    flat["gates"] |= d.gate_rdata.value.to_unsigned() << (i * wg)
            for name, value in flat.items():
                raw[name].append(value)
        raw["ticks"].append(d.ticks.value.to_unsigned())
        raw["sat_flags"].append(d.sat_flags.value.to_unsigned())


class ModelRun:
    """The golden model driven by the same :class:`Stimulus` as the DUT.

    Attributes
    ----------
    expected : dict of ndarray
        ``v_free``, ``v_clamped`` (ticks + 1, nodes), ``gates`` (ticks + 1, edges),
        ``ticks`` and ``sat_flags`` (ticks + 1,): the state before tick 0 and after
        every tick.
    """

    def __init__(self, model, stim):
        self.model = model
        exp = {"v_free": [model.v_free[0].copy()], "v_clamped": [model.v_clamped[0].copy()],
               "gates": [model.gates[0].copy()], "ticks": [0], "sat_flags": [0]}
        for t in range(stim.ticks):
            if t in stim.restores:
                edge, value = stim.restores[t]
                model.gates[0, edge] = value
            model.run(1, int(stim.example[t]), bool(stim.learn[t]))
            exp["v_free"].append(model.v_free[0].copy())
            exp["v_clamped"].append(model.v_clamped[0].copy())
            exp["gates"].append(model.gates[0].copy())
            exp["ticks"].append(t + 1)
            exp["sat_flags"].append(int(model.flags[0]))
        self.expected = {k: np.array(v, np.int64) for k, v in exp.items()}


class Checker:
    """Compares the recorded DUT state with the model's, value by value."""

    def __init__(self, expected, got):
        self.expected, self.got = expected, got

    def report(self):
        """``compared``, ``mismatches`` and ``first_mismatch`` (or None)."""
        compared = mismatches = 0
        first = None
        for name, exp in self.expected.items():
            got = self.got[name]
            exp2, got2 = exp.reshape(len(exp), -1), got.reshape(len(got), -1)
            bad = exp2 != got2
            compared += bad.size
            mismatches += int(bad.sum())
            if bad.any():
                t, i = np.argwhere(bad)[0]
                signal = f"{name}[{i}]" if exp.ndim > 1 else name
                cand = {"tick": int(t), "signal": signal, "expected": int(exp2[t, i]),
                        "got": int(got2[t, i])}
                if first is None or cand["tick"] < first["tick"]:
                    first = cand
        return {"compared": compared, "mismatches": mismatches, "first_mismatch": first}


@cocotb.test()
async def fabric_matches_golden_model(dut):
    """Every node voltage and gate of the DUT equals the golden model's at every tick."""
    bench = load_bench_config(os.environ[ENV])
    cfg, params = bench["cfg"], bench["params"]
    model = make_model(cfg, params)
    stim = Stimulus(cfg, model, params["ticks"])
    info = {"cycles_per_tick": params["cycles_per_tick"], "widths": params["widths"],
            "nodes": cfg.network.n_nodes, "edges": cfg.network.n_edges}
    widths = params["widths"]

    t0 = time.perf_counter()
    expected = ModelRun(model, stim).expected
    t_model = time.perf_counter() - t0

    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    drv = FabricDriver(dut, info)
    await drv.reset()
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
    dut.run.value = 0
    seconds = time.perf_counter() - t0
    cycles = (get_sim_time(unit="ns") - cycles0) / 10

    got = {
        "v_free": unpack(drv.raw["v_free"], widths["v"], cfg.network.n_nodes),
        "v_clamped": unpack(drv.raw["v_clamped"], widths["v"], cfg.network.n_nodes),
        "gates": unpack(drv.raw["gates"], widths["g"], cfg.network.n_edges),
        "ticks": np.array(drv.raw["ticks"], np.int64),
        "sat_flags": np.array(drv.raw["sat_flags"], np.int64),
    }
    result = Checker(expected, got).report()
    result.update(ticks=stim.ticks, cycles=int(cycles), seconds=seconds,
                  ticks_per_s=stim.ticks / seconds if seconds else None,
                  cycles_per_s=cycles / seconds if seconds else None, model_seconds=t_model,
                  saturated=bool(expected["sat_flags"][-1]))
    with open(params["result"], "w") as fh:
        json.dump(result, fh)
    if result["mismatches"]:
        raise AssertionError(f"{result['mismatches']} mismatches, first: "
                             f"{result['first_mismatch']}")
