"""Pieces every ``clln`` subcommand module shares: argument types, output checks and the
progress bar."""

import argparse
import collections
import contextlib
import math
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path


def whole_number(lo=0, hi=None):
    """An argparse type: an integer in ``[lo, hi]``; bad text becomes a usage error (exit
    2)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r:.40}"
                                             ) from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {v}")
        return v
    return parse


def progress_bar(total, enabled, desc):
    """A tqdm bar of ``total`` epochs on stderr, or None when disabled, empty or without a
    stderr."""
    if not enabled or total == 0 or sys.stderr is None:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False,
                mininterval=0.2)


@contextlib.contextmanager
def compile_notice(bar, what):
    """Tell the user on stderr when ``what`` (``"the fixed model's"``) kernels compile,
    as they do on a first run when ``make setup`` did not compile them, and keep the time
    out of the progress ``bar``'s rate and ETA (:meth:`tqdm.tqdm.unpause`)."""
    from .sim.kernels import compiling

    def say(message):
        if bar is not None:
            bar.write(message, file=sys.stderr)
        elif sys.stderr is not None:
            print(message, file=sys.stderr)

    def done(seconds):
        say(f"clln: compiled in {seconds:.1f} s")
        if bar is not None:
            bar.unpause()

    with compiling(lambda: say(f"clln: compiling {what} kernels (once; numba caches them "
                               "for later runs) ..."), done):
        yield


def fold_arg(text):
    """A ``--fabric`` value: a whole number of edge units (0 = one per edge), ``serial``,
    ``streams:C`` (C interleaved networks, 1 to ``config.MAX_STREAMS``) or ``banked:P``
    (the block-RAM fabric with P edge units; P is checked against the edges later)."""
    from .config import MAX_EDGES, MAX_STREAMS
    for kind, hi, what in (("banked", MAX_EDGES, "P from 1 to the network's edges"),
                           ("streams", MAX_STREAMS, f"C from 1 to {MAX_STREAMS}")):
        count = re.fullmatch(kind + r":([0-9]+)", text)
        if count:
            if not 1 <= int(count[1]) <= hi:
                raise argparse.ArgumentTypeError(f"{kind}:{what[0]} needs {what}, "
                                                 f"got {text!r}")
            return text
    if text == "serial":
        return text
    if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_EDGES:
        raise argparse.ArgumentTypeError(f"expected a number of edge units, 'serial', "
                                         f"'streams:C' or 'banked:P', got {text!r:.40}")
    return int(text)


def clock_arg(text):
    """A ``--clock`` value: MHz above 0, or ``max``."""
    if text == "max":
        return text
    return positive_mhz(text, "MHz or 'max'")


def positive_mhz(text, expected="MHz"):
    """A frequency in MHz, above 0 and finite."""
    try:
        mhz = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r:.40}") from None
    if not 0 < mhz < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of MHz above 0, got {text}")
    return mhz


