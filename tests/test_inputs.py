"""Every input checked (issue 17): each bad config, dataset or flag of the list is refused
with one line naming what is wrong and exit status 2, before any work starts, or works."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import builtin_dict, toml_text

from clln import cli, config
from clln.errors import SolverError
from clln.sim.training import make_model, train


class WorkStarted(AssertionError):
    """A refused input reached the work it should have been refused before."""


@pytest.fixture
def no_work(monkeypatch):
    """Training, builds, the Verilog export and devices fail the test if they start."""
    from clln import cli_board
    from clln.boards import system
    from clln.gateware import export
    from clln.sim import training

    def started(*args, **kwargs):
        raise WorkStarted("the work started before the input was checked")

    for module, name in ((training, "train"), (system, "build_system"),
                         (system, "build_fitting"), (export, "generate"),
                         (cli_board, "_open_device")):
        monkeypatch.setattr(module, name, started)


def refused(capsys, argv):
    """Run ``clln argv`` in-process; return its stderr after checking that it exited with
    2 and printed no traceback, its error on one line (two with argparse's usage)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:             # argparse: usage line, then the error line
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(("clln: error: ", "clln train: error: ", "clln build: error: ",
                                 "clln run: error: ")), err
    return lines[-1]


def write_config(tmp_path, change=None, name="c.toml", raw=None):
    """paper-xor as a TOML file, ``change(data)`` applied (or ``raw`` bytes written)."""
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
        return path
    data = copy.deepcopy(builtin_dict("paper-xor"))
    if change:
        change(data)
    path.write_text(toml_text(data))
    return path


def setter(section, key, value):
    def change(data):
        (data.setdefault(section, {}) if section else data)[key] = value
    return change


# -- config and dataset files -----------------------------------------------------------------

CONFIG_CASES = {
    "non-UTF-8 TOML": (dict(raw='name = "café"\n'.encode("latin-1")),
                       "line 1: byte 0xe9 is not UTF-8"),
    "deeply nested TOML": (dict(raw=b"name = 1\nx = " + b"[" * 5000 + b"]" * 5000 + b"\n"),
                           "nested too deeply"),
    "huge lattice": (dict(change=setter("network", "rows", 100_000)),
                     "network.rows: must be <= 4096"),
    "lattice over the node bound": (dict(change=lambda d: d["network"].update(rows=70, cols=70)),
                                    "4900 nodes; at most 4096"),
    "edge index beyond int64": (dict(change=lambda d: d.update(network={
        "topology": "edges", "nodes": 16, "edges": [[0, 2 ** 70]] + [[i, i + 1]
                                                                      for i in range(15)]})),
        "network.edges: edge 0 [0, 1180591620717411303424]: node out of range 0..15"),
    "huge epochs": (dict(change=setter("learning", "epochs", 10 ** 17)),
                    "learning.epochs: must be <= 10000000"),
    "seed beyond u32": (dict(change=setter("learning", "seed", 2 ** 32)),
                        "learning.seed: must be <= 4294967295"),
    "extreme finite vt": (dict(change=setter("device", "vt", 1e308)),
                          "device.vt: must be <= 10.0"),
    "extreme finite alpha": (dict(change=setter("learning", "alpha", 1e308)),
                             "learning.alpha: must be <= 1000000000.0"),
    "gmin outweighing k": (dict(change=setter("device", "gmin", 1.0)),
                           "device.gmin: 2 gmin / k"),
    "extreme finite v_max": (dict(change=setter("io", "v_max", 1e308)),
                             "io.v_max: must be <= 10.0"),
    "integer too large for a float": (dict(change=setter("schedule", "kappa", 10 ** 400)),
                                      "schedule.kappa: must be a finite number"),
    "tiny eta (NaN gates)": (dict(change=setter("learning", "eta", 5e-324)),
                             "learning.eta: must be >= 1e-06, got 5e-324"),
    "tiny gate_leak": (dict(change=setter("nonideal", "gate_leak", 5e-324)),
                       "nonideal.gate_leak: must be 0 or at least 1e-12"),
    "settle_ticks beyond u32": (dict(change=setter("schedule", "settle_ticks", 2 ** 32)),
                                "schedule.settle_ticks: must be <= 4294967295"),
    "name escaping -o": (dict(change=setter(None, "name", "../escaped")),
                         "name: must name files"),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_bad_config_files_are_refused(case, tmp_path, capsys, no_work):
    spec, fragment = CONFIG_CASES[case]
    path = write_config(tmp_path, **spec)
    line = refused(capsys, ["train", path, "--epochs", "1"])
    assert fragment in line and str(path) in line


def csv_config(tmp_path, csv_bytes):
    (tmp_path / "d.csv").write_bytes(csv_bytes)
    return write_config(tmp_path, setter("task", "dataset", "d.csv"))


def test_non_utf8_csv_is_refused(tmp_path, capsys, no_work):
    path = csv_config(tmp_path, b"x1,x2,y1\n0,0,0\n0.45,0,-0.087\xff\n")
    assert "task.dataset (" in refused(capsys, ["train", path])
    assert "line 3: byte 0xff is not UTF-8" in refused(capsys, ["generate", path, "-o",
                                                                tmp_path / "g"])


def test_dataset_over_the_example_bound_is_refused(tmp_path, capsys, no_work):
    rows = b"".join(b"0,0,0\n" for _ in range(config.MAX_EXAMPLES + 1))
    line = refused(capsys, ["train", csv_config(tmp_path, b"x1,x2,y1\n" + rows)])
    assert "65536 examples; at most 65535" in line


def test_long_config_argument_is_refused(capsys, no_work):
    line = refused(capsys, ["train", "a" * 5000])
    assert "not a config file: File name too long" in line and len(line) < 200


# -- CLI values ---------------------------------------------------------------------------------

CLI_CASES = {
    "run --seed 2**32": (["run", "paper-xor", "--sim", "--seed", 2 ** 32],
                         "--seed: must be <= 4294967295"),
    "run --epochs 2**32": (["run", "paper-xor", "--sim", "--epochs", 2 ** 32],
                           "--epochs: must be <= 10000000"),
    "train --seeds huge range": (["train", "paper-xor", "--seeds", "0-100000000000"],
                                 "--seeds: at most 10000 seeds"),
    "train recording too much": (["train", "paper-xor", "--seeds", "0-9999", "--epochs",
                                  10 ** 7], "--epochs: 10000 seed(s) x 10000000 epochs"),
    "build --max-examples 65536": (["build", "paper-xor", "--board", "icebreaker",
                                    "--max-examples", 65536], "must be <= 65535"),
    "build --baud too fast": (["build", "paper-xor", "--board", "icebreaker", "--baud",
                               10 ** 7], "--baud: 12000000.0 Hz is too slow for 10000000 baud"),
    "build --fabric streams:²": (["build", "paper-xor", "--board", "icebreaker", "--fabric",
                                  "streams:²"], "argument --fabric: expected a number"),
    "build --fabric streams:9": (["build", "paper-xor", "--board", "icebreaker", "--fabric",
                                  "streams:9"], "streams:C needs C from 1 to 8"),
    "build --clock out of range": (["build", "paper-xor", "--board", "icebreaker", "--clock",
                                    1000], "--clock: icebreaker cannot run at 1000 MHz: the "
                                   "nearest clock its PLL makes from the 12 MHz oscillator is "
                                   "270 MHz"),
    "build --pnr-clock out of range": (["build", "paper-xor", "--board", "tangnano9k",
                                        "--clock", 27, "--pnr-clock", 0.01],
                                       "--pnr-clock: tangnano9k cannot run at 0.01 MHz"),
    "build --clock inf": (["build", "paper-xor", "--board", "icebreaker", "--clock", "inf"],
                          "finite number of MHz above 0"),
    "run --timeout 0": (["run", "paper-xor", "--port", "/dev/null", "--timeout", 0],
                        "--timeout: must be above 0"),
    "run --timeout -1": (["run", "paper-xor", "--port", "/dev/null", "--timeout", -1],
                         "--timeout: must be above 0"),
    "run --timeout nan": (["run", "paper-xor", "--port", "/dev/null", "--timeout", "nan"],
                          "--timeout: must be above 0"),
    "train --plot unsupported": (["train", "paper-xor", "--plot", "run.svgx"],
                                 "--plot: cannot write '.svgx' plots (use .avif"),
    "run --plot unsupported": (["run", "paper-xor", "--sim", "--plot", "run.bmpx"],
                               "--plot: cannot write '.bmpx' plots"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=list(CLI_CASES))
def test_bad_flags_are_refused(case, capsys, no_work):
    argv, fragment = CLI_CASES[case]
    assert fragment in refused(capsys, argv)


def test_output_folders_that_cannot_be_made_are_refused(tmp_path, capsys, no_work,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert "-o: cannot make folder afile/sub: Not a directory" in refused(
        capsys, ["generate", "paper-xor", "-o", "afile/sub"])
    assert "--build-dir: cannot make folder afile/b: Not a directory" in refused(
        capsys, ["build", "paper-xor", "--board", "icebreaker", "--build-dir", "afile/b"])
    assert "--build-dir: cannot make folder afile/s" in refused(
        capsys, ["run", "paper-xor", "--sim", "--build-dir", "afile/s"])
    assert "--build-dir: cannot make folder afile/v" in refused(
        capsys, ["verify", "paper-xor", "--build-dir", "afile/v"])


def test_protocol_fields_are_checked_before_a_build(tmp_path, capsys, no_work):
    """Gates wider than the protocol's i32: refused with the key, before any build."""
    path = write_config(tmp_path, lambda d: d["fixed"].update(g_bits=40))
    line = refused(capsys, ["build", path, "--board", "icebreaker"])
    assert "fixed.g_bits: 40 bits (gates travel as i32); the link protocol carries at " \
        "most 32" in line


# -- what works now ------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 2])
def test_plot_with_one_or_two_examples(tmp_path, capsys, rows):
    """A single-input task of 1 or 2 examples has that many error modes to plot."""
    data = builtin_dict("paper-regression")
    (tmp_path / "d.csv").write_text("x1,y1\n" + "".join(f"{0.1 * (i + 1)},0.15\n"
                                                        for i in range(rows)))
    data["task"]["dataset"] = "d.csv"
    path = tmp_path / "r.toml"
    path.write_text(toml_text(data))
    assert cli.main(["train", str(path), "--epochs", "2", "--plot", str(tmp_path / "p")]) == 0
    assert f"plot written to {tmp_path / 'p.png'}" in capsys.readouterr().out
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_gates_at_bounds_and_frozen_are_reported(tmp_path, capsys):
    """A huge alpha pins 30 of 32 gates; a tiny euler kappa freezes the network. Both are
    in the JSON and on stderr; paper-xor itself is neither."""
    pinned = write_config(tmp_path, setter("learning", "alpha", 5000.0), "a.toml")
    assert cli.main(["train", str(pinned), "--epochs", "20", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["gates_at_bounds"], report["frozen"]) == (30, False)
    assert "up to 30 of 32 gates ended at their bounds" in err and "learning.alpha" in err
    frozen = write_config(tmp_path, lambda d: d["schedule"].update(
        relax="euler", settle="fixed", kappa=1e-9), "k.toml")
    assert cli.main(["train", str(frozen), "--epochs", "5", "--model", "fixed", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["frozen"] is True
    assert "the network is frozen" in err and "schedule.kappa 1e-09 may be too small" in err
    assert cli.main(["train", "paper-xor", "--epochs", "20", "--seeds", "0-1", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["frozen"] == [False, False] and max(report["gates_at_bounds"]) <= 16
    assert "warning" not in err


def test_nan_never_reaches_an_output(capsys, monkeypatch):
    """A model whose outputs turn NaN is stopped with the epoch named (the loader's bounds
    keep every config from getting there; this is the last line)."""
    model = make_model(config.load("paper-xor"), "fixed", [0])
    real = model.present

    def poisoned(i, learn):
        out = real(i, learn)
        return np.full_like(out, np.nan, dtype=float) if len(model.example_ticks) > 6 else out

    monkeypatch.setattr(model, "present", poisoned)
    with pytest.raises(SolverError, match="fixed model's outputs became NaN or infinite in "
                       "epoch 2"):
        train(model, 5)


def clln_process(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "clln.cli", *args], capture_output=True,
                          text=True, **kwargs)


def test_closed_or_broken_stdout(tmp_path):
    """A closed stdout is refused before training; a reader that goes away (``| head``)
    ends in one line and exit 2, not a BrokenPipeError traceback."""
    closed = subprocess.run(["sh", "-c", f"exec {sys.executable} -m clln.cli train paper-xor "
                             "--epochs 1 --json >&-"], capture_output=True, text=True)
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr
    with subprocess.Popen([sys.executable, "-m", "clln.cli", "train", "paper-xor", "--epochs",
                           "1", "--seeds", "0-199", "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        proc.stdout.close()
        err = proc.stderr.read()
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("clln: error: standard output was closed before "
                                            "everything was written")


def test_docs_state_the_bounds():
    """docs/config.md's bounds and docs/protocol.md's stream count are the code's."""
    from pathlib import Path
    docs = Path(__file__).resolve().parent.parent / "docs"
    cfg_doc, proto_doc = (docs / "config.md").read_text(), (docs / "protocol.md").read_text()
    for text in (f"2 to {config.MAX_NODES}", f"at most {config.MAX_EDGES}",
                 f"1 to {config.MAX_EXAMPLES}", f"0 to {config.MAX_EPOCHS:,}",
                 f"at most {config.MAX_SEEDS:,} at once",
                 f"<= 2^{config.MAX_RECORDED.bit_length() - 1}", "0 to 2^32 - 1",
                 f"1 to {config.MAX_MOMENTUM_SHIFT} (`momentum` only"):
        assert text in cfg_doc, text
    assert config.MAX_SEED == config.MAX_TICKS == 2 ** 32 - 1
    assert f"`[fabric] streams = C` (1 to {config.MAX_STREAMS})" in proto_doc
