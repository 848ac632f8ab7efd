"""Speed of the golden models on the paper's XOR network; prints a table.

    python bench/golden_models.py [--repeats N]

Quasi-static: time per training example (free solve, clamped solve, update), one seed,
one core, median over repeats of 200 epochs. Tick models: edge-ticks per second
(edges x ticks x seeds / s) when training 1 and 8 seeds at once.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

from clln import config  # noqa: E402
from clln.sim.training import make_model  # noqa: E402


def _epochs(model, n):
    for _ in range(n):
        for i in range(model.problem.n_examples):
            model.present(i, True)


def bench_quasistatic(cfg, repeats, epochs=200):
    model = make_model(cfg, "quasistatic", [0])
    _epochs(model, 5)   # compile, warm start
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _epochs(model, epochs)
        times.append((time.perf_counter() - t) / (epochs * model.problem.n_examples))
    return statistics.median(times)


def bench_ticks(cfg, name, n_seeds, repeats, epochs=20):
    model = make_model(cfg, name, list(range(n_seeds)))
    _epochs(model, 1)
    rates = []
    for _ in range(repeats):
        done = len(model.example_ticks)
        t = time.perf_counter()
        _epochs(model, epochs)
        seconds = time.perf_counter() - t
        ticks = sum(int(u.sum()) for u in model.example_ticks[done:])   # every seed's
        rates.append(ticks * cfg.network.n_edges / seconds)
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = config.load("paper-xor")
    qs = bench_quasistatic(cfg, args.repeats)
    print(f"golden models on {cfg.name} ({cfg.network.n_edges} edges), "
          f"median of {args.repeats} repeats")
    print(f"{'model':<14} {'seeds':>5} {'measure':<28} {'value':>12}")
    print(f"{'quasistatic':<14} {1:>5} {'ms per training example':<28} {qs * 1e3:>12.4f}")
    for name in ("fixed", "dynamic"):
        for seeds in (1, 8):
            rate = bench_ticks(cfg, name, seeds, args.repeats)
            print(f"{name:<14} {seeds:>5} {'edge-ticks per second':<28} {rate:>12.3e}")
    print("time to train, per scheme and board: bench/settling.py")


if __name__ == "__main__":
    main()
