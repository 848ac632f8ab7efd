"""docs/api.md's examples, run as written (one namespace, in a fresh folder), and the
options check of ``clln.api``."""

import re
from pathlib import Path

import pytest

import clln
from clln.errors import CllnError

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
NOT_RUN = "# not run by tests/test_api.py"


def doc_blocks():
    """The Python blocks of docs/api.md, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.sim
def test_the_documented_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = doc_blocks()
    assert len(blocks) >= 6
    namespace = {}
    ran = 0
    for block in blocks:
        if block.startswith(NOT_RUN):
            continue
        exec(compile(block, f"{DOC}:block {ran}", "exec"), namespace)
        ran += 1
    assert ran == len(blocks) - 1
    out = capsys.readouterr().out
    assert "<clln.Network paper-xor: 16 nodes, 32 edges>" in out
    assert "train: epochs: must be >= 0, got -1" in out
    assert (tmp_path / "c.json").exists() and (tmp_path / "gen/paper-xor").is_dir()


def test_options_are_checked_as_on_the_command_line():
    net = clln.load("paper-xor")
    with pytest.raises(CllnError, match="train: model: must be one of quasistatic"):
        net.train(model="spice")
    with pytest.raises(CllnError, match="train: epoch: not an option of clln train"):
        net.train(epoch=3)
    with pytest.raises(CllnError, match="consecutive seeds"):
        net.train(seeds=[0, 2])
    with pytest.raises(CllnError, match="give a port or sim=True"):
        net.run()
    with pytest.raises(CllnError, match="build: board: must be one of"):
        net.build("de10-nano")


def test_train_equals_the_command_line(capsys):
    import json

    from clln import cli
    result = clln.load("paper-regression").train(model="fixed", epochs=3, seeds=range(2))
    assert cli.main(["train", "paper-regression", "--model", "fixed", "--epochs", "3",
                     "--seeds", "0-1", "--json"]) == 0
    cli_report = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in result.items() if k != "seconds"} == \
        {k: v for k, v in cli_report.items() if k != "seconds"}
    assert result.history.mse_curve.shape == (2, 3)
