"""CLI commands of the board layer: ``clln build`` and ``clln run``."""

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import config as config_mod
from .boards.catalog import OFFERED, TARGETS
from .cli_common import (
    add_checkpoint_args,
    check_writable,
    clock_arg,
    compile_notice,
    fold_arg,
    output_folder,
    plot_arg,
    positive_mhz,
    positive_seconds,
    progress_bar,
    report_failures,
    side_output,
    warn_learning,
    whole_number,
)
from .errors import CllnError, ConfigError

# --------------------------------------------------------------------------- build

def build_run(args):
    """``clln build``'s work for parsed (or :mod:`clln.api`-made) ``args``: the ``--json``
    object."""
    from .boards.plan import plan_build
    from .boards.system import build_fitting, build_system
    from .flows import expected_board_time
    cfg = config_mod.load(args.config)
    capacity = _build_capacity(args, cfg)
    if capacity is not None:
        cfg = config_mod.refold(cfg, "serial")
    if args.fabric not in (None, "search"):
        cfg = config_mod.refold(cfg, args.fabric, "--fabric")
    build_dir = Path(args.build_dir or f"build/boards/{cfg.name}-{args.board}"
                     + (f"-capacity-{capacity.nodes}x{capacity.edges}" if capacity else ""))
    if build_dir.is_absolute():
        try:
            build_dir = build_dir.relative_to(Path.cwd())
        except ValueError:
            raise ConfigError("--build-dir", "", "must be inside the current folder (the "
                              "YoWASP tools cannot see other folders)") from None
    _check_build_args(cfg, args)
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else None
    t0 = time.monotonic()
    attempts = []
    plan = None
    if not cfg.has_fabric and args.fabric != "search":
        plan = plan_build(cfg, args.board)
        if log:
            for reason in plan.reasons:
                log(f"plan: {reason}")
        cfg = config_mod.refold(cfg, plan.fabric)
    clock = args.clock if args.clock is not None or plan is None else plan.clock_mhz
    output_folder(build_dir, "--build-dir")
    if cfg.has_fabric:
        rep, units, cpt = build_system(cfg, args.board, build_dir, clock, args.baud,
                                       args.max_examples, args.pnr_clock, args.pnr_seed,
                                       capacity)
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
           "streams": streams, "banked": bool(cfg.has_fabric and cfg.fabric.banked),
           # every stream ticks once per cycles_per_tick cycles
           "ticks_per_second": streams * rep.clock_mhz * 1e6 / cpt,
           "ticks_per_second_per_stream": rep.clock_mhz * 1e6 / cpt, "seconds": seconds,
           "attempts": [a.__dict__ for a in attempts],
           "plan": plan.as_dict() if plan is not None else None,
           "epochs": cfg.learning.epochs,
           "capacity": f"{capacity.nodes}:{capacity.edges}" if capacity else None}
    out.update(expected)
    if args.program:
        _program(args.board, rep.bitstream)
        out["programmed"] = True
    return out


def _build_capacity(args, cfg):
    """``clln build --capacity``: the :class:`~clln.schedule.Capacity` (or None), refused
    beside another fabric than the serial one."""
    from . import schedule as sch
    if getattr(args, "capacity", None) is None:
        return None
    cap = sch.parse_capacity(args.capacity)
    if args.fabric not in (None, "serial"):
        raise ConfigError("--fabric", "", "a capacity build is the serial fabric: leave "
                          "out --fabric")
    sch.check_capacity(cfg, cap, int(cfg.network.degrees().max()))
    return cap


