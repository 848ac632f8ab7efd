"""CLI commands of the board layer: ``clln build`` and ``clln run``."""

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import config as config_mod
from .boards.catalog import OFFERED, TARGETS
from .cli_common import (
    clock_arg,
    compile_notice,
    fold_arg,
    output_folder,
    plot_arg,
    positive_mhz,
    positive_seconds,
    progress_bar,
    warn_learning,
    whole_number,
)
from .errors import CllnError, ConfigError

# --------------------------------------------------------------------------- build

def cmd_build(args):
    """Build a bitstream of the training system for a board."""
    from .boards.system import build_fitting, build_system
    from .flows import expected_board_time
    cfg = config_mod.load(args.config)
    if args.fabric is not None:
        cfg = config_mod.refold(cfg, args.fabric, "--fabric")
    build_dir = Path(args.build_dir or f"build/boards/{cfg.name}-{args.board}")
    if build_dir.is_absolute():
        try:
            build_dir = build_dir.relative_to(Path.cwd())
        except ValueError:
            raise ConfigError("--build-dir", "", "must be inside the current folder (the "
                              "YoWASP tools cannot see other folders)") from None
    _check_build_args(cfg, args)
    output_folder(build_dir, "--build-dir")
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else None
    t0 = time.monotonic()
    attempts = []
    if cfg.has_fabric:
        rep, units, cpt = build_system(cfg, args.board, build_dir, args.clock, args.baud,
                                       args.max_examples, args.pnr_clock, args.pnr_seed)
    else:
        rep, units, cpt, attempts = build_fitting(cfg, args.board, build_dir, args.clock,
                                                  args.baud, args.max_examples, log,
                                                  args.pnr_clock, args.pnr_seed)
    seconds = time.monotonic() - t0
    with compile_notice(None, "the fixed model's"):
        expected = expected_board_time(cfg, cpt, rep.clock_mhz * 1e6)
    streams = cfg.fabric.streams
    out = {"config": cfg.name, "board": args.board, "bitstream": str(rep.bitstream),
           "clock_mhz": rep.clock_mhz, "fmax_mhz": rep.fmax_mhz, "lut": rep.lut,
           "dsp": rep.dsp, "bram": rep.bram, "edge_units": units, "cycles_per_tick": cpt,
           "serial": cfg.fabric.serial if cfg.has_fabric else any(a.serial and a.ok
                                                                  for a in attempts),
           "streams": streams,
           # every stream ticks once per cycles_per_tick cycles
           "ticks_per_second": streams * rep.clock_mhz * 1e6 / cpt,
           "ticks_per_second_per_stream": rep.clock_mhz * 1e6 / cpt, "seconds": seconds,
           "attempts": [a.__dict__ for a in attempts]}
    out.update(expected)
    if args.program:
        _program(args.board, rep.bitstream)
        out["programmed"] = True
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        kind = "serial fabric" if out["serial"] else f"{units} edge units"
        if streams > 1:
            kind += (f", {streams} networks pipelined, "
                     f"{out['ticks_per_second_per_stream']:.3g} ticks/s each")
        print(f"{cfg.name} on {args.board}: {rep.bitstream} ({kind}, {cpt} "
              f"cycle(s) per tick, {out['ticks_per_second']:.3g} ticks/s at "
              f"{rep.clock_mhz:g} MHz; fmax {rep.fmax_mhz:.1f} MHz; {rep.lut} LC, {rep.dsp} "
              f"DSP, {rep.bram} BRAM; {seconds:.0f} s)")
        print(f"  expected: {out['ticks_per_example']:.1f} ticks per example (fixed-point "
              f"model), {out['seconds_per_example'] * 1e6:.3g} us per example per network"
              + (f", {out['seconds_per_example_all_streams'] * 1e6:.3g} us over the "
                 f"{streams}" if streams > 1 else "")
              + f"; {out['seconds_to_train']:.3g} s to train {cfg.learning.epochs} epochs")
    return 0


