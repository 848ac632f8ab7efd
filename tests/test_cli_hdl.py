"""CLI of the HDL layer: ``clln generate`` and ``clln verify``."""

import json

import pytest

from clln import cli
from clln import config as config_mod


def test_cli_generate(tmp_path, capsys):
    assert cli.main(["generate", "paper-regression", "-o", str(tmp_path)]) == 0
    assert "1 cycle(s) per tick" in capsys.readouterr().out
    assert (tmp_path / "paper-regression.v").stat().st_size > 10000
    assert json.loads((tmp_path / "manifest.json").read_text())["edges"] == 32


@pytest.mark.sim
def test_cli_verify_json(tmp_path, capsys):
    # a fabric of two streams (paper-xor networks of seeds 0 and 1)
    toml = config_mod.resolve("paper-xor").read_text() + "\n[fabric]\nstreams = 2\n"
    (tmp_path / "xor2.toml").write_text(toml)
    code = cli.main(["verify", str(tmp_path / "xor2.toml"), "--ticks", "50", "--json",
                     "--netlist", "hierarchical",
                     "--build-dir", str(tmp_path / "build")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["ticks"], out["mismatches"], out["first_mismatch"]) == (50, 0, None)
    assert (out["streams"], out["seeds"], out["cycles_per_tick"]) == (2, [0, 1], 2)
    # every value of both streams at every row (the 50 ticks, the start and the free
    # run's end), and moved once per reported tick (the 50, then the free rounds)
    moves = out["moved_ticks"] + out["quiet_ticks"]
    assert moves == out["reported_ticks"] == 50 + out["free_rounds"]
    assert out["compared"] == 52 * (2 * (16 * 2 + 32 + 1) + 2) + moves


def test_cli_verify_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "paper-xor", "--ticks", "0"])
    assert exit_info.value.code == 2
    assert "--ticks: must be >= 1" in capsys.readouterr().err
    assert cli.main(["generate", "no-such-config", "-o", "x"]) == 2
    assert "no such file" in capsys.readouterr().err
