"""Settling against lattice size for the three node steps, and paper-xor trained with
momentum; prints markdown tables.

    python bench/momentum.py [--sizes 4 8 16 32 64] [--seeds 2] [--examples 2]
                             [--cap 50000] [--shifts 3 4 6] [--fit-max 32]
                             [--train-seeds 10]

Settling (the fixed-point model, one core): paper-xor's device and widths on an L x L
torus (``bench/scaling.py``'s io), gates drawn uniformly in [1, 2] V per seed, every
example settling from a cold start (all nodes at 0 V) until still (4 ticks in a row in
which no node moves by more than ``still_lsb``; at most ``--cap`` ticks). Schemes: euler
(paper-xor's kappa), jacobi with ``node_extra_bits`` 0 and 8 (still_lsb 1, and 2 with 8
bits), momentum at its defaults (8 extra bits, still_lsb 2, the graph's
``momentum_shift``), at still_lsb 1, and with each ``b`` of ``--shifts``. Per scheme and L:
the ticks until still (median over seeds x examples; ``cap`` when some run never got
still) and the error then against the quasi-static solution at the same (quantised)
gates, in LSBs of 2^-16 V (median and worst node over the runs). The exponent p of
ticks ~ L^p is the least-squares slope of log ticks on log L over the sizes up to
``--fit-max`` that got still.

Training: paper-xor (its shipped schedule) with ``relax = jacobi`` and ``momentum`` (8
extra bits; the shipped F 2 too), the fixed model, seeds ``0 .. --train-seeds - 1``:
seeds reaching MSE <= 1e-4 V^2 and the ticks per example (mean / max).
"""

import argparse
import dataclasses
import math
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from scaling import torus_config  # noqa: E402

from clln import config  # noqa: E402
from clln.formats import momentum_shift  # noqa: E402
from clln.sim.fixed import FixedPointModel  # noqa: E402
from clln.sim.quasistatic import QuasiStaticModel  # noqa: E402
from clln.sim.training import train  # noqa: E402

#: A run whose ticks move no node by more than ``still_lsb`` for this many ticks is still.
STILL_TICKS = 4
#: Training succeeds at this MSE (V^2).
MSE_GOAL = 1e-4


def scheme_config(cfg, relax, extra, shift=0, still_lsb=1):
    """``cfg`` with node step ``relax``, ``node_extra_bits = extra``, ``momentum_shift =
    shift`` (0: the graph's), settling until still."""
    sch = dataclasses.replace(cfg.schedule, relax=relax, settle="still",
                              still_ticks=STILL_TICKS, still_lsb=still_lsb,
                              momentum_shift=shift)
    return dataclasses.replace(cfg, schedule=sch,
                               fixed=dataclasses.replace(cfg.fixed, node_extra_bits=extra))


def random_gates_config(size, cap):
    """paper-xor on a ``size`` x ``size`` torus, gates uniform in [1, 2] V."""
    cfg = torus_config(size, cap)
    return dataclasses.replace(cfg, learning=dataclasses.replace(cfg.learning,
                                                                 gate_init=(1.0, 2.0)))


def settle_runs(cfg, seeds, examples, cap):
    """Ticks until still and the error then (LSB, worst node) of every (seed, example),
    each from a cold start (``cfg``'s stillness rule)."""
    fixed = FixedPointModel(cfg, seeds)
    qs = QuasiStaticModel(cfg, seeds)
    qs.gates[:] = fixed.gates_volts()
    lsb = 2.0 ** cfg.fixed.v_frac
    ticks, errors = [], []
    for ex in examples:
        fixed.v_free = np.zeros_like(fixed.v_free)
        fixed.v_clamped = np.zeros_like(fixed.v_clamped)
        used = fixed.run(cap, ex, False, still_ticks=cfg.schedule.still_ticks)
        qs.present(ex, False)
        err = np.abs(fixed.state_to_volts(fixed.v_free) - qs.free_state(ex)) * lsb
        ticks += used.tolist()
        errors += err.max(axis=1).tolist()
    return ticks, errors


def slope(sizes, ticks):
    """Least-squares exponent p of ``ticks ~ size**p``."""
    x, y = np.log(sizes), np.log(ticks)
    return float(np.polyfit(x, y, 1)[0]) if len(sizes) >= 2 else math.nan


