"""Damage study: train, cut edges, measure the error, retrain, measure the recovery; and
train from the start on a network damaged before training. Prints a markdown table and
writes a PNG.

    python studies/damage.py [--config paper-xor] [--model fixed] [--seeds 10]
                             [--cuts 1 2 4 8] [--retrain 1000] [--workers 2]
                             [--plot docs/robustness/damage.png]

For every seed: train the ideal network for its ``learning.epochs``; then for every cut
count n, kill n edges (``[nonideal] dead_fraction = n / edges``, drawn with
``damage_seed`` = the seed: open, gate frozen) of the trained network
(``learning.gate_init`` = the trained gates), evaluate (``after cut``), retrain
``--retrain`` epochs (``recovered``); and train a network with the same dead edges from
the config's own initial gates for the full epochs (``from scratch``).
"""

import argparse
import copy
import os
import sys
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clln import config  # noqa: E402
from clln.sim.training import make_model, train  # noqa: E402


def point_config(base, seed, dead_fraction=0.0, gates=None, epochs=None):
    """The base config's TOML dict (``base``: the dict and the config's folder, which a
    CSV dataset is relative to) with a seed, dead edges and initial gates put in."""
    base, folder = base
    data = copy.deepcopy(base)
    data["learning"]["seed"] = seed
    if epochs is not None:
        data["learning"]["epochs"] = epochs
    if gates is not None:
        data["learning"]["gate_init"] = [float(g) for g in gates]
    if dead_fraction:
        data["nonideal"] = {"dead_fraction": dead_fraction, "damage_seed": seed}
    return config.parse(data, "<damage>", folder)


def one_seed(job):
    """Every measurement of one seed (a dict of lists by cut count)."""
    base, seed, model, cuts, retrain = job
    cfg = point_config(base, seed)
    trained = train(make_model(cfg, model, [seed]), cfg.learning.epochs)
    out = {"seed": seed, "trained": float(trained.mse_final[0]), "cut": [], "recovered": [],
           "scratch": []}
    n_edges = cfg.network.n_edges
    for n in cuts:
        cut_cfg = point_config(base, seed, n / n_edges, trained.gates_final[0], retrain)
        recovered = train(make_model(cut_cfg, model, [seed]), retrain)
        scratch_cfg = point_config(base, seed, n / n_edges)
        scratch = train(make_model(scratch_cfg, model, [seed]), scratch_cfg.learning.epochs)
        out["cut"].append(float(recovered.mse_initial[0]))
        out["recovered"].append(float(recovered.mse_final[0]))
        out["scratch"].append(float(scratch.mse_final[0]))
    return out


def table(results, cuts, target):
    """Markdown rows: per cut count, the median (and the count under target) of each error."""
    lines = ["| edges cut | after cut | after retraining | trained from scratch |",
             "|---|---|---|---|"]
    trained = np.array([r["trained"] for r in results])
    reached = (trained <= target).sum()
    lines.append(f"| 0 (trained) | {np.median(trained):.2e} ({reached}) | - | - |")
    for i, n in enumerate(cuts):
        cells = []
        for key in ("cut", "recovered", "scratch"):
            v = np.array([r[key][i] for r in results])
            cells.append(f"{np.median(v):.2e} ({(v <= target).sum()})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, cuts, target, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("cut", "after cut"), ("recovered", "after retraining"),
                       ("scratch", "trained from scratch")):
        v = np.array([r[key] for r in results])
        q1, med, q3 = np.percentile(v, [25, 50, 75], axis=0)
        ax.errorbar(cuts, med, yerr=[med - q1, q3 - med], marker="o", capsize=3, label=label)
    ax.axhline(target, color="grey", ls=":", label="target")
    ax.set(xscale="log", yscale="log", xlabel="edges cut", ylabel="MSE (V$^2$), median, IQR")
    ax.set_xticks(cuts, [str(c) for c in cuts])
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper-xor")
    ap.add_argument("--model", default="fixed")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--cuts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--retrain", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--plot", default="docs/robustness/damage.png")
    args = ap.parse_args(argv)
    path = config.resolve(args.config)
    base = (tomllib.loads(path.read_text()), path.parent)
    jobs = [(base, s, args.model, args.cuts, args.retrain) for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one_seed, jobs))
    target = config.load(args.config).task.mse_target
    print(f"{args.config}, {args.model} model, seeds 0-{args.seeds - 1}: median final MSE "
          f"(V^2) and, in brackets, the seeds at or under {target:g}; retraining "
          f"{args.retrain} epochs\n")
    print(table(results, args.cuts, target))
    plot(results, args.cuts, target, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
