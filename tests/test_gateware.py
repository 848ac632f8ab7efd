"""Gateware: the Amaranth fabric against the fixed-point model, export, cocotb benches."""

import collections
import json
import tomllib

import numpy as np
import pytest
from amaranth.hdl import Signal
from amaranth.sim import Simulator

from clln import cli
from clln import config as config_mod
from clln.errors import ConfigError
from clln.gateware.export import generate, top_name
from clln.gateware.fabric import make_fabric
from clln.gateware.serial import serial_schedule
from clln.sim.benches.runner import verify
from clln.sim.benches.stimulus import unpack
from clln.sim.fixed import FixedPointModel


def builtin_dict(name):
    """A built-in config as the dict ``config.parse`` takes."""
    return tomllib.loads(config_mod.resolve(name).read_text())


def random_graph_config(tmp_path, seed=3, extra_edges=()):
    """A random connected 9-node graph, one single-ended and one differential output.

    ``extra_edges`` are added as given (e.g. an edge between two driven nodes).
    """
    rng = np.random.default_rng(seed)
    n = 9
    order = rng.permutation(n)
    edges = {tuple(sorted((int(order[i]), int(order[rng.integers(i)])))) for i in range(1, n)}
    while len(edges) < 16:
        a, b = (int(v) for v in rng.choice(n, 2, replace=False))
        edges.add((min(a, b), max(a, b)))
    edges = [[a, b] if rng.random() < 0.5 else [b, a] for a, b in sorted(edges)]
    edges += [list(e) for e in extra_edges]
    (tmp_path / "data.csv").write_text(
        "x1,x2,y1,y2\n0.0,0.45,0.2,-0.05\n0.45,0.1,0.3,0.08\n0.2,0.2,0.15,0.0\n")
    data = {
        "name": "random-graph",
        "network": {"topology": "edges", "nodes": n, "edges": edges},
        "device": {"vt": 0.62, "k": 8.5e-4},
        "io": {"inputs": [0, 1], "rails": [[2, 0.0], [3, 0.45]], "outputs": [4, [5, 6]]},
        "learning": {"eta": 0.5, "alpha": 20.0, "gate_init": [1.0, 2.5], "gate_min": 0.7,
                     "gate_max": 4.0, "epochs": 1, "seed": 1},
        "task": {"dataset": "data.csv"},
        "schedule": {"settle_ticks": 30, "learn_ticks": 10, "kappa": 0.02},
    }
    return config_mod.parse(data, "<random>", tmp_path)


def narrow_config():
    """paper-xor with non-default (narrower, coarser) fixed-point widths."""
    data = builtin_dict("paper-xor")
    data["fixed"] = {"v_frac": 12, "v_bits": 15, "g_frac": 18, "g_bits": 22,
                     "term_bits": 30, "acc_bits": 31, "dv_bits": 14, "dg_bits": 20,
                     "kappa_bits": 5, "lr_bits": 6, "eta_frac": 6}
    return config_mod.parse(data, "<narrow>")


async def read_state(ctx, dut):
    """Free and clamped node voltages and gates of a paused fabric (flat or through the
    read ports of the serial fabric)."""
    if hasattr(dut, "v_free"):
        return ctx.get(dut.v_free), ctx.get(dut.v_clamped), ctx.get(dut.gates)
    vf, vc, g = [], [], []
    for i in range(max(dut.n_nodes, dut.n_edges)):
        ctx.set(dut.node_raddr, min(i, dut.n_nodes - 1))
        ctx.set(dut.gate_raddr, min(i, dut.n_edges - 1))
        await ctx.tick()
        if i < dut.n_nodes:
            vf.append(ctx.get(dut.v_free_rdata))
            vc.append(ctx.get(dut.v_clamped_rdata))
        if i < dut.n_edges:
            g.append(ctx.get(dut.gate_rdata))
    return vf, vc, g