def cmd_build(args):
    """Build a bitstream of the training system for a board."""
    out = build_run(args)
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    streams = out["streams"]
    kind = ("serial fabric" if out["serial"] else f"banked fabric, {out['edge_units']} edge "
            "units" if out.get("banked") else f"{out['edge_units']} edge units")
    if streams > 1:
        kind += (f", {streams} networks pipelined, "
                 f"{out['ticks_per_second_per_stream']:.3g} ticks/s each")
    print(f"{out['config']} on {out['board']}: {out['bitstream']} ({kind}, "
          f"{out['cycles_per_tick']} cycle(s) per tick, {out['ticks_per_second']:.3g} ticks/s "
          f"at {out['clock_mhz']:g} MHz; fmax {out['fmax_mhz']:.1f} MHz; {out['lut']} LC, "
          f"{out['dsp']} DSP, {out['bram']} BRAM; {out['seconds']:.0f} s)")
    print(f"  expected: {out['ticks_per_example']:.1f} ticks per example (fixed-point "
          f"model), {out['seconds_per_example'] * 1e6:.3g} us per example per network"
          + (f", {out['seconds_per_example_all_streams'] * 1e6:.3g} us over the "
             f"{streams}" if streams > 1 else "")
          + f"; {out['seconds_to_train']:.3g} s to train {out['epochs']} epochs")
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
        capacity = getattr(args, "capacity", None)
        base = getattr(args, "base", None)
        built = config_mod.load(base) if capacity is not None and base is not None else cfg
        transport = sim_board(built, build_dir=args.build_dir, seed=seed, opt=args.sim_opt,
                              capacity=capacity)
        return Device(transport, timeout=60.0), transport
    try:
        transport = SerialTransport(args.port, args.baud)
    except Exception as e:          # serial.SerialException and OSError
        raise CllnError(f"cannot open {args.port}: {e}") from None
    return Device(transport, timeout=args.timeout), transport


def run_on_device(dev, cfg, epochs, seed, order="cyclic", progress=None, start=None,
                  checkpoints=None, base=None):
    """Reset the device, load ``cfg``'s dataset, schedule and seeds' gates, train epoch by
    epoch, run one inference pass and read gates and outputs back.

    Parameters
    ----------
    dev : clln.host.driver.Device
    cfg : clln.config.Config
    epochs : int
        Epochs of this run.
    seed : int
        LFSR seed (stream s's order: seed + s), and initial gates
        ``learning.initial_gates(E, seed + s)`` of stream s (a device reports its number of
        streams in IDENTIFY).
    order : {"cyclic", "lfsr"}
    progress : callable(epoch, mse) or None
        Called after each epoch of this run with stream 0's error.
    start : clln.cli_resume.BoardState or None
        A checkpoint's state to continue from: its gates are written instead of the
        seeds'; node voltages start from 0 and the read-noise generators from their
        first state (RESET: the fabric has no node write port).
    checkpoints : object or None
        ``due(epoch)`` and ``save(BoardState)``: the state is read and saved after the
        epochs it is due and after the last.
    base : clln.config.Config or None
        A capacity bitstream's own config, when known: a ``cfg`` that differs from it in
        what the bitstream fixes is refused naming the key (else by the fixed hash).
        On a capacity bitstream ``cfg``'s graph is loaded first (``Device.load_graph``).

    Returns
    -------
    dict
        ``streams``: per stream a dict of ``seed``, ``error_sums`` (per epoch, LSB^2,
        from the first epoch of ``start`` on), ``mse_per_epoch`` (V^2), ``gates`` (LSBs),
        ``outputs`` (LSBs, [example][output]), ``eval_error_sum`` and ``mse_final``
        (inference pass); the same keys of stream 0 at the top level; ``status`` (the last
        :class:`~clln.host.protocol.DeviceStatus`); ``cycles``, the clock cycles of every
        run of this call (the training epochs and the inference pass, each counted by
        the device from its start), ``clock_hz``, the clock the device reports in
        IDENTIFY (0: not known), and ``board``, the :class:`~clln.cli_resume.BoardState`
        after training.

    Raises
    ------
    clln.errors.CllnError
        A link error once loading began (a serial error, a timeout, a refused command):
        its message names the epoch and says where the last good state was saved.
    """
    from . import protocol as p
    from .cli_resume import BoardState
    from .formats import Formats
    fmt = Formats.from_config(cfg)
    try:
        ident = dev.identify()
    except OSError as e:              # serial.SerialException: a port that fails at once
        raise CllnError(f"the link failed at IDENTIFY ({type(e).__name__}: {e}); nothing "
                        "was trained") from None
    if ident.graph_rows:        # a capacity bitstream: load cfg's graph unless loaded
        try:
            dev.load_graph(cfg, base)
        except OSError as e:
            raise CllnError(f"the link failed loading the graph ({e}); nothing was "
                            "trained") from None
        ident = dev.identify()
    want = p.config_hash(cfg)
    if ident.config_hash != want:
        raise CllnError(f"the device runs another config (hash {ident.config_hash:08x}, "
                        f"{cfg.name} has {want:08x}): build and load its bitstream first")
    n = len(cfg.task.x)
    if n > ident.max_examples:
        raise CllnError(f"{n} examples do not fit the device's {ident.max_examples}")
    seeds = [seed + s for s in range(ident.streams)]
    if start is None:
        start = BoardState(0, np.stack([fmt.volts_to_g(cfg.learning.initial_gates(
            cfg.network.n_edges, s)) for s in seeds]), [])
    elif len(start.gates_q) != len(seeds):
        raise CllnError(f"the checkpoint holds {len(start.gates_q)} network(s), the device "
                        f"trains {len(seeds)} at once (streams): use a bitstream with as many")
    link = _Link(start, checkpoints)
    try:
        _load_device(dev, cfg, fmt, epochs, seed, order, start)
        board, cycles = _train_epochs(dev, cfg, fmt, epochs, start, progress, link)
        link.phase = f"the inference pass after epoch {board.epoch}"
        dev.run_epochs(1, False)
        st = dev.wait_idle(timeout=3600, poll=0.01)
        outputs = dev.read_outputs(0, n).reshape(n, len(seeds), len(cfg.io.outputs))
    except (CllnError, OSError) as e:     # serial.SerialException is an OSError
        raise link.lost(e) from None
    cycles += st.cycles
    scale = _mse_scale(cfg, fmt)
    streams = [{"seed": sd, "error_sums": [e[s] for e in board.error_sums],
                "mse_per_epoch": [e[s] * scale for e in board.error_sums],
                "gates": board.gates_q[s], "outputs": outputs[:, s],
                "eval_error_sum": st.error_sums[s], "mse_final": st.error_sums[s] * scale}
               for s, sd in enumerate(seeds)]
    return dict(streams[0], streams=streams, status=st, cycles=cycles,
                clock_hz=ident.clock_hz, board=board)