def _check_build_args(cfg, args):
    """Refuse the flags of a build that cannot be made, before any work: a clock the
    board's PLL cannot make, a baud rate the clock cannot divide, fields the protocol
    cannot carry."""
    from . import protocol as p
    from .boards.targets import achieved_clock_mhz, check_clock
    if args.pnr_clock is not None and args.clock in (None, "max"):
        raise ConfigError("--pnr-clock", "", "needs --clock MHZ (the clock the "
                          "bitstream runs at)")
    if args.clock not in (None, "max"):
        check_clock(args.board, args.clock, "--clock")
    if args.pnr_clock is not None:
        check_clock(args.board, args.pnr_clock, "--pnr-clock")
    clock = None if args.clock == "max" else args.clock
    try:
        p.uart_divisor(achieved_clock_mhz(args.board, clock) * 1e6, args.baud)
    except ValueError as e:
        raise ConfigError("--baud", "", str(e)) from None
    p.check_fields(cfg, args.max_examples or p.default_max_examples(cfg))


def _program(board, bitstream):
    import shutil

    from . import processes
    from .boards.targets import BuildError
    tool = list(TARGETS[board].programmer)
    if not shutil.which(tool[0]):
        raise BuildError(f"{tool[0]} is not installed: cannot program {board}")
    res = processes.run(tool + [str(bitstream)])
    if res.returncode:
        raise BuildError(f"{tool[0]} failed with exit code {res.returncode}")


# --------------------------------------------------------------------------- run

def _open_device(cfg, args, seed):
    from .host.driver import Device, SerialTransport
    if args.sim:
        from .flows import sim_board
        transport = sim_board(cfg, build_dir=args.build_dir, seed=seed, opt=args.sim_opt)
        return Device(transport, timeout=60.0), transport
    try:
        transport = SerialTransport(args.port, args.baud)
    except Exception as e:          # serial.SerialException and OSError
        raise CllnError(f"cannot open {args.port}: {e}") from None
    return Device(transport, timeout=args.timeout), transport


def run_on_device(dev, cfg, epochs, seed, order="cyclic", progress=None):
    """Reset the device, load ``cfg``'s dataset, schedule and seeds' gates, train epoch by
    epoch, run one inference pass and read gates and outputs back.

    Parameters
    ----------
    dev : clln.host.driver.Device
    cfg : clln.config.Config
    epochs : int
    seed : int
        LFSR seed, and initial gates ``learning.initial_gates(E, seed + s)`` of stream s
        (a device reports its number of streams in IDENTIFY).
    order : {"cyclic", "lfsr"}
    progress : callable(epoch, mse) or None
        Called after each epoch with stream 0's error.

    Returns
    -------
    dict
        ``streams``: per stream a dict of ``seed``, ``error_sums`` (per epoch, LSB^2),
        ``mse_per_epoch`` (V^2), ``gates`` (LSBs), ``outputs`` (LSBs,
        [example][output]), ``eval_error_sum`` and ``mse_final`` (inference pass); the
        same keys of stream 0 at the top level; ``status`` (the last
        :class:`~clln.host.protocol.DeviceStatus`); ``cycles``, the clock cycles of every
        run (the training epochs and the inference pass, each counted by the device from
        its start), and ``clock_hz``, the clock the device reports in IDENTIFY (0: not
        known).
    """
    from . import protocol as p
    from .formats import Formats
    fmt = Formats.from_config(cfg)
    ident = dev.identify()
    want = p.config_hash(cfg)
    if ident.config_hash != want:
        raise CllnError(f"the device runs another config (hash {ident.config_hash:08x}, "
                        f"{cfg.name} has {want:08x}): build and load its bitstream first")
    x, y = fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y)
    n = len(x)
    if n > ident.max_examples:
        raise CllnError(f"{n} examples do not fit the device's {ident.max_examples}")
    if dev.status().mode != p.Mode.IDLE:
        dev.stop()
        dev.wait_idle()
    dev.reset()                 # node voltages 0, as at the start of `clln train`
    dev.write_dataset(x, y)
    sched = p.ScheduleParams.from_config(
        cfg, n, p.Order.LFSR if order == "lfsr" else p.Order.CYCLIC, seed)
    dev.write_schedule(dataclasses.replace(sched, epochs=epochs))
    seeds = [seed + s for s in range(ident.streams)]
    n_edges, n_out = cfg.network.n_edges, len(cfg.io.outputs)
    dev.write_gates(np.concatenate([fmt.volts_to_g(cfg.learning.initial_gates(n_edges, s))
                                    for s in seeds]))
    scale = 2.0 ** (-2 * fmt.v_frac) / (n * n_out)
    sums, cycles = [], 0
    for e in range(epochs):
        dev.run_epochs(1, True)
        st = dev.wait_idle(timeout=3600, poll=0.01)
        sums.append(st.error_sums)
        cycles += st.cycles
        if progress:
            progress(e + 1, st.error_sum * scale)
    gates = dev.read_gates().reshape(len(seeds), n_edges)
    dev.run_epochs(1, False)
    st = dev.wait_idle(timeout=3600, poll=0.01)
    cycles += st.cycles
    outputs = dev.read_outputs(0, n).reshape(n, len(seeds), n_out)
    streams = [{"seed": sd, "error_sums": [e[s] for e in sums],
                "mse_per_epoch": [e[s] * scale for e in sums], "gates": gates[s],
                "outputs": outputs[:, s], "eval_error_sum": st.error_sums[s],
                "mse_final": st.error_sums[s] * scale} for s, sd in enumerate(seeds)]
    return dict(streams[0], streams=streams, status=st, cycles=cycles,
                clock_hz=ident.clock_hz)


