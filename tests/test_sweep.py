"""`clln sweep`: rows against direct training, grouped seeds, local pool against Dask,
resuming after an interruption, errors before anything runs, the files it writes."""

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib

import pandas as pd
import psutil
import pytest

from clln import config
from clln import sweeps as sweep_mod
from clln.cli import main
from clln.sim.training import make_model, train

EPOCHS = 20
SMALL = f"""config = "paper-xor"
model = "fixed"
epochs = {EPOCHS}
[axes]
"learning.eta" = [0.3, 0.5]
"learning.seed" = [0, 1]
"""


def write_sweep(tmp_path, text=SMALL, name="small.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clln.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def small_rows(tmp_path_factory):
    """The small sweep run once in this process (ungrouped, one point per model): the
    reference rows."""
    tmp = tmp_path_factory.mktemp("ref")
    result = sweep_mod.run_sweep(write_sweep(tmp), tmp / "out", workers=1, group=False)
    return result.rows


def test_points_are_the_product_in_order(small_rows):
    assert [(r["point"], r["learning.eta"], r["learning.seed"]) for r in small_rows] == [
        (0, 0.3, 0), (1, 0.3, 1), (2, 0.5, 0), (3, 0.5, 1)]
    for r in small_rows:
        assert 0 < r["mse_final"] < r["mse_initial"]
        assert r["reached"] is (r["mse_final"] <= 1e-4)
        assert 4 < r["ticks_per_example"] <= r["ticks_per_example_max"] <= 1001
        assert r["saturated"] is False and r["seconds"] > 0
    # eta changes the run, the seed changes the initial gates (eta, the clamp's, moves the
    # initial error a little only: the clamped network's stillness ends the settle phases)
    assert small_rows[0]["mse_final"] != small_rows[2]["mse_final"]
    assert small_rows[0]["mse_initial"] == pytest.approx(small_rows[2]["mse_initial"], rel=1e-3)
    assert small_rows[0]["mse_initial"] != small_rows[1]["mse_initial"]


def test_a_row_is_the_point_trained_directly(small_rows):
    """Point 3 (eta 0.5, seed 1) as `clln train` builds it: the config with that eta,
    the model given the seed, trained for the sweep's epochs."""
    data = tomllib.loads(config.resolve("paper-xor").read_text())
    data["learning"]["eta"] = 0.5
    cfg = config.parse(data)
    h = train(make_model(cfg, "fixed", [1]), EPOCHS)
    row = small_rows[3]
    assert (row["learning.eta"], row["learning.seed"]) == (0.5, 1)
    assert row["mse_initial"] == float(h.mse_initial[0])
    assert row["mse_final"] == float(h.mse_final[0])
    assert row["ticks_per_example"] == float(h.ticks_per_example[0])
    assert row["ticks_per_example_max"] == int(h.ticks_per_example_max[0])
    assert row["reached"] is bool(h.mse_final[0] <= cfg.task.mse_target)


def test_grouped_seeds_give_the_same_rows(tmp_path, small_rows):
    spec = sweep_mod.load_sweep(write_sweep(tmp_path))
    points = sweep_mod.check_points(spec)
    tasks = sweep_mod.make_tasks(spec, points, workers=1)
    assert [(t.seeds, t.points) for t in tasks] == [((0, 1), (0, 1)), ((0, 1), (2, 3))]
    # split evenly for the load to balance: 60 points on 2 workers, 12 tasks of 5 seeds
    assert len(sweep_mod.make_tasks(spec, points, workers=2)) == 4
    big = sweep_mod.load_sweep(write_sweep(tmp_path, SMALL.replace("[0, 1]", str(
        list(range(10)))).replace("[0.3, 0.5]", "[0.1, 0.2, 0.3, 0.5, 0.7, 1.0]"), "big.toml"))
    tasks = sweep_mod.make_tasks(big, sweep_mod.check_points(big), workers=2)
    assert [len(t.seeds) for t in tasks] == [5] * 12
    assert sorted(i for t in tasks for i in t.points) == list(range(60))
    assert tasks[1].seeds == (5, 6, 7, 8, 9) and tasks[1].points == (5, 6, 7, 8, 9)
    result = sweep_mod.run_sweep(spec, tmp_path / "out", workers=1)
    assert without_seconds(result.rows) == without_seconds(small_rows)


def test_local_pool_and_dask_cluster_give_the_same_rows(tmp_path, small_rows):
    from dask.distributed import LocalCluster
    path = write_sweep(tmp_path)
    local = sweep_mod.run_sweep(path, tmp_path / "local", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      processes=True) as cluster:
        r = run_cli("sweep", path, "--out", tmp_path / "dask", "--scheduler",
                    cluster.scheduler_address, "--json")
    assert r.returncode == 0, r.stderr
    on_dask = json.loads(r.stdout)
    assert on_dask["points"] == 4 and on_dask["ran"] == 4
    assert without_seconds(on_dask["rows"]) == without_seconds(local.rows)
    assert without_seconds(local.rows) == without_seconds(small_rows)


def test_json_output_and_the_files(tmp_path, capsys, small_rows):
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert captured.err == ""                      # no progress bar with --json
    assert report["points"] == 4 and len(report["rows"]) == 4
    assert report["ran"] == 4 and report["resumed"] == 0
    assert list(report["rows"][0]) == ["point", "learning.eta", "learning.seed",
                                       *sweep_mod.METRICS]
    assert without_seconds(report["rows"]) == without_seconds(small_rows)
    parquet = pd.read_parquet(out / "results.parquet")
    csv = pd.read_csv(out / "results.csv")
    assert list(parquet.columns) == list(csv.columns) == list(report["rows"][0])
    assert len(parquet) == len(csv) == 4
    for column in parquet.columns:
        for a, b, r in zip(parquet[column], csv[column], report["rows"], strict=True):
            assert a == b == r[column], column
    assert parquet["ticks_per_example_max"].dtype == "Int64"
    png = (out / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000


def test_a_resumed_sweep_runs_only_the_missing_points(tmp_path, small_rows, capsys,
                                                      monkeypatch):
    """A journal with two rows and half of a third (as a kill mid-write leaves it): the
    rerun runs points 2 and 3 only, once each, and writes the same rows."""
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    spec = sweep_mod.load_sweep(path)
    header = {"sweep": spec.digest(), "points": 4, "format": sweep_mod.JOURNAL_FORMAT}
    journalled = [{"point": r["point"], **{m: r[m] for m in sweep_mod.METRICS}}
                  for r in small_rows[:3]]
    out.mkdir()
    text = "".join(json.dumps(x) + "\n" for x in [header, *journalled])
    (out / "rows.jsonl").write_text(text[:-25])       # the third row cut short
    ran = []
    real = sweep_mod.run_task

    def spy(task):
        ran.extend(task.points)
        return real(task)

    monkeypatch.setattr(sweep_mod, "run_task", spy)
    result = sweep_mod.run_sweep(spec, out, workers=1)
    assert sorted(ran) == [2, 3]
    assert (result.ran, result.resumed) == (2, 2)
    assert without_seconds(result.rows) == without_seconds(small_rows)
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == header
    assert sorted(json.loads(line)["point"] for line in lines[1:]) == [0, 1, 2, 3]
    # a second rerun runs nothing
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ran"], report["resumed"]) == (0, 4)
    assert without_seconds(report["rows"]) == without_seconds(small_rows)


def test_a_killed_sweep_stops_its_workers_and_resumes(tmp_path):
    """SIGTERM once the first point is journalled: clln exits 143 and its pool is gone;
    the rerun adds exactly the missing points, and the rows are those of direct runs."""
    path = write_sweep(tmp_path, 'config = "paper-xor"\nmodel = "fixed"\nepochs = 1000\n'
                       '[axes]\n"learning.eta" = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "clln.cli", "sweep", str(path), "--out",
                             str(out), "--workers", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "rows.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2                                  # the pool's workers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    first = [json.loads(line)["point"] for line in journal.read_text().splitlines()[1:]]
    assert 1 <= len(first) < 6
    result = sweep_mod.run_sweep(path, out, workers=1)
    assert (result.resumed, result.ran) == (len(first), 6 - len(first))
    points = [json.loads(line)["point"] for line in journal.read_text().splitlines()[1:]]
    assert sorted(points) == list(range(6))                    # none lost, none repeated
    # a point journalled before the kill and one run after it, as trained directly
    data = tomllib.loads(config.resolve("paper-xor").read_text())
    for i in (first[0], min(set(range(6)) - set(first))):
        data["learning"]["eta"] = result.rows[i]["learning.eta"]
        h = train(make_model(config.parse(data), "fixed", [0]), 1000)
        assert result.rows[i]["mse_final"] == float(h.mse_final[0])
        assert result.rows[i]["ticks_per_example"] == float(h.ticks_per_example[0])


@pytest.mark.parametrize("axes, named", [
    ('"learning.etax" = [0.3]', 'axes."learning.etax": value 0.3:'),
    ('"learning.eta" = [0.3, 2.0]', 'axes."learning.eta": value 2.0:'),
    ('"schedule.settle" = ["still", "sometimes"]', 'axes."schedule.settle": value '
     "'sometimes':"),
    ('"name.first" = [1]', 'axes."name.first": name is not a table of the config'),
    ('"learning.eta" = 0.3', 'axes."learning.eta": must be a list of values'),
    ('"learning.eta" = []', 'axes."learning.eta": is empty'),
    ('"learning.seed" = [0, 1, 0]', 'axes."learning.seed": value 0 is given twice'),
])
def test_bad_axes_fail_before_anything_runs(tmp_path, capsys, axes, named):
    path = write_sweep(tmp_path, SMALL.split("[axes]")[0] + "[axes]\n" + axes + "\n")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clln: error: {path}: {named}"), err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("text, named", [
    (SMALL + "seeds = 3\n", 'axes."seeds": must be a list'),     # TOML: belongs to [axes]
    ("colour = 1\n" + SMALL, "colour: unknown key"),
    (SMALL.replace('"fixed"', '"spice"'), "model: must be one of"),
    (SMALL.replace(f"epochs = {EPOCHS}", "epochs = -1"), "epochs: must be a whole number"),
    (SMALL.replace('"paper-xor"', '"nope.toml"'), "config: no such file"),
    (SMALL.split("[axes]")[0], "axes: missing"),
])
def test_bad_sweep_files_are_refused(tmp_path, capsys, text, named):
    path = write_sweep(tmp_path, text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clln: error: {path}: {named}"), err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_sweep_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    first = write_sweep(tmp_path, SMALL.replace("[0, 1]", "[0]"), "first.toml")
    assert main(["sweep", str(first), "--out", str(out), "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    before = (out / "rows.jsonl").read_bytes()
    other = write_sweep(tmp_path, SMALL.replace("[0, 1]", "[0]").replace("0.5]", "0.6]"))
    assert main(["sweep", str(other), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clln: error: {out} holds the journal of a different sweep"), err
    assert (out / "rows.jsonl").read_bytes() == before


def test_axes_reach_any_key_and_dotted_toml_keys_are_axes(tmp_path):
    """Unquoted dotted keys are the same axes; an axis can set a key the config leaves
    out (its default) and a value that is a list."""
    text = ('config = "paper-xor"\nmodel = "quasistatic"\nepochs = 0\n[axes]\n'
            'learning.gate_init = [[1.0, 2.0], 1.5]\ntask.mse_target = [1.0]\n')
    spec = sweep_mod.load_sweep(write_sweep(tmp_path, text))
    assert spec.keys == ["learning.gate_init", "task.mse_target"]
    result = sweep_mod.run_sweep(spec, tmp_path / "out", workers=1)
    rows = result.rows
    assert [r["learning.gate_init"] for r in rows] == [[1.0, 2.0], 1.5]
    assert all(r["reached"] and r["mse_final"] == r["mse_initial"] for r in rows)
    assert all(r["ticks_per_example"] is None for r in rows)
    assert math.isnan(result.table["ticks_per_example"][0])
    assert list(pd.read_csv(tmp_path / "out" / "results.csv")["learning.gate_init"]) == [
        "[1.0, 2.0]", "1.5"]
    assert copy.deepcopy(spec.config_data) == spec.config_data     # base left alone
    assert os.path.getsize(tmp_path / "out" / "summary.png") > 10000


def test_non_idealities_are_axes_and_group_by_seed(tmp_path):
    """A key of a section paper-xor leaves out (``[nonideal]``) is an axis; with read
    noise and mismatch, seeds run as one model still give each seed's own rows."""
    text = ('config = "paper-xor"\nmodel = "fixed"\nepochs = 10\n[axes]\n'
            '"nonideal.read_noise" = [0.0, 0.002]\n"nonideal.vt_sigma" = [0.02]\n'
            '"learning.seed" = [0, 1, 2]\n')
    spec = sweep_mod.load_sweep(write_sweep(tmp_path, text))
    grouped = sweep_mod.run_sweep(spec, tmp_path / "grouped", workers=1)
    alone = sweep_mod.run_sweep(spec, tmp_path / "alone", workers=1, group=False)
    assert without_seconds(grouped.rows) == without_seconds(alone.rows)
    # the noise changes the run
    assert grouped.rows[0]["mse_final"] != grouped.rows[3]["mse_final"]