def _mse_scale(cfg, fmt):
    """From an on-chip error sum (LSB^2) to the mean squared error (V^2)."""
    return 2.0 ** (-2 * fmt.v_frac) / (len(cfg.task.x) * len(cfg.io.outputs))


def _load_device(dev, cfg, fmt, epochs, seed, order, start):
    """RESET the device, then write the dataset, the schedule and ``start``'s gates.

    The LFSR is reloaded from ``seed`` (stream s's from seed + s): every epoch visits the
    examples in one order (one
    pass of the LFSR's cycle over the states of examples), so it goes on as after any
    number of epochs."""
    from . import protocol as p
    if dev.status().mode != p.Mode.IDLE:
        dev.stop()
        dev.wait_idle()
    dev.reset()                 # node voltages 0, as at the start of `clln train`
    x, y = fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y)
    dev.write_dataset(x, y)
    sched = p.ScheduleParams.from_config(
        cfg, len(x), p.Order.LFSR if order == "lfsr" else p.Order.CYCLIC, seed)
    # the epochs run one RUN_EPOCHS at a time (_train_epochs); the schedule's count is
    # what a START would run, at most the device's limit
    dev.write_schedule(dataclasses.replace(sched, epochs=min(epochs, p.MAX_RUN_EPOCHS)))
    dev.write_gates(start.gates_q.ravel())


def _read_gates(dev, start):
    """The gates of the networks trained (a capacity bitstream holds more)."""
    return dev.read_gates(0, start.gates_q.size).reshape(start.gates_q.shape)


def _train_epochs(dev, cfg, fmt, epochs, start, progress, link):
    """Train ``epochs`` epochs one by one from ``start``, reading the gates back (and
    saving them) when a checkpoint is due and after the last; the state after training
    and the cycles of the runs."""
    from .cli_resume import BoardState
    scale = _mse_scale(cfg, fmt)
    sums, cycles, saturation = list(start.error_sums), 0, start.saturation
    for e in range(start.epoch, start.epoch + epochs):
        link.phase = f"epoch {e + 1}"
        dev.run_epochs(1, True)
        st = dev.wait_idle(timeout=3600, poll=0.01)
        sums.append(list(st.error_sums))
        cycles += st.cycles
        saturation |= st.saturation
        if progress:
            progress(e + 1 - start.epoch, st.error_sum * scale)
        if e + 1 < start.epoch + epochs and link.due(e + 1):
            link.save(BoardState(e + 1, _read_gates(dev, start), list(sums),
                                 start.cycles + cycles, saturation))
    link.phase = f"reading the gates after epoch {start.epoch + epochs}"
    board = BoardState(start.epoch + epochs, _read_gates(dev, start), sums,
                       start.cycles + cycles, saturation)
    link.save(board)
    return board, cycles