def amaranth_run(cfg, ticks, switch=7):
    """Run the fabric in amaranth.sim; return (dut states, model states) per tick."""
    dut = make_fabric(cfg)
    model = FixedPointModel(cfg, seeds=[cfg.learning.seed])
    fmt = model.formats
    from clln.sim.problem import Problem
    p = Problem.from_config(cfg)
    drive = fmt.volts_to_v(p.drive)[:, cfg.driven_nodes()]
    targets = fmt.volts_to_v(p.targets)
    got, exp = [], []

    async def bench(ctx):
        while hasattr(dut, "busy") and ctx.get(dut.busy):     # serial: clearing its RAM
            await ctx.tick()
        for t in range(ticks):
            ex, learn = (t // switch) % p.n_examples, (t // 3) % 2 == 1
            if t % switch == 0:
                ctx.set(dut.sample_we, 1)
                for addr, v in enumerate(list(drive[ex]) + list(targets[ex])):
                    ctx.set(dut.sample_addr, addr)
                    ctx.set(dut.sample_data, int(v))
                    await ctx.tick()
                ctx.set(dut.sample_we, 0)
            ctx.set(dut.run, 1)
            ctx.set(dut.learn, learn)
            await ctx.tick().repeat(dut.cycles_per_tick)
            ctx.set(dut.run, 0)
            model.run(1, ex, learn)
            got.append(np.concatenate([*(await read_state(ctx, dut)), [ctx.get(dut.ticks)]]))
            exp.append(np.concatenate([model.v_free[0], model.v_clamped[0], model.gates[0],
                                       [t + 1]]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got), np.array(exp), dut


# -- amaranth.sim unit checks ---------------------------------------------------------------

@pytest.mark.parametrize("units", [0, 1, 5, 31, "serial"])
def test_amaranth_fabric_matches_model(units):
    cfg = config_mod.refold(config_mod.load("paper-xor"), units)
    got, exp, dut = amaranth_run(cfg, 30 if units else 60)
    # serial: 12 settling nodes x 2 networks x 4 edges, the 16 edges at the 4 driven
    # nodes are seen from one end only, plus three cycles to drain the pipeline and a commit
    if units == "serial":
        assert dut.cycles_per_tick == 12 * 2 * 4 + 4
    else:
        assert dut.cycles_per_tick == (-(-32 // units) if units else 1)
    assert got.shape == exp.shape and got.shape[1] == 16 + 16 + 32 + 1
    np.testing.assert_array_equal(got, exp)
    assert got[-1, -1] == (30 if units else 60)
    assert np.any(got[-1, 32:64] != got[0, 32:64])        # gates learned something


def test_serial_fabric_reset_clears_its_memories():
    from amaranth.hdl import ResetInserter
    cfg = config_mod.refold(config_mod.load("paper-xor"), "serial")
    dut = make_fabric(cfg)
    reset = Signal()
    top = ResetInserter(reset)(dut)

    async def bench(ctx):
        while ctx.get(dut.busy):
            await ctx.tick()
        ctx.set(dut.run, 1)
        ctx.set(dut.learn, 1)
        await ctx.tick().repeat(5 * dut.cycles_per_tick)
        ctx.set(dut.run, 0)
        vf, vc, g = await read_state(ctx, dut)
        assert any(vf) and any(vc) and list(g) != list(dut.gate_init)
        ctx.set(dut.run, 1)                  # asked to run on: waits for the clearing
        ctx.set(reset, 1)
        await ctx.tick()
        ctx.set(reset, 0)
        cycles = 0
        while ctx.get(dut.busy):
            assert ctx.get(dut.ticks) == 0
            await ctx.tick()
            cycles += 1
        assert cycles == 2 * 16 + 1
        ctx.set(dut.run, 0)
        vf, vc, g = await read_state(ctx, dut)
        assert not any(vf) and not any(vc) and list(g) == list(dut.gate_init)
        assert ctx.get(dut.ticks) == 0

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_amaranth_gate_restore_and_flags():
    cfg = config_mod.load("paper-regression")
    dut = make_fabric(cfg)

    async def bench(ctx):
        assert ctx.get(dut.gates[3]) == int(dut.gate_init[3])
        ctx.set(dut.gate_we, 1)
        ctx.set(dut.gate_addr, 3)
        ctx.set(dut.gate_data, 12345678)
        await ctx.tick()
        ctx.set(dut.gate_we, 0)
        assert ctx.get(dut.gates[3]) == 12345678
        for e in (3, 4, 3):                          # registered read port
            ctx.set(dut.gate_raddr, e)
            await ctx.tick()
            assert ctx.get(dut.gate_rdata) == ctx.get(dut.gates[e])
        assert ctx.get(dut.gate_rdata) == 12345678
        assert ctx.get(dut.ticks) == 0
        assert ctx.get(dut.saturated) == 0
        assert ctx.get(dut.v_free[7]) == 0           # rail register not applied yet
        ctx.set(dut.run, 1)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.ticks) == 3
        assert ctx.get(dut.v_free[7]) == round(0.45 * 2 ** 16)   # rail held at 0.45 V

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_unpack_signed_vectors():
    values = np.array([[-3, 5, -(1 << 17), (1 << 17) - 1]])
    raw = sum((int(v) & ((1 << 18) - 1)) << (18 * i) for i, v in enumerate(values[0]))
    np.testing.assert_array_equal(unpack([raw, 0], 18, 4), np.vstack([values, [[0] * 4]]))


# -- export -------------------------------------------------------------------------------

def test_generate_writes_verilog_and_manifest(tmp_path):
    cfg = config_mod.refold(config_mod.load("paper-xor"), 6)
    out = generate(cfg, tmp_path / "hdl")
    text = (tmp_path / "hdl" / "paper-xor.v").read_text()
    assert f"module {top_name(cfg)}(" in text
    info = json.loads((tmp_path / "hdl" / "manifest.json").read_text())
    assert info == json.loads(json.dumps(out["info"]))
    assert info["top"] == "clln_paper_xor"
    assert (info["nodes"], info["edges"], info["edge_units"], info["cycles_per_tick"]) == \
        (16, 32, 6, 6)
    assert info["ports"]["v_free"] == {"dir": "out", "width": 16 * 17}     # v_bits 17
    assert info["ports"]["gates"] == {"dir": "out", "width": 32 * 23}      # g_bits 23
    assert info["ports"]["sample_addr"]["width"] == 3          # 4 drives + 1 target
    assert info["formats"]["kappa_mul"] * 2.0 ** -info["formats"]["kappa_shift"] == \
        pytest.approx(cfg.schedule.kappa, rel=0.05)
    assert info["formats"]["leak_q"] == 512
    assert info["driven_nodes"] == [15, 13, 5, 7]


def test_generate_flat_netlist(tmp_path):
    cfg = config_mod.load("paper-regression")
    out = generate(cfg, tmp_path, flat=True)
    text = (tmp_path / "paper-regression.v").read_text()
    assert text.count("\nmodule ") == 1 and "module clln_paper_regression(" in text
    assert out["info"]["netlist"] == "flat"
    assert out["info"]["ports"]["outputs"] == {"dir": "out", "width": 19}


def test_generate_refuses_unstable_kappa(tmp_path):
    data = builtin_dict("paper-xor")
    data["schedule"]["kappa"] = 0.5
    cfg = config_mod.parse(data, "<unstable>")
    with pytest.raises(ConfigError, match="kappa"):
        generate(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def driven_pair_config(tmp_path):
    """The random graph plus an edge between two driven nodes, and that edge."""
    base = random_graph_config(tmp_path)
    have = {frozenset(e) for e in np.asarray(base.network.edges).tolist()}
    pair = next((a, b) for a in base.driven_nodes() for b in base.driven_nodes()
                if a < b and frozenset((a, b)) not in have)
    return random_graph_config(tmp_path, extra_edges=[pair]), pair


def test_serial_schedule_visits_every_edge_term_and_gate_once(tmp_path):
    cfg, pair = driven_pair_config(tmp_path)
    schedule = serial_schedule(cfg)
    driven = set(cfg.driven_nodes())
    edges = [tuple(e) for e in np.asarray(cfg.network.edges).tolist()]
    terms = collections.Counter((v.node, v.net, v.edge) for v in schedule if v.term)
    expected = {(n, net, e) for e, ab in enumerate(edges) for n in ab if n not in driven
                for net in (0, 1)}
    assert set(terms) == expected and set(terms.values()) == {1}
    assert sorted(v.edge for v in schedule if v.gate) == list(range(len(edges)))
    gate_only = [v for v in schedule if not v.term]
    both_driven = [e for e, (a, b) in enumerate(edges) if {a, b} <= driven]
    assert [v.edge for v in gate_only] == both_driven and edges.index(pair) in both_driven
    assert all(v.gate for v in gate_only)
    for i, v in enumerate(schedule):
        if v.term:
            a, b = edges[v.edge]
            assert (v.node, v.other) == ((b, a) if v.plus else (a, b))
            # no later visit reads a gate once it has been updated
            assert not (v.gate and any(w.edge == v.edge for w in schedule[i + 1:]))
    groups = [(v.node, v.net) for v in schedule if v.first]
    assert groups == [(v.node, v.net) for v in schedule if v.last]
    assert len(groups) == len(set(groups)) == 2 * len(set(n for n, _ in groups))


# -- cocotb benches ------------------------------------------------------------------------

def check(res, sim, ticks, n_values):
    assert res["sim"] == sim
    assert res["ticks"] == ticks
    assert res["compared"] == (ticks + 1) * (n_values + 2)
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["first_mismatch"] is None


@pytest.fixture(autouse=True)
def quick_verilator_build(monkeypatch):
    """Build Verilator models without C++ optimisation: the tests run few ticks."""
    monkeypatch.setenv("CLLN_VERILATOR_OPT", "-O0")


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_paper_xor(sim, tmp_path):
    res = verify(config_mod.load("paper-xor"), sim=sim, ticks=300, build_dir=tmp_path)
    check(res, sim, 300, 16 * 2 + 32)
    assert res["cycles_per_tick"] == 1


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_random_graph(sim, tmp_path):
    cfg = random_graph_config(tmp_path)
    res = verify(cfg, sim=sim, ticks=250, build_dir=tmp_path / "build", flat=False)
    check(res, sim, 250, 9 * 2 + 16)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_paper_regression(sim, tmp_path):
    res = verify(config_mod.load("paper-regression"), sim=sim, ticks=300, build_dir=tmp_path,
                 flat=False)
    check(res, sim, 300, 16 * 2 + 32)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_narrow_formats(sim, tmp_path):
    res = verify(narrow_config(), sim=sim, ticks=300, build_dir=tmp_path, flat=False)
    check(res, sim, 300, 16 * 2 + 32)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_serial_random_graph(sim, tmp_path):
    cfg = config_mod.refold(driven_pair_config(tmp_path)[0], "serial")
    res = verify(cfg, sim=sim, ticks=150, build_dir=tmp_path / "build", flat=sim == "icarus")
    check(res, sim, 150, 9 * 2 + 17)
    assert res["edge_units"] == 1
    assert res["cycles_per_tick"] == len(serial_schedule(cfg)) + 4


@pytest.mark.parametrize("flat", [True, False])
def test_cocotb_folded_icarus(flat, tmp_path):
    cfg = config_mod.refold(config_mod.load("paper-xor"), 7)
    res = verify(cfg, ticks=120, build_dir=tmp_path, flat=flat)
    check(res, "icarus", 120, 16 * 2 + 32)
    assert (res["edge_units"], res["cycles_per_tick"]) == (7, 5)
    assert res["cycles"] >= 120 * 5
    assert res["netlist"] == ("flat" if flat else "hierarchical")


def test_cocotb_detects_broken_model(tmp_path):
    res = verify(config_mod.load("paper-xor"), ticks=120, build_dir=tmp_path,
                 patch={"lr_mul": 1}, flat=False)
    assert res["mismatches"] > 0
    first = res["first_mismatch"]
    assert first["signal"].startswith("gates[")
    assert first["expected"] != first["got"]
    assert 1 <= first["tick"] <= 120


# -- CLI ----------------------------------------------------------------------------------

def test_cli_generate(tmp_path, capsys):
    assert cli.main(["generate", "paper-regression", "-o", str(tmp_path)]) == 0
    assert "1 cycle(s) per tick" in capsys.readouterr().out
    assert (tmp_path / "paper-regression.v").stat().st_size > 10000
    assert json.loads((tmp_path / "manifest.json").read_text())["edges"] == 32


def test_cli_verify_json(tmp_path, capsys):
    code = cli.main(["verify", "paper-xor", "--ticks", "50", "--json",
                     "--netlist", "hierarchical",
                     "--build-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["ticks"], out["mismatches"], out["first_mismatch"]) == (50, 0, None)


def test_cli_verify_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "paper-xor", "--ticks", "0"])
    assert exit_info.value.code == 2
    assert "--ticks: must be >= 1" in capsys.readouterr().err
    assert cli.main(["generate", "no-such-config", "-o", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


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
