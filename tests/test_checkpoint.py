"""Checkpoints of ``clln train`` and ``clln run``: resuming equals training straight,
refusals, atomic writes, link errors that save the last good state, side outputs that
fail without losing the results (``docs/config.md``, "Checkpoints and resuming")."""

import argparse
import errno
import json
import os

import numpy as np
import pytest
import serial

from clln import checkpoint, cli, cli_board, cli_common
from clln import config as config_mod
from clln import protocol as p
from clln.host.driver import Device, LoopbackTransport
from clln.sim.fixed import FixedPointModel
from clln.sim.system import SystemModel
from clln.sim.training import train

#: Report keys that differ between a resumed run and one trained straight.
RUN_KEYS = {"seconds", "epochs_run", "resumed_from", "resumed_at_epoch", "checkpoint",
            "setup_seconds", "ticks_per_second", "ticks", "cycles", "board_seconds"}


@pytest.fixture
def noisy_xor(tmp_path):
    """paper-xor with read noise and a gate leak (their generators and droop are state
    that a checkpoint must carry) and a shorter settle cap."""
    text = config_mod.resolve("paper-xor").read_text().replace(
        'name = "paper-xor"', 'name = "noisy-xor"').replace("settle_ticks = 1000",
                                                           "settle_ticks = 200")
    path = tmp_path / "noisy-xor.toml"
    path.write_text(text + "\n[nonideal]\nread_noise = 0.002\ngate_leak = 0.001\n")
    return path


def clln_json(capsys, *argv, status=0):
    assert cli.main([str(a) for a in argv] + ["--json"]) == status
    return json.loads(capsys.readouterr().out)


def same_report(resumed, straight):
    """Every key of two reports but those of the run itself."""
    assert set(resumed) == set(straight)
    for key in set(straight) - RUN_KEYS:
        assert resumed[key] == straight[key], key


@pytest.mark.parametrize("model,seeds", [("fixed", ["--seed", "1"]),
                                         ("fixed", ["--seeds", "1-3"]),
                                         ("dynamic", ["--seeds", "1-2"]),
                                         ("quasistatic", ["--seeds", "1-2"])])
def test_train_resumed_equals_trained_straight(noisy_xor, tmp_path, capsys, model, seeds):
    """3 epochs, checkpoint, 2 more with --resume: the gates, outputs, curve and ticks of
    5 epochs straight, bit for bit; the checkpoint then holds epoch 5."""
    ckpt = tmp_path / "c.json"
    first = clln_json(capsys, "train", noisy_xor, "--model", model, "--epochs", 3, *seeds,
                      "--checkpoint", ckpt)
    resumed = clln_json(capsys, "train", noisy_xor, "--epochs", 2, "--resume", ckpt)
    straight = clln_json(capsys, "train", noisy_xor, "--model", model, "--epochs", 5, *seeds)
    same_report(resumed, straight)
    assert resumed["model"] == model and resumed["epochs"] == 5
    assert (resumed["epochs_run"], resumed["resumed_at_epoch"]) == (2, 3)
    curve = np.array(resumed["mse_per_epoch"]).reshape(-1, 5)
    np.testing.assert_array_equal(curve[:, :3], np.array(first["mse_per_epoch"]).reshape(-1, 3))
    doc = json.loads(ckpt.read_text())
    assert (doc["epoch"], doc["epochs_target"], doc["model"]) == (5, 5, model)
    assert doc["gates"] == np.array(straight["gates_final"]).reshape(len(doc["seeds"]), -1
                                                                    ).tolist()


def test_train_resumes_from_an_interval_checkpoint(noisy_xor, tmp_path, capsys, monkeypatch):
    """A run killed in epoch 4 with --checkpoint-every 2 left epoch 2 in its checkpoint;
    resumed without --epochs it trains the 4 epochs it had left, as if never stopped."""
    from clln.sim.fixed import FixedPointModel
    ckpt = tmp_path / "c.json"
    calls, present = [], FixedPointModel.present

    def dies_in_epoch_4(self, example, learn):
        calls.append(example)
        if learn and len(calls) == 3 * 4 + 2:
            raise KeyboardInterrupt
        return present(self, example, learn)

    monkeypatch.setattr(FixedPointModel, "present", dies_in_epoch_4)
    assert cli.main(["train", str(noisy_xor), "--model", "fixed", "--epochs", "6", "--seed",
                     "2", "--checkpoint", str(ckpt), "--checkpoint-every", "2", "--json"]) == 130
    monkeypatch.setattr(FixedPointModel, "present", present)
    assert json.loads(ckpt.read_text())["epoch"] == 2
    resumed = clln_json(capsys, "train", noisy_xor, "--resume", ckpt)
    straight = clln_json(capsys, "train", noisy_xor, "--model", "fixed", "--epochs", 6,
                         "--seed", 2)
    same_report(resumed, straight)
    assert resumed["epochs_run"] == 4


