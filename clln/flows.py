"""Flows that join the layers: generate gateware, then run it in a bench.

The cocotb benches (``clln.sim.benches``) take Verilog and a manifest and never import
gateware; these functions build the design (``clln.gateware.export``) and hand it over.
They sit above every layer, beside the CLI that calls them.
"""

import time
from pathlib import Path

import numpy as np

from .formats import Formats, check_tick_stability
from .gateware.export import generate, generate_system
from .sim.benches.board import PERIOD_NS, SimBoardTransport
from .sim.benches.runner import check_bench_args, run_fabric_bench

__all__ = ["verify", "sim_board", "SIM_CLOCK_HZ", "expected_board_time"]

#: The simulated board's clock (its bench's period): what turns the cycles of a run on
#: the simulated board into (simulated) seconds. Its IDENTIFY reports no clock (0).
SIM_CLOCK_HZ = round(1e9 / PERIOD_NS)


def verify(cfg, sim="icarus", ticks=300, waves=False, build_dir=None, patch=None, seed=None,
           flat=True, free_rounds=None):
    """Generate the fabric of ``cfg`` and compare it in a Verilog simulator with the
    fixed-point model.

    Parameters
    ----------
    cfg : clln.config.Config
    sim, ticks, waves, patch, free_rounds
        As for :func:`clln.sim.benches.runner.run_fabric_bench`.
    build_dir : str or Path, optional
        Defaults to ``build/verify/<name>/<sim>`` (relative to the current folder).
    seed : int, optional
        Seed of the initial gates (of stream 0); defaults to ``learning.seed``.
    flat : bool
        Simulate the flattened netlist (``generate(..., flat=True)``, faster) rather than
        the hierarchical one of ``amaranth.back.verilog``.

    Returns
    -------
    dict
        As :func:`~clln.sim.benches.runner.run_fabric_bench`; ``build_seconds`` includes
        the Verilog's generation.
    """
    free_rounds = check_bench_args(sim, ticks, free_rounds)
    check_tick_stability(cfg, Formats.from_config(cfg).kappa)
    build = Path(build_dir) if build_dir is not None else Path("build/verify") / cfg.name / sim
    build = build.resolve()
    t0 = time.perf_counter()
    fabric = generate(cfg, build / "hdl", seed=seed, flat=flat)
    generate_seconds = time.perf_counter() - t0
    res = run_fabric_bench(cfg, fabric, build, sim=sim, ticks=ticks, waves=waves, patch=patch,
                           seed=seed, free_rounds=free_rounds)
    res["build_seconds"] += generate_seconds
    return res


def sim_board(cfg, build_dir=None, seed=None, opt=None, divisor=4, max_examples=None,
              capacity=None):
    """The board system of ``cfg`` Verilated, as a :class:`~clln.protocol.Transport`.

    Parameters
    ----------
    build_dir : str or Path, optional
        Default ``build/simboard/<name>``; the Verilog goes into its ``hdl`` folder.
    seed, divisor, max_examples, capacity
        As for :class:`~clln.gateware.system.System`.
    opt : str, optional
        C++ optimisation of the Verilated model (``-O0`` builds faster, runs ~5x slower).

    The simulated clock is :data:`SIM_CLOCK_HZ`.
    """
    build = Path(build_dir) if build_dir else Path("build/simboard") / cfg.name
    if capacity is not None and not build_dir:
        from .schedule import parse_capacity
        cap = parse_capacity(capacity)
        build = build.with_name(f"{cfg.name}-capacity-{cap.nodes}x{cap.edges}")
    system = generate_system(cfg, build / "hdl", divisor=divisor, max_examples=max_examples,
                             seed=seed, capacity=capacity)
    return SimBoardTransport(system, build_dir=build, opt=opt)


def expected_board_time(cfg, cycles_per_tick, clock_hz):
    """What a bitstream of ``cfg`` should take per example, from the ticks per example of
    the fixed-point model (the bitstream's arithmetic; each stream on its own schedule, as
    the fabric runs them) trained for ``cfg.learning.epochs`` epochs.

    Returns
    -------
    dict
        ``ticks_per_example`` (mean over the training run and the streams),
        ``seconds_per_example`` (one network's example: ticks times ``cycles_per_tick``
        over the clock), ``seconds_per_example_all_streams`` (the same over the streams,
        which tick side by side) and ``seconds_to_train`` (every epoch of every stream:
        a run ends with its slowest stream).
    """
    from .sim.fixed import FixedPointModel
    from .sim.training import train

    seeds = [cfg.learning.seed + s for s in range(cfg.fabric.streams)]
    ticks = np.array([train(FixedPointModel(cfg, [s]), cfg.learning.epochs)
                      .example_ticks[0] for s in seeds])
    per_example = float(ticks.mean()) * cycles_per_tick / clock_hz
    return {"ticks_per_example": float(ticks.mean()), "seconds_per_example": per_example,
            "seconds_per_example_all_streams": per_example / len(seeds),
            "seconds_to_train": float(ticks.sum(axis=1).max()) * cycles_per_tick / clock_hz}
