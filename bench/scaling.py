"""Time per training example against network size: the golden models on L x L tori;
prints a markdown table and writes a PNG.

    python bench/scaling.py [--sizes 4 8 16 32 64] [--dense-max 32] [--repeats 3]
                            [--settle-cap 100000] [--png bench/scaling.png]

The network is paper-xor on an L x L torus (2 L^2 edges) with its inputs, rails and
output where paper-xor has them on the 4 x 4 torus, scaled (L = 4 is paper-xor), seed 0,
one core; every model trains on it from its initial gates.
- quasi-static, dense and sparse LU (``solver=``; the model itself picks sparse from
  ``SPARSE_MIN_FREE`` free nodes): time per training example (free solve, clamped
  solve, update), after two warm-up epochs; dense only up to ``--dense-max`` (its LU is
  cubic in the nodes);
- fixed / dynamic: paper-xor's schedule (jacobi until still, one learning tick) with the
  settle cap raised to ``--settle-cap`` so that big lattices settle; after one warm-up
  epoch (which settles from 0 V), the ticks per example (mean over the timed examples,
  settle and learn), time per tick, edge-ticks per second and time per example.
Every timed repeat runs whole epochs (at least ``--seconds`` of them); the table gives
medians over ``--repeats``. Times are this process's CPU time (one thread): the wall time
on an idle machine, and not stretched by other processes on a shared one.
"""

import argparse
import math
import os
import statistics
import time
import tomllib
from importlib import resources
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from clln import config  # noqa: E402
from clln.sim.quasistatic import SPARSE_MIN_FREE, QuasiStaticModel  # noqa: E402
from clln.sim.training import make_model  # noqa: E402

HERE = Path(__file__).resolve().parent
#: CPU seconds of this (single-threaded) process.
clock = time.process_time


