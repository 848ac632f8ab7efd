"""Time per training example and time to train, side by side: golden models, relaxations,
ngspice and the boards; prints a markdown table and writes a PNG.

    python bench/settling.py [--seeds 10] [--configs paper-xor paper-regression]
                             [--builds bench/builds.json] [--png bench/settling.png]
                             [--euler-seeds 2] [--repeats 3] [--extra-bits 2 4]

Every model trains the config's full schedule (``learning.epochs``) on one core.
- quasistatic: the physics (free solve, clamped solve, update per example);
- fixed / dynamic: the tick models with ``relax = euler, settle = fixed`` (the seed's
  3000-tick settle) and ``relax = jacobi, settle = still``; ticks per example are the
  mean over the run (settle and learn ticks); euler trains ``--euler-seeds`` seeds only
  (it takes minutes per seed); times are medians of ``--repeats`` runs of one seed;
- ngspice (if installed; ``make bench`` installs it): the same network as a level-1
  NMOS netlist (``KP W/L = k``, ``GAMMA = LAMBDA = 0``, a ``1/gmin`` resistor across
  every edge), two operating points per example, timed inside one ngspice run;
- boards: the builds recorded in ``--builds`` (a JSON list of ``clln build --json``
  reports: clock, cycles per tick, streams), each at the ticks per example the fixed
  model measured for ``jacobi``/``still`` (each stream on its own, as in the fabric).
"To train" is the time per example times ``epochs x examples`` (for one seed; a board
of S streams trains S seeds in that time). Ratios are against the quasi-static model of
the same run. Steady state: |V_fixed - V_quasistatic| over every node at the trained
quasi-static gates of seeds 0-4, in LSBs of 2^-16 V (median / worst), after 20000 ticks,
for euler, and for jacobi with ``node_extra_bits`` F = 0, the config's and ``--extra-bits``.
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clln import config  # noqa: E402
from clln.flows import expected_board_time  # noqa: E402
from clln.sim.fixed import FixedPointModel  # noqa: E402
from clln.sim.problem import Problem  # noqa: E402
from clln.sim.quasistatic import QuasiStaticModel  # noqa: E402
from clln.sim.training import make_model, train  # noqa: E402

HERE = Path(__file__).resolve().parent
SCHEMES = {"euler": ("euler", "fixed"), "jacobi": ("jacobi", "still")}
#: The euler settle phase each shipped config had before the fast scheme (its cap now).
EULER_SETTLE_TICKS = {"paper-xor": 3000, "paper-regression": 600}


def with_scheme(cfg, scheme):
    """``cfg`` with the relaxation and settle rule of ``scheme`` (``euler``: the settle
    ticks of :data:`EULER_SETTLE_TICKS`, else the config's)."""
    relax, settle = SCHEMES[scheme]
    ticks = cfg.schedule.settle_ticks
    if scheme == "euler":
        ticks = EULER_SETTLE_TICKS.get(cfg.name, ticks)
        cfg = with_extra_bits(cfg, 0)           # extra node bits are jacobi's only
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, relax=relax, settle=settle, settle_ticks=ticks))


def with_extra_bits(cfg, extra):
    """``cfg`` with ``[fixed] node_extra_bits = extra``."""
    return dataclasses.replace(cfg, fixed=dataclasses.replace(cfg.fixed,
                                                              node_extra_bits=extra))


def examples_per_run(cfg):
    return cfg.learning.epochs * len(cfg.task.x)


def train_row(cfg, model, scheme, seeds, repeats):
    """Train ``seeds`` at once (reached count, ticks) and one seed alone ``repeats``
    times (the median time; the first run compiles the kernels and is not counted)."""
    cfg = with_scheme(cfg, scheme) if scheme else cfg
    h = train(make_model(cfg, model, seeds), cfg.learning.epochs)
    solo = statistics.median(train(make_model(cfg, model, seeds[:1]),
                                   cfg.learning.epochs).seconds for _ in range(repeats))
    row = {"model": model, "scheme": scheme or "-",
           "reached": int((h.mse_final <= cfg.task.mse_target).sum()), "seeds": len(seeds),
           "per_example": solo / examples_per_run(cfg), "to_train": solo}
    if h.example_ticks is not None:
        row["ticks"] = float(h.example_ticks.mean())
        row["ticks_max"] = int(h.example_ticks.max())
    return row


