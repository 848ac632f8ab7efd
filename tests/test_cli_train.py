"""`clln train`: JSON report, several seeds, plot, and the paper reproductions."""

import json
import subprocess
import sys
import tomllib

import numpy as np

from clln import config
from clln.sim.training import make_model, mode_errors, train


def run_clln(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "clln.cli", *args], capture_output=True,
                       text=True, cwd=cwd)
    return r


def test_json_report_single_seed(tmp_path):
    r = run_clln("train", "paper-xor", "--epochs", "30", "--seed", "2", "--json",
                 "--plot", str(tmp_path / "run.png"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("model", "epochs", "mse_initial", "mse_final", "outputs_final",
                "gates_final", "seconds"):
        assert key in out
    assert out["model"] == "quasistatic" and out["epochs"] == 30 and out["seed"] == 2
    assert np.array(out["outputs_final"]).shape == (4, 1)
    assert len(out["gates_final"]) == 32 and len(out["mse_per_epoch"]) == 30
    assert out["mse_final"] < out["mse_initial"]
    # The report agrees with the model run directly.
    h = train(make_model(config.load("paper-xor"), "quasistatic", [2]), 30)
    np.testing.assert_allclose(out["gates_final"], h.gates_final[0], rtol=0, atol=1e-12)
    png = (tmp_path / "run.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000


def test_json_reports_ticks_per_example(tmp_path):
    """Euler with a fixed settle runs settle + learn ticks per example; jacobi until still
    far fewer, at least still_ticks + learn; the quasi-static model has no ticks."""
    base = config.resolve("paper-xor").read_text()
    reports = {}
    # the shipped scheme (jacobi, until still, at most 1000) and euler for 3000 ticks
    euler = base.replace('relax = "jacobi"', 'relax = "euler"').replace(
        'settle = "still"', 'settle = "fixed"').replace("settle_ticks = 1000",
                                                        "settle_ticks = 3000")
    sch = tomllib.loads(euler)["schedule"]
    assert (sch["relax"], sch["settle"], sch["settle_ticks"]) == ("euler", "fixed", 3000)
    for relax, text in (("euler", euler), ("jacobi", base)):
        path = tmp_path / f"{relax}.toml"
        path.write_text(text)
        r = run_clln("train", str(path), "--model", "fixed", "--epochs", "20", "--json")
        assert r.returncode == 0, r.stderr
        reports[relax] = json.loads(r.stdout)
    assert reports["euler"]["ticks_per_example"] == 3001
    assert reports["euler"]["ticks_per_example_max"] == 3001
    fast = reports["jacobi"]
    assert 4 + 1 <= fast["ticks_per_example"] < 300, fast["ticks_per_example"]
    assert fast["ticks_per_example"] <= fast["ticks_per_example_max"] <= 1001
    r = run_clln("train", "paper-xor", "--epochs", "2", "--json")
    assert json.loads(r.stdout)["ticks_per_example"] is None


def test_several_seeds_text_report(tmp_path):
    r = run_clln("train", "paper-regression", "--model", "fixed", "--epochs", "5",
                 "--seeds", "0-2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "of 3 seed(s) reached the error target" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines()]
    assert [row[0] for row in rows if row[-1] in ("reached", "missed")] == ["0", "1", "2"]


def test_several_seeds_json(tmp_path):
    r = run_clln("train", "paper-xor", "--model", "dynamic", "--epochs", "2", "--seeds", "3-4",
                 "--json", cwd=tmp_path)
    out = json.loads(r.stdout)
    assert out["seed"] == [3, 4] and len(out["mse_final"]) == 2
    assert out["reached"] == sum(m <= 1e-4 for m in out["mse_final"])


def test_plot_to_missing_folder_fails_before_training(tmp_path):
    r = run_clln("train", "paper-xor", "--plot", str(tmp_path / "no" / "x.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_quasistatic_reproduces_paper_xor():
    cfg = config.load("paper-xor")
    h = train(make_model(cfg, "quasistatic", list(range(10))), cfg.learning.epochs)
    solved = int((h.mse_final <= cfg.task.mse_target).sum())
    assert solved >= 7, h.mse_final


def test_quasistatic_reproduces_paper_regression_and_spectral_bias():
    cfg = config.load("paper-regression")
    h = train(make_model(cfg, "quasistatic", [cfg.learning.seed]), cfg.learning.epochs)
    assert h.mse_final[0] <= 1e-4, h.mse_final
    modes = np.abs(mode_errors(h, cfg.task.x[:, 0])[0])      # (epochs, 3)
    # Spectral bias: the mean error is learned first, then the slope, then the curvature.
    first_small = [int(np.argmax(modes[:, k] < 0.2 * modes[0, k])) for k in range(3)]
    assert first_small[0] < first_small[1] < first_small[2], first_small


def test_fixed_point_learns_paper_regression():
    cfg = config.load("paper-regression")
    h = train(make_model(cfg, "fixed", [cfg.learning.seed]), cfg.learning.epochs)
    assert h.mse_final[0] <= 1e-4, h.mse_final
    assert not h.saturated[0]


def test_fixed_point_learns_paper_xor():
    cfg = config.load("paper-xor")
    h = train(make_model(cfg, "fixed", list(range(5))), cfg.learning.epochs)
    solved = int((h.mse_final <= cfg.task.mse_target).sum())
    assert solved >= 4, h.mse_final
    assert not h.saturated.any()
