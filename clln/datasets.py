"""Built-in datasets of the paper and the CSV loader for user datasets.

A dataset is two float arrays: ``x`` (examples, inputs) in volts and ``y``
(examples, outputs) in volts. Built-in values come from Dillavou et al., PNAS 2024.
"""

import csv
import io
import math
from pathlib import Path

import numpy as np

from .errors import ConfigError, decode_utf8

#: Input levels of the paper's XOR task, volts.
XOR_LOW, XOR_HIGH = 0.0, 0.45
#: Differential target of the paper's XOR task for unequal inputs, volts.
XOR_TARGET_UNEQUAL = -0.087

_REGRESSION_X = [0.0005, 0.0628, 0.1251, 0.1873, 0.2479, 0.3118, 0.3724, 0.4347]
_REGRESSION_Y = [0.1088, 0.1472, 0.1872, 0.2256, 0.2649, 0.3041, 0.3041, 0.3041]


def _xor():
    levels = (XOR_LOW, XOR_HIGH)
    x = np.array([[a, b] for a in levels for b in levels])
    y = np.where(x[:, :1] == x[:, 1:], 0.0, XOR_TARGET_UNEQUAL)
    return x, y


def _regression():
    return np.array(_REGRESSION_X)[:, None], np.array(_REGRESSION_Y)[:, None]


BUILTIN = {"xor": _xor, "paper-regression": _regression}


def load_csv(path, source, key, max_examples=None):
    """Read a CSV dataset: a header ``x1..xn, y1..ym`` then one example per row, UTF-8,
    at most ``max_examples`` examples.

    Returns
    -------
    x, y : ndarray
        Inputs and targets in volts.

    Raises
    ------
    ConfigError
        Naming ``source``/``key`` and the row or column at fault.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(source, key, f"cannot read dataset {path}: {e.strerror}") from None
    text = decode_utf8(raw, source, f"{key} ({path})")
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise ConfigError(source, key, f"dataset {path}: not valid CSV: {e}") from None
    if max_examples is not None and len(rows) - 1 > max_examples:
        raise ConfigError(source, key, f"dataset {path} has {len(rows) - 1} examples; at "
                          f"most {max_examples}")
    if not rows:
        raise ConfigError(source, key, f"dataset {path} is empty")
    header = [c.strip() for c in rows[0]]
    n_in = sum(1 for c in header if c.startswith("x"))
    expected = [f"x{i + 1}" for i in range(n_in)] + [
        f"y{i + 1}" for i in range(len(header) - n_in)]
    if header != expected or n_in == 0 or n_in == len(header):
        raise ConfigError(source, key, f"dataset {path}: header must be x1..xn then y1..ym, "
                          f"got {','.join(header)}")
    if len(rows) < 2:
        raise ConfigError(source, key, f"dataset {path} has a header but no examples")
    values = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(source, key, f"dataset {path} line {line}: "
                              f"{len(row)} columns, header has {len(header)}")
        try:
            vals = [float(c) for c in row]
        except ValueError:
            raise ConfigError(source, key, f"dataset {path} line {line}: "
                              f"not a number in {row}") from None
        if not all(math.isfinite(v) for v in vals):
            raise ConfigError(source, key, f"dataset {path} line {line}: non-finite value")
        values.append(vals)
    data = np.array(values)
    return data[:, :n_in], data[:, n_in:]