def steady_state_lsb(cfg, scheme, seeds=range(5), ticks=20000):
    """Median and worst |V_fixed - V_qs| (LSB of 2^-16 V) at trained quasi-static gates."""
    seeds = list(seeds)
    qs = QuasiStaticModel(cfg, seeds)
    train(qs, cfg.learning.epochs)
    fixed = FixedPointModel(dataclasses.replace(with_scheme(cfg, scheme), schedule=(
        dataclasses.replace(with_scheme(cfg, scheme).schedule, settle="fixed"))), seeds)
    fixed.gates[:] = fixed.formats.volts_to_g(qs.gates_volts())
    diffs = []
    for i in range(qs.problem.n_examples):
        qs.present(i, False)
        fixed.run(ticks, i, False)
        volts = fixed.state_to_volts(fixed.v_free)
        diffs.append(np.abs(volts - qs.free_state(i)).ravel() * 2 ** 16)
    d = np.concatenate(diffs)
    return float(np.median(d)), float(d.max())


def spice_netlist(cfg, gates, drive, repeats):
    """A level-1 NMOS netlist of the free network at ``gates`` and ``drive`` (V), whose
    control block runs ``repeats`` operating points."""
    p, dev = Problem.from_config(cfg), cfg.device
    lines = ["* clln network", f".model nm nmos level=1 vto={dev.vt} kp={dev.k} "
             "gamma=0 lambda=0 is=0 phi=0.6", ".options gmin=1e-20 reltol=1e-10 "
             "abstol=1e-20 vntol=1e-12 itl1=500"]
    for e, (a, b) in enumerate(zip(p.edge_a, p.edge_b, strict=True)):
        lines.append(f"vg{e} g{e} 0 {gates[e]:.9f}")
        lines.append(f"m{e} n{a} g{e} n{b} 0 nm w=1 l=1")
        if dev.gmin > 0:
            lines.append(f"r{e} n{a} n{b} {1 / dev.gmin:.9g}")
    for n in np.flatnonzero(p.driven):
        lines.append(f"vd{n} n{n} 0 {drive[n]:.9f}")
    lines += [".control", "let i = 0", f"while i < {repeats}", "op", "let i = i + 1",
              "end", "quit", ".endc", ".end"]
    return "\n".join(lines) + "\n"


def ngspice_per_example(cfg, repeats=400):
    """Seconds per example (two operating points) in ngspice, or None if not installed."""
    exe = shutil.which("ngspice")
    if exe is None:
        return None
    p = Problem.from_config(cfg)
    gates = cfg.learning.initial_gates(p.n_edges, 0)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, repeats + 1):
            path = Path(tmp) / f"net{n}.cir"
            path.write_text(spice_netlist(cfg, gates, p.drive[0], n))
            start = time.perf_counter()
            subprocess.run([exe, "-b", str(path)], capture_output=True, check=True)
            times[n] = time.perf_counter() - start
    return 2 * (times[repeats + 1] - times[1]) / repeats


def board_rows(cfg, builds, qs_per_example):
    """Rows of the boards built for ``cfg`` in ``builds`` (list of build reports)."""
    rows = []
    for b in builds:
        if b.get("config") != cfg.name:
            continue
        streams = int(b.get("streams", 1))
        board_cfg = config.refold(cfg, f"streams:{streams}") if streams > 1 else cfg
        expected = expected_board_time(with_scheme(board_cfg, "jacobi"),
                                       b["cycles_per_tick"], b["clock_mhz"] * 1e6)
        ticks, per_network = expected["ticks_per_example"], expected["seconds_per_example"]
        fabric = ("serial" if b.get("serial") else f"streams:{streams}" if streams > 1
                  else f"{b['edge_units']} edge units")
        rows.append({"model": f"{b['board']} ({fabric}, {b['clock_mhz']:.1f} MHz)",
                     "scheme": "jacobi", "ticks": ticks, "per_example": per_network / streams,
                     "per_network": per_network, "streams": streams,
                     "to_train": per_network * examples_per_run(cfg)})
    return rows