def test_train_text_report_of_a_resumed_run(tmp_path, capsys):
    ckpt = tmp_path / "c.json"
    assert cli.main(["train", "paper-xor", "--model", "fixed", "--epochs", "2",
                     "--checkpoint", str(ckpt)]) == 0
    assert f"checkpoint (epoch 2) written to {ckpt}" in capsys.readouterr().out
    assert cli.main(["train", "paper-xor", "--epochs", "1", "--resume", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert f"fixed model, epochs 3-3 (resumed from {ckpt} at epoch 2), 1 seed(s)" in out
    assert f"checkpoint (epoch 3) written to {ckpt}" in out


def error_of(capsys, argv):
    """Exit status 2 and one line on stderr, no traceback: the line."""
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_resume_refuses_another_config_and_other_flags(noisy_xor, tmp_path, capsys):
    ckpt = tmp_path / "c.json"
    assert cli.main(["train", str(noisy_xor), "--model", "fixed", "--epochs", "1",
                     "--seeds", "0-1", "--checkpoint", str(ckpt), "--json"]) == 0
    capsys.readouterr()
    other = tmp_path / "other.toml"
    other.write_text(noisy_xor.read_text().replace("eta = 0.3", "eta = 0.31"))
    digest = checkpoint.config_digest(config_mod.load(other))
    err = error_of(capsys, ["train", other, "--resume", ckpt])
    assert err.startswith(f"clln: error: {ckpt}: config_digest: checkpoint of another config "
                          f"(noisy-xor, hash ") and err.endswith(f"; noisy-xor has {digest})")
    # the name, the seed and the epochs of a config are not part of its digest
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(noisy_xor.read_text().replace("seed = 0", "seed = 7").replace(
        "epochs = 3000", "epochs = 9").replace('name = "noisy-xor"', 'name = "x"'))
    assert checkpoint.config_digest(config_mod.load(renamed)) == \
        checkpoint.config_digest(config_mod.load(noisy_xor))
    assert "differs from the checkpoint" in error_of(
        capsys, ["train", noisy_xor, "--resume", ckpt, "--model", "dynamic"])
    assert "--seed/--seeds: [0] differs from the checkpoint" in error_of(
        capsys, ["train", noisy_xor, "--resume", ckpt, "--seed", "0"])
    assert "a checkpoint of clln train: resume it with clln train" in error_of(
        capsys, ["run", noisy_xor, "--sim", "--resume", ckpt])


def test_damaged_or_partial_checkpoints_are_refused(tmp_path, capsys):
    ckpt = tmp_path / "c.json"
    assert cli.main(["train", "paper-xor", "--model", "fixed", "--epochs", "1",
                     "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    text = ckpt.read_text()
    bad = tmp_path / "bad.json"
    cases = {
        "cut short": text[:len(text) // 2],
        "damaged": text.replace('"epoch":1,', '"epoch":2,'),
        "damaged ": text.replace(text[text.index('"data":"') + 12], "A" if text[
            text.index('"data":"') + 12] != "A" else "B", 1),
        "not a clln checkpoint": '{"gates": [1, 2]}',
        "checkpoint version 9": text.replace('"version":1', '"version":9'),
    }
    for what, content in cases.items():
        bad.write_text(content)
        err = error_of(capsys, ["train", "paper-xor", "--resume", bad, "--epochs", "1"])
        assert err.startswith(f"clln: error: {bad}: ") and what.strip() in err, err
    bad.write_bytes(b"\xff\xfe")
    assert "cannot read the checkpoint" in error_of(capsys, ["train", "paper-xor", "--resume",
                                                             bad])
    assert "cannot read the checkpoint: No such file" in error_of(
        capsys, ["train", "paper-xor", "--resume", tmp_path / "none.json"])


class FailingOs:
    """``os`` for :mod:`clln.checkpoint` alone, with some calls replaced (failing)."""

    def __init__(self, **calls):
        self.calls = calls

    def __getattr__(self, name):
        return self.calls.get(name) or getattr(os, name)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, capsys):
    """A write that fails midway (disk full at the flush) leaves the old checkpoint
    whole and no temporary file; the run still prints its results, then exits 2."""
    ckpt = tmp_path / "c.json"
    assert cli.main(["train", "paper-xor", "--model", "fixed", "--epochs", "1",
                     "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    old = ckpt.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "os", FailingOs(fsync=disk_full))
    with pytest.raises(OSError):
        checkpoint.save(ckpt, {"kind": "train", "epoch": 9})
    assert ckpt.read_bytes() == old and os.listdir(tmp_path) == ["c.json"]
    assert cli.main(["train", "paper-xor", "--epochs", "2", "--resume", str(ckpt),
                     "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["epochs"] == 3                 # the results, all of them
    assert f"clln: error: cannot write the checkpoint {ckpt}: No space left on device" in err
    assert ckpt.read_bytes() == old and os.listdir(tmp_path) == ["c.json"]
    assert json.loads(old)["epoch"] == 1


def test_results_printed_when_the_plot_fails(tmp_path, monkeypatch, capsys):
    import clln.plot

    def broken(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(clln.plot, "plot_training", broken)
    assert cli.main(["train", "paper-xor", "--model", "fixed", "--epochs", "1", "--plot",
                     str(tmp_path / "p.png")]) == 2
    out, err = capsys.readouterr()
    assert "1 of 1 seed(s)" in out or "0 of 1 seed(s)" in out
    assert "plot written" not in out
    assert err.splitlines()[-1].endswith(   # after the progress bar
        f"clln: error: cannot write {tmp_path / 'p.png'}: Input/output error")


def test_output_paths_are_checked_before_training(tmp_path, monkeypatch, capsys):
    import clln.sim.training

    def no_training(*args):
        raise AssertionError("trained before checking the outputs")

    monkeypatch.setattr(clln.sim.training, "make_model", no_training)
    (tmp_path / "file").write_text("")
    (tmp_path / "d.png").mkdir()            # (a --plot without a suffix gets .png)
    for flag, path, why in (("--checkpoint", tmp_path / "no" / "c.json", "does not exist"),
                            ("--checkpoint", tmp_path / "file" / "c.json", "is not a folder"),
                            ("--plot", tmp_path / "d.png", None)):
        err = error_of(capsys, ["train", "paper-xor", "--epochs", "1", flag, path])
        assert err == f"clln: error: {flag}: cannot write {path}: " + (
            f"folder {path.parent} {why}" if why else "it is a folder")
    class NoTemporaryFiles:
        def TemporaryFile(self, dir):
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cli_common, "tempfile", NoTemporaryFiles())
    err = error_of(capsys, ["train", "paper-xor", "--plot", tmp_path / "p.png"])
    assert err == f"clln: error: --plot: cannot write {tmp_path / 'p.png'}: Permission denied"
    for bad in ("-1", "x", "0s", "nans"):
        with pytest.raises(SystemExit):
            cli.main(["train", "paper-xor", "--checkpoint-every", bad])
        assert "expected N epochs, Ts seconds" in capsys.readouterr().err


def test_lfsr_order_is_the_same_every_epoch():
    """Why a resumed run reloads the LFSR from its seed: each epoch is one pass of the
    LFSR's cycle over the states of examples, so every epoch visits them in one order."""
    for n in (1, 2, 4, 5, 6, 16, 33, 1000):
        for seed in (0, 3, 5, 12345):
            order = p.lfsr_order(n, seed, 4)
            assert order == [order[0]] * 4 and sorted(order[0]) == list(range(n))


# -- clln run on the golden model of the board -------------------------------------------

def board_cli(argv):
    parser = argparse.ArgumentParser(prog="clln")
    cli_board.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


class FailingLink(LoopbackTransport):
    """The golden model behind a link that fails after ``after`` requests: the cable is
    pulled (SerialException) or the device falls silent (no reply: a timeout)."""

    def __init__(self, model, after, how):
        super().__init__(model.respond)
        self.model, self.after, self.how, self.sent = model, after, how, 0

    def write(self, data):
        self.sent += 1
        if self.after is not None and self.sent > self.after:
            if self.how == "pulled":
                raise serial.SerialException("write failed: [Errno 5] Input/output error")
            return
        super().write(data)

    def close(self):
        if self.how == "pulled" and self.after is not None and self.sent > self.after:
            raise serial.SerialException("close failed: [Errno 5] Input/output error")


def model_board(monkeypatch, after=None, how="pulled"):
    """``clln run`` talks to :class:`SystemModel` over a :class:`FailingLink`."""
    links = []

    def open_device(cfg, args, seed):
        link = FailingLink(SystemModel(cfg, seed=seed), after, how)
        links.append(link)
        return Device(link, timeout=0.05), link

    monkeypatch.setattr(cli_board, "_open_device", open_device)
    return links


@pytest.fixture
def short_xor(tmp_path):
    """paper-xor settling for a fixed 25 ticks, and 2 streams."""
    text = config_mod.resolve("paper-xor").read_text().replace(
        "settle_ticks = 1000", "settle_ticks = 25").replace('settle = "still"',
                                                            'settle = "fixed"')
    path = tmp_path / "short-xor.toml"
    path.write_text(text + "\n[fabric]\nstreams = 2\n")
    return path


def board_json(capsys, argv, status=0):
    assert board_cli(list(argv) + ["--json"]) == status
    return json.loads(capsys.readouterr().out)


def resumed_as_promised(cfg, gates_q, seeds, epochs):
    """What a resumed board run promises (cyclic order): the fixed-point model with the
    checkpoint's gates, node voltages 0 and the noise generators at their first state,
    its streams settling jointly."""
    model = FixedPointModel(cfg, seeds, joint=True, lag=cfg.fabric.still_lag)
    model.gates[:] = gates_q
    return train(model, epochs)


def test_run_resumed_on_the_board_model(short_xor, tmp_path, monkeypatch, capsys):
    """2 + 3 epochs of a 2-stream board: the gates of the fixed-point model resumed by
    the board's rule (nodes 0, not those of an uninterrupted run); the curve goes on."""
    model_board(monkeypatch)
    ckpt = tmp_path / "c.json"
    first = board_json(capsys, ["run", short_xor, "--sim", "--epochs", 2, "--seed", 4,
                                "--checkpoint", ckpt])
    saved = json.loads(ckpt.read_text())
    assert saved["epoch"] == 2 and [s["seed"] for s in saved["streams"]] == [4, 5]
    assert [s["gates_final"] for s in saved["streams"]] == [
        s["gates_final"] for s in first["streams"]]
    resumed = board_json(capsys, ["run", short_xor, "--sim", "--epochs", 3, "--resume", ckpt])
    cfg = config_mod.load(short_xor)
    ref = resumed_as_promised(cfg, np.array([s["gates_q"] for s in saved["streams"]]), [4, 5],
                              3)
    for s, r in enumerate(resumed["streams"]):
        assert r["gates_final"] == ref.gates_final[s].tolist()
        assert r["outputs_final"] == ref.outputs_final[s].tolist()
        assert r["error_sums"][:2] == first["streams"][s]["error_sums"]
        assert len(r["mse_per_epoch"]) == 5
    assert (resumed["epochs"], resumed["epochs_run"], resumed["seed"]) == (5, 3, 4)
    straight = board_json(capsys, ["run", short_xor, "--sim", "--epochs", 5, "--seed", 4,
                                   "--checkpoint", tmp_path / "s.json"])
    # what differs: the node voltages at the resume (0, not those epoch 2 left)
    assert resumed["gates_final"] != straight["gates_final"]
    assert resumed["error_sums"][:2] == straight["error_sums"][:2]


def test_run_resumed_in_lfsr_order(short_xor, tmp_path, monkeypatch, capsys):
    """The resumed run trains in the LFSR order of its seed: the golden model's, from the
    checkpoint's gates with nodes 0."""
    links = model_board(monkeypatch)
    lfsr = tmp_path / "l.json"
    board_json(capsys, ["run", short_xor, "--sim", "--epochs", 2, "--order", "lfsr", "--seed",
                        3, "--checkpoint", lfsr])
    gates = np.array([s["gates_q"] for s in json.loads(lfsr.read_text())["streams"]])
    resumed = board_json(capsys, ["run", short_xor, "--sim", "--epochs", 3, "--resume", lfsr])
    assert resumed["order"] == "lfsr" and links[1].model.schedule.order == p.Order.LFSR
    cfg = config_mod.load(short_xor)
    ref = SystemModel(cfg, seed=3)                  # RESET: nodes 0; the checkpoint's gates
    ref.write_schedule(p.ScheduleParams.from_config(cfg, 4, p.Order.LFSR, 3))
    ref.write_gates(0, gates.ravel())
    ref.run(3, True)
    assert p.lfsr_order(4, 3, 1)[0] != [0, 1, 2, 3]          # not the cyclic order
    assert [s["gates_final"] for s in resumed["streams"]] == ref.fmt.g_to_volts(
        ref.gates.reshape(len(gates), -1)).tolist()
    err = "--order: cyclic differs from the checkpoint"
    with pytest.raises(config_mod.ConfigError, match=err):
        board_cli(["run", short_xor, "--sim", "--resume", lfsr, "--order", "cyclic"])


@pytest.mark.parametrize("how,why", [("pulled", "SerialException: write failed"),
                                     ("silent", "LinkTimeout: no reply to RUN_EPOCHS")])
def test_link_error_saves_the_last_good_state(short_xor, tmp_path, monkeypatch, capsys, how,
                                              why):
    """The link fails in epoch 5 of 6 (checkpoints every 2 epochs): one line naming the
    epoch and the file, exit 2; the checkpoint holds epoch 4, which resumes."""
    # requests: identify, status, reset, dataset, schedule, gates (2 x 32: two frames);
    # per epoch a run and a status; the gates after epochs 2 and 4
    good = 7 + 4 * 2 + 2
    links = model_board(monkeypatch, after=good, how=how)
    ckpt = tmp_path / "c.json"
    argv = ["run", short_xor, "--sim", "--epochs", 6, "--seed", 1, "--checkpoint", ckpt,
            "--checkpoint-every", 2, "--json"]
    assert cli.main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"clln: error: the link failed during epoch 5 ({why}")
    assert err.endswith(f"); the state after epoch 4 is saved in {ckpt}: continue with "
                        f"--resume {ckpt}\n")
    assert links[0].sent == good + 1           # RUN_EPOCHS of epoch 5 failed
    saved = json.loads(ckpt.read_text())
    ok = tmp_path / "ok.json"
    model_board(monkeypatch)
    four = board_json(capsys, ["run", short_xor, "--sim", "--epochs", 4, "--seed", 1,
                               "--checkpoint", ok])
    assert saved["epoch"] == 4 and saved["streams"] == json.loads(ok.read_text())["streams"]
    assert saved["error_sums"] == [list(e) for e in zip(
        *[s["error_sums"] for s in four["streams"]], strict=True)]
    resumed = board_json(capsys, ["run", short_xor, "--sim", "--resume", ckpt])
    assert (resumed["epochs_run"], resumed["epochs"]) == (2, 6)
    ref = resumed_as_promised(config_mod.load(short_xor),
                              np.array([s["gates_q"] for s in saved["streams"]]), [1, 2], 2)
    assert [s["gates_final"] for s in resumed["streams"]] == ref.gates_final.tolist()


def test_link_error_before_any_epoch_saves_nothing(short_xor, tmp_path, monkeypatch, capsys):
    model_board(monkeypatch, after=3)
    ckpt = tmp_path / "c.json"
    assert cli.main(["run", str(short_xor), "--sim", "--epochs", "2",
                     "--checkpoint", str(ckpt), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clln: error: the link failed during loading the dataset, "
                          "schedule and gates (SerialException: ")
    assert err.endswith("; no epoch was trained, nothing saved\n") and not ckpt.exists()
    model_board(monkeypatch, after=0)                   # a port that fails at once
    assert cli.main(["run", str(short_xor), "--sim", "--checkpoint", str(ckpt), "--json"]) == 2
    assert capsys.readouterr().err == ("clln: error: the link failed at IDENTIFY "
                                       "(SerialException: write failed: [Errno 5] Input/output "
                                       "error); nothing was trained\n")


def test_run_results_printed_when_the_checkpoint_cannot_be_written(short_xor, tmp_path,
                                                                  monkeypatch, capsys):
    model_board(monkeypatch)
    ckpt = tmp_path / "c.json"

    def read_only(*args):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint, "os", FailingOs(replace=read_only))
    assert board_cli(["run", short_xor, "--sim", "--epochs", 2, "--checkpoint", ckpt]) == 2
    out, err = capsys.readouterr()
    assert "final (inference pass)" in out and "checkpoint (epoch" not in out
    assert err.endswith(f"clln: error: cannot write the checkpoint {ckpt}: "
                        "Permission denied\n")
    assert not ckpt.exists() and os.listdir(tmp_path) == ["short-xor.toml"]
