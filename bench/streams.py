"""What independent per-stream schedules buy a pipelined fabric: ticks per example of
C streams settling jointly (the old fabric: an example's settle phase ends when every
stream is still, judged a tick late) against each stream on its own schedule (the
single-network system of its seed); prints a markdown table.

    python bench/streams.py [--config paper-xor] [--streams 8] [--seed 0]
                            [--clock-mhz 50] [--cycles CYCLES.json]

Ticks per example are the mean over the config's training run (``learning.epochs``,
settle and learn ticks) of the fixed-point model. A stream of C ticks once every C
cycles, so its example takes ``ticks * C`` cycles; ``--cycles`` adds the cycles per
example each stream took on the gateware (a JSON list, one number per stream, as
``bench/stream_cycles.py`` prints them).
"""

import argparse
import json
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clln import config  # noqa: E402
from clln.sim.fixed import FixedPointModel  # noqa: E402
from clln.sim.training import train  # noqa: E402


def ticks_per_example(cfg, seeds, joint):
    """Mean ticks per training example of each seed: ``joint`` as the old fabric's
    streams (lag 1), else each seed alone (lag 0)."""
    if joint:
        model = FixedPointModel(cfg, seeds, joint=True, lag=1)
        return train(model, cfg.learning.epochs).ticks_per_example
    return np.array([train(FixedPointModel(cfg, [s]), cfg.learning.epochs)
                     .ticks_per_example[0] for s in seeds])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper-xor")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock-mhz", type=float, default=50.0)
    ap.add_argument("--cycles", help="JSON list: gateware cycles per example per stream")
    args = ap.parse_args(argv)
    cfg = config.load(args.config)
    seeds = [args.seed + s for s in range(args.streams)]
    joint = ticks_per_example(cfg, seeds, True)
    alone = ticks_per_example(cfg, seeds, False)
    measured = json.loads(open(args.cycles).read()) if args.cycles else None
    C, mhz = args.streams, args.clock_mhz
    print(f"{cfg.name}, {C} streams, seeds {seeds[0]}..{seeds[-1]}, "
          f"{cfg.learning.epochs} epochs, {C} cycles per tick at {mhz:g} MHz\n")
    head = "| seed | joint ticks/example | own ticks/example | joint / own | own us/example |"
    if measured:
        head += " gateware cycles/example | gateware us/example |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for s, (j, a) in enumerate(zip(joint, alone, strict=True)):
        row = f"| {seeds[s]} | {j:.1f} | {a:.1f} | {j / a:.2f} | {a * C / mhz:.2f} |"
        if measured:
            row += f" {measured[s]:.1f} | {measured[s] / mhz:.2f} |"
        print(row)
    jm, am = joint.mean(), alone.mean()
    row = f"| mean | {jm:.1f} | {am:.1f} | {jm / am:.2f} | {am * C / mhz:.2f} |"
    if measured:
        row += f" {np.mean(measured):.1f} | {np.mean(measured) / mhz:.2f} |"
    print(row)
    examples = cfg.learning.epochs * len(cfg.task.x)
    print(f"\n| schedule | ticks/example (mean) | us/example per network (mean) | "
          f"ticks/example of the slowest stream | s to train the {C} seeds | "
          f"us/example over the {C} |")
    print("|---|---|---|---|---|---|")
    for name, ticks in (("joint (protocol 4)", joint), ("independent (protocol 5)", alone)):
        # a run ends with its slowest stream
        run_s = ticks.max() * C / (mhz * 1e6) * examples
        print(f"| {name} | {ticks.mean():.1f} | {ticks.mean() * C / mhz:.2f} | "
              f"{ticks.max():.1f} | {run_s:.3f} | {run_s / examples / C * 1e6:.2f} |")
    print(f"\nTicks of the fixed-point model times {C} cycles a tick (the gateware adds its "
          "loads and observations: bench/stream_cycles.py).")


if __name__ == "__main__":
    main()
