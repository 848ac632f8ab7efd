"""hdl/NAME holds exactly what `clln generate NAME -o hdl/NAME` writes today."""

from pathlib import Path

import pytest

from clln import config
from clln.gateware.export import generate

HDL = Path(__file__).resolve().parents[1] / "hdl"


@pytest.mark.parametrize("name", ["paper-xor", "paper-regression"])
def test_checked_in_verilog_is_fresh(name, tmp_path):
    generate(config.load(name), tmp_path)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in (HDL / name).iterdir()) == fresh
    for file in fresh:
        assert (HDL / name / file).read_bytes() == (tmp_path / file).read_bytes(), (
            f"hdl/{name}/{file} is stale: run `clln generate {name} -o hdl/{name}`")
