"""cocotb benches on Icarus and Verilator: the generated fabric equals the fixed-point
model bit for bit (the tests build the Verilog, the bench takes it and the manifest)."""

import json

import numpy as np
import pytest
from fabric_configs import (
    driven_pair_config,
    jacobi_random_config,
    jacobi_xor_config,
    mismatched,
    momentum_random_config,
    momentum_xor_config,
    narrow_config,
    nonideal_random_config,
    random_graph_config,
)

from clln import config as config_mod
from clln.flows import verify
from clln.formats import Formats
from clln.gateware.fabric.serial import serial_schedule
from clln.sim.benches.stimulus import unpack


def test_unpack_signed_vectors():
    values = np.array([[-3, 5, -(1 << 17), (1 << 17) - 1]])
    raw = sum((int(v) & ((1 << 18) - 1)) << (18 * i) for i, v in enumerate(values[0]))
    np.testing.assert_array_equal(unpack([raw, 0], 18, 4), np.vstack([values, [[0] * 4]]))


def check(res, sim, ticks, n_values):
    """A clean result; ``n_values``: node voltages, gates and outputs of every stream.

    The rows of state (before tick 0, after every tick and after the free-running part)
    have ``n_values`` plus the tick counter and the flags; ``moved`` is compared at every
    tick of both parts."""
    assert res["sim"] == sim
    assert res["ticks"] == ticks
    assert res["free_rounds"] == 20                    # a last row after free running
    assert res["reported_ticks"] == ticks + 20         # a tick_done per tick (round)
    assert res["compared"] == (ticks + 2) * (n_values + 2) + ticks + 20
    assert res["mismatches"] == 0, (res["first_mismatch"], res["by_signal"])
    assert res["first_mismatch"] is None
    assert res["moved_ticks"] + res["quiet_ticks"] == ticks + 20


@pytest.fixture(autouse=True)
def quick_verilator_build(monkeypatch):
    """Build Verilator models without C++ optimisation: the tests run few ticks."""
    monkeypatch.setenv("CLLN_VERILATOR_OPT", "-O0")


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_paper_xor(sim, tmp_path):
    res = verify(config_mod.load("paper-xor"), sim=sim, ticks=300, build_dir=tmp_path)
    check(res, sim, 300, 16 * 2 + 32 + 1)
    assert res["cycles_per_tick"] == 1


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_random_graph(sim, tmp_path):
    cfg = random_graph_config(tmp_path)
    res = verify(cfg, sim=sim, ticks=250, build_dir=tmp_path / "build", flat=False)
    check(res, sim, 250, 9 * 2 + 16 + 2)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_paper_regression(sim, tmp_path):
    res = verify(config_mod.load("paper-regression"), sim=sim, ticks=300, build_dir=tmp_path,
                 flat=False)
    check(res, sim, 300, 16 * 2 + 32 + 1)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_narrow_formats(sim, tmp_path):
    res = verify(narrow_config(), sim=sim, ticks=300, build_dir=tmp_path, flat=False)
    check(res, sim, 300, 16 * 2 + 32 + 1)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_serial_random_graph(sim, tmp_path):
    cfg = config_mod.refold(driven_pair_config(tmp_path)[0], "serial")
    res = verify(cfg, sim=sim, ticks=150, build_dir=tmp_path / "build", flat=sim == "icarus")
    check(res, sim, 150, 9 * 2 + 17 + 2)
    assert res["edge_units"] == 1
    assert res["cycles_per_tick"] == len(serial_schedule(cfg)) + 4


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_streams_random_graph(sim, tmp_path):
    # dg_bits 21: streams 1 and 2 saturate their gate steps at tick 13, stream 0 at 52,
    # so the flags (ORed over the streams) differ from any single stream's.
    cfg = config_mod.refold(random_graph_config(tmp_path, fixed={"dg_bits": 21}), "streams:3")
    ticks = 150 if sim == "icarus" else 300
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path / "build",
                 flat=sim == "verilator")
    check(res, sim, ticks, 3 * (9 * 2 + 16 + 2))
    assert (res["streams"], res["seeds"], res["cycles_per_tick"]) == (3, [1, 2, 3], 3)
    assert res["drain_cycles"] >= 2                    # busy covers the two pipeline stages
    assert res["saturated"]
    assert res["cycles"] >= ticks * 3


