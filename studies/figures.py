"""Tables and figures of docs/robustness.md from the studies' sweep results.

    python studies/figures.py [--sweeps sweeps] [--out docs/robustness]

Reads ``SWEEPS/<study>/results.csv`` of every ``studies/<task>-<family>[-qs].toml`` that
has been run (``clln sweep studies/X.toml --out sweeps/X``), prints per family a markdown
table (seeds that reached the target, of 10, and the median final MSE, per value, for
each task and model) and writes ``OUT/<family>.png``: success rate and final MSE (median,
quartiles over the seeds) against the non-ideality.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: Family -> (axis, label of its unit).
FAMILIES = {"vt": ("nonideal.vt_sigma", "threshold mismatch vt_sigma (V)"),
            "k": ("nonideal.k_sigma", "gain mismatch k_sigma (relative)"),
            "noise": ("nonideal.read_noise", "read noise (V rms per node)"),
            "offset": ("nonideal.update_offset", "learning-rule bias sigma (V$^2$)")}
RUNS = [("xor", "", "paper-xor, fixed"), ("xor", "-qs", "paper-xor, quasi-static"),
        ("regression", "", "paper-regression, fixed"),
        ("regression", "-qs", "paper-regression, quasi-static")]


def load(sweeps, task, family, suffix):
    path = Path(sweeps) / f"{task}-{family}{suffix}" / "results.csv"
    return pd.read_csv(path) if path.exists() else None


def family_table(sweeps, family):
    axis, _ = FAMILIES[family]
    frames = [(label, load(sweeps, t, family, s)) for t, s, label in RUNS]
    frames = [(label, f) for label, f in frames if f is not None]
    values = sorted(set().union(*[set(f[axis]) for _, f in frames])) if frames else []
    lines = ["| " + axis + " | " + " | ".join(label for label, _ in frames) + " |",
             "|---" * (len(frames) + 1) + "|"]
    for v in values:
        cells = []
        for _, f in frames:
            rows = f[f[axis] == v]
            cells.append(f"{int(rows['reached'].sum())}/{len(rows)}, "
                         f"{np.median(rows['mse_final']):.1e}" if len(rows) else "-")
        lines.append(f"| {v:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines), frames


def family_figure(frames, family, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axis, xlabel = FAMILIES[family]
    fig, (ax_ok, ax_mse) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, f in frames:
        groups = f.groupby(axis)
        xs = np.array(sorted(groups.groups))
        # the ideal point (0) sits at the left edge of a log axis
        x_plot = np.where(xs > 0, xs, xs[xs > 0].min() / 3 if (xs > 0).any() else 1)
        ok = [groups.get_group(x)["reached"].mean() for x in xs]
        q = np.array([np.percentile(groups.get_group(x)["mse_final"], [25, 50, 75])
                      for x in xs])
        style = "--" if "quasi" in label else "-"
        ax_ok.plot(x_plot, ok, style, marker="o", label=label)
        ax_mse.errorbar(x_plot, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]],
                        fmt=style, marker="o", capsize=3, label=label)
    ax_ok.set(xscale="log", xlabel=xlabel + " (leftmost: ideal)", ylabel="seeds reaching "
              "the target", ylim=(-0.05, 1.05))
    ax_mse.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="final MSE (V$^2$)")
    ax_mse.axhline(1e-4, color="grey", ls=":")
    ax_ok.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def twin_table(sweeps):
    f = pd.read_csv(Path(sweeps) / "xor-twin" / "results.csv")
    lines = ["| vt_sigma (V) | twins shared | twins drawn apart |", "|---|---|---|"]
    for v in sorted(set(f["nonideal.vt_sigma"])):
        cells = []
        for twin in (False, True):
            rows = f[(f["nonideal.vt_sigma"] == v) & (f["nonideal.twin_mismatch"] == twin)]
            cells.append(f"{int(rows['reached'].sum())}/{len(rows)}, "
                         f"{np.median(rows['mse_final']):.1e}")
        lines.append(f"| {v:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweeps", default="sweeps")
    ap.add_argument("--out", default="docs/robustness")
    args = ap.parse_args(argv)
    for family in FAMILIES:
        text, frames = family_table(args.sweeps, family)
        if not frames:
            continue
        print(f"### {family}: seeds reaching the target (of 10), median final MSE (V^2)\n")
        print(text + "\n")
        family_figure(frames, family, Path(args.out) / f"{family}.png")
    if (Path(args.sweeps) / "xor-twin" / "results.csv").exists():
        print("### twins (paper-xor, fixed)\n")
        print(twin_table(args.sweeps) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
