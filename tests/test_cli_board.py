"""``clln run`` and ``clln build`` (clln.cli_board) with the golden model as the device."""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from clln import cli, cli_board
from clln import config as config_mod
from clln.errors import CllnError
from clln.host.driver import Device, LoopbackTransport
from clln.sim.system import SystemModel


def board_cli(argv):
    parser = argparse.ArgumentParser(prog="clln")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_board.add_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def short_xor(tmp_path):
    text = config_mod.resolve("paper-xor").read_text()
    # a fixed settle phase of 25 ticks: streams then train as each seed alone
    text = text.replace("settle_ticks = 1000", "settle_ticks = 25").replace(
        'settle = "still"', 'settle = "fixed"').replace('name = "paper-xor"', 'name = "short-xor"')
    assert "settle_ticks = 25" in text and 'settle = "fixed"' in text
    path = tmp_path / "short-xor.toml"
    path.write_text(text)
    return path


class ClockedModel(SystemModel):
    """The golden model with a clock (25 MHz in IDENTIFY) and a cycle counter of 7 cycles
    per tick of the last run (the model itself counts none)."""

    def __init__(self, cfg):
        super().__init__(cfg, clock_hz=25e6)
        self.run_cycles = 0

    def run(self, epochs, learn):
        before = self.twin.ticks
        super().run(epochs, learn)
        self.run_cycles = 7 * (self.twin.ticks - before)

    def status(self):
        return dataclasses.replace(super().status(), cycles=self.run_cycles)


def model_device(monkeypatch, devices, model_class=SystemModel):
    def open_device(cfg, args, seed):
        model = model_class(devices.get("cfg", cfg))
        devices["model"] = model
        t = LoopbackTransport(model.respond)
        return Device(t), t
    monkeypatch.setattr(cli_board, "_open_device", open_device)