def settling_schemes(args):
    """(label, relax, extra bits, momentum_shift, still_lsb) of the settling table."""
    schemes = [("euler", "euler", 0, 0, 1), ("jacobi, F 0", "jacobi", 0, 0, 1),
               ("jacobi, F 8", "jacobi", 8, 0, 1), ("jacobi, F 8, still_lsb 2", "jacobi", 8, 0, 2),
               ("momentum (defaults: F 8, still_lsb 2, b from the graph)", "momentum", 8, 0, 2),
               ("momentum, still_lsb 1", "momentum", 8, 0, 1)]
    schemes += [(f"momentum, b {b}", "momentum", 8, b, 2) for b in args.shifts]
    if args.schemes is not None:
        schemes = [s for s in schemes if s[1] in args.schemes or s[0] in args.schemes]
    if args.still_lsb is not None:
        schemes = [(f"{s[0]} at still_lsb {args.still_lsb}", *s[1:4], args.still_lsb)
                   for s in schemes]
    return schemes


def settling_table(args):
    seeds, examples = list(range(args.seeds)), list(range(args.examples))
    print(f"Settling from 0 V until still ({STILL_TICKS} ticks in a row that move no node by "
          f"more than still_lsb; cap {args.cap}), paper-xor's device on L x L tori, gates "
          f"in [1, 2] V, seeds {seeds}, examples {examples}. Each cell: ticks until still, "
          "median (max) over the runs; the error then against the quasi-static solution, "
          "median / worst run of the worst node (LSB of 2^-16 V); for momentum its b\n")
    head = " | ".join(f"{s}x{s}" for s in args.sizes)
    print(f"| scheme | {head} | p (ticks ~ L^p, L <= {args.fit_max}) |")
    print("|---|" + "---|" * len(args.sizes) + "---|")
    for label, relax, extra, shift, still_lsb in settling_schemes(args):
        cells, got = [], []
        for size in args.sizes:
            cfg = scheme_config(random_gates_config(size, args.cap), relax, extra, shift,
                                still_lsb)
            ticks, errors = settle_runs(cfg, seeds, examples, args.cap)
            b = f", b {momentum_shift(cfg)}" if relax == "momentum" else ""
            capped = max(ticks) >= args.cap
            med = statistics.median(ticks)
            cells.append(f"{'never still' if capped else f'{med:g} ({max(ticks)})'}; "
                         f"{statistics.median(errors):.0f} / {max(errors):.0f}{b}")
            if not capped and size <= args.fit_max:
                got.append((size, med))
            print(f"  {label} {size}: {cells[-1]}", file=sys.stderr, flush=True)
        p = slope(*zip(*got, strict=True)) if len(got) >= 2 else math.nan
        print(f"| {label} | {' | '.join(cells)} | {p:.2f} |", flush=True)


def training_table(args):
    base = config.load("paper-xor")
    seeds = list(range(args.train_seeds))
    rows = [("jacobi, F 2 (shipped)", "jacobi", 2, 0, 2),
            ("momentum, F 2, default b", "momentum", 2, 0, 2),
            ("momentum, F 8, default b", "momentum", 8, 0, 2),
            ("momentum, F 8, default b, still_lsb 1", "momentum", 8, 0, 1)]
    print(f"\npaper-xor, fixed model, seeds 0-{seeds[-1]}, its schedule "
          f"(cap {base.schedule.settle_ticks}, {base.schedule.learn_ticks} learning tick(s), "
          f"{base.learning.epochs} epochs)\n")
    print("| node step | seeds reaching 1e-4 V^2 | ticks per example (mean / max) |")
    print("|---|---|---|")
    for label, relax, extra, shift, still_lsb in rows:
        cfg = scheme_config(base, relax, extra, shift, still_lsb)
        model = FixedPointModel(cfg, seeds)
        mse = train(model, cfg.learning.epochs).mse_final
        ticks = np.stack(model.example_ticks)
        b = f" (b {momentum_shift(cfg)})" if relax == "momentum" else ""
        print(f"| {label}{b} | {int((mse <= MSE_GOAL).sum())} of {len(seeds)} | "
              f"{ticks.mean():.1f} / {ticks.max()} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--cap", type=int, default=50000)
    ap.add_argument("--shifts", type=int, nargs="*", default=[3, 4, 6])
    ap.add_argument("--fit-max", type=int, default=32,
                    help="largest L of the exponent's fit (default 32)")
    ap.add_argument("--still-lsb", type=int, default=None,
                    help="one stillness threshold (LSB) for every scheme of the settling "
                    "table (default: each scheme's)")
    ap.add_argument("--schemes", nargs="*", default=None,
                    help="labels of the settling table's schemes to run (default: all)")
    ap.add_argument("--train-seeds", type=int, default=10)
    ap.add_argument("--no-train", action="store_true", help="settling table only")
    ap.add_argument("--no-settle", action="store_true", help="training table only")
    args = ap.parse_args()
    if not args.no_settle:
        settling_table(args)
    if not args.no_train:
        training_table(args)


if __name__ == "__main__":
    main()
