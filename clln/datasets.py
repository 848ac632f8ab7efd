"""Built-in datasets, the CSV loader for user datasets and the train/test split.

A dataset is two float arrays: ``x`` (examples, inputs) in volts and ``y``
(examples, outputs) in volts. ``xor`` and ``paper-regression`` come from Dillavou et al.,
PNAS 2024; ``iris`` is Fisher's Iris data (``clln/configs/iris.csv``) in volts;
``smooth-xor`` is XOR's surface on a grid of inputs. docs/config.md gives the scalings and
levels.
"""

import csv
import io
import math
from importlib import resources
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


#: Input span of the built-in ``iris`` task, volts: each input runs from 0 V to this (the
#: paper's DAC full scale, 0.4532 V, rounded down as for XOR).
INPUT_SPAN = 0.45
#: Targets of a classification output: its own class, every other class (V).
CLASS_ON, CLASS_OFF = 0.06, -0.06
IRIS_SPECIES = ("setosa", "versicolor", "virginica")


def iris_measurements():
    """Fisher's 150 flowers as shipped in ``clln/configs/iris.csv``.

    Returns
    -------
    features : ndarray (150, 4)
        Sepal length, sepal width, petal length, petal width (cm).
    species : ndarray of int (150,)
        Index into :data:`IRIS_SPECIES`.
    """
    text = (resources.files("clln.configs") / "iris.csv").read_text()
    rows = list(csv.reader(line for line in text.splitlines()
                           if line.strip() and not line.startswith("#")))
    body = rows[1:]
    features = np.array([[float(v) for v in r[:4]] for r in body])
    species = np.array([IRIS_SPECIES.index(r[4]) for r in body])
    return features, species


def one_of(labels, n_classes):
    """Targets (examples, classes): :data:`CLASS_ON` at each example's class, else
    :data:`CLASS_OFF`."""
    y = np.full((len(labels), n_classes), CLASS_OFF)
    y[np.arange(len(labels)), labels] = CLASS_ON
    return y


def _iris():
    features, species = iris_measurements()
    lo, hi = features.min(axis=0), features.max(axis=0)
    return (features - lo) / (hi - lo) * INPUT_SPAN, one_of(species, len(IRIS_SPECIES))


#: Points per input of the ``smooth-xor`` grid.
SMOOTH_XOR_GRID = 6


def _smooth_xor():
    """XOR's surface between its corners: ``XOR_TARGET_UNEQUAL`` times the squared input
    difference over the span squared, on a grid; the four corners are the paper's XOR."""
    levels = np.linspace(XOR_LOW, XOR_HIGH, SMOOTH_XOR_GRID)
    x = np.array([[a, b] for a in levels for b in levels])
    y = XOR_TARGET_UNEQUAL * ((x[:, 0] - x[:, 1]) / (XOR_HIGH - XOR_LOW)) ** 2
    return x, y[:, None]


BUILTIN = {"xor": _xor, "paper-regression": _regression, "iris": _iris,
           "smooth-xor": _smooth_xor}
#: Built-in datasets whose outputs are one per class (read as the largest).
CLASSIFICATION = frozenset({"iris"})


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


def split(n_examples, test_fraction, seed, labels=None):
    """A seeded train/test split of ``n_examples`` examples.

    With ``labels``, the split is stratified: each class gives ``test_fraction`` of its
    examples (rounded half up) to the test set.

    Returns
    -------
    train : ndarray of int
        Training examples in a seeded random order (the order training presents them).
    test : ndarray of int
        Test examples in ascending order.
    """
    rng = np.random.default_rng(seed)
    groups = ([np.arange(n_examples)] if labels is None
              else [np.flatnonzero(labels == k) for k in np.unique(labels)])
    test = [rng.permutation(g)[:math.floor(test_fraction * len(g) + 0.5)] for g in groups]
    test = np.sort(np.concatenate(test)).astype(np.int64)
    train = rng.permutation(np.setdiff1d(np.arange(n_examples), test))
    return train, test
