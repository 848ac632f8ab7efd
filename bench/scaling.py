"""Time per training example against network size: the golden models on L x L tori and
the serial fabric on the boards built; prints two markdown tables and writes a PNG.

    python bench/scaling.py [--sizes 4 8 16 32 64] [--dense-max 32] [--repeats 3]
                            [--settle-cap 100000] [--png bench/scaling.png]
                            [--builds bench/builds.json]

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
- boards (second table): per torus, the serial fabric's cycles per tick on it
  (``serial_cycles_per_tick``: a visit per edge end per network, four to drain and
  commit) and, for every board with a serial build of an L x L torus in ``--builds`` (a
  JSON list of ``clln build --json`` reports; ``config_file``, a path from the
  repository's root, names a config that is not built in), that build's clock: seconds
  per example = the fixed model's ticks per example x cycles per tick / clock, beside
  the quasi-static (sparse) and fixed models' CPU time and the ratios board / CPU; and
  the edge units P a fabric would need at that clock for 250 us and 1 ms per example
  (``edge_units_for``).
Every timed repeat runs whole epochs (at least ``--seconds`` of them); the table gives
medians over ``--repeats``. Times are this process's CPU time (one thread): the wall time
on an idle machine, and not stretched by other processes on a shared one.
"""

import argparse
import json
import math
import os
import statistics
import time
import tomllib
from importlib import resources
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from clln import config  # noqa: E402
from clln.gateware.fabric.serial import PIPELINE_CYCLES, serial_cycles_per_tick  # noqa: E402
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


#: Per-example targets of issue 16 at 32x32 on the ULX3S-85F: the target and the bar.
TARGETS = (250e-6, 1e-3)


def torus_builds(builds):
    """``{(board, L): clock MHz}`` of the serial builds of L x L tori in ``builds`` (the
    fastest clock when a board has several)."""
    clocks = {}
    for b in builds:
        if not b.get("serial"):
            continue
        name = b.get("config_file")
        net = config.load(HERE.parent / name if name else b["config"]).network
        if net.topology != "torus" or net.rows != net.cols:
            continue
        key = (b["board"], net.rows)
        clocks[key] = max(clocks.get(key, 0.0), float(b["clock_mhz"]))
    return clocks


def edge_units_for(seconds, ticks, visits, clock_hz):
    """Edge units P for ``seconds`` per example at ``ticks`` per example: a tick of
    ``ceil(visits / P) + PIPELINE_CYCLES`` cycles (the serial schedule's ``visits`` shared
    by P units, one pipeline); None when even one cycle per visit-group is too slow."""
    cycles = seconds * clock_hz / ticks - PIPELINE_CYCLES
    return math.ceil(visits / cycles) if cycles >= 1 else None


def board_table(rows, clocks):
    """The markdown table of the boards' serial builds against the CPU models."""
    head = ["torus", "edges", "serial cycles per tick", "fixed: ticks per example",
            "quasi-static sparse", "fixed", "board (clock)", "board per example",
            "board / quasi-static", "board / fixed", "P for 250 us", "P for 1 ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ticks, cpt = r["fixed"]["ticks"], r["cycles_per_tick"]
        common = [f"{r['size']}x{r['size']}", f"{r['edges']:,}", f"{cpt:,}", f"{ticks:.0f}",
                  _seconds(r["sparse"]), _seconds(r["fixed"]["per_example"])]
        boards = sorted((b, mhz) for (b, size), mhz in clocks.items() if size == r["size"])
        for board, mhz in boards or [(None, None)]:
            if board is None:
                out.append("| " + " | ".join(common + ["no build"] + ["-"] * 5) + " |")
                continue
            per_example = ticks * cpt / (mhz * 1e6)
            units = [edge_units_for(t, ticks, cpt - PIPELINE_CYCLES, mhz * 1e6)
                     for t in TARGETS]
            out.append("| " + " | ".join(common + [
                f"{board} ({mhz:.2f} MHz)", _seconds(per_example),
                f"{per_example / r['sparse']:.3g}x",
                f"{per_example / r['fixed']['per_example']:.3g}x",
                *("-" if u is None else f"{u:,}" for u in units)]) + " |")
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
    row["cycles_per_tick"] = serial_cycles_per_tick(config.refold(cfg, "serial"))
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
    parser.add_argument("--builds", type=Path, default=HERE / "builds.json")
    args = parser.parse_args()
    clocks = torus_builds(json.loads(args.builds.read_text()) if args.builds.exists() else [])
    rows = []
    for size in args.sizes:
        rows.append(bench_size(size, args))
        print(f"... {size}x{size} done", flush=True)
    print(f"\n### paper-xor on L x L tori, seed 0, one core, medians of {args.repeats}\n")
    print(table(rows))
    print(f"\nquasi-static: the model picks sparse from {SPARSE_MIN_FREE} free nodes "
          "(4x4: dense); dense / sparse > 1 means sparse is faster")
    print(f"\n### The serial fabric on the boards (builds: {os.path.relpath(args.builds)})\n")
    print(board_table(rows, clocks))
    print("\nboard per example: the fixed model's ticks per example x the serial cycles per "
          "tick / the build's clock; P: edge units sharing the visits for that time per "
          "example at that clock (ceil(visits / P) + 4 cycles a tick)")
    plot(rows, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
