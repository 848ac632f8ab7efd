"""Training loop shared by every golden model, and the error measures it reports."""

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

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


def accuracy(outputs, labels):
    """Fraction of examples whose largest output is their class.

    ``outputs`` is (..., examples, outputs) and ``labels`` (examples,) the class of every
    example, an index into the outputs; a tie goes to the first of the largest outputs.
    """
    return np.mean(np.argmax(outputs, axis=-1) == labels, axis=-1)


def evaluate_on(model, x, y):
    """Free outputs (seeds, examples, outputs) of a trained ``model`` on other examples.

    A model of the same kind is built for the examples ``x``, ``y`` (volts) and given
    ``model``'s gates and node state, then evaluated with learning off; ``model`` itself
    is left untouched.
    """
    task = dataclasses.replace(model.cfg.task, x=x, y=y)
    twin = make_model(dataclasses.replace(model.cfg, task=task), model.name, model.seeds)
    for name in ("gates", "v_free", "v_clamped", "joint", "lag"):
        if hasattr(model, name):
            value = getattr(model, name)
            setattr(twin, name, value.copy() if isinstance(value, np.ndarray) else value)
    return twin.evaluate()


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
    outputs_test : ndarray (seeds, test examples, outputs) or None
        Outputs on the config's test examples after training (V); None without a test set.
    targets_test : ndarray (test examples, outputs) or None
    classification : bool
        One output per class: :attr:`accuracy` and :attr:`accuracy_train` are defined.
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
    outputs_test: np.ndarray = None
    targets_test: np.ndarray = None
    classification: bool = False

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

    @property
    def mse_test(self):
        """(seeds,): error on the test examples after training, or None without them."""
        return None if self.outputs_test is None else mse(self.outputs_test, self.targets_test)

    @property
    def accuracy_train(self):
        """(seeds,): accuracy on the training examples after training (classification)."""
        if not self.classification:
            return None
        return accuracy(self.outputs_final, self.targets.argmax(axis=-1))

    @property
    def accuracy(self):
        """(seeds,): accuracy on the test examples after training (classification with
        a test set), else None."""
        if not self.classification or self.outputs_test is None:
            return None
        return accuracy(self.outputs_test, self.targets_test.argmax(axis=-1))


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
        if progress is not None:
            progress(1)
    outputs_final = model.evaluate()
    task = model.cfg.task
    outputs_test = evaluate_on(model, task.x_test, task.y_test) if task.n_test else None
    flags = getattr(model, "flags", np.zeros(len(model.seeds), np.int64))
    ticks = getattr(model, "example_ticks", None)
    ticks = None if ticks is None or epochs == 0 else np.stack(ticks[presented:], axis=1)
    return History(model.name, list(model.seeds), observed, outputs_initial, outputs_final,
                   gates_initial, model.gates_volts(), targets, time.perf_counter() - start,
                   flags != 0, ticks, outputs_test, task.y_test if task.n_test else None,
                   task.classification)


def mode_basis(x, n_modes=3):
    """Orthonormal discrete polynomial modes (mean, slope, curvature, ...) over inputs ``x``.

    Returns (n_modes, examples): rows are orthonormal with respect to the mean over
    examples, so a projection measures each mode's share of the RMS error.
    """
    x = np.asarray(x, dtype=float)
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
    ndarray (seeds, epochs, 3)
        Projection of the first output's error on each mode (V).
    """
    basis = mode_basis(x)
    err = history.observed[..., 0] - history.targets[:, 0]
    return err @ basis.T / len(x)
