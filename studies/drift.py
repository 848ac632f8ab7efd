"""Drift study: does the error stall, drift or cycle when the twins differ or the learning
rule is biased? Long runs of one config on several chips; prints a markdown table and
writes a PNG of the training curves.

    python studies/drift.py [--config paper-xor] [--model fixed] [--seeds 5]
                            [--epochs 10000] [--workers 2] [--plot docs/robustness/drift.png]

Each chip trains ``--epochs`` epochs in two halves on the same model. Reported per chip,
medians over the seeds: the error at the end of the first and of the second half (a
stalled run keeps it, a drifting one grows it), the relative ripple of the training
curve over the last tenth (standard deviation over mean: a limit cycle keeps it high
while the error stays put), and how far the gates moved in the second half (V, the
largest edge's).
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

#: The chips: a label and the [nonideal] keys.
CHIPS = [
    ("ideal", {}),
    ("twins 5 mV apart", {"vt_sigma": 0.005, "twin_mismatch": True}),
    ("twins 20 mV apart", {"vt_sigma": 0.02, "twin_mismatch": True}),
    ("rule bias 1e-5 V^2", {"update_offset": 1e-5}),
    ("rule bias 1e-4 V^2", {"update_offset": 1e-4}),
    ("read noise 1 mV", {"read_noise": 0.001}),
]


def run_chip(job):
    """One chip, one seed: the training curve of both halves and the gate motion."""
    (base, folder), keys, seed, model, epochs = job
    data = copy.deepcopy(base)
    data["learning"]["seed"] = seed
    data["nonideal"] = dict(keys)
    cfg = config.parse(data, "<drift>", folder)
    m = make_model(cfg, model, [seed])
    first = train(m, epochs // 2)
    second = train(m, epochs - epochs // 2)
    curve = np.concatenate([first.mse_curve[0], second.mse_curve[0]])
    tail = curve[-max(len(curve) // 10, 1):]
    return {"half": float(first.mse_final[0]), "end": float(second.mse_final[0]),
            "ripple": float(np.std(tail) / np.mean(tail)),
            "moved": float(np.max(np.abs(second.gates_final[0] - first.gates_final[0]))),
            "curve": curve}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper-xor")
    ap.add_argument("--model", default="fixed")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--plot", default="docs/robustness/drift.png")
    args = ap.parse_args(argv)
    path = config.resolve(args.config)
    base = (tomllib.loads(path.read_text()), path.parent)   # a CSV dataset is relative to it
    jobs = [(base, keys, s, args.model, args.epochs) for _, keys in CHIPS
            for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_chip, jobs))
    by_chip = [results[i * args.seeds:(i + 1) * args.seeds] for i in range(len(CHIPS))]
    print(f"{args.config}, {args.model} model, seeds 0-{args.seeds - 1}, {args.epochs} epochs "
          "(medians over the seeds)\n")
    print(f"| chip | MSE at {args.epochs // 2} | MSE at {args.epochs} | ripple of the last "
          "tenth | gates moved in the second half (V) |\n|---|---|---|---|---|")
    for (label, _), rows in zip(CHIPS, by_chip, strict=True):
        med = {k: np.median([r[k] for r in rows]) for k in ("half", "end", "ripple", "moved")}
        print(f"| {label} | {med['half']:.2e} | {med['end']:.2e} | {med['ripple']:.3f} | "
              f"{med['moved']:.4f} |")
    plot(by_chip, args.plot)
    return 0


def plot(by_chip, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    # the ideal chip last, on top, in black
    for (label, _), rows in reversed(list(zip(CHIPS, by_chip, strict=True))):
        curve = np.median(np.stack([r["curve"] for r in rows]), axis=0)
        style = {"color": "black", "lw": 1.5} if label == "ideal" else {"lw": 1, "alpha": 0.8}
        ax.plot(np.arange(1, len(curve) + 1), curve, label=label, **style)
    ax.set(xscale="log", yscale="log", xlabel="epoch",
           ylabel="MSE seen in training (V$^2$), median")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
