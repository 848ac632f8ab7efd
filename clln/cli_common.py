"""Pieces every ``clln`` subcommand module shares: argument types and the progress bar."""

import argparse
import contextlib
import signal
import sys
import threading


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
