"""CLI commands of the gateware layer: ``clln generate`` and ``clln verify``."""

import json
import sys

from . import config as config_mod
from .cli_common import output_folder, whole_number


def generate_run(args):
    """``clln generate``'s work for parsed (or :mod:`clln.api`-made) ``args``: the config
    and what ``clln.gateware.export.generate`` wrote."""
    from .gateware.export import generate
    cfg = config_mod.load(args.config)
    output_folder(args.output, "-o")
    return cfg, generate(cfg, args.output, flat=args.flat)


def cmd_generate(args):
    """Write the fabric's Verilog and manifest for a config."""
    cfg, out = generate_run(args)
    info = out["info"]
    streams = f", {info['streams']} streams (seeds {info['seeds']})" if "streams" in info else ""
    print(f"{cfg.name}: wrote {out['verilog']} (top {info['top']}, {info['nodes']} nodes, "
          f"{info['edges']} edges, {info['edge_units']} edge units, "
          f"{info['cycles_per_tick']} cycle(s) per tick{streams}) and {out['manifest']}")
    return 0


def verify_run(args):
    """``clln verify``'s work for parsed (or :mod:`clln.api`-made) ``args``: the config and
    the report of ``clln.flows.verify``."""
    from .flows import verify
    cfg = config_mod.load(args.config)
    if args.build_dir:
        output_folder(args.build_dir, "--build-dir")
    return cfg, verify(cfg, sim=args.sim, ticks=args.ticks, waves=args.waves,
                       build_dir=args.build_dir, flat=args.netlist == "flat")


def cmd_verify(args):
    """Compare the fabric in a Verilog simulator with the fixed-point model."""
    cfg, res = verify_run(args)
    if args.json:
        json.dump(res, sys.stdout)
        sys.stdout.write("\n")
    else:
        rate = res["ticks_per_s"]
        streams = f", {res['streams']} streams" if res["streams"] > 1 else ""
        print(f"{cfg.name}: {res['sim']}, {res['ticks']} ticks + {res['free_rounds']} "
              f"free-running ({res['cycles_per_tick']} cycle(s) per tick{streams}, "
              f"{rate:.0f} ticks/s), {res['compared']} values compared, "
              f"{res['mismatches']} mismatches")
        first = res["first_mismatch"]
        if first:
            where = (f" (stream {first['stream']}, element {first['element']})"
                     if "stream" in first else "")
            print(f"first mismatch: tick {first['tick']}, {first['signal']}{where}: expected "
                  f"{first['expected']}, got {first['got']}")
        if args.waves:
            print(f"waves in {res['build_dir']}")
    return 1 if res["mismatches"] else 0


def add_parsers(sub):
    """Add the gateware subcommands to the ``clln`` argument parser."""
    p = sub.add_parser("generate", help="write the fabric's Verilog and manifest",
                       description="Write <name>.v and manifest.json of CONFIG's fabric.")
    p.add_argument("config")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--flat", action="store_true",
                   help="write one flattened, optimised module (faster to simulate)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("verify", help="compare the fabric in a simulator with the model",
                       description="Run CONFIG's fabric in a Verilog simulator (cocotb) and "
                       "compare every node voltage and gate with the fixed-point model at "
                       "every tick. Exits with 1 on a mismatch.")
    p.add_argument("config")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="icarus")
    p.add_argument("--ticks", type=whole_number(1, 10 ** 9), default=1000,
                   help="ticks to run (default 1000)")
    p.add_argument("--waves", action="store_true", help="dump waveforms")
    p.add_argument("--netlist", choices=("flat", "hierarchical"), default="flat",
                   help="simulate the flattened netlist (default, faster) or the "
                   "hierarchical one of amaranth.back.verilog")
    p.add_argument("--build-dir", metavar="DIR",
                   help="build folder (default build/verify/<name>/<sim>)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify)