class _Link:
    """The last good state of a board run and where it stands, to name both when the
    link fails."""

    def __init__(self, start, checkpoints):
        self.good, self.checkpoints = start, checkpoints
        self.phase = "loading the dataset, schedule and gates"
        self.first = start.epoch

    def due(self, epoch):
        return self.checkpoints is not None and self.checkpoints.due(epoch)

    def save(self, board):
        self.good = board
        if self.checkpoints is not None:
            self.checkpoints.save(board)

    def lost(self, err):
        """The CllnError that ends the run: what failed, during what, and what was
        saved (the last good state is written if the checkpoint does not hold it)."""
        why = " ".join(f"{type(err).__name__}: {err}".split())
        msg = f"the link failed during {self.phase} ({why})"
        ck = self.checkpoints
        if self.good.epoch == 0 or ck is None:
            return CllnError(f"{msg}; no epoch was trained, nothing saved")
        if ck.saved_epoch != self.good.epoch:
            ck.save(self.good)
        if ck.saved_epoch != self.good.epoch:
            return CllnError(f"{msg}; the state after epoch {self.good.epoch} could not be "
                             f"saved: {ck.error}")
        return CllnError(f"{msg}; the state after epoch {self.good.epoch} is saved in "
                         f"{ck.path}: continue with --resume {ck.path}")


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


class _RunCheckpoints:
    """The checkpoints of one ``clln run`` (what :func:`run_on_device` saves through)."""

    def __init__(self, path, every, cfg, fmt, seed, order, epochs_target):
        from .cli_resume import CheckpointWriter
        self.writer = CheckpointWriter(path, every)
        self.path, self.doc = path, (cfg, fmt, seed, order, epochs_target)

    @property
    def saved_epoch(self):
        return self.writer.epoch

    @property
    def error(self):
        return self.writer.error

    def due(self, epoch):
        return self.writer.due(epoch)

    def save(self, board):
        from .cli_resume import run_doc
        cfg, fmt, seed, order, target = self.doc
        self.writer.write(run_doc(cfg, fmt, seed, order, board, target))


def _run_setup(args, cfg):
    """Seed, order, epochs of this run, the checkpoint read for ``--resume`` (or None)
    and the checkpoint file, after checking every output path."""
    from . import cli_resume
    saved = cli_resume.load_run(args.resume, cfg) if args.resume else None
    if saved is None:
        seed = args.seed if args.seed is not None else cfg.learning.seed
        order = args.order or "cyclic"
        epochs = args.epochs if args.epochs is not None else cfg.learning.epochs
    else:
        seed = cli_resume.agree(saved.path, "--seed", args.seed, saved.seed)
        order = cli_resume.agree(saved.path, "--order", args.order, saved.order)
        epochs = (args.epochs if args.epochs is not None
                  else saved.epochs_target - saved.board.epoch)
    ckpt = Path(args.checkpoint or args.resume or
                f"build/checkpoints/{cfg.name}-seed{seed}.json")
    if not (args.checkpoint or args.resume):
        try:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError("--checkpoint", "", f"cannot make the folder of {ckpt}: "
                              f"{e.strerror or e}") from None
    check_writable(ckpt, "--checkpoint")
    if args.plot:
        check_writable(args.plot, "--plot")
    return seed, order, epochs, saved, ckpt


