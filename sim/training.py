"""Training loop shared by every golden model, and the error measures it reports."""

import time
from dataclasses import dataclass

import numpy as np

from clln.errors import SolverError

MODELS = ("quasistatic", "dynamic", "fixed")


def make_model(cfg, name, seeds):
    """Build the golden model ``name`` for a batch of ``seeds``."""
    if name == "quasistatic":
        from .quasistatic import QuasiStaticModel
        return QuasiStaticModel(cfg, seeds)
    if name == "dynamic":
        from .dynamic import DynamicModel
        return DynamicModel(cfg, seeds)
    if name == "fixed":
        from .fixed import FixedPointModel
        return FixedPointModel(cfg, seeds)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def mse(outputs, targets):
    """Mean squared error (V^2) over examples and outputs.

    ``outputs`` is (..., examples, outputs).
    """
    return np.mean((outputs - targets) ** 2, axis=(-2, -1))


@dataclass
class History:
    """What a training run produced, per seed.

    Attributes
    ----------
    seeds : list of int
    observed : ndarray (seeds, epochs, examples, outputs)
        Free outputs seen by the learning rule during training (V).
    outputs_initial, outputs_final : ndarray (seeds, examples, outputs)
        Outputs evaluated with learning off, before and after training (V).
    gates_initial, gates_final : ndarray (seeds, edges)
        Gate voltages (V).
    targets : ndarray (examples, outputs)
    seconds : float
        Wall time of the training loop (evaluations included).
    saturated : ndarray of bool (seeds,)
        A fixed-point value was clipped to its width at least once.
    example_ticks : ndarray of int (seeds, epochs * examples) or None
        Ticks (settle and learn) of every training presentation, per seed; None for the
        quasi-static model, which has no ticks.
    """
    model: str
    seeds: list
    observed: np.ndarray
    outputs_initial: np.ndarray
    outputs_final: np.ndarray
    gates_initial: np.ndarray
    gates_final: np.ndarray
    targets: np.ndarray
    seconds: float
    saturated: np.ndarray
    example_ticks: np.ndarray = None

    @property
    def ticks_per_example(self):
        """Mean ticks per training example, per seed (None without ticks)."""
        return None if self.example_ticks is None else self.example_ticks.mean(axis=1)

    @property
    def ticks_per_example_max(self):
        """Most ticks any training example took, per seed (None without ticks)."""
        return None if self.example_ticks is None else self.example_ticks.max(axis=1)

    @property
    def epochs(self):
        return self.observed.shape[1]

    @property
    def mse_curve(self):
        """(seeds, epochs): error of the outputs observed during each epoch."""
        return mse(self.observed, self.targets)

    @property
    def mse_initial(self):
        return mse(self.outputs_initial, self.targets)

    @property
    def mse_final(self):
        return mse(self.outputs_final, self.targets)

    def gates_at_bounds(self, gate_min, gate_max, tol=0.0):
        """Edges per seed whose final gate is within ``tol`` of ``gate_min`` or
        ``gate_max`` (V)."""
        g = self.gates_final
        return ((g <= gate_min + tol) | (g >= gate_max - tol)).sum(axis=1)

    def frozen(self, lsb):
        """Per seed: training ran and moved no output by more than ``lsb`` (V) from its
        value before training, in any epoch or in the final evaluation."""
        if self.epochs == 0:
            return np.zeros(len(self.seeds), bool)
        start = self.outputs_initial[:, None]
        moved = np.maximum(np.abs(self.observed - start).max(axis=(1, 2, 3)),
                           np.abs(self.outputs_final - self.outputs_initial).max(axis=(1, 2)))
        return moved <= lsb


def train(model, epochs, progress=None):
    """Present the dataset ``epochs`` times in order, learning on every example.

    Parameters
    ----------
    model : a golden model (quasi-static, dynamic or fixed)
    epochs : int
    progress : callable(int) or None
        Called with the number of epochs just finished.
    """
    start = time.perf_counter()
    targets = model.problem.targets
    n_examples = model.problem.n_examples
    gates_initial = model.gates_volts()
    outputs_initial = model.evaluate()
    presented = len(getattr(model, "example_ticks", ()))
    observed = np.empty((len(model.seeds), epochs, n_examples, targets.shape[1]))
    for epoch in range(epochs):
        for i in range(n_examples):
            observed[:, epoch, i] = model.present(i, True)
        _check_finite(model, observed[:, epoch], f"in epoch {epoch + 1}")
        if progress is not None:
            progress(1)
    outputs_final = model.evaluate()
    _check_finite(model, outputs_final, "after training")
    _check_finite(model, model.gates_volts(), "after training", "gates")
    flags = getattr(model, "flags", np.zeros(len(model.seeds), np.int64))
    ticks = getattr(model, "example_ticks", None)
    ticks = None if ticks is None or epochs == 0 else np.stack(ticks[presented:], axis=1)
    return History(model.name, list(model.seeds), observed, outputs_initial, outputs_final,
                   gates_initial, model.gates_volts(), targets, time.perf_counter() - start,
                   flags != 0, ticks)


def _check_finite(model, values, when, what="outputs"):
    """Refuse NaN or infinity: no result of a golden model may hold one."""
    if not np.isfinite(values).all():
        raise SolverError(f"the {model.name} model's {what} became NaN or infinite {when}: "
                          "the config's values lie beyond what it can compute "
                          "(docs/config.md gives the bounds)")


def mode_basis(x, n_modes=3):
    """Orthonormal discrete polynomial modes (mean, slope, curvature, ...) over inputs ``x``.

    Returns (min(n_modes, examples), examples): rows are orthonormal with respect to the mean over
    examples, so a projection measures each mode's share of the RMS error.
    """
    x = np.asarray(x, dtype=float)
    n_modes = min(n_modes, len(x))          # as many modes as examples at most
    t = (x - x.mean()) / (np.ptp(x) or 1.0)
    vander = np.vander(t, n_modes, increasing=True)
    q, r = np.linalg.qr(vander)
    q = q * np.sign(np.diag(r))
    return q.T * np.sqrt(len(x))


def mode_errors(history, x):
    """Error projected on the mean, slope and curvature modes, per epoch.

    Parameters
    ----------
    history : History
    x : ndarray (examples,)
        The input the modes are polynomials of (a single-input task).

    Returns
    -------
    ndarray (seeds, epochs, modes)
        Projection of the first output's error on each mode (V): mean, slope and
        curvature, or the first one or two with fewer examples.
    """
    basis = mode_basis(x)
    err = history.observed[..., 0] - history.targets[:, 0]
    return err @ basis.T / len(x)