def _plot(path, cfg, res, fmt):
    """PNG of a run: the on-chip error curve of each stream, and stream 0's outputs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for r in res["streams"]:
        curve = np.maximum(np.array(r["mse_per_epoch"]), 1e-12)
        a1.semilogy(np.arange(1, len(curve) + 1), curve, label=f"seed {r['seed']}")
    a1.axhline(cfg.task.mse_target, color="gray", ls=":", label="target")
    a1.set_xlabel("epoch")
    a1.set_ylabel("on-chip MSE (V$^2$)")
    a1.set_title(f"{cfg.name}: training on the board")
    a1.legend()
    out = fmt.v_to_volts(res["outputs"])
    idx = np.arange(len(out))
    for k in range(out.shape[1]):
        a2.plot(idx, cfg.task.y[:, k], "o", mfc="none", label=f"target {k}")
        a2.plot(idx, out[:, k], "x", label=f"output {k}")
    a2.set_xlabel("example")
    a2.set_ylabel("V")
    a2.set_title(f"outputs after training (inference pass, seed {res['seed']})")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_run(args):
    """Train a config on a board (or the simulated board) and read the result back."""
    from .formats import Formats
    cfg = config_mod.load(args.config)
    if args.fabric is not None:
        if not args.sim:
            raise ConfigError("--fabric", "", "only with --sim (a board runs the fabric it "
                              "was built with)")
        cfg = config_mod.refold(cfg, args.fabric, "--fabric")
    fmt = Formats.from_config(cfg)
    seed = args.seed if args.seed is not None else cfg.learning.seed
    epochs = args.epochs if args.epochs is not None else cfg.learning.epochs
    ckpt = Path(args.checkpoint or f"build/checkpoints/{cfg.name}-seed{seed}.json")
    for path, flag in ((args.plot, "--plot"), (ckpt, "--checkpoint")):
        if path and not Path(path).resolve().parent.is_dir():
            if flag == "--checkpoint" and not args.checkpoint:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            else:
                raise ConfigError(flag, "", f"cannot write {path}: its folder does not exist")
    if args.sim and args.build_dir:
        output_folder(args.build_dir, "--build-dir")
    t0 = time.monotonic()
    dev, transport = _open_device(cfg, args, seed)
    setup = time.monotonic() - t0
    bar = progress_bar(epochs, not args.json, f"{cfg.name} ({'sim' if args.sim else args.port})")

    def progress(e, mse):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(mse=f"{mse:.3e}")

    t1 = time.monotonic()
    try:
        res = run_on_device(dev, cfg, epochs, seed, args.order, progress)
    finally:
        if bar is not None:
            bar.close()
        transport.close()
    seconds = time.monotonic() - t1
    st = res["status"]
    clock_hz = _clock_hz(res, args)
    board_seconds = res["cycles"] / clock_hz if clock_hz else None
    streams = [{"seed": r["seed"], "mse_per_epoch": r["mse_per_epoch"],
                "error_sums": r["error_sums"], "mse_final": r["mse_final"],
                "outputs_final": fmt.v_to_volts(r["outputs"]).tolist(),
                "gates_final": fmt.g_to_volts(r["gates"]).tolist(),
                **_learning_flags(r, fmt, epochs)} for r in res["streams"]]
    warn_learning(cfg, [r["seed"] for r in streams], [r["gates_at_bounds"] for r in streams],
                  [r["frozen"] for r in streams],
                  "the on-chip error sum was the same in every epoch")
    gates = [{"seed": r["seed"], "gates_q": r["gates"].tolist(),
              "gates_final": sr["gates_final"]}
             for r, sr in zip(res["streams"], streams, strict=True)]
    ckpt.write_text(json.dumps({"config": cfg.name, "seed": seed, "epochs": epochs,
                                "gates_q": gates[0]["gates_q"],
                                "gates_final": gates[0]["gates_final"],
                                "streams": gates}) + "\n")
    if args.plot:
        _plot(args.plot, cfg, res, fmt)
    out = {"config": cfg.name, "device": "sim" if args.sim else args.port, "epochs": epochs,
           "seed": seed, "order": args.order, "mse_per_epoch": res["mse_per_epoch"],
           "error_sums": res["error_sums"], "mse_final": res["mse_final"],
           "outputs_final": streams[0]["outputs_final"],
           "gates_final": streams[0]["gates_final"],
           "targets": cfg.task.y.tolist(), "saturated": bool(st.saturation),
           "ticks": st.ticks, "seconds": seconds, "setup_seconds": setup,
           "ticks_per_second": st.ticks / seconds if seconds else None,
           "cycles": res["cycles"], "clock_hz": clock_hz or None,
           "board_seconds": board_seconds,
           "checkpoint": str(ckpt), "gates_at_bounds": streams[0]["gates_at_bounds"],
           "frozen": streams[0]["frozen"], "streams": streams}
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_run(out, cfg, args)
    return 0


def _learning_flags(stream, fmt, epochs):
    """``gates_at_bounds`` (gates read back at a bound) and ``frozen`` (epochs ran, and
    each epoch's error sum and the inference pass's are one value) of a stream."""
    gates = np.asarray(stream["gates"])
    return {"gates_at_bounds": int(((gates <= fmt.gate_min_q) | (gates >= fmt.gate_max_q)).sum()),
            "frozen": epochs > 0 and len({*stream["error_sums"], stream["eval_error_sum"]}) == 1}


def _print_run(out, cfg, args):
    """The text report of ``clln run``: ``out`` is its JSON object."""
    streams, epochs = out["streams"], out["epochs"]
    # one column per stream, in seed order
    seeds = ", ".join(str(r["seed"]) for r in streams)
    print(f"{cfg.name}: {epochs} epochs on {out['device']} in {out['seconds']:.1f} s "
          f"({out['ticks']} ticks), seed{'s' if len(streams) > 1 else ''} {seeds}, "
          f"{args.order} order")
    print("  " + _board_time(out["cycles"], out["clock_hz"], out["board_seconds"]))
    for e in range(epochs):
        if e < 5 or e == epochs - 1 or (e + 1) % max(1, epochs // 10) == 0:
            mses = " ".join(f"{r['mse_per_epoch'][e]:.3e}" for r in streams)
            print(f"  epoch {e + 1:>6}: mse {mses} V^2")
    mses = " ".join(f"{r['mse_final']:.3e}" for r in streams)
    print(f"final (inference pass): mse {mses} V^2"
          + ("  (saturated)" if out["saturated"] else ""))
    for i, y in enumerate(cfg.task.y):
        outs = " ".join(np.array2string(np.array(r["outputs_final"][i]), precision=4)
                        for r in streams)
        print(f"  example {i}: output {outs} V, "
              f"target {np.array2string(y, precision=4)} V")
    print(f"gates saved to {out['checkpoint']}" + (f"; plot written to {args.plot}"
                                                   if args.plot else ""))


def _clock_hz(res, args):
    """The device's clock (Hz) from its IDENTIFY, else, for the simulated board, the
    bench's clock; 0 when not known."""
    if res["clock_hz"] or not args.sim:
        return res["clock_hz"]
    from .flows import SIM_CLOCK_HZ
    return SIM_CLOCK_HZ


