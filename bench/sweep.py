"""Wall time of a sweep on a local process pool and on a Dask cluster; prints a markdown
table.

    python bench/sweep.py [--config paper-xor] [--model fixed] [--seeds 10]
                          [--values 0.1 0.2 0.3 0.5 0.7 1.0] [--axis learning.eta]
                          [--workers 2] [--epochs N] [--no-ungrouped]

The sweep is ``--values`` of ``--axis`` times seeds 0 to ``--seeds - 1`` of ``--config``
on ``--model`` with the config's own epochs (``learning.epochs``) unless ``--epochs``.
Rows: the local pool of ``--workers`` processes running the points that differ only in
their seed as one vectorised model (the default), the same with one model per point
(``--no-ungrouped`` leaves it out), and a ``dask.distributed.LocalCluster`` of
``--workers`` single-threaded worker processes (its start-up is timed apart). Every run
writes to a fresh folder (nothing resumed); the kernels are compiled (and cached) before
the first timing. Wall time includes starting the pool's processes (not the cluster's,
timed apart); the workers' CPU time is that of the worker processes, summed (the wall
time on a shared machine is longer than the CPU time over the workers; the load average
in the heading tells how shared it was).
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from clln import config  # noqa: E402
from clln import sweeps as sweep_mod  # noqa: E402
from clln.sim.training import make_model, train  # noqa: E402


def write_spec(folder, args):
    lines = [f'config = "{args.config}"', f'model = "{args.model}"']
    if args.epochs is not None:
        lines.append(f"epochs = {args.epochs}")
    values = ", ".join(args.values)
    lines += ["[axes]", f'"{args.axis}" = [{values}]',
              f'"learning.seed" = [{", ".join(str(s) for s in range(args.seeds))}]']
    path = Path(folder) / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def children_cpu():
    """CPU seconds of this process's finished children (the pool's or the cluster's
    worker processes, once they have ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(spec, out, **kwargs):
    """Wall seconds, points that reached the target, rows."""
    start = time.perf_counter()
    result = sweep_mod.run_sweep(spec, out, **kwargs)
    seconds = time.perf_counter() - start
    reached = sum(r["reached"] for r in result.rows)
    return seconds, reached, result.rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper-xor")
    parser.add_argument("--model", default="fixed")
    parser.add_argument("--axis", default="learning.eta")
    parser.add_argument("--values", nargs="+", default=["0.1", "0.2", "0.3", "0.5", "0.7",
                                                          "1.0"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--no-ungrouped", dest="ungrouped", action="store_false")
    args = parser.parse_args()

    load0 = os.getloadavg()[0]
    train(make_model(config.load(args.config), args.model, [0]), 1)     # compile, cache
    with tempfile.TemporaryDirectory() as tmp:
        spec = sweep_mod.load_sweep(write_spec(tmp, args))
        n, epochs = spec.n_points, args.epochs or config.load(args.config).learning.epochs
        runs = [("local pool", "seeds vectorised", {"workers": args.workers})]
        if args.ungrouped:
            runs.append(("local pool", "one model per point",
                         {"workers": args.workers, "group": False}))
        results = []
        for where, how, kwargs in runs:
            cpu = children_cpu()
            run = timed(spec, Path(tmp) / where / how, **kwargs)
            results.append((where, how, "-", *run, children_cpu() - cpu))
        from dask.distributed import LocalCluster
        cpu, start = children_cpu(), time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                          dashboard_address=None) as cluster:
            up = time.perf_counter() - start
            run = timed(spec, Path(tmp) / "dask", scheduler=cluster.scheduler_address)
        results.append(("Dask LocalCluster", "seeds vectorised", f"{up:.1f} s", *run,
                        children_cpu() - cpu))
    reference = [{k: v for k, v in r.items() if k != "seconds"} for r in results[0][5]]
    same = all([{k: v for k, v in r.items() if k != "seconds"} for r in res[5]] == reference
               for res in results)
    load = os.getloadavg()[0]
    print(f"### {args.config}, {args.model} model: {len(args.values)} values of {args.axis} x "
          f"{args.seeds} seeds = {n} points, {epochs} epochs, {args.workers} workers "
          f"({os.cpu_count()} cores, load average {load0:.1f} at the start, {load:.1f} at "
          "the end)\n")
    print("| where | points | cluster start-up | wall | points/s | workers' CPU | "
          "reached target |")
    print("|---|---|---|---|---|---|---|")
    for where, how, up, seconds, reached, _, cpu in results:
        print(f"| {where}, {how} | {n} | {up} | {seconds:.1f} s | {n / seconds:.2f} | "
              f"{cpu:.1f} s | {reached} of {n} |")
    print(f"\nrows identical (all columns but seconds) across the runs: {same}")


if __name__ == "__main__":
    main()