def device_run(args):
    """``clln run``'s work for parsed (or :mod:`clln.api`-made) ``args``: the ``--json``
    object, the side outputs that failed, and what the text report needs."""
    from .formats import Formats
    cfg = config_mod.load(args.config)
    if args.fabric is not None:
        if not args.sim:
            raise ConfigError("--fabric", "", "only with --sim (a board runs the fabric it "
                              "was built with)")
        cfg = config_mod.refold(cfg, args.fabric, "--fabric")
    fmt = Formats.from_config(cfg)
    base = _capacity_args(args, cfg, fmt)
    seed, order, epochs, saved, ckpt = _run_setup(args, cfg)
    start = saved.board if saved else None
    done = start.epoch if start else 0
    checkpoints = _RunCheckpoints(ckpt, args.checkpoint_every, cfg, fmt, seed, order,
                                  done + epochs)
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
        res = run_on_device(dev, cfg, epochs, seed, order, progress, start, checkpoints,
                            base)
    finally:
        if bar is not None:
            bar.close()
        with contextlib.suppress(OSError):      # a port whose cable was pulled
            transport.close()
    seconds = time.monotonic() - t1
    out = _run_report(res, cfg, fmt, args, seconds, setup)
    out.update({"seed": seed, "order": order, "epochs_run": epochs,
                "resumed_from": saved.path if saved else None, "resumed_at_epoch": done,
                "checkpoint": str(ckpt)})
    plot_failed = args.plot and side_output(lambda: _plot(args.plot, cfg, res, fmt), args.plot)
    failures = ([checkpoints.error] if checkpoints.error else []) + (plot_failed or [])
    return out, failures, dict(cfg=cfg, saved_to=None if checkpoints.error else ckpt,
                               plotted=bool(args.plot and not plot_failed))


def _capacity_args(args, cfg, fmt):
    """``--capacity`` and ``--base``: the bitstream's own config (None when not given),
    after refusing, before any build, a ``cfg`` its capacity build cannot load."""
    from . import schedule as sch
    from .formats import Formats
    capacity, base_name = getattr(args, "capacity", None), getattr(args, "base", None)
    if capacity is not None and not args.sim:
        raise ConfigError("--capacity", "", "only with --sim (a board runs the bitstream "
                          "it was built with: clln build --capacity)")
    if base_name is not None and capacity is None and args.sim:
        raise ConfigError("--base", "", "with --sim only beside --capacity")
    base = config_mod.load(base_name) if base_name is not None else None
    if capacity is not None:
        capacity = args.capacity = sch.parse_capacity(capacity)
        built = base or cfg
        bfmt = Formats.from_config(built)
        sch.check_capacity(built, capacity, int(built.network.degrees().max()))
        sch.check_loadable(cfg, built, bfmt, fmt, capacity,
                           int(built.network.degrees().max()))
    return base


def cmd_run(args):
    """Train a config on a board (or the simulated board) and read the result back."""
    out, failures, text = device_run(args)
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_run(out, text["cfg"], args, saved_to=text["saved_to"], plotted=text["plotted"])
    return report_failures(failures)


def _run_report(res, cfg, fmt, args, seconds, setup):
    """The JSON object of ``clln run`` (but for the run's settings)."""
    st = res["status"]
    clock_hz = _clock_hz(res, args)
    streams = [{"seed": r["seed"], "mse_per_epoch": r["mse_per_epoch"],
                "error_sums": r["error_sums"], "mse_final": r["mse_final"],
                "outputs_final": fmt.v_to_volts(r["outputs"]).tolist(),
                "gates_final": fmt.g_to_volts(r["gates"]).tolist(),
                **_learning_flags(r, fmt)} for r in res["streams"]]
    warn_learning(cfg, [r["seed"] for r in streams], [r["gates_at_bounds"] for r in streams],
                  [r["frozen"] for r in streams],
                  "the on-chip error sum was the same in every epoch")
    return {"config": cfg.name, "device": "sim" if args.sim else args.port,
            "epochs": res["board"].epoch, "mse_per_epoch": res["mse_per_epoch"],
            "error_sums": res["error_sums"], "mse_final": res["mse_final"],
            "outputs_final": streams[0]["outputs_final"],
            "gates_final": streams[0]["gates_final"],
            "targets": cfg.task.y.tolist(),
            "saturated": bool(st.saturation | res["board"].saturation),
            "ticks": st.ticks, "seconds": seconds, "setup_seconds": setup,
            "ticks_per_second": st.ticks / seconds if seconds else None,
            "cycles": res["cycles"], "clock_hz": clock_hz or None,
            "board_seconds": res["cycles"] / clock_hz if clock_hz else None,
            "gates_at_bounds": streams[0]["gates_at_bounds"], "frozen": streams[0]["frozen"],
            "streams": streams}


def _learning_flags(stream, fmt):
    """``gates_at_bounds`` (gates read back at a bound) and ``frozen`` (epochs ran, and
    each epoch's error sum of this run and the inference pass's are one value) of a
    stream."""
    gates = np.asarray(stream["gates"])
    sums = stream["error_sums"]
    return {"gates_at_bounds": int(((gates <= fmt.gate_min_q) | (gates >= fmt.gate_max_q)).sum()),
            "frozen": len(sums) > 0 and len({*sums, stream["eval_error_sum"]}) == 1}


