"""PNG report of a training run: curve, outputs vs targets, gates on the network."""

import numpy as np

from .errors import CllnError

#: Examples up to which the outputs panel labels each with its inputs.
MAX_LABELLED_EXAMPLES = 16


def _gates_panel(ax, cfg, gates):
    import matplotlib as mpl
    net = cfg.network
    pos = net.positions()
    lo = cfg.learning.gate_min
    norm = mpl.colors.Normalize(lo, max(gates.max(), lo + 0.1))
    cmap = mpl.colormaps["viridis"]
    for (a, b), g in zip(net.edges, gates, strict=True):
        pa, pb = pos[a], pos[b]
        if net.topology == "torus" and np.abs(pa - pb).max() > 1.5:
            # A wrap-around edge: draw a stub out of each end, towards the far side.
            d = np.sign(pa - pb) * (np.abs(pa - pb) > 1.5) * 0.4
            for p, s in ((pa, d), (pb, -d)):
                ax.plot([p[0], p[0] + s[0]], [p[1], p[1] + s[1]], color=cmap(norm(g)), lw=3,
                        ls=":")
        else:
            ax.plot([pa[0], pb[0]], [pa[1], pb[1]], color=cmap(norm(g)), lw=4)
    roles = {n: "in" for n in cfg.io.inputs}
    roles.update({n: f"{v:g}V" for n, v in cfg.io.rails})
    for p, m in cfg.io.outputs:
        roles[p] = "out+" if m >= 0 else "out"
        if m >= 0:
            roles[m] = "out-"
    for n, (x, y) in enumerate(pos):
        ax.scatter([x], [y], s=260, color="white", edgecolor="black", zorder=3)
        ax.text(x, y, str(n), ha="center", va="center", fontsize=7, zorder=4)
        if n in roles:
            ax.text(x, y + 0.28, roles[n], ha="center", fontsize=7, color="crimson")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm, cmap), ax=ax, label="gate (V)", shrink=0.8)
    ax.set_title("final gates")


def plot_training(cfg, history, path, seed_index=0):
    """Write a PNG: training curve, outputs vs targets, gates, and error modes.

    The error-mode panel (mean, slope, curvature of the error over the input) is
    drawn for single-input tasks.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .sim.training import mode_errors
    single_input = cfg.task.x.shape[1] == 1
    fig, axes = plt.subplots(1, 4 if single_input else 3, figsize=(20 if single_input else 15, 4.5))
    curve = history.mse_curve
    ax = axes[0]
    epochs = np.arange(1, history.epochs + 1)
    for i, seed in enumerate(history.seeds):
        ax.semilogy(epochs, np.maximum(curve[i], 1e-32), lw=1, label=f"seed {seed}",
                    alpha=1.0 if i == seed_index else 0.4)
    ax.axhline(cfg.task.mse_target, color="k", ls="--", lw=0.8, label="target")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (V$^2$)")
    ax.set_title(f"{cfg.name}: {history.model} model")
    if len(history.seeds) <= 10:
        ax.legend(fontsize=7)

    ax = axes[1]
    outs, y = history.outputs_final[seed_index], cfg.task.y
    if single_input:
        x = cfg.task.x[:, 0]
        ax.plot(x, y[:, 0], "ko-", label="target")
        ax.plot(x, history.outputs_initial[seed_index][:, 0], "s:", color="grey", label="initial")
        ax.plot(x, outs[:, 0], "o-", color="C1", label="final")
        ax.set_xlabel("input (V)")
    else:
        idx = np.arange(len(y))
        for j in range(y.shape[1]):
            ax.plot(idx, y[:, j], "ko", ms=9, mfc="none", label="target" if j == 0 else None)
            ax.plot(idx, outs[:, j], "x", color=f"C{j + 1}", ms=9, label=f"output {j + 1}")
        if len(y) <= MAX_LABELLED_EXAMPLES:
            ax.set_xticks(idx, [", ".join(f"{v:.2f}" for v in row) for row in cfg.task.x],
                          fontsize=7)
            ax.set_xlabel("example inputs (V)")
        else:
            ax.set_xlabel("training example")
    ax.set_ylabel("output (V)")
    ax.set_title(f"outputs after training (seed {history.seeds[seed_index]})")
    ax.legend(fontsize=7)

    _gates_panel(axes[2], cfg, history.gates_final[seed_index])

    if single_input:
        ax = axes[3]
        modes = np.abs(mode_errors(history, cfg.task.x[:, 0])[seed_index])
        for k, label in enumerate(("mean", "slope", "curvature")[:modes.shape[1]]):
            ax.semilogy(epochs, np.maximum(modes[:, k], 1e-16), label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("|error projection| (V)")
        ax.set_title("error modes (spectral bias)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise CllnError(f"cannot write plot {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
