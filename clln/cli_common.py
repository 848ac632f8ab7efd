"""Pieces every ``clln`` subcommand module shares: argument types and the progress bar."""

import argparse
import sys


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
