"""Pieces every ``clln`` subcommand module shares: argument types, output checks and the
progress bar."""

import argparse
import collections
import contextlib
import math
import signal
import sys
import tempfile
import threading
from pathlib import Path


def whole_number(lo=0):
    """An argparse type: an integer ``>= lo``; bad text becomes a usage error (exit 2)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return parse


def progress_bar(total, enabled, desc):
    """A tqdm bar of ``total`` epochs on stderr, or None when disabled or empty."""
    if not enabled or total == 0:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False,
                mininterval=0.2)


def fold_arg(text):
    """A ``--fabric`` value: a whole number of edge units (0 = one per edge), ``serial``
    or ``streams:C`` (C interleaved networks)."""
    if text == "serial" or (text.startswith("streams:") and text[8:].isdigit()):
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of edge units, 'serial' or "
                                         f"'streams:C', got {text!r}")
    return int(text)


def clock_arg(text):
    """A ``--clock`` value: MHz above 0, or ``max``."""
    if text == "max":
        return text
    return positive_mhz(text, "MHz or 'max'")


def positive_mhz(text, expected="MHz"):
    """A frequency in MHz above 0."""
    try:
        mhz = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not mhz > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 MHz, got {text}")
    return mhz


@contextlib.contextmanager
def exit_on_termination():
    """SIGTERM and SIGHUP end the program as ``SystemExit(128 + signal)`` within this
    block, so that ``finally`` clauses run: the tools a build started (in a session of
    their own, which a signal to clln does not reach) are stopped. Only in the main
    thread (elsewhere Python cannot install handlers); the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
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
