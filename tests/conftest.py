"""Fixtures and config builders shared by the tests (``from conftest import ...``)."""

import copy
import dataclasses
import json
import os
import tomllib
from importlib import resources

import pytest

from clln import config as config_mod

#: Settle and learn ticks of :func:`small_xor`'s short schedule.
SETTLE, LEARN = 30, 2


def toml_value(v):
    """TOML text of a value: strings as JSON (a subset of TOML's basic strings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)                    # 1e+308, 5e-324, inf, nan are TOML floats
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def toml_text(data, prefix=""):
    """TOML text of a dict: plain keys first, then a ``[section]`` per table."""
    plain = [f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items()
             if not isinstance(v, dict)]
    tables = [f"\n[{prefix}{json.dumps(k)}]\n" + toml_text(v, f"{prefix}{json.dumps(k)}.")
              for k, v in data.items() if isinstance(v, dict)]
    return "".join(plain) + "".join(tables)


def builtin_dict(name):
    """A built-in config as a plain dict, to modify in tests."""
    return tomllib.loads((resources.files("clln.configs") / f"{name}.toml").read_text())


@pytest.fixture
def xor_dict():
    return copy.deepcopy(builtin_dict("paper-xor"))


@pytest.fixture
def regression_dict():
    return copy.deepcopy(builtin_dict("paper-regression"))


def small_xor(fold=None):
    """paper-xor with a short schedule (:data:`SETTLE`, :data:`LEARN`), refolded to
    ``fold`` (see ``config.refold``) unless None."""
    cfg = config_mod.load("paper-xor")
    if fold is not None:
        cfg = config_mod.refold(cfg, fold)
    return dataclasses.replace(
        cfg, schedule=dataclasses.replace(cfg.schedule, settle_ticks=SETTLE, learn_ticks=LEARN))


def tiny_config(tmp_path, units=2, settle=6, learn=2, two_outputs=False):
    """A 6-node, 7-edge network: one input, one rail, one differential output (and a
    single-ended one at node 2 with ``two_outputs``). ``units`` is a fold: a number of
    edge units or ``"streams:C"``."""
    if two_outputs:
        (tmp_path / "tiny.csv").write_text(
            "x1,y1,y2\n0.0,0.05,0.2\n0.3,-0.04,0.35\n0.15,0.02,0.25\n0.45,0.0,0.45\n"
            "0.1,0.03,0.2\n")
    else:
        (tmp_path / "tiny.csv").write_text(
            "x1,y1\n0.0,0.05\n0.3,-0.04\n0.15,0.02\n0.45,0.0\n0.1,0.03\n")
    data = {
        "name": "tiny",
        "network": {"topology": "edges", "nodes": 6,
                    "edges": [[0, 2], [2, 3], [3, 1], [2, 4], [4, 5], [5, 3], [1, 4]]},
        "device": {"vt": 0.62, "k": 8.5e-4},
        "io": {"inputs": [0], "rails": [[1, 0.45]],
               "outputs": [[4, 5], 2] if two_outputs else [[4, 5]]},
        "learning": {"eta": 0.5, "alpha": 40.0, "gate_init": [1.0, 2.5], "gate_min": 0.7,
                     "gate_max": 4.0, "epochs": 2, "seed": 3},
        "task": {"dataset": "tiny.csv"},
        "schedule": {"settle_ticks": settle, "learn_ticks": learn, "kappa": 0.02},
    }
    return config_mod.refold(config_mod.parse(data, "<tiny>", tmp_path), units)


# -- test tiers: the one place they are chosen ------------------------------------------------
# Each test that needs a tool carries its marker (pyproject.toml lists them): ``sim`` (cocotb
# benches on Icarus / Verilator), ``build`` (yosys / nextpnr), ``slow_build`` (ULX3S and Tang
# Nano 9K builds), ``slow_sim`` (soaks through the simulated board, minutes each). ``make
# test-fast`` deselects all of them; the hook below adds ``build`` to every ``slow_build``
# test and skips those unless CLLN_SLOW_BUILDS=1, and adds ``sim`` to every ``slow_sim``
# test and skips those unless CLLN_SLOW_SIMS=1 (``make test-slow`` sets both).
SLOW_BUILDS = os.environ.get("CLLN_SLOW_BUILDS") == "1"
SLOW_SIMS = os.environ.get("CLLN_SLOW_SIMS") == "1"


#: Slow tier -> (the tier its tests also belong to, whether it runs, why it is skipped).
SLOW_TIERS = {
    "slow_build": ("build", SLOW_BUILDS, "set CLLN_SLOW_BUILDS=1 for the ULX3S / Tang Nano 9K "
                   "builds"),
    "slow_sim": ("sim", SLOW_SIMS, "set CLLN_SLOW_SIMS=1 for the simulated-board soaks"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for tier, (base, runs, skipped) in SLOW_TIERS.items():
            if item.get_closest_marker(tier):
                if item.get_closest_marker(base) is None:
                    item.add_marker(getattr(pytest.mark, base))
                if not runs:
                    item.add_marker(pytest.mark.skip(reason=skipped))
