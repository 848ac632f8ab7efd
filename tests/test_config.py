"""Config loading and validation: every bad value names its file, key and reason."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import builtin_dict

from clln import config
from clln.errors import ConfigError


def test_paper_xor_layout():
    cfg = config.load("paper-xor")
    assert cfg.network.n_nodes == 16 and cfg.network.n_edges == 32
    assert (cfg.network.degrees() == 4).all()
    # Edge 0 joins (0,0) to (0,1); the wrap edge of row 0 joins (0,3) to (0,0).
    assert cfg.network.edges[0].tolist() == [0, 1]
    assert cfg.network.edges[3].tolist() == [3, 0]
    assert cfg.io.outputs == ((10, 0),)
    np.testing.assert_allclose(cfg.task.y[:, 0], [0, -0.087, -0.087, 0])


def test_grid_and_edge_list_topologies(xor_dict):
    xor_dict["network"] = {"topology": "grid", "rows": 4, "cols": 4}
    assert config.parse(xor_dict).network.n_edges == 24
    xor_dict["network"] = {"topology": "edges", "nodes": 16,
                           "edges": [[i, i + 1] for i in range(15)]}
    assert config.parse(xor_dict).network.n_edges == 15


def _expect(data, key, fragment):
    with pytest.raises(ConfigError) as info:
        config.parse(data, "net.toml")
    assert info.value.key == key, str(info.value)
    assert fragment in info.value.why, str(info.value)
    assert str(info.value).startswith("net.toml: ")


@pytest.mark.parametrize("section, key, value, where, fragment", [
    ("network", "colour", "red", "network.colour", "unknown key"),
    ("io", "inputs", [15, 99], "io.inputs", "out of range"),
    ("io", "inputs", [15, 5], "io.rails", "used twice"),
    ("io", "outputs", [[10, 13]], "io.outputs", "used twice"),
    ("learning", "eta", 0.0, "learning.eta", ">= 1e-06"),
    ("learning", "eta", 1.5, "learning.eta", "<= 1.0"),
    ("learning", "gate_min", 6.0, "learning.gate_min", "below learning.gate_max"),
    ("learning", "gate_init", [0.1, 2.0], "learning.gate_init", "outside"),
    ("learning", "gate_init", [1.0, 2.0, 3.0], "learning.gate_init", "3 values for 32 edges"),
    ("learning", "epochs", -1, "learning.epochs", ">= 0"),
    ("task", "dataset", "nope.csv", "task.dataset", "neither a built-in"),
    ("io", "rails", [[5, 0.11], [7, 0.9]], "io.rails", "outside the node range"),
    ("schedule", "kappa", 0.2, "schedule.kappa", "unstable"),
    ("schedule", "relax", "gauss-seidel", "schedule.relax", "one of 'euler', 'jacobi'"),
    ("schedule", "settle", 3, "schedule.settle", "one of 'fixed', 'still'"),
    ("schedule", "still_ticks", 0, "schedule.still_ticks", ">= 1"),
    ("schedule", "still_ticks", 256, "schedule.still_ticks", "<= 255"),
    ("schedule", "still_lsb", -1, "schedule.still_lsb", ">= 0"),
    ("schedule", "momentum_shift", 0, "schedule.momentum_shift", ">= 1"),
    ("schedule", "momentum_shift", 31, "schedule.momentum_shift", "<= 30"),
    ("schedule", "momentum_shift", 2.5, "schedule.momentum_shift", "an integer"),
    ("fixed", "g_frac", 8, "fixed.g_frac", ">= fixed.v_frac"),
    ("device", "k", -1.0, "device.k", ">= 1e-12"),
    ("fabric", "serial", 1, "fabric.serial", "true or false"),
    ("fabric", "edge_units", 40, "fabric.edge_units", "<= 32"),
    ("fabric", "streams", 9, "fabric.streams", "<= 8"),
    ("fabric", "streams", 0, "fabric.streams", ">= 1"),
    ("fabric", "streams", "4", "fabric.streams", "an integer"),
])
def test_bad_values_are_named(xor_dict, section, key, value, where, fragment):
    xor_dict.setdefault(section, {})[key] = value
    if where == "schedule.kappa":
        # Stability is checked (for the euler step) where the tick models are built.
        xor_dict["schedule"]["relax"] = "euler"
        from clln.sim.dynamic import DynamicModel
        with pytest.raises(ConfigError) as info:
            DynamicModel(config.parse(xor_dict, "net.toml"), [0])
        assert info.value.key == where and fragment in info.value.why
        return
    _expect(xor_dict, where, fragment)


def test_jacobi_needs_no_stable_kappa(xor_dict):
    """A kappa that the euler step refuses is no concern of the jacobi step."""
    from clln.sim.dynamic import DynamicModel
    xor_dict["schedule"].update(kappa=0.2, relax="jacobi")
    assert DynamicModel(config.parse(xor_dict, "net.toml"), [0]).cfg.schedule.relax == "jacobi"


def test_serial_fabric_key(xor_dict):
    xor_dict["fabric"] = {"serial": True}
    cfg = config.parse(xor_dict)
    assert cfg.fabric.serial and cfg.fabric.edge_units == 0 and cfg.has_fabric
    xor_dict["fabric"]["edge_units"] = 4
    _expect(xor_dict, "fabric.serial", "leave out edge_units")


def test_streams_fabric_key(xor_dict):
    xor_dict["fabric"] = {"streams": 4}
    cfg = config.parse(xor_dict)
    assert cfg.fabric.streams == 4 and not cfg.fabric.serial and cfg.fabric.edge_units == 0
    assert config.refold(cfg, "streams:3").fabric.streams == 3
    assert config.refold(cfg, 8).fabric == config.FabricFold(edge_units=8)
    for clash in ({"edge_units": 4}, {"serial": True}):
        xor_dict["fabric"] = {"streams": 2, **clash}
        _expect(xor_dict, "fabric.streams", "fully parallel")
    with pytest.raises(ConfigError, match="must be an integer"):
        config.refold(cfg, "streams:x")


def test_disconnected_graph(xor_dict):
    xor_dict["network"] = {"topology": "edges", "nodes": 16,
                           "edges": [[i, i + 1] for i in range(7)]
                           + [[8 + i, 9 + i] for i in range(7)]}
    _expect(xor_dict, "network.topology", "not connected")


def test_unknown_top_level_key(xor_dict):
    xor_dict["extra"] = 1
    _expect(xor_dict, "extra", "unknown key")


def test_input_range_is_configurable(tmp_path, xor_dict):
    (tmp_path / "d.csv").write_text("x1,x2,y1\n0,0.6,0\n0.6,0,-0.087\n")
    xor_dict["task"]["dataset"] = "d.csv"
    with pytest.raises(ConfigError, match="outside the node range"):
        config.parse(xor_dict, str(tmp_path / "net.toml"), tmp_path)
    xor_dict["io"]["v_max"] = 0.7
    cfg = config.parse(xor_dict, str(tmp_path / "net.toml"), tmp_path)
    assert cfg.task.x.shape == (2, 2)


@pytest.mark.parametrize("text, fragment", [
    ("x1,y1\n0,0\n", "1 input columns for 2 io.inputs"),
    ("x1,x2,y1,y2\n0,0,0,0\n", "2 target columns for 1 io.outputs"),
    ("a,b,c\n0,0,0\n", "header must be x1..xn then y1..ym"),
    ("x1,x2,y1\n0,zero,0\n", "not a number"),
    ("x1,x2,y1\n0,0\n", "2 columns, header has 3"),
    ("x1,x2,y1\n", "no examples"),
    ("x1,x2,y1\n0,0.45,0.5\n", "cannot be reached"),
])
def test_bad_csv(tmp_path, xor_dict, text, fragment):
    (tmp_path / "d.csv").write_text(text)
    xor_dict["task"]["dataset"] = "d.csv"
    with pytest.raises(ConfigError) as info:
        config.parse(xor_dict, "net.toml", tmp_path)
    assert info.value.key == "task.dataset" and fragment in info.value.why


def test_unreachable_single_ended_target(regression_dict, tmp_path):
    (tmp_path / "d.csv").write_text("x1,y1\n0.1,0.46\n")
    regression_dict["task"]["dataset"] = "d.csv"
    regression_dict["io"]["v_max"] = 0.5
    with pytest.raises(ConfigError, match="cannot be reached"):
        config.parse(regression_dict, "net.toml", tmp_path)


def test_cli_reports_bad_config_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(config.resolve("paper-xor").read_text().replace("eta = 0.3", "eta = 2.0"))
    for args in (["train", str(bad)], ["train", str(tmp_path / "missing.toml")],
                 ["train", "no-such-builtin"], ["train", "paper-xor", "--epochs", "-3"],
                 ["train", "paper-xor", "--seeds", "5-2"], ["train", "paper-xor", "--model", "x"],
                 ["run", "paper-xor", "--sim", "--epochs", "-3"],
                 ["build", "paper-xor", "--board", "icebreaker", "--baud", "x"],
                 ["verify", "paper-xor", "--ticks", "0"]):
        r = subprocess.run([sys.executable, "-m", "clln.cli", *args], capture_output=True,
                           text=True)
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip(), args
    r = subprocess.run([sys.executable, "-m", "clln.cli", "train", str(bad)],
                       capture_output=True, text=True)
    assert "learning.eta" in r.stderr and "bad.toml" in r.stderr


def test_builtin_configs_load():
    assert {"paper-xor", "paper-regression"} <= set(config.builtin_names())
    for name in config.builtin_names():
        assert config.load(name).name == name
    assert builtin_dict("paper-xor")["name"] == "paper-xor"


def test_per_edge_gate_init_is_used_as_given(xor_dict):
    """One value per edge is the edges' gates, not a range (a 32-value list was once read
    as ``[lo, hi]`` from its first two values)."""
    values = [0.75 + 0.07 * i for i in range(32)]
    xor_dict["learning"]["gate_init"] = values
    cfg = config.parse(xor_dict)
    np.testing.assert_array_equal(cfg.learning.initial_gates(32, 5), values)
    xor_dict["learning"]["gate_init"] = [1.0, 2.0]
    gates = config.parse(xor_dict).learning.initial_gates(32, 5)
    assert len(set(gates.tolist())) == 32 and gates.min() >= 1.0 and gates.max() <= 2.0


def test_momentum_defaults_come_from_the_graph(xor_dict):
    """``relax = "momentum"`` with no more keys: ``node_extra_bits`` 8, ``still_lsb`` 2 and
    ``momentum_shift`` from the graph's diameter (1 on the 4x4 torus, 4 on 16x16, capped
    at 5); keys given win, and the other steps have no momentum shift."""
    from clln.formats import Formats, graph_diameter, momentum_shift
    xor_dict["schedule"] = {"relax": "momentum"}
    xor_dict.pop("fixed")
    cfg = config.parse(xor_dict)
    assert (cfg.fixed.node_extra_bits, cfg.schedule.still_lsb) == (8, 2)
    assert graph_diameter(cfg.network) == 4 and momentum_shift(cfg) == 1
    fmt = Formats.from_config(cfg)
    assert (fmt.momentum_shift, fmt.node_extra_bits, fmt.m_bits) == (1, 8, 18 + 8 + 1)
    for size, shift in ((8, 2), (16, 4), (32, 5), (64, 5)):
        xor_dict["network"] = {"topology": "torus", "rows": size, "cols": size}
        assert momentum_shift(config.parse(xor_dict)) == shift, size
    xor_dict["schedule"].update(momentum_shift=7, still_lsb=1)
    xor_dict["fixed"] = {"node_extra_bits": 3}
    cfg = config.parse(xor_dict)
    assert (momentum_shift(cfg), cfg.schedule.still_lsb, cfg.fixed.node_extra_bits) == (7, 1, 3)
    xor_dict["schedule"]["relax"] = "jacobi"
    assert Formats.from_config(config.parse(xor_dict)).momentum_shift == 0


def test_graph_diameter_by_double_sweep():
    """The diameter of a path, a cycle and a lattice (exact for all three)."""
    from clln.formats import graph_diameter
    path = config.Network("edges", 6, np.array([[i, i + 1] for i in range(5)]))
    cycle = config.Network("edges", 7, np.array([[i, (i + 1) % 7] for i in range(7)]))
    grid = config.Network("grid", 12, config._lattice(3, 4, False), 3, 4)
    assert [graph_diameter(n) for n in (path, cycle, grid)] == [5, 3, 5]


def test_node_extra_bits_count_for_jacobi_only(xor_dict):
    from clln.formats import Formats
    xor_dict["fixed"]["node_extra_bits"] = 3
    assert Formats.from_config(config.parse(xor_dict)).node_extra_bits == 3
    xor_dict["schedule"]["relax"] = "euler"     # whole-LSB steps: the extra bits stay 0
    cfg = config.parse(xor_dict)
    assert cfg.fixed.node_extra_bits == 3 and Formats.from_config(cfg).node_extra_bits == 0
    xor_dict["schedule"]["relax"] = "jacobi"
    xor_dict["fixed"]["node_extra_bits"] = 9
    _expect(xor_dict, "fixed.node_extra_bits", "must be <= 8")
