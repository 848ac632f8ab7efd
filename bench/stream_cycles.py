"""Clock cycles per example of each stream of the pipelined fabric, from the gateware's
own cycle counters (amaranth.sim of the controllers and the fabric; no UART), beside the
fixed-point model's ticks; prints a markdown table and, with ``--json``, the cycles per
example per stream as a JSON list (for ``bench/streams.py --cycles``).

    python bench/stream_cycles.py [--config paper-xor] [--streams 8] [--epochs 2]
                                  [--clock-mhz 50] [--json FILE]

Each stream's controller counts the cycles while its stream runs (it stops at the end
of its last epoch); the run's counter (READ_STATUS) is the slowest's. The model's ticks
are those of the same epochs from reset (the single-network system of each seed), so
``cycles / (ticks * C)`` is the controller's overhead (loading, observing) per tick.
amaranth.sim runs about 100 cycles/s of paper-xor's 8 streams: keep ``--epochs`` small.
"""

import argparse
import json
import time

from amaranth.hdl import Module
from amaranth.sim import Simulator

from clln import config
from clln import protocol as p
from clln.gateware.fabric import make_fabric
from clln.gateware.stream_control import connect_controller, make_controller
from clln.sim.system import SystemModel


def simulate(cfg, epochs):
    """Train ``epochs`` epochs from reset on the gateware; return each stream's cycles,
    the run's cycles and the wall time."""
    fab = make_fabric(cfg)
    ctrl = make_controller(cfg, fab.fmt, p.default_max_examples(cfg))
    m = Module()
    m.submodules.fabric, m.submodules.ctrl = fab, ctrl
    connect_controller(m, ctrl, fab)
    c, got = ctrl.command, {}

    async def script(ctx):
        ctx.set(c.start_epochs, epochs)
        ctx.set(c.start_learn, 1)
        ctx.set(c.start, 1)
        await ctx.tick()
        ctx.set(c.start, 0)
        while ctx.get(c.busy):
            await ctx.tick()
        got["streams"] = [ctx.get(lane.command.cycles) for lane in ctrl.controllers]
        got["run"] = ctx.get(c.cycles)
        got["gates"] = [ctx.get(fab.gates[i]) for i in range(fab.streams * fab.n_edges)]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(script)
    start = time.perf_counter()
    sim.run()
    return got, time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper-xor")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--clock-mhz", type=float, default=50.0)
    ap.add_argument("--json", help="write the cycles per example per stream here")
    args = ap.parse_args(argv)
    cfg = config.refold(config.load(args.config), f"streams:{args.streams}")
    model = SystemModel(cfg)
    model.run(args.epochs, True)
    got, wall = simulate(cfg, args.epochs)
    if got["gates"] != model.gates.tolist():
        raise SystemExit("the gateware's gates differ from the model's")
    C, n = args.streams, args.epochs * len(cfg.task.x)
    print(f"{cfg.name}, {C} streams, {args.epochs} epochs of {len(cfg.task.x)} examples from "
          f"reset (gates equal to the model's); amaranth.sim, {got['run'] / wall:.0f} "
          f"cycles/s\n")
    print("| stream (seed) | model ticks/example | gateware cycles/example | cycles / (ticks x C) "
          f"| us/example at {args.clock_mhz:g} MHz |")
    print("|---|---|---|---|---|")
    per = []
    for s, (tw, cycles) in enumerate(zip(model.twins, got["streams"], strict=True)):
        ticks = tw.ticks / n
        per.append(cycles / n)
        print(f"| {s} ({model.seeds[s]}) | {ticks:.1f} | {cycles / n:.1f} | "
              f"{cycles / (tw.ticks * C):.3f} | {cycles / n / args.clock_mhz:.2f} |")
    print(f"\nThe run (READ_STATUS' counter): {got['run']} cycles, {got['run'] / n:.1f} per "
          f"example, {got['run'] / n / args.clock_mhz:.2f} us at {args.clock_mhz:g} MHz "
          f"({got['run'] / n / args.clock_mhz / C:.2f} us per example over the {C}).")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(per, fh)


if __name__ == "__main__":
    main()