def _print_run(out, cfg, args, saved_to, plotted):
    """The text report of ``clln run``: ``out`` is its JSON object."""
    streams, epochs, done = out["streams"], out["epochs"], out["resumed_at_epoch"]
    # one column per stream, in seed order
    seeds = ", ".join(str(r["seed"]) for r in streams)
    run = (f"{epochs} epochs" if out["resumed_from"] is None else
           f"epochs {done + 1}-{epochs} (resumed from {out['resumed_from']} at epoch {done})")
    print(f"{cfg.name}: {run} on {out['device']} in {out['seconds']:.1f} s "
          f"({out['ticks']} ticks), seed{'s' if len(streams) > 1 else ''} {seeds}, "
          f"{out['order']} order")
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
    saved = [f"checkpoint (epoch {epochs}) saved to {saved_to}"] if saved_to else []
    saved += [f"plot written to {args.plot}"] if plotted else []
    if saved:
        print("; ".join(saved))


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


def build_fold_arg(text):
    """``clln build --fabric``: a fold (:func:`~clln.cli_common.fold_arg`) or ``search``."""
    return text if text == "search" else fold_arg(text)


def add_parsers(sub):
    """Add ``build`` and ``run`` to the ``clln`` argument parser."""
    p = sub.add_parser("build", help="build a bitstream of the training system for a board",
                       description="Build CONFIG's training system (UART, command handler, "
                       "controller, fabric) for a board with the YoWASP tools. Without a "
                       "[fabric] section or --fabric the fabric and clock are planned from "
                       "estimates, and the plan is printed.")
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
    p.add_argument("--fabric", type=build_fold_arg, metavar="FOLD",
                   help="override [fabric]: edge units (0 = one per edge), 'serial', "
                   "'streams:C' (C networks pipelined), 'banked:P' (block-RAM fabric, "
                   "P edge units) or 'search' (build folds until the "
                   "largest that fits: can take hours); default: a plan from estimates "
                   "(the serial fabric, docs/boards.md)")
    p.add_argument("--capacity", metavar="NODES:EDGES",
                   help="a bitstream whose graph is loaded at run time (the serial fabric): "
                   "it runs any config of at most this many nodes and edges that agrees "
                   "with CONFIG in what the bitstream fixes (docs/gateware.md)")
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
                   help="override learning.epochs (with --resume: epochs of this run, "
                   "default those the checkpointed run had left)")
    p.add_argument("--seed", type=whole_number(0, config_mod.MAX_SEED),
                   help="override learning.seed (stream s "
                   "of a fabric of several networks starts from the gates of seed + s)")
    p.add_argument("--order", choices=("cyclic", "lfsr"), help="example order (default "
                   "cyclic; with --resume: the checkpoint's)")
    p.add_argument("--baud", type=whole_number(1), default=115200)
    p.add_argument("--timeout", type=positive_seconds, default=2.0,
                   help="seconds per reply (serial)")
    p.add_argument("--fabric", type=fold_arg, metavar="FOLD",
                   help="with --sim: the simulated board's fabric (edge units, 'serial' or "
                   "'banked:P')")
    p.add_argument("--build-dir", metavar="DIR", help="--sim build folder")
    p.add_argument("--capacity", metavar="NODES:EDGES",
                   help="with --sim: simulate a board whose graph is loaded at run time, "
                   "built for this many nodes and edges from --base (default CONFIG); "
                   "CONFIG's graph is then loaded over the link (docs/protocol.md)")
    p.add_argument("--base", metavar="CONFIG",
                   help="the config a capacity bitstream was built from: with --sim "
                   "--capacity the simulated board's; with --port names the key a CONFIG "
                   "that differs in what the bitstream fixes differs in")
    p.add_argument("--sim-opt", default=None, help="C++ optimisation of the simulated "
                   "board (default -Os; -O0 builds faster and runs slower)")
    add_checkpoint_args(p, "build/checkpoints/<name>-seed<S>.json; with --resume: the "
                        "resumed file")
    p.add_argument("--plot", metavar="FILE", type=plot_arg,
                   help="write a plot of the run (PNG unless FILE names another format)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_run)
