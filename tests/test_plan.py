"""The default build's plan (clln.boards.plan): chosen from estimates, before any tool."""

import json
from pathlib import Path

import pytest

from clln import cli
from clln import config as config_mod
from clln.boards.plan import SERIAL_FABRIC_LUT, SYSTEM_LUT, estimated_serial_luts, plan_build
from clln.boards.targets import BuildError


def torus_config(tmp_path, side):
    """paper-xor on a side x side torus (its widths and schedule, nodes moved)."""
    n = side * side
    text = config_mod.resolve("paper-xor").read_text()
    for old, new in [("rows = 4", f"rows = {side}"), ("cols = 4", f"cols = {side}"),
                     ('name = "paper-xor"', f'name = "xor-{side}"'),
                     ("inputs = [15, 13]", f"inputs = [{n - 1}, {n - 3}]"),
                     ("rails = [[5, 0.11], [7, 0.33]]",
                      f"rails = [[{side + 1}, 0.11], [{side + 3}, 0.33]]"),
                     ("outputs = [[10, 0]]", f"outputs = [[{n // 2 + side // 2}, 0]]")]:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"xor-{side}.toml"
    path.write_text(text)
    return path


def test_estimates_are_the_measurements_at_the_measured_sizes(tmp_path):
    cfg = config_mod.load("paper-xor")
    # paper-xor's serial systems as built (docs/boards.md)
    assert estimated_serial_luts(cfg, "ice40") == 5032
    assert estimated_serial_luts(cfg, "ecp5") == 6217
    assert estimated_serial_luts(cfg, "gowin") == 6042
    big = config_mod.load(torus_config(tmp_path, 8))
    measured = SERIAL_FABRIC_LUT["ecp5"][1]
    assert measured[0] == 128
    assert estimated_serial_luts(big, "ecp5") == SYSTEM_LUT["ecp5"] + measured[1]
    # the packed growth from 32 to 128 edges (62 cells) on paper-xor's system: fits 5,280
    assert estimated_serial_luts(big, "ice40") == 5032 + 5337 - 5275 == 5094


@pytest.mark.parametrize("board, clock", [("icebreaker", None), ("ulx3s-85f", "max"),
                                          ("tangnano9k", None)])
def test_paper_configs_plan_the_serial_fabric(board, clock):
    for name in ("paper-xor", "paper-regression"):
        plan = plan_build(config_mod.load(name), board)
        assert (plan.fabric, plan.clock_mhz) == ("serial", clock)
        assert plan.minutes < 10
        text = " ".join(plan.reasons)
        assert "streams:8 --clock 50 --pnr-clock 36 --pnr-seed 3" in text
        assert plan.as_dict()["estimated_lut"] == plan.lut


def test_a_network_too_big_for_the_board_is_refused_before_any_build(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = torus_config(tmp_path, 16)             # 512 edges: its memories do not fit
    with pytest.raises(BuildError, match=r"about 34 block RAMs > 30"):
        plan_build(config_mod.load(path), "icebreaker")
    assert cli.main(["build", str(path), "--board", "icebreaker", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "estimated not to fit icebreaker" in err
    assert not Path("build").exists()              # refused before any folder or tool


def test_the_plan_is_what_the_build_builds(tmp_path, capsys, monkeypatch):
    """``clln build`` with no fabric builds the plan's fabric at its clock policy and
    reports the plan (the build itself replaced by a recorder)."""
    from clln.boards import system
    from clln.boards.targets import BuildReport
    seen = {}

    def fake_build_system(cfg, board, build_dir, clock_mhz=None, *rest):
        seen.update(serial=cfg.fabric.serial, clock=clock_mhz, board=board)
        rep = BuildReport(board, Path(build_dir) / "top.bit", 25.0, 52.0, 5600, 2, 3, 60.0, {})
        return rep, 1, 100
    monkeypatch.setattr(system, "build_system", fake_build_system)
    # what the bitstream should take is the fixed model's business (tests of clln.flows)
    monkeypatch.setattr("clln.flows.expected_board_time", lambda cfg, cpt, hz: {
        "ticks_per_example": 88.0, "seconds_per_example": 88 * cpt / hz,
        "seconds_per_example_all_streams": 88 * cpt / hz, "seconds_to_train": 1.0})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["build", "paper-xor", "--board", "ulx3s-85f", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert seen == {"serial": True, "clock": "max", "board": "ulx3s-85f"}
    assert out["plan"]["fabric"] == "serial" and out["plan"]["clock"] == "max"
    assert out["serial"] and out["attempts"] == []
    assert cli.main(["build", "paper-xor", "--board", "ulx3s-85f", "--clock", "30"]) == 0
    assert seen["clock"] == 30.0                   # an explicit clock wins
    assert "plan: serial fabric" in capsys.readouterr().err


def test_block_rams_are_estimated_from_the_serial_builds_and_refuse_a_torus_too_big(tmp_path):
    """On the big tori the memories run out first: the estimate is the builds' count at
    the measured sizes, and a 64x64 torus is refused on the ULX3S-45F for block RAMs
    while its logic would fit."""
    from clln.boards.plan import SERIAL_BRAM, estimated_serial_brams
    assert estimated_serial_brams(config_mod.load("paper-xor"), "ecp5") == 5
    for edges, brams in SERIAL_BRAM["ecp5"]:
        side = round((edges / 2) ** 0.5)
        if side != 4:
            cfg = config_mod.load(torus_config(tmp_path, side))
            assert cfg.network.n_edges == edges
            assert estimated_serial_brams(cfg, "ecp5") == brams
    plan = plan_build(config_mod.load(torus_config(tmp_path, 64)), "ulx3s-85f")
    assert plan.as_dict()["estimated_bram"] == 162
    assert "162 of 208 block RAMs" in plan.reasons[0]
    big = config_mod.load(torus_config(tmp_path, 64))
    assert estimated_serial_luts(big, "ecp5") < 43848
    with pytest.raises(BuildError, match=r"about 162 block RAMs > 108") as err:
        plan_build(big, "ulx3s-45f")
    assert "logic cells" not in str(err.value)