def _board_time(cycles, clock_hz, board_seconds):
    """The text line of the time the device itself spent in the runs."""
    if not clock_hz:
        return f"board time: {cycles} cycles (the device reports no clock)"
    return (f"board time: {board_seconds:.4g} s ({cycles} cycles at "
            f"{clock_hz / 1e6:g} MHz)")


def add_parsers(sub):
    """Add ``build`` and ``run`` to the ``clln`` argument parser."""
    p = sub.add_parser("build", help="build a bitstream of the training system for a board",
                       description="Build CONFIG's training system (UART, command handler, "
                       "controller, fabric) for a board with the YoWASP tools. Without a "
                       "[fabric] section the largest edge_units that fits is searched.")
    p.add_argument("config")
    p.add_argument("--board", choices=OFFERED, required=True)
    p.add_argument("--clock", type=clock_arg, metavar="MHZ",
                   help="clock (PLL), or 'max': the oscillator, then again at 95%% of "
                   "its fmax when that is faster; default the board oscillator (or 95%% "
                   "of fmax when timing fails there)")
    p.add_argument("--pnr-clock", type=positive_mhz, metavar="MHZ",
                   help="place and route as a build at this clock would (nextpnr's timing "
                   "constraint); the bitstream runs at --clock, whose timing it must still "
                   "meet (for designs that route at a relaxed constraint only)")
    p.add_argument("--pnr-seed", type=whole_number(0, 2 ** 31 - 1), metavar="N",
                   help="nextpnr's random seed (placements differ by seed; each is "
                   "reproducible)")
    p.add_argument("--baud", type=whole_number(1), default=115200)
    p.add_argument("--max-examples", type=whole_number(1, config_mod.MAX_EXAMPLES),
                   help="dataset capacity (default: the dataset, at least 16)")
    p.add_argument("--fabric", type=fold_arg, metavar="FOLD",
                   help="override [fabric]: edge units (0 = one per edge), 'serial' or "
                   "'streams:C' (C networks pipelined)")
    p.add_argument("--build-dir", metavar="DIR", help="default build/boards/<name>-<board>")
    p.add_argument("--program", action="store_true", help="program the board afterwards")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="train on a board (or the simulated board)",
                       description="Load CONFIG's dataset, schedule and initial gates into "
                       "a board running its bitstream (or into the Verilated system with "
                       "--sim), train epoch by epoch, then read the gates and the outputs "
                       "of an inference pass back.")
    p.add_argument("config")
    dev = p.add_mutually_exclusive_group(required=True)
    dev.add_argument("--port", metavar="DEV", help="serial port of the board")
    dev.add_argument("--sim", action="store_true", help="simulate the board (Verilator)")
    p.add_argument("--epochs", type=whole_number(0, config_mod.MAX_EPOCHS),
                   help="override learning.epochs")
    p.add_argument("--seed", type=whole_number(0, config_mod.MAX_SEED),
                   help="override learning.seed (stream s "
                   "of a fabric of several networks starts from the gates of seed + s)")
    p.add_argument("--order", choices=("cyclic", "lfsr"), default="cyclic")
    p.add_argument("--baud", type=whole_number(1), default=115200)
    p.add_argument("--timeout", type=positive_seconds, default=2.0,
                   help="seconds per reply (serial)")
    p.add_argument("--fabric", type=fold_arg, metavar="FOLD",
                   help="with --sim: the simulated board's fabric (edge units or 'serial')")
    p.add_argument("--build-dir", metavar="DIR", help="--sim build folder")
    p.add_argument("--sim-opt", default=None, help="C++ optimisation of the simulated "
                   "board (default -Os; -O0 builds faster and runs slower)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="gates JSON (default build/checkpoints/<name>-seed<S>.json)")
    p.add_argument("--plot", metavar="FILE", type=plot_arg,
                   help="write a plot of the run (PNG unless FILE names another format)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_run)