def test_run_json_matches_clln_train(short_xor, tmp_path, monkeypatch, capsys):
    model_device(monkeypatch, {}, ClockedModel)
    ckpt, plot = tmp_path / "gates.json", tmp_path / "run.png"
    assert board_cli(["run", str(short_xor), "--sim", "--epochs", "4", "--seed", "3",
                      "--json", "--checkpoint", str(ckpt), "--plot", str(plot)]) == 0
    run = json.loads(capsys.readouterr().out)
    assert cli.main(["train", str(short_xor), "--model", "fixed", "--epochs", "4",
                     "--seed", "3", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert run["gates_final"] == ref["gates_final"]
    assert run["outputs_final"] == ref["outputs_final"]
    assert len(run["mse_per_epoch"]) == 4
    np.testing.assert_allclose(run["mse_per_epoch"], ref["mse_per_epoch"], rtol=2e-3)
    assert run["ticks"] == 4 * 4 * 26 + 4 * 26
    # the cycles of every run (4 epochs, the inference pass) at the clock of IDENTIFY
    assert (run["cycles"], run["clock_hz"]) == (7 * run["ticks"], 25_000_000)
    assert run["board_seconds"] == pytest.approx(7 * run["ticks"] / 25e6)
    assert json.loads(ckpt.read_text())["gates_final"] == ref["gates_final"]
    assert plot.stat().st_size > 10000
    assert run["streams"] == [{"seed": 3, **{k: run[k] for k in (
        "mse_per_epoch", "error_sums", "mse_final", "outputs_final", "gates_final",
        "gates_at_bounds", "frozen")}}]
    assert run["gates_at_bounds"] == ref["gates_at_bounds"]
    assert run["frozen"] is ref["frozen"] is False


def test_run_with_streams_matches_clln_train_of_each_seed(short_xor, tmp_path, monkeypatch,
                                                         capsys):
    """A fabric of 3 networks: stream s is ``clln train --model fixed --seed 3 + s``."""
    import matplotlib.figure
    devices = {}
    model_device(monkeypatch, devices)
    curves, savefig = [], matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        curves.extend(line.get_label() for line in fig.axes[0].get_lines())
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    ckpt, plot = tmp_path / "gates.json", tmp_path / "run.png"
    assert board_cli(["run", str(short_xor), "--sim", "--fabric", "streams:3", "--epochs", "4",
                      "--seed", "3", "--json", "--checkpoint", str(ckpt), "--plot",
                      str(plot)]) == 0
    run = json.loads(capsys.readouterr().out)
    assert devices["model"].identity.streams == 3
    assert cli.main(["train", str(short_xor), "--model", "fixed", "--epochs", "4",
                     "--seeds", "3-5", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in run["streams"]] == [3, 4, 5]
    for s, r in enumerate(run["streams"]):
        assert r["gates_final"] == ref["gates_final"][s]
        assert r["outputs_final"] == ref["outputs_final"][s]
        np.testing.assert_allclose(r["mse_per_epoch"], ref["mse_per_epoch"][s], rtol=2e-3)
        np.testing.assert_allclose(r["mse_final"], ref["mse_final"][s], rtol=2e-3)
    assert len({r["mse_final"] for r in run["streams"]}) == 3
    for key in ("mse_per_epoch", "error_sums", "mse_final", "outputs_final", "gates_final"):
        assert run[key] == run["streams"][0][key], key
    assert run["seed"] == 3 and run["ticks"] == 4 * 4 * 26 + 4 * 26     # ticks of one stream
    saved = json.loads(ckpt.read_text())
    assert saved["gates_final"] == ref["gates_final"][0]
    assert [g["seed"] for g in saved["streams"]] == [3, 4, 5]
    assert [g["gates_final"] for g in saved["streams"]] == ref["gates_final"]
    fmt = devices["model"].fmt
    assert [g["gates_q"] for g in saved["streams"]] == [
        fmt.volts_to_g(np.array(g)).tolist() for g in ref["gates_final"]]
    assert [c for c in curves if c.startswith("seed")] == ["seed 3", "seed 4", "seed 5"]
    assert plot.stat().st_size > 10000


def test_run_text_output_with_streams(short_xor, tmp_path, monkeypatch, capsys):
    model_device(monkeypatch, {})
    argv = ["run", str(short_xor), "--sim", "--fabric", "streams:2", "--epochs", "2",
            "--seed", "6", "--checkpoint", str(tmp_path / "g.json")]
    assert board_cli(argv + ["--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert board_cli(argv) == 0
    out = capsys.readouterr().out
    assert "2 epochs on sim" in out and "seeds 6, 7, cyclic order" in out
    final = " ".join(f"{r['mse_final']:.3e}" for r in run["streams"])
    assert f"final (inference pass): mse {final} V^2" in out
    second = " ".join(f"{r['mse_per_epoch'][1]:.3e}" for r in run["streams"])
    assert f"epoch      2: mse {second} V^2" in out
    o = [np.array2string(np.array(r["outputs_final"][3]), precision=4) for r in run["streams"]]
    assert f"example 3: output {o[0]} {o[1]} V, target" in out


def test_run_refuses_another_bitstream(short_xor, monkeypatch, capsys):
    model_device(monkeypatch, {"cfg": config_mod.load("paper-regression")})
    with pytest.raises(CllnError, match="another config"):
        board_cli(["run", str(short_xor), "--sim", "--epochs", "1"])


def test_run_text_output(short_xor, tmp_path, monkeypatch, capsys):
    model_device(monkeypatch, {}, ClockedModel)
    assert board_cli(["run", str(short_xor), "--sim", "--epochs", "2",
                      "--checkpoint", str(tmp_path / "g.json"), "--order", "lfsr"]) == 0
    out = capsys.readouterr().out
    assert "2 epochs on sim" in out and "epoch      2: mse" in out and "example 3" in out
    ticks = 3 * 4 * 26
    assert f"board time: {7 * ticks / 25e6:.4g} s ({7 * ticks} cycles at 25 MHz)" in out


def test_run_board_time_without_a_clock(short_xor, tmp_path, monkeypatch, capsys):
    """A device whose IDENTIFY names no clock: on a port the board time is not known; on
    the simulated board it is the bench's clock (the golden model counts 0 cycles)."""
    from clln.flows import SIM_CLOCK_HZ
    model_device(monkeypatch, {})
    argv = ["run", str(short_xor), "--epochs", "1", "--checkpoint", str(tmp_path / "g.json")]
    assert board_cli(argv + ["--port", "/dev/null", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert (run["cycles"], run["clock_hz"], run["board_seconds"]) == (0, None, None)
    assert board_cli(argv + ["--port", "/dev/null"]) == 0
    assert "board time: 0 cycles (the device reports no clock)" in capsys.readouterr().out
    assert board_cli(argv + ["--sim", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert (run["cycles"], run["clock_hz"], run["board_seconds"]) == (0, SIM_CLOCK_HZ, 0.0)
    assert SIM_CLOCK_HZ == 100_000_000


# -- fold search (fake builds) -----------------------------------------------------------

def fake_builds(monkeypatch, tmp_path, lut_of, budget=6000, fmax_of=lambda p: 50.0):
    from clln.boards import system as bs
    from clln.boards.targets import BuildError, BuildReport
    tried = []

    def build_system(cfg, board, folder, *args):
        p_units = "serial" if cfg.fabric.serial else cfg.fabric.edge_units
        tried.append(p_units)
        folder.mkdir(parents=True, exist_ok=True)
        lut = lut_of(p_units)
        (folder / "top.tim").write_text(f"Info: \t  TRELLIS_COMB:  {lut}/ {budget}  50%\n")
        if lut > budget:
            raise BuildError(f"{board} build failed: placement")
        if fmax_of(p_units) < 25:
            raise BuildError(f"{board}: timing failed: fmax")
        rep = BuildReport(board, folder / "top.bit", 25.0, fmax_of(p_units), lut, 0, 2, 1.0, {})
        if p_units == "serial":
            return rep, 1, 100
        return rep, p_units, -(-32 // p_units)

    monkeypatch.setattr(bs, "build_system", build_system)
    return tried


def unsplit_ulx3s(monkeypatch):
    """The ULX3S-85F with products split over several multiplier blocks (as Yosys does):
    paper-xor's fully parallel fabric then needs more blocks than the part has."""
    from clln.boards import system as bs
    from clln.boards.targets import TARGETS
    plain = dataclasses.replace(TARGETS["ulx3s-85f"], split_products=False)
    monkeypatch.setattr(bs, "target", lambda board: plain)


def test_fold_search_finds_largest_fit(monkeypatch, tmp_path):
    from clln.boards.system import build_fitting
    unsplit_ulx3s(monkeypatch)
    tried = fake_builds(monkeypatch, tmp_path, lambda p: 1000 + 500 * p)
    rep, units, cpt, attempts = build_fitting(config_mod.load("paper-xor"), "ulx3s-85f",
                                              tmp_path)
    assert (units, cpt, rep.lut) == (10, 4, 6000)
    # 32 units would need about 384 multiplier blocks (156 on the board): never built
    assert tried[:2] == [13, 1] and 11 in tried and len(tried) <= 6
    assert attempts[0].edge_units == 32 and attempts[0].why.startswith("skipped: about 384")
    assert [a.ok for a in attempts if a.edge_units == 11] == [False]
    assert "TRELLIS_COMB 6500/6000" in [a.why for a in attempts if a.edge_units == 11][0]


def test_fold_search_timing_and_nothing_fits(monkeypatch, tmp_path):
    from clln.boards.system import build_fitting
    from clln.boards.targets import BuildError
    unsplit_ulx3s(monkeypatch)
    fake_builds(monkeypatch, tmp_path, lambda p: 1000 + 100 * p,
                fmax_of=lambda p: 60.0 - 3 * p)            # timing fails above 11 units
    _, units, _, _ = build_fitting(config_mod.load("paper-xor"), "ulx3s-85f", tmp_path / "a")
    assert units == 11
    tried = fake_builds(monkeypatch, tmp_path,
                        lambda p: 6500 if p == "serial" else 7000 + 100 * p)
    with pytest.raises(BuildError, match=r"even as the serial fabric \(needs TRELLIS_COMB "
                       r"6500/6000\); edge_units 1: needs TRELLIS_COMB 7100/6000; "
                       r"edge_units 13: needs TRELLIS_COMB 8300/6000; edge_units 32: skipped"):
        build_fitting(config_mod.load("paper-xor"), "ulx3s-85f", tmp_path / "b")
    assert tried[-3:] == [13, 1, "serial"]


def test_fold_search_falls_back_to_serial(monkeypatch, tmp_path):
    from clln.boards.system import build_fitting
    unsplit_ulx3s(monkeypatch)
    tried = fake_builds(monkeypatch, tmp_path,
                        lambda p: 5000 if p == "serial" else 7000 + 100 * p)
    rep, units, cpt, attempts = build_fitting(config_mod.load("paper-xor"), "ulx3s-85f",
                                              tmp_path)
    assert tried == [13, 1, "serial"] and (units, cpt, rep.lut) == (1, 100, 5000)
    assert [(a.serial, a.ok) for a in attempts] == [(False, False), (False, False),
                                                    (False, False), (True, True)]


def test_fold_search_on_ulx3s_starts_fully_parallel(monkeypatch, tmp_path):
    """With one multiplier block per product, paper-xor's 96 products fit the ECP5-85F's
    156 blocks: the search builds the fully parallel fabric first."""
    from clln.boards.system import build_fitting
    tried = fake_builds(monkeypatch, tmp_path, lambda p: 1000 + 100 * p)
    rep, units, cpt, attempts = build_fitting(config_mod.load("paper-xor"), "ulx3s-85f",
                                              tmp_path)
    assert tried == [32] and (units, cpt) == (32, 1) and len(attempts) == 1


def test_fold_search_skips_folds_beyond_the_multipliers(monkeypatch, tmp_path):
    from clln.boards.system import build_fitting, multiplier_blocks
    from clln.boards.targets import BuildError
    cfg = config_mod.load("paper-xor")
    # iCE40UP5K: 8 DSPs; one edge unit needs 2 edge terms of 24 x 24 bits (4 blocks each)
    # and a learning product of 20 x 20 bits (4 blocks); the serial fabric one of each
    assert [multiplier_blocks(cfg, u, 16) for u in (1, 2, "serial")] == [12, 24, 8]
    # split (ECP5): one block per product, 3 per edge unit
    assert [multiplier_blocks(cfg, u, 18, split=True) for u in (32, "serial")] == [96, 2]
    tried = fake_builds(monkeypatch, tmp_path, lambda p: 3000, budget=5280)
    rep, units, cpt, attempts = build_fitting(cfg, "icebreaker", tmp_path / "a")
    assert tried == ["serial"] and (units, cpt) == (1, 100)
    from clln.boards import system as bs
    from clln.boards.targets import TARGETS
    small = dataclasses.replace(TARGETS["icebreaker"], dsps=4)    # a smaller part
    monkeypatch.setattr(bs, "target", lambda board: small)
    with pytest.raises(BuildError, match=r"even the serial fabric needs about 8 multiplier "
                                         r"blocks \(of 4\)"):
        build_fitting(cfg, "icebreaker", tmp_path / "b")


TINY = """name = "tiny"
[network]
topology = "edges"
nodes = 6
edges = [[0, 2], [2, 3], [3, 1], [2, 4], [4, 5], [5, 3], [1, 4]]
[device]
vt = 0.62
k = 8.5e-4
[io]
inputs = [0]
rails = [[1, 0.45]]
outputs = [[4, 5]]
[learning]
eta = 0.5
alpha = 40.0
gate_init = [1.0, 2.5]
gate_min = 0.7
gate_max = 4.0
epochs = 2
seed = 3
[task]
dataset = "tiny.csv"
[schedule]
settle_ticks = 6
learn_ticks = 2
kappa = 0.02
[fabric]
edge_units = 1
"""


@pytest.mark.build
def test_build_paper_xor_icebreaker(capsys):
    """paper-xor's training system (serial fabric, jacobi step, stillness flag, cycle
    counter) fits the iCE40UP5K again and meets timing at the oscillator's 12 MHz
    (``docs/boards.md``: 5,275 of 5,280 logic cells, it needed 6,271; routed with the
    target's nextpnr seed; about 5 minutes). The default build's plan chooses the serial
    fabric from estimates and builds it once."""
    assert board_cli(["build", "paper-xor", "--board", "icebreaker", "--json",
                      "--build-dir", "build/tests/system-paper-xor-icebreaker"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["serial"] and out["cycles_per_tick"] == 100 and out["clock_mhz"] == 12
    assert out["fmax_mhz"] >= 12
    assert 5000 < out["lut"] <= 5280 and out["dsp"] == 7 and out["bram"] == 24
    assert out["ticks_per_second"] == pytest.approx(12e6 / 100)
    assert out["seconds_per_example"] == pytest.approx(out["ticks_per_example"] * 100 / 12e6)
    assert out["seconds_per_example"] < 1.3e-3          # seed 0: 140.8 ticks, 1.17 ms
    assert out["attempts"] == [] and out["plan"]["fabric"] == "serial"
    assert out["plan"]["estimated_lut"] == pytest.approx(out["lut"], rel=0.05)
    assert out["plan"]["estimated_dsp"] >= out["dsp"]
    assert Path(out["bitstream"]).name == "top.bin" and Path(out["bitstream"]).exists()


@pytest.mark.slow_build
def test_build_paper_xor_tangnano9k(capsys):
    """The paper network's training system on the Tang Nano 9K (about 10 minutes).

    The plan builds the serial fabric (one edge unit would need about three times the LUTs
    of the GW1NR-9), which fits with its products in the DSP blocks and its memories in
    block RAM, and ``--clock max`` rebuilds it through the rPLL.
    """
    assert board_cli(["build", "paper-xor", "--board", "tangnano9k", "--clock", "max",
                      "--json", "--build-dir", "build/tests/system-paper-xor-tangnano9k"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["serial"] and out["cycles_per_tick"] == 100
    assert out["fmax_mhz"] >= out["clock_mhz"] > 27
    assert out["lut"] <= 8640 and 0 < out["dsp"] <= 20 and 0 < out["bram"] <= 26
    assert out["ticks_per_second"] == pytest.approx(out["clock_mhz"] * 1e6 / 100)
    bitstream = Path(out["bitstream"])
    assert bitstream.name == "top.fs" and bitstream.parent.name == "max"
    assert bitstream.exists() and bitstream.stat().st_size > 100_000
    assert out["attempts"] == [] and out["plan"]["fabric"] == "serial"
    print(json.dumps(out))


@pytest.mark.slow_build
def test_build_paper_xor_ulx3s_streams8(capsys):
    """The paper network fully parallel, 8 networks pipelined, at 50 MHz on the ULX3S-85F:
    5e7 network ticks per second (about 20 minutes on 2 cores).

    Placed and routed as for 36 MHz with nextpnr's seed 3 (``docs/boards.md``: at a
    50 MHz constraint the placement does not route, and routing succeeds for some
    seeds only); the routed fmax must reach the 50 MHz clock.
    """
    assert board_cli(["build", "paper-xor", "--board", "ulx3s-85f", "--fabric", "streams:8",
                      "--clock", "50", "--pnr-clock", "36", "--pnr-seed", "3", "--json",
                      "--build-dir", "build/tests/system-paper-xor-ulx3s-streams8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["streams"], out["edge_units"], out["cycles_per_tick"]) == (8, 32, 8)
    assert out["fmax_mhz"] >= out["clock_mhz"] == 50
    assert out["ticks_per_second"] == pytest.approx(5e7)
    assert out["lut"] <= 83640 and out["dsp"] == 96
    assert Path(out["bitstream"]).stat().st_size > 100_000
    print(json.dumps(out))


@pytest.mark.slow_build
def test_build_tiny_system_ulx3s(tmp_path, capsys):
    """A real bitstream found by the fold search (about 4-8 minutes on 2 cores): 25 MHz
    fails timing, the PLL retry at 95% of fmax meets it."""
    (tmp_path / "tiny.csv").write_text("x1,y1\n0.0,0.05\n0.3,-0.04\n")
    (tmp_path / "tiny.toml").write_text(TINY)
    assert board_cli(["build", str(tmp_path / "tiny.toml"), "--board", "ulx3s-85f", "--json",
                      "--fabric", "search", "--build-dir", "build/tests/system-tiny-ulx3s"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["edge_units"] == 1 and out["cycles_per_tick"] == 7
    assert out["fmax_mhz"] >= out["clock_mhz"] > 5
    assert 0 < out["dsp"] <= 156 and 1000 < out["lut"] < 83640 and out["bram"] >= 1
    assert out["ticks_per_second"] == pytest.approx(out["clock_mhz"] * 1e6 / 7)


def test_fabric_flag_is_checked(capsys):
    from clln.errors import ConfigError
    with pytest.raises(SystemExit) as info:
        board_cli(["build", "paper-xor", "--board", "icebreaker", "--fabric", "many"])
    assert info.value.code == 2
    assert ("expected a number of edge units, 'serial', 'streams:C' or 'banked:P'"
            in capsys.readouterr().err)
    with pytest.raises(ConfigError, match="fabric.edge_units: must be <= 32, got 40"):
        board_cli(["build", "paper-xor", "--board", "icebreaker", "--fabric", "40"])
    with pytest.raises(ConfigError, match="--pnr-clock.*needs --clock MHZ"):
        board_cli(["build", "paper-xor", "--board", "ulx3s-85f", "--pnr-clock", "36"])
    with pytest.raises(SystemExit) as info:
        board_cli(["build", "paper-xor", "--board", "ulx3s-85f", "--clock", "50",
                   "--pnr-clock", "-3"])
    assert info.value.code == 2 and "finite number of MHz above 0, got -3" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        board_cli(["build", "paper-xor", "--board", "ulx3s-85f", "--pnr-seed", "x"])
    assert info.value.code == 2 and "expected a whole number, got 'x'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as info:                 # a build option only
        board_cli(["run", "paper-xor", "--sim", "--pnr-clock", "36"])
    assert info.value.code == 2 and "unrecognized arguments: --pnr-clock 36" in \
        capsys.readouterr().err
    with pytest.raises(ConfigError, match="--fabric.*only with --sim"):
        board_cli(["run", "paper-xor", "--port", "/dev/null", "--fabric", "serial"])
    cfg = config_mod.refold(config_mod.load("paper-xor"), "serial")
    assert cfg.fabric.serial and cfg.has_fabric


def test_timing_retry_stops_at_the_pll_floor(monkeypatch, tmp_path):
    """iCE40: the PLL makes 16 MHz at least, so a design slower than the 12 MHz oscillator
    cannot be rescued by the PLL; the error says so (no retry at a nonsense clock)."""
    from clln.boards import system as bs
    from clln.boards import targets
    from clln.boards.targets import BuildError
    calls = []

    def fake_build(factory, board, folder, clock_mhz=None, classic_abc=False, router=None,
                   placer=None, pnr_clock_mhz=None, pnr_seed=None):
        calls.append(clock_mhz)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "top.report.json").write_text("{}")
        raise BuildError(f"{board}: timing failed: fmax 11.00 MHz is 1.00 MHz below")

    monkeypatch.setattr(bs, "build", fake_build)
    monkeypatch.setattr(targets, "parse_report", lambda report, family: (11.0,))
    with pytest.raises(BuildError, match=r"fmax 11.00 MHz .*the PLL cannot make a clock "
                                         r"below 16\.\d MHz"):
        bs.build_system(config_mod.refold(config_mod.load("paper-xor"), "serial"),
                        "icebreaker", tmp_path)
    assert calls == [None]


@pytest.mark.parametrize("second_fails", [False, True])
def test_clock_max_rebuilds_faster(monkeypatch, tmp_path, second_fails):
    """``--clock max``: a build with timing to spare at the oscillator is built again
    through the PLL at 95% of its fmax (in ``build_dir/max``); if that fails, the
    oscillator's build stands."""
    from clln.boards import system as bs
    from clln.boards.targets import BuildError, BuildReport, achieved_clock_mhz
    calls, pnr = [], []

    def fake_build(factory, board, folder, clock_mhz=None, classic_abc=False, router=None,
                   placer=None, pnr_clock_mhz=None, pnr_seed=None):
        # the pipelined fabric on ECP5: ABC's classic flow, nextpnr's static placer and
        # router2
        assert classic_abc and router == "router2" and placer == "static"
        calls.append((clock_mhz, Path(folder).name))
        pnr.append((pnr_clock_mhz, pnr_seed))
        if Path(folder).name == "max" and second_fails:
            raise BuildError(f"{board}: timing failed: fmax 60.00 MHz is 2 MHz below")
        clk = achieved_clock_mhz(board, clock_mhz)
        return BuildReport(board, Path(folder) / "top.bit", clk, 64.0, 1000, 96, 3, 1.0, {})

    monkeypatch.setattr(bs, "build", fake_build)
    cfg = config_mod.refold(config_mod.load("paper-xor"), "streams:4")
    rep, units, cpt = bs.build_system(cfg, "ulx3s-85f", tmp_path / "b", clock_mhz="max")
    assert calls[0] == (None, "b") and calls[1][1] == "max"
    assert 55 < calls[1][0] <= 0.95 * 64.0
    assert (units, cpt) == (32, 4)
    if second_fails:
        assert rep.clock_mhz == 25.0
    else:
        assert rep.clock_mhz == achieved_clock_mhz("ulx3s-85f", calls[1][0]) > 55
    calls.clear()
    bs.build_system(cfg, "ulx3s-85f", tmp_path / "c")            # no --clock: one build
    assert calls == [(None, "c")] and set(pnr) == {(None, None)}
    calls.clear()
    bs.build_system(cfg, "ulx3s-85f", tmp_path / "d", clock_mhz=50, pnr_clock_mhz=36,
                    pnr_seed=3)
    assert calls == [(50, "d")] and pnr[-1] == (36, 3)   # placed and routed for 36 MHz
    with pytest.raises(BuildError, match="needs an explicit clock"):
        bs.build_system(cfg, "ulx3s-85f", tmp_path / "e", clock_mhz="max", pnr_clock_mhz=36)


def test_run_loads_another_graph_on_a_capacity_board(short_xor, tmp_path, monkeypatch,
                                                       capsys):
    """``clln run OTHER --sim --capacity 16:32 --base short-xor`` on the capacity model
    built from short-xor: OTHER (a random regular graph) is loaded over the link and
    trains as ``clln train OTHER --model fixed``; a graph beyond the capacity is refused
    before anything is built."""
    base = config_mod.load(short_xor)
    other = tmp_path / "other.toml"
    other.write_text(short_xor.read_text().replace(
        'topology = "torus"\nrows = 4\ncols = 4',
        'topology = "random-regular"\nnodes = 16\ndegree = 4\ngraph_seed = 3').replace(
        'name = "short-xor"', 'name = "other"'))
    monkeypatch.setattr(cli_board, "_open_device", lambda cfg, args, seed: (
        lambda t: (Device(t), t))(LoopbackTransport(
            SystemModel(base, capacity=args.capacity).respond)))
    assert board_cli(["run", str(other), "--sim", "--capacity", "16:32", "--base",
                      str(short_xor), "--epochs", "2", "--json", "--checkpoint",
                      str(tmp_path / "c.json")]) == 0
    run = json.loads(capsys.readouterr().out)
    assert cli.main(["train", str(other), "--model", "fixed", "--epochs", "2", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert run["gates_final"] == ref["gates_final"] and len(ref["gates_final"]) == 32
    assert run["outputs_final"] == ref["outputs_final"]
    big = tmp_path / "big.toml"
    big.write_text(short_xor.read_text().replace("rows = 4\ncols = 4", "rows = 5\ncols = 5"))
    assert cli.main(["run", str(big), "--sim", "--capacity", "16:32"]) != 0
    assert "25 nodes, 50 edges > capacity 16:32" in capsys.readouterr().err
    assert cli.main(["run", str(other), "--port", "/dev/null", "--capacity", "16:32"]) != 0
    assert "--capacity: only with --sim" in capsys.readouterr().err