def positive_seconds(text):
    """A time in seconds, above 0 and at most a day."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r:.40}") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 86400 s, got {text}")
    return seconds


def plot_arg(text):
    """A ``--plot`` file: a suffix matplotlib writes (``.png`` added when there is none),
    so that a run is not refused its plot after the work is done."""
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase
    path = Path(text)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    kinds = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in kinds:
        raise argparse.ArgumentTypeError(f"cannot write {path.suffix!r:.20} plots (use "
                                         f"{', '.join('.' + k for k in sorted(kinds))})")
    return str(path)


def output_folder(path, flag):
    """Make the folder ``path`` (and its parents) for ``flag``'s output before any work,
    or refuse it (:class:`~clln.errors.ConfigError`) if it cannot be made or written."""
    import os
    from pathlib import Path

    from .errors import ConfigError
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(flag, "", f"cannot make folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(flag, "", f"cannot write into folder {path}")
    return Path(path)


def check_run_size(cfg, epochs, n_seeds, flag="--epochs"):
    """Refuse a run that would record more than ``config.MAX_RECORDED`` outputs (seeds x
    epochs x examples x outputs), before it starts."""
    from .config import MAX_RECORDED
    from .errors import ConfigError
    values = n_seeds * epochs * len(cfg.task.x) * len(cfg.io.outputs)
    if values > MAX_RECORDED:
        raise ConfigError(flag, "", f"{n_seeds} seed(s) x {epochs} epochs x "
                          f"{len(cfg.task.x)} examples x {len(cfg.io.outputs)} outputs = "
                          f"{values} recorded values; at most {MAX_RECORDED}")


def warn_learning(cfg, seeds, at_bounds, frozen, frozen_sign, ticks=True):
    """Say on stderr which seeds ended with most gates at their bounds (``at_bounds``,
    per seed) and which were frozen (``frozen``, per seed; ``frozen_sign`` says how that
    showed; ``ticks``: the nodes settle in ticks, not in one solve)."""
    n_edges = cfg.network.n_edges
    pinned = [s for s, n in zip(seeds, at_bounds, strict=True) if 2 * n > n_edges]
    if pinned:
        worst = max(at_bounds)
        print(f"clln: warning: {cfg.name}: {_seeds(pinned)}: up to {worst} of {n_edges} "
              f"gates ended at their bounds (learning.gate_min {cfg.learning.gate_min:g} V, "
              f"gate_max {cfg.learning.gate_max:g} V): learning.alpha "
              f"{cfg.learning.alpha:g} may be too large", file=sys.stderr)
    stuck = [s for s, f in zip(seeds, frozen, strict=True) if f]
    if stuck:
        if not ticks:
            why = f"learning.alpha {cfg.learning.alpha:g} may be too small"
        elif cfg.schedule.relax == "euler":
            why = f"schedule.kappa {cfg.schedule.kappa:g} may be too small"
        else:
            why = "schedule.settle_ticks may be too few"
        print(f"clln: warning: {cfg.name}: {_seeds(stuck)}: the network is frozen "
              f"({frozen_sign}): {why}", file=sys.stderr)


def _seeds(seeds):
    shown = ", ".join(map(str, seeds[:10])) + (", ..." if len(seeds) > 10 else "")
    return f"seed{'s' if len(seeds) > 1 else ''} {shown}"


@contextlib.contextmanager
def exit_on_termination():
    """SIGTERM and SIGHUP end the program as ``SystemExit(128 + signal)`` within this
    block (SIGINT as ``KeyboardInterrupt``, Python's own), so that ``finally`` clauses run;
    on the way out, whatever the way, every tool still running (each in a process group
    of its own, which a signal to clln does not reach) is stopped
    (:func:`clln.processes.stop_all`). Only in the main thread (elsewhere Python cannot
    install handlers, and the tools may be another thread's); the old handlers come back
    after."""
    from . import processes
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        with contextlib.suppress(OSError, AttributeError):     # (a hung-up terminal)
            print(f"clln: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        try:
            processes.stop_all()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


#: How often ``--checkpoint-every`` writes: every ``epochs`` epochs or ``seconds`` of
#: wall time (one of them; both None: only at the end of the run).
Interval = collections.namedtuple("Interval", ["epochs", "seconds"])

#: ``--checkpoint-every``'s default: at most once a minute, whatever the model's speed.
DEFAULT_CHECKPOINT_EVERY = "60s"


def checkpoint_interval(text):
    """A ``--checkpoint-every`` value: ``N`` epochs, ``Ts`` seconds (``90s``), or ``0``
    (only at the end)."""
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            if not 0 < seconds < math.inf:
                raise ValueError
            return Interval(None, seconds)
        epochs = int(text)
        if epochs < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N epochs, Ts seconds (e.g. 90s) or 0, "
                                         f"got {text!r}") from None
    return Interval(epochs or None, None)


def check_writable(path, flag):
    """Refuse, before any work, an output ``path`` that cannot be written: its folder
    missing, not a folder or not writable (tried with a temporary file), or ``path``
    itself a folder."""
    from .errors import ConfigError
    path = Path(path)
    folder = path.resolve().parent
    if path.is_dir():
        raise ConfigError(flag, "", f"cannot write {path}: it is a folder")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(flag, "", f"cannot write {path}: folder {folder} {why}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(flag, "", f"cannot write {path}: {e.strerror or e}") from None


def add_checkpoint_args(parser, default):
    """``--checkpoint``, ``--checkpoint-every`` and ``--resume`` (``clln train``, ``run``);
    ``default`` says where the checkpoint goes without ``--checkpoint``."""
    parser.add_argument("--checkpoint", metavar="FILE",
                        help=f"write the run's checkpoint to FILE, atomically, at intervals "
                        f"and at the end (default: {default})")
    parser.add_argument("--checkpoint-every", type=checkpoint_interval, metavar="N|Ts",
                        default=checkpoint_interval(DEFAULT_CHECKPOINT_EVERY),
                        help="every N epochs, or every T seconds (e.g. 90s), or 0: only at "
                        f"the end (default {DEFAULT_CHECKPOINT_EVERY})")
    parser.add_argument("--resume", metavar="FILE",
                        help="continue the run checkpointed in FILE (same config); --epochs "
                        "then counts the epochs of this run")


def side_output(write, path):
    """Run ``write`` (a plot, a file beside the results); the reason it failed, if it
    did, as a list of one message (the results are printed regardless)."""
    try:
        write()
    except (OSError, ValueError, RuntimeError) as e:
        return [f"cannot write {path}: {getattr(e, 'strerror', None) or e}"]
    return []


def report_failures(*failures):
    """Exit status 2, each reason on stderr, if a side output failed; else 0."""
    failed = [why for reasons in failures for why in reasons]
    for why in failed:
        print(f"clln: error: {why}", file=sys.stderr)
    return 2 if failed else 0
