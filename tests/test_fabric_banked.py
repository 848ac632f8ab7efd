"""The banked fabric (``[fabric] banked``, P edge units) in amaranth.sim against the
fixed-point model, tick for tick; its config, schedule and refusals. The cocotb cases
(Icarus, Verilator) are in test_fabric_cocotb.py."""

import argparse
import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from fabric_configs import (
    EVERY_NONIDEALITY,
    driven_pair_config,
    jacobi_random_config,
    momentum_random_config,
    nonideal_random_config,
    saturating_config,
)
from test_fabric_amaranth import amaranth_run, read_state

from clln import config as config_mod
from clln.cli_common import fold_arg
from clln.errors import ConfigError
from clln.formats import Formats
from clln.gateware.fabric import fabric_shape, make_fabric
from clln.gateware.fabric.banked import BankedFabric, edge_partition
from clln.sim.fixed import FixedPointModel
from clln.sim.problem import Problem

#: Every non-ideality but read noise, which the banked fabric refuses.
NO_NOISE = {k: v for k, v in EVERY_NONIDEALITY.items() if k != "read_noise"}


def check_run(cfg, ticks, switch=7, moves_both=False):
    """Run ``cfg`` in amaranth.sim: every node, gate, output, flag and tick count equals
    the model's after every tick, and ``moved`` at every tick; returns the fabric."""
    got, exp, dut, moves = amaranth_run(cfg, ticks, switch=switch)
    assert isinstance(dut, BankedFabric)
    assert got.shape == exp.shape == (ticks + 1, 2 * dut.n_nodes + dut.n_edges
                                      + len(cfg.io.outputs) + 2)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    if moves_both:
        assert set(moves[:, 1]) == {0, 1}
    gates = slice(2 * dut.n_nodes, 2 * dut.n_nodes + dut.n_edges)
    assert np.any(got[-1, gates] != got[0, gates])        # gates learned something
    assert got[-1, -1] == ticks + 6
    return dut


