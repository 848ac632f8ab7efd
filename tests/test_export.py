"""Export: Verilog, manifest and flat netlist written by ``clln.gateware.export``."""

import json

import pytest
from conftest import builtin_dict
from fabric_configs import jacobi_xor_config, momentum_xor_config

from clln import config as config_mod
from clln.errors import ConfigError
from clln.formats import Formats
from clln.gateware.export import generate, top_name


def test_generate_writes_verilog_and_manifest(tmp_path):
    cfg = config_mod.refold(config_mod.load("paper-xor"), 6)
    out = generate(cfg, tmp_path / "hdl")
    text = (tmp_path / "hdl" / "paper-xor.v").read_text()
    assert f"module {top_name(cfg)}(" in text
    info = json.loads((tmp_path / "hdl" / "manifest.json").read_text())
    assert info == json.loads(json.dumps(out["info"]))
    assert info["top"] == "clln_paper_xor"
    assert (info["nodes"], info["edges"], info["edge_units"], info["cycles_per_tick"]) == \
        (16, 32, 6, 6)
    assert info["gate_read_latency"] == 1
    assert info["ports"]["v_free"] == {"dir": "out", "width": 16 * 17,      # v_bits 17
                                        "member": "v_free"}
    assert info["ports"]["gates"] == {"dir": "out", "width": 32 * 23,       # g_bits 23
                                       "member": "gates"}
    assert info["ports"]["control__sample_addr"]["width"] == 3          # 4 drives + 1 target
    assert info["ports"]["status__sat_flags"] == {"dir": "out", "width": 5,
                                                  "member": "status.sat_flags"}
    assert info["flags"] == {"term": 1, "acc": 2, "dv": 4, "v": 8, "dg": 16}
    assert info["formats"]["kappa_mul"] * 2.0 ** -info["formats"]["kappa_shift"] == \
        pytest.approx(cfg.schedule.kappa, rel=0.05)
    assert info["formats"]["leak_q"] == 512
    assert info["driven_nodes"] == [15, 13, 5, 7]
    assert info["ports"]["control__tick_done"] == {"dir": "out", "width": 1,
                                                   "member": "control.tick_done"}
    assert info["ports"]["control__moved"] == {"dir": "out", "width": 1,
                                               "member": "control.moved"}
    assert (info["formats"]["relax"], info["formats"]["still_lsb"]) == ("jacobi", 2)
    assert info["formats"]["node_extra_bits"] == 2
    assert info["formats"]["box_lo_q"] < 0 < info["formats"]["box_hi_q"]
    assert "control__moved" in text


def test_generate_jacobi_manifest(tmp_path):
    """A jacobi fabric's manifest has its node step, box and stillness threshold."""
    cfg = jacobi_xor_config(still_lsb=16)
    info = generate(cfg, tmp_path)["info"]
    fmt = Formats.from_config(cfg)
    formats = info["formats"]
    assert (formats["relax"], formats["still_lsb"]) == ("jacobi", 16)
    assert (formats["box_lo_q"], formats["box_hi_q"]) == (fmt.box_lo_q, fmt.box_hi_q)
    assert formats["box_lo_q"] < 0 < formats["box_hi_q"]
    assert info["ports"]["control__moved"]["dir"] == "out"
    assert "momentum_shift" not in formats


def test_generate_momentum_manifest(tmp_path):
    """A momentum fabric's manifest has its node step, its b and its extra bits."""
    info = generate(momentum_xor_config(extra=3, shift=2), tmp_path)["info"]
    formats = info["formats"]
    assert (formats["relax"], formats["momentum_shift"], formats["node_extra_bits"]) == (
        "momentum", 2, 3)


def test_generate_streams_manifest(tmp_path):
    cfg = config_mod.refold(config_mod.load("paper-xor"), "streams:2")
    info = generate(cfg, tmp_path)["info"]
    assert (info["streams"], info["seeds"], info["cycles_per_tick"]) == (2, [0, 1], 2)
    assert info["gate_read_latency"] == 5
    assert info["stream_gate_init"][0] == info["gate_init"]
    assert info["stream_gate_init"][1] != info["gate_init"]
    ports = info["ports"]
    assert ports["control__busy"] == {"dir": "out", "width": 1, "member": "control.busy"}
    assert ports["v_free"]["width"] == ports["v_clamped"]["width"] == 2 * 16 * 17
    assert ports["gates"]["width"] == 2 * 32 * 23
    assert ports["control__outputs"]["width"] == 2 * 18
    assert ports["gate__addr"]["width"] == ports["gate__raddr"]["width"] == 6    # 64 gates
    assert "busy" in (tmp_path / "paper-xor.v").read_text()
    # a fabric of one network has no streams keys (tests/test_hdl_checked_in.py)


def test_generate_flat_netlist(tmp_path):
    cfg = config_mod.load("paper-regression")
    out = generate(cfg, tmp_path, flat=True)
    text = (tmp_path / "paper-regression.v").read_text()
    assert text.count("\nmodule ") == 1 and "module clln_paper_regression(" in text
    assert out["info"]["netlist"] == "flat"
    assert out["info"]["ports"]["control__outputs"] == {"dir": "out", "width": 19,
                                                       "member": "control.outputs"}


def test_generate_refuses_unstable_kappa(tmp_path):
    data = builtin_dict("paper-xor")
    data["schedule"].update(kappa=0.5, relax="euler")
    cfg = config_mod.parse(data, "<unstable>")
    with pytest.raises(ConfigError, match="kappa"):
        generate(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