@pytest.mark.sim
@pytest.mark.parametrize("flat", [True, False])
def test_cocotb_folded_icarus(flat, tmp_path):
    cfg = config_mod.refold(config_mod.load("paper-xor"), 7)
    res = verify(cfg, ticks=120, build_dir=tmp_path, flat=flat)
    check(res, "icarus", 120, 16 * 2 + 32 + 1)
    assert (res["edge_units"], res["cycles_per_tick"]) == (7, 5)
    assert res["cycles"] >= 120 * 5
    assert res["netlist"] == ("flat" if flat else "hierarchical")


@pytest.mark.sim
def test_cocotb_detects_broken_model(tmp_path):
    res = verify(config_mod.load("paper-xor"), ticks=120, build_dir=tmp_path,
                 patch={"lr_mul": 1}, flat=False)
    assert res["mismatches"] > 0
    first = res["first_mismatch"]
    assert first["signal"].startswith("gates[")
    assert first["expected"] != first["got"]
    assert 1 <= first["tick"] <= 120


#: ``still_lsb`` of the jacobi benches: the stimulus then has ticks that move and still
#: ones (with the default 1 LSB paper-xor's nodes never settle that far between examples).
JACOBI_STILL_LSB = 16


def check_moved_both_ways(res):
    """The run had ticks that moved and still ones (the model's), all matched."""
    assert res["moved_ticks"] > 0 and res["quiet_ticks"] > 0, res


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_jacobi_paper_xor(sim, tmp_path):
    res = verify(jacobi_xor_config(JACOBI_STILL_LSB), sim=sim, ticks=300, build_dir=tmp_path)
    check(res, sim, 300, 16 * 2 + 32 + 1)
    check_moved_both_ways(res)
    assert (res["cycles_per_tick"], res["netlist"]) == (1, "flat")


#: ``[fixed] node_extra_bits`` of the benches with extra node state bits, their ticks and
#: ``still_lsb`` (coarse: short runs then have still ticks too). Each fabric's jacobi bench
#: runs once per simulator, F > 0 on one of them (parallel and folded on Icarus, serial and
#: streams on Verilator) and F = 0 on the other, which keeps the suite within its time.
EXTRA_BITS, EXTRA_TICKS, EXTRA_STILL_LSB = 3, 100, 128


@pytest.mark.sim
@pytest.mark.parametrize("sim, extra", [("icarus", EXTRA_BITS), ("verilator", 0)])
def test_cocotb_jacobi_random_graph(sim, extra, tmp_path):
    cfg = jacobi_random_config(tmp_path, EXTRA_STILL_LSB if extra else JACOBI_STILL_LSB,
                               extra)
    ticks = EXTRA_TICKS if extra else 250
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path / "build", flat=False)
    check(res, sim, ticks, 9 * 2 + 16 + 2)
    check_moved_both_ways(res)


@pytest.mark.sim
@pytest.mark.parametrize("sim, extra", [("icarus", EXTRA_BITS), ("verilator", 0)])
def test_cocotb_jacobi_folded(sim, extra, tmp_path):
    cfg = config_mod.refold(jacobi_xor_config(EXTRA_STILL_LSB if extra else JACOBI_STILL_LSB,
                                              extra), 7)
    ticks = EXTRA_TICKS if extra else 120
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path, flat=sim == "icarus")
    check(res, sim, ticks, 16 * 2 + 32 + 1)
    check_moved_both_ways(res)
    assert (res["edge_units"], res["cycles_per_tick"]) == (7, 5)