def table(cfg, rows, qs):
    """A markdown table of ``rows`` with ratios against the quasi-static time ``qs``."""
    out = [f"### {cfg.name} ({cfg.network.n_edges} edges, {cfg.learning.epochs} epochs x "
           f"{len(cfg.task.x)} examples)", "",
           "| where | scheme | seeds reaching target | ticks per example (mean / max) | "
           "time per example | to train one seed | vs quasi-static |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        reached = f"{r['reached']} of {r['seeds']}" if "reached" in r else "-"
        ticks = (f"{r['ticks']:.1f} / {r.get('ticks_max', '-')}" if "ticks" in r else "-")
        per = _seconds(r["per_example"])
        if r.get("streams", 1) > 1:
            per += f" ({_seconds(r['per_network'])} per network, {r['streams']} streams)"
        out.append(f"| {r['model']} | {r['scheme']} | {reached} | {ticks} | {per} | "
                   f"{_seconds(r['to_train'])} | {qs / r['per_example']:.3g}x |")
    return "\n".join(out)


def _seconds(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def plot(results, path):
    """Bar chart of time per example (log scale), one panel per config."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        labels = [f"{r['model']}\n{r['scheme']}" for r in rows]
        ax.barh(labels, [r["per_example"] for r in rows])
        ax.set_xscale("log")
        ax.set_xlabel("seconds per training example")
        ax.set_title(name)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bench_config(name, args, builds):
    cfg = config.load(name)
    seeds = list(range(args.seeds))
    rows = [train_row(cfg, "quasistatic", None, seeds, args.repeats)]
    for model in ("fixed", "dynamic"):
        rows.append(train_row(cfg, model, "jacobi", seeds, args.repeats))
        rows.append(train_row(cfg, model, "euler", seeds[:args.euler_seeds], 1))
    spice = ngspice_per_example(cfg)
    if spice is not None:
        rows.append({"model": "ngspice", "scheme": "-", "per_example": spice,
                     "to_train": spice * examples_per_run(cfg)})
    qs = rows[0]["per_example"]
    rows += board_rows(cfg, builds, qs)
    text = table(cfg, rows, qs)
    ss = {"euler": steady_state_lsb(cfg, "euler")}
    for extra in sorted({0, cfg.fixed.node_extra_bits, *args.extra_bits}):
        ss[f"jacobi F={extra}"] = steady_state_lsb(with_extra_bits(cfg, extra), "jacobi")
    text += ("\n\nfixed-point steady state vs quasi-static (LSB of 2^-16 V, median / worst; "
             "F: `node_extra_bits`, the config's is "
             f"{cfg.fixed.node_extra_bits}): ") + \
        ", ".join(f"{s} {m:.2f} / {w:.1f}" for s, (m, w) in ss.items())
    if spice is None:
        text += "\n\nngspice: not installed (`make bench` installs it)"
    return text, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["paper-xor", "paper-regression"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--euler-seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra-bits", type=int, nargs="*", default=[],
                        help="node_extra_bits to measure the jacobi steady state at too "
                             "(always 0 and the config's)")
    parser.add_argument("--builds", type=Path, default=HERE / "builds.json")
    parser.add_argument("--png", type=Path, default=HERE / "settling.png")
    args = parser.parse_args()
    builds = json.loads(args.builds.read_text()) if args.builds.exists() else []
    results = {}
    for name in args.configs:
        text, rows = bench_config(name, args, builds)
        results[name] = rows
        print(text, end="\n\n", flush=True)
    plot(results, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