@pytest.mark.parametrize("units", [1, 2, 3, 5, 32])
def test_banked_paper_xor_matches_model(units):
    """paper-xor (euler, a differential output): 32 edges on P units, so ``C`` = 32, 16,
    11 (the last unit 10 edges), 7 (the last 4) and 1 cycle(s) of edge pass."""
    cfg = config_mod.refold(config_mod.load("paper-xor"), f"banked:{units}")
    dut = check_run(cfg, 6 if units < 32 else 3)
    C = -(-32 // units)
    assert (dut.edge_units, dut.slots) == (units, C)
    # 12 settling nodes (4 driven), 4 more cycles
    assert dut.cycles_per_tick == C + 12 + 4
    assert fabric_shape(cfg) == (units, dut.cycles_per_tick)


def test_banked_paper_regression_matches_model():
    cfg = config_mod.refold(config_mod.load("paper-regression"), "banked:7")
    check_run(cfg, 6)


def test_banked_random_graph_every_nonideality(tmp_path):
    """A random graph with an edge between two driven nodes (its gate learns, it adds
    to no sum), a single-ended and a differential output, on a chip with twin
    thresholds, gains, a dead and a stuck edge, offsets, a gate leak and a DAC
    (``jacobi``)."""
    base = driven_pair_config(tmp_path)[0]
    cfg = dataclasses.replace(base, nonideal=nonideal_random_config(tmp_path, NO_NOISE)
                              .nonideal)
    cfg = config_mod.refold(cfg, "banked:4")
    fmt = Formats.from_config(cfg)
    assert fmt.has_gains and fmt.twin_thresholds and fmt.has_frozen and not fmt.noise_mul
    check_run(cfg, 10)


def test_banked_jacobi_still_matches_model(tmp_path):
    """``jacobi`` with 3 extra node bits and ``still_lsb = 128``: still and moving ticks."""
    cfg = config_mod.refold(jacobi_random_config(tmp_path, still_lsb=128, extra=3),
                            "banked:3")
    check_run(cfg, 18, switch=14, moves_both=True)


def test_banked_momentum_matches_model(tmp_path):
    """``momentum`` (velocities in their memory; a clamped node's stays 0)."""
    cfg = config_mod.refold(momentum_random_config(tmp_path, still_lsb=128, shift=1),
                            "banked:5")
    check_run(cfg, 24, switch=16, moves_both=True)


def test_banked_saturation_flags_match_model():
    """Terms, sums, steps and gate steps saturate: the sticky flags equal the model's."""
    cfg = config_mod.refold(saturating_config(), "banked:3")
    got, exp, _, _ = amaranth_run(cfg, 12, free=0)
    np.testing.assert_array_equal(got, exp)
    assert got[-1, -2] != 0


def test_banked_partition_and_first_bits(tmp_path):
    """Unit u's edges are ``u C .. u C + C - 1``; a bank's first edge at a node of a
    tick writes its term (``first`` bits), the others add to it."""
    assert edge_partition(32, 5) == (7, [list(range(i, min(i + 7, 32)))
                                         for i in range(0, 32, 7)])
    cfg = config_mod.refold(driven_pair_config(tmp_path)[0], "banked:3")
    dut, m = make_fabric(cfg), Module()
    rows = dut._rows(dut._registers(m))
    dut._MustUse__used = m._MustUse__used = True      # looked into, not elaborated
    assert len(rows) == dut.cycles_per_tick == 6 + 5 + 4
    edges = np.asarray(cfg.network.edges)
    for u, mine in enumerate(dut.unit_edges):
        for side, col in (("a", 0), ("b", 1)):
            ends = [int(edges[e][col]) for e in mine]
            firsts = [rows[c]["units"][u][f"first_{side}"] for c in range(len(mine))]
            assert firsts == [int(n not in ends[:c]) for c, n in enumerate(ends)]
    assert [r["node"] for r in rows if r["nvalid"]] == dut.settling == [4, 5, 6, 7, 8]


def test_banked_config_and_refusals(tmp_path):
    xor = config_mod.load("paper-xor")
    assert config_mod.refold(xor, "banked:32").fabric.banked
    with pytest.raises(ConfigError, match="fabric.edge_units"):
        config_mod.refold(xor, "banked:33")
    with pytest.raises(ConfigError, match="fabric.banked.*edge_units = P"):
        config_mod.refold(xor, "banked:0")
    assert fold_arg("banked:4") == "banked:4"
    with pytest.raises(argparse.ArgumentTypeError, match="banked:P needs P from 1"):
        fold_arg("banked:0")
    with pytest.raises(argparse.ArgumentTypeError, match="'banked:P', got 'banked:x'"):
        fold_arg("banked:x")
    noisy = config_mod.refold(nonideal_random_config(tmp_path), "banked:2")
    with pytest.raises(ConfigError, match="read noise is not implemented in the banked"):
        make_fabric(noisy)


def test_banked_tick_pauses_while_run_is_low():
    """``run`` low in the middle of a tick pauses it (every pipeline stage and memory
    read holds): ticks with run dropped on a third of their cycles give the model's
    bits."""
    cfg = config_mod.refold(config_mod.load("paper-xor"), "banked:3")
    dut = make_fabric(cfg)
    model = FixedPointModel(cfg, seeds=[cfg.learning.seed])
    fmt, p = model.formats, Problem.from_config(cfg)
    drive = fmt.volts_to_v(p.drive)[1, cfg.driven_nodes()]
    rng = np.random.default_rng(5)
    got = []

    async def bench(ctx):
        while ctx.get(dut.control.busy):
            await ctx.tick()
        ctx.set(dut.control.sample_we, 1)
        for addr, v in enumerate(list(drive) + list(fmt.volts_to_v(p.targets)[1])):
            ctx.set(dut.control.sample_addr, addr)
            ctx.set(dut.control.sample_data, int(v))
            await ctx.tick()
        ctx.set(dut.control.sample_we, 0)
        for t in range(4):
            ctx.set(dut.control.learn, t % 2)
            done = 0
            while not done:
                ctx.set(dut.control.run, int(rng.random() > 0.35))
                done = ctx.get(dut.control.tick_done)
                await ctx.tick()
            ctx.set(dut.control.run, 0)
            got.append([v for part in await read_state(ctx, dut) for v in part])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for t in range(4):
        model.run(1, 1, t % 2 == 1)
        np.testing.assert_array_equal(got[t], np.concatenate(
            [model.v_free.ravel(), model.v_clamped.ravel(), model.gates.ravel()]))
