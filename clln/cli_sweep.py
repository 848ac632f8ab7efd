"""``clln sweep``: a config over the product of axes on a golden model (engine:
:mod:`clln.sweep`, file format: ``docs/sweep.md``)."""

import json
import math
import sys
from pathlib import Path

from .cli_common import whole_number


def cmd_sweep(args):
    """Run (or resume) a sweep file and report where its results are."""
    from . import sweeps as sweep_mod
    spec = sweep_mod.load_sweep(args.sweep)
    out_dir = Path(args.out) if args.out else Path("sweeps") / Path(args.sweep).stem
    bar = None

    def progress(done, total):
        nonlocal bar
        if args.json:
            return
        if bar is None:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=done, desc=Path(args.sweep).stem, unit="point",
                       file=sys.stderr, leave=False, mininterval=0.2)
        else:
            bar.update(done - bar.n)

    try:
        result = sweep_mod.run_sweep(spec, out_dir, workers=args.workers,
                                     scheduler=args.scheduler, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        rows = [{k: _json_value(v) for k, v in r.items()} for r in result.rows]
        json.dump({"points": len(rows), "ran": result.ran, "resumed": result.resumed,
                   "out": str(out_dir), "rows": rows}, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    where = f"Dask at {args.scheduler}" if args.scheduler else "local"
    print(f"{Path(args.sweep).name}: {len(result.rows)} points ({result.ran} run, "
          f"{result.resumed} from the journal), {spec.model} model, {where}, "
          f"{result.seconds:.1f} s")
    _print_summary(spec, result.table)
    print(f"results: {out_dir / 'results.parquet'}, {out_dir / 'results.csv'}, "
          f"{out_dir / 'summary.png'}")
    return 0


def _json_value(v):
    """None for a NaN or infinite float (an error that diverged), which JSON cannot hold."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _print_summary(spec, table):
    """Success count and median final MSE per combination of the non-seed axes."""
    from .sweeps import SEED_AXIS
    keys = [k for k in spec.keys if k != SEED_AXIS]
    groups = table.groupby(keys, sort=False, dropna=False) if keys else [((), table)]
    for values, rows in groups:
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{k} = {v}" for k, v in zip(keys, values, strict=True)) or "all"
        print(f"  {label}: {int(rows['reached'].sum())} of {len(rows)} reached, median "
              f"final MSE {rows['mse_final'].median():.3e} V^2")


def add_parsers(sub):
    """Add ``sweep`` to the ``clln`` argument parser."""
    p = sub.add_parser("sweep", help="run a config over a grid of values on a golden model",
                       description="Run SWEEP.toml (docs/sweep.md): its config over the "
                       "product of its axes, each a dotted config key and a list of values. "
                       "A rerun with the same --out resumes from the rows already written.")
    p.add_argument("sweep", metavar="SWEEP.toml")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default sweeps/<sweep file stem>)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=whole_number(1),
                       help="local worker processes (default: the core count)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster whose scheduler is at ADDRESS "
                       "(tcp://HOST:PORT)")
    p.add_argument("--json", action="store_true",
                   help='print {"points": N, "rows": [...]} (no progress bar)')
    p.set_defaults(func=cmd_sweep)