@pytest.mark.sim
@pytest.mark.parametrize("sim, extra", [("icarus", 0), ("verilator", EXTRA_BITS)])
def test_cocotb_jacobi_serial(sim, extra, tmp_path):
    """The serial fabric's jacobi step and moved (a single and a differential output)."""
    still_lsb = EXTRA_STILL_LSB if extra else JACOBI_STILL_LSB
    cfg = config_mod.refold(jacobi_random_config(tmp_path, still_lsb, extra), "serial")
    ticks = EXTRA_TICKS if extra else 150
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path / "build",
                 flat=sim == "icarus")
    check(res, sim, ticks, 9 * 2 + 16 + 2)
    check_moved_both_ways(res)
    assert res["cycles_per_tick"] == len(serial_schedule(cfg)) + 4


@pytest.mark.sim
@pytest.mark.parametrize("sim, extra, units", [("icarus", EXTRA_BITS, 3),
                                               ("verilator", 0, 5)])
def test_cocotb_jacobi_banked(sim, extra, units, tmp_path):
    """The banked fabric (``--fabric banked:P``) on the random graph with an edge between
    two driven nodes: its jacobi step and moved (a single and a differential output),
    state read through its ports."""
    still_lsb = EXTRA_STILL_LSB if extra else JACOBI_STILL_LSB
    pair = driven_pair_config(tmp_path)[1]
    cfg = config_mod.refold(random_graph_config(
        tmp_path, extra_edges=[pair], relax="jacobi", still_lsb=still_lsb,
        fixed={"node_extra_bits": extra} if extra else None), f"banked:{units}")
    ticks = EXTRA_TICKS if extra else 150
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path / "build",
                 flat=sim == "icarus")
    check(res, sim, ticks, 9 * 2 + 17 + 2)
    check_moved_both_ways(res)
    assert (res["edge_units"], res["cycles_per_tick"]) == (units, -(-17 // units) + 5 + 4)


@pytest.mark.sim
@pytest.mark.parametrize("sim, extra", [("icarus", 0), ("verilator", EXTRA_BITS)])
def test_cocotb_jacobi_streams(sim, extra, tmp_path):
    """The pipelined fabric's jacobi step, its moved reported a round late."""
    # 255 LSBs: three streams together are still often enough within 150 ticks
    cfg = config_mod.refold(jacobi_random_config(tmp_path, 255, extra), "streams:3")
    ticks = 150
    res = verify(cfg, sim=sim, ticks=ticks, build_dir=tmp_path / "build",
                 flat=sim == "verilator")
    check(res, sim, ticks, 3 * (9 * 2 + 16 + 2))
    check_moved_both_ways(res)
    assert (res["streams"], res["cycles_per_tick"]) == (3, 3)


#: The momentum benches: ``momentum_shift`` 1 and 3 extra bits (``still_lsb`` coarse, as
#: the extra bits' benches: runs of 100 ticks then have still ticks too).
MOMENTUM_SHIFT, MOMENTUM_TICKS = 1, 100


@pytest.mark.sim
@pytest.mark.parametrize("fold, sim", [(0, "icarus"), (7, "icarus"), ("serial", "icarus"),
                                       ("streams:3", "icarus")])
def test_cocotb_momentum(fold, sim, tmp_path):
    """``relax = "momentum"`` in every kind of fabric, once each (on Icarus: a Verilator
    build takes minutes here): the parallel one, the serial one (velocity memory) and the
    pipelined one (velocities in the ring) on the random graph (a single and a
    differential output), the folded one on paper-xor."""
    if fold == 7:
        cfg = momentum_xor_config(EXTRA_STILL_LSB, EXTRA_BITS, MOMENTUM_SHIFT)
    else:
        cfg = momentum_random_config(tmp_path, 255 if fold == "streams:3" else EXTRA_STILL_LSB,
                                     EXTRA_BITS, MOMENTUM_SHIFT)
    cfg = config_mod.refold(cfg, fold)
    fmt = Formats.from_config(cfg)
    assert (fmt.relax, fmt.momentum_shift, fmt.node_extra_bits) == ("momentum", 1, 3)
    res = verify(cfg, sim=sim, ticks=MOMENTUM_TICKS, build_dir=tmp_path / "build",
                 flat=sim == "icarus")
    streams = cfg.fabric.streams
    check(res, sim, MOMENTUM_TICKS, streams * (cfg.network.n_nodes * 2 + cfg.network.n_edges
                                               + len(cfg.io.outputs)))
    check_moved_both_ways(res)


@pytest.mark.sim
@pytest.mark.parametrize("fold, sim", [(0, "verilator"), ("serial", "icarus"),
                                       ("streams:2", "icarus")])
def test_cocotb_threshold_mismatch(fold, sim, tmp_path):
    """Per-edge thresholds (``[nonideal] vt_sigma``) in every kind of fabric."""
    cfg = config_mod.refold(mismatched(jacobi_random_config(tmp_path, 255)), fold)
    assert len(set(Formats.from_config(cfg).vt_q.tolist())) == cfg.network.n_edges
    res = verify(cfg, sim=sim, ticks=120, build_dir=tmp_path / "build")
    streams = cfg.fabric.streams
    check(res, sim, 120, streams * (9 * 2 + 16 + 2))


@pytest.mark.sim
@pytest.mark.parametrize("fold, sim", [(0, "icarus"), (0, "verilator"), (5, "icarus"),
                                       (5, "verilator"), ("serial", "icarus"),
                                       ("serial", "verilator")])
def test_cocotb_every_nonideality(fold, sim, tmp_path):
    """Twin mismatch, gains, a dead and a stuck edge, offsets, read noise, a gate leak and
    a DAC in the parallel, the folded (its units share the noise by phase) and the serial
    fabric (noise states in a memory)."""
    cfg = config_mod.refold(nonideal_random_config(tmp_path), fold)
    fmt = Formats.from_config(cfg)
    assert fmt.has_gains and fmt.twin_thresholds and fmt.noise_mul and fmt.droop_mul
    res = verify(cfg, sim=sim, ticks=150, build_dir=tmp_path / "build")
    check(res, sim, 150, 9 * 2 + 16 + 2)


@pytest.mark.sim
def test_cocotb_detects_broken_stillness_rule(tmp_path):
    """A model whose ``still_lsb`` is off (16 + 48 LSBs instead of 16) calls ticks still
    that the fabric reports as moving: mismatches on ``moved`` only (the stillness rule
    changes no state)."""
    res = verify(jacobi_xor_config(JACOBI_STILL_LSB), ticks=120, build_dir=tmp_path,
                 patch={"still_lsb": 48})
    assert res["mismatches"] > 0
    assert set(res["by_signal"]) == {"moved"}
    first = res["first_mismatch"]
    assert first["signal"] == "moved"
    assert (first["expected"], first["got"]) == (0, 1)
    assert 1 <= first["tick"] <= 140


def test_bench_config_from_name_and_overrides():
    from clln.sim.benches.runner import load_bench_config
    spec = {"config": "paper-xor", "overrides": {"fabric.edge_units": 4,
                                                 "schedule.kappa": 0.02},
            "params": {"ticks": 7}}
    bench = load_bench_config(json.dumps(spec))
    assert bench["cfg"].fabric.edge_units == 4
    assert bench["cfg"].schedule.kappa == 0.02
    assert bench["cfg"].network.n_edges == 32
    assert bench["params"] == {"ticks": 7}


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_every_nonideality_streams(sim, tmp_path):
    """Every non-ideality in the pipelined fabric: constant gains, twin thresholds,
    offsets, frozen gates and the droop per edge cell; one read-noise bank shared by the
    three streams, advanced once per learning round (the model's one draw per tick for
    every seed)."""
    cfg = config_mod.refold(nonideal_random_config(tmp_path), "streams:3")
    fmt = Formats.from_config(cfg)
    assert fmt.has_gains and fmt.twin_thresholds and fmt.noise_mul and fmt.droop_mul
    assert fmt.has_offsets and fmt.has_frozen
    res = verify(cfg, sim=sim, ticks=150, build_dir=tmp_path / "build",
                 flat=sim == "verilator")
    check(res, sim, 150, 3 * (9 * 2 + 16 + 2))
    assert (res["streams"], res["cycles_per_tick"]) == (3, 3)
