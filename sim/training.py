"""Training loop shared by every golden model, and the error measures it reports."""

import dataclasses
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
    run = Training(model)
    for _ in range(epochs):
        run.epoch()
        if progress is not None:
            progress(1)
    return run.finish()


class Training:
    """A training run of :func:`train`, one epoch at a time, that a checkpoint can record
    and a later run continue.

    Parameters
    ----------
    model : a golden model
    before : dict or None
        The :meth:`record` of the run this one continues, whose :meth:`state
        <clln.sim.ticks.TickModel.state>` ``model`` was given: its curve, ticks and
        initial outputs and gates are carried over, and the model is not evaluated first
        (which would move the quasi-static model's starting guesses). ``None``: a new run,
        evaluated before its first epoch.

    Attributes
    ----------
    epochs : int
        Epochs trained, those of ``before`` included.
    """

    def __init__(self, model, before=None):
        self.model = model
        self._start = time.perf_counter()
        if before is None:
            before = {"gates_initial": model.gates_volts(), "outputs_initial": model.evaluate(),
                      "observed": np.empty((len(model.seeds), 0, model.problem.n_examples,
                                            model.problem.targets.shape[1])),
                      "example_ticks": None}
        self._before = before
        self._observed = []
        self._presented = len(getattr(model, "example_ticks", ()))
        self.epochs = before["observed"].shape[1]

    def epoch(self):
        """Present every example once, learning."""
        m = self.model
        observed = np.empty((len(m.seeds), m.problem.n_examples, m.problem.targets.shape[1]))
        for i in range(m.problem.n_examples):
            observed[:, i] = m.present(i, True)
        _check_finite(m, observed, f"in epoch {self.epochs + 1}")
        self._observed.append(observed)
        self.epochs += 1

    def record(self):
        """What a later run needs besides the model's state (a dict of arrays):
        ``observed`` (seeds, epochs, examples, outputs), ``example_ticks`` (seeds,
        presentations; None without ticks), ``gates_initial``, ``outputs_initial``."""
        b = self._before
        observed = np.concatenate([b["observed"], np.stack(self._observed, 1)], 1) \
            if self._observed else b["observed"]
        ticks = getattr(self.model, "example_ticks", None)
        if ticks is not None and len(ticks) > self._presented:
            new = np.stack(ticks[self._presented:], axis=1)
            ticks = new if b["example_ticks"] is None else np.concatenate(
                [b["example_ticks"], new], 1)
        else:
            ticks = b["example_ticks"]
        return {"observed": observed, "example_ticks": ticks,
                "gates_initial": b["gates_initial"], "outputs_initial": b["outputs_initial"]}

    def finish(self):
        """Evaluate the trained model; the :class:`History` of every epoch (``seconds``:
        this run's wall time)."""
        rec = self.record()
        m = self.model
        outputs_final = m.evaluate()
        _check_finite(m, outputs_final, "after training")
        _check_finite(m, m.gates_volts(), "after training", "gates")
        task = m.cfg.task
        outputs_test = evaluate_on(m, task.x_test, task.y_test) if task.n_test else None
        flags = getattr(m, "flags", np.zeros(len(m.seeds), np.int64))
        return History(m.name, list(m.seeds), rec["observed"], rec["outputs_initial"],
                       outputs_final, rec["gates_initial"], m.gates_volts(), m.problem.targets,
                       time.perf_counter() - self._start, flags != 0, rec["example_ticks"],
                       outputs_test, task.y_test if task.n_test else None,
                       task.classification)


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