def torus_config(size, settle_cap):
    """paper-xor on a ``size`` x ``size`` torus (its io scaled), settle cap ``settle_cap``."""
    data = tomllib.loads((resources.files("clln.configs") / "paper-xor.toml").read_text())

    def node(r, c):
        return (r * size // 4) * size + c * size // 4

    data["name"] = f"paper-xor-torus-{size}"
    data["network"] = {"topology": "torus", "rows": size, "cols": size}
    data["io"] = {"inputs": [node(3, 3), node(3, 1)],
                  "rails": [[node(1, 1), 0.11], [node(1, 3), 0.33]],
                  "outputs": [[node(2, 2), node(0, 0)]]}
    data["schedule"]["settle_ticks"] = settle_cap
    return config.parse(data, f"<torus {size}x{size}>")


def _epoch(model):
    for i in range(model.problem.n_examples):
        model.present(i, True)


def _repeats(model, repeats, seconds):
    """Time ``repeats`` runs of whole epochs, each at least ``seconds`` long (one epoch,
    timed first, sets how many). Returns per repeat (seconds, examples, ticks); ticks
    are None for a model without them."""
    start = clock()
    _epoch(model)
    epochs = max(1, math.ceil(seconds / (clock() - start)))
    runs = []
    for _ in range(repeats):
        done = len(getattr(model, "example_ticks", ()))
        start = clock()
        for _ in range(epochs):
            _epoch(model)
        elapsed = clock() - start
        ticks = getattr(model, "example_ticks", None)
        ticks = None if ticks is None else [int(u[0]) for u in ticks[done:]]
        runs.append((elapsed, epochs * model.problem.n_examples, ticks))
    return runs


def bench_quasistatic(cfg, solver, repeats, seconds):
    """Seconds per training example (median)."""
    model = QuasiStaticModel(cfg, [0], solver=solver)
    _epoch(model)   # compile, warm start
    _epoch(model)
    return statistics.median(t / n for t, n, _ in _repeats(model, repeats, seconds))


def bench_ticks(cfg, name, repeats, seconds):
    """Ticks per example (mean over the timed examples), and medians of seconds per tick,
    edge-ticks per second and seconds per example."""
    model = make_model(cfg, name, [0])
    _epoch(model)   # compile, settle from 0 V
    runs = _repeats(model, repeats, seconds)
    ticks = [k for _, _, run in runs for k in run]
    per_tick = statistics.median(t / sum(run) for t, _, run in runs)
    sch = cfg.schedule
    return {"ticks": statistics.fmean(ticks),
            "capped": max(ticks) >= sch.settle_ticks + sch.learn_ticks,
            "per_tick": per_tick, "rate": cfg.network.n_edges / per_tick,
            "per_example": statistics.median(t / n for t, n, _ in runs)}


def _seconds(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def table(rows):
    """The markdown table of ``rows`` (one per torus size)."""
    head = ["torus", "edges", "quasi-static dense", "quasi-static sparse", "dense / sparse"]
    for name in ("fixed", "dynamic"):
        head += [f"{name}: ticks per example", f"{name}: per tick",
                 f"{name}: edge-ticks/s", f"{name}: per example"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        dense, sparse = r["dense"], r["sparse"]
        cells = [f"{r['size']}x{r['size']}", f"{r['edges']:,}", _seconds(dense),
                 _seconds(sparse), f"{dense / sparse:.3g}x" if dense else "-"]
        for name in ("fixed", "dynamic"):
            t = r[name]
            cells += [f"{t['ticks']:.0f}" + (" (cap)" if t["capped"] else ""),
                      _seconds(t["per_tick"]), f"{t['rate']:.3g}", _seconds(t["per_example"])]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows, path):
    """Time per example and edge-ticks per second against edges (log-log)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    edges = [r["edges"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    series = [("quasi-static dense", [r["dense"] for r in rows]),
              ("quasi-static sparse", [r["sparse"] for r in rows]),
              ("fixed", [r["fixed"]["per_example"] for r in rows]),
              ("dynamic", [r["dynamic"]["per_example"] for r in rows])]
    for label, values in series:
        points = [(e, v) for e, v in zip(edges, values, strict=True) if v is not None]
        left.plot(*zip(*points, strict=True), marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="edges (L x L torus, 2 L^2)",
             ylabel="seconds per training example")
    left.legend()
    for name in ("fixed", "dynamic"):
        right.plot(edges, [r[name]["rate"] for r in rows], marker="o", label=name)
    right.set(xscale="log", yscale="log", xlabel="edges", ylabel="edge-ticks per second")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bench_size(size, args):
    cfg = torus_config(size, args.settle_cap)
    row = {"size": size, "edges": cfg.network.n_edges,
           "sparse": bench_quasistatic(cfg, "sparse", args.repeats, args.seconds),
           "dense": (bench_quasistatic(cfg, "dense", args.repeats, args.seconds)
                     if size <= args.dense_max else None)}
    for name in ("fixed", "dynamic"):
        row[name] = bench_ticks(cfg, name, args.repeats, args.seconds)
    return row


def _size(text):
    size = int(text)
    if size < 4:
        raise argparse.ArgumentTypeError(f"torus sizes start at 4 (paper-xor), got {size}")
    return size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=_size, default=[4, 8, 16, 32, 64])
    parser.add_argument("--dense-max", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="least duration of one timed repeat (whole epochs)")
    parser.add_argument("--settle-cap", type=int, default=100_000)
    parser.add_argument("--png", type=Path, default=HERE / "scaling.png")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        rows.append(bench_size(size, args))
        print(f"... {size}x{size} done", flush=True)
    print(f"\n### paper-xor on L x L tori, seed 0, one core, medians of {args.repeats}\n")
    print(table(rows))
    print(f"\nquasi-static: the model picks sparse from {SPARSE_MIN_FREE} free nodes "
          "(4x4: dense); dense / sparse > 1 means sparse is faster")
    plot(rows, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
