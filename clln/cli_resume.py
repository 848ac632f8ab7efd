"""Checkpoints of ``clln train`` and ``clln run`` and resuming from them.

The file format (atomic writes, digest, config digest) is :mod:`clln.checkpoint`; this
module decides what goes in for each command, when it is written, and how a run
continues from it (``docs/config.md``, "Checkpoints and resuming").
"""

import dataclasses
import sys
import time

import numpy as np

from . import checkpoint
from .errors import ConfigError


class CheckpointWriter:
    """Writes a run's checkpoint at an interval and at its end; a write that fails is
    reported but never stops the run (the old file stays whole).

    Parameters
    ----------
    path : str or Path or None
        None: no checkpoint.
    every : clln.cli_common.Interval
        Epochs or seconds between writes (both None: at the end only).

    Attributes
    ----------
    epoch : int or None
        The epoch of the state last written.
    error : str or None
        Why the last write failed (None once one succeeds).
    """

    def __init__(self, path, every):
        self.path, self.every = path, every
        self.epoch, self.error = None, None
        self._last = time.monotonic()

    def due(self, epoch):
        """Whether the state after ``epoch`` should be written now (the end aside)."""
        if self.path is None:
            return False
        if self.every.epochs:
            return epoch % self.every.epochs == 0
        return self.every.seconds is not None and \
            time.monotonic() - self._last >= self.every.seconds

    def write(self, doc):
        """Write ``doc`` (a checkpoint of ``doc["epoch"]``); True if it was written."""
        if self.path is None:
            return False
        try:
            checkpoint.save(self.path, doc)
        except OSError as e:
            if self.error is None:
                print(f"clln: warning: cannot write the checkpoint {self.path}: "
                      f"{e.strerror or e}", file=sys.stderr)
            self.error = f"cannot write the checkpoint {self.path}: {e.strerror or e}"
            return False
        self._last, self.epoch, self.error = time.monotonic(), doc["epoch"], None
        return True


def agree(path, flag, given, saved):
    """The checkpoint's value of a setting, refusing a flag that asks for another."""
    if given is not None and given != saved:
        raise ConfigError(flag, "", f"{given} differs from the checkpoint {path}'s {saved}: "
                          "leave it out to resume, or start a new run")
    return saved


def _int_list(value):
    return isinstance(value, list) and all(type(v) is int for v in value)


# --------------------------------------------------------------------------- train

@dataclasses.dataclass
class SavedTraining:
    """A ``clln train`` checkpoint, read and checked (:func:`load_train`)."""
    path: str
    model: str
    seeds: list
    epoch: int
    epochs_target: int
    state: dict
    record: dict


def train_doc(cfg, run, epochs_target):
    """The checkpoint of a :class:`~clln.sim.training.Training` ``run`` of ``cfg``:
    the model's state and the run's record, as exact arrays, and the gates (V) in
    plain numbers for people."""
    model = run.model
    record = {k: checkpoint.encode_array(v) for k, v in run.record().items() if v is not None}
    return {"kind": "train", "config": cfg.name, "config_digest": checkpoint.config_digest(cfg),
            "model": model.name, "seeds": list(model.seeds), "epoch": run.epochs,
            "epochs_target": epochs_target, "gates": model.gates_volts().tolist(),
            "state": {k: checkpoint.encode_array(v) for k, v in model.state().items()},
            "record": record}


def load_train(path, cfg):
    """Read a ``clln train`` checkpoint for ``cfg`` (ConfigError if it does not fit)."""
    from .sim.training import MODELS
    doc = checkpoint.load(path, "train", cfg)
    model = checkpoint.field(doc, path, "model", str, lambda m: m in MODELS)
    seeds = checkpoint.field(doc, path, "seeds", list, lambda s: s and _int_list(s))
    epoch = checkpoint.field(doc, path, "epoch", int, lambda e: e >= 0)
    target = checkpoint.field(doc, path, "epochs_target", int, lambda e: e >= epoch)
    arrays = {}
    for part in ("state", "record"):
        entries = checkpoint.field(doc, path, part, dict)
        arrays[part] = {k: checkpoint.decode_array(v, path, f"{part}.{k}")
                        for k, v in entries.items()}
    return SavedTraining(str(path), model, seeds, epoch, target, arrays["state"],
                         arrays["record"])


def restore_training(saved, model):
    """Put ``saved``'s state into ``model`` (made for its config, model and seeds) and
    return the record a :class:`~clln.sim.training.Training` continues."""
    try:
        model.load_state(saved.state)
    except ValueError as e:
        raise ConfigError(saved.path, "state", str(e)) from None
    rec = saved.record
    p, n_seeds = model.problem, len(model.seeds)
    shapes = {"observed": (n_seeds, saved.epoch, p.n_examples, p.targets.shape[1]),
              "gates_initial": (n_seeds, p.n_edges),
              "outputs_initial": (n_seeds, p.n_examples, p.targets.shape[1])}
    if hasattr(model, "example_ticks") and saved.epoch:
        shapes["example_ticks"] = (n_seeds, saved.epoch * p.n_examples)
    for key, shape in shapes.items():
        if key not in rec or rec[key].shape != shape:
            got = rec[key].shape if key in rec else "missing"
            raise ConfigError(saved.path, f"record.{key}", f"{got} where {shape} was expected")
    return {"example_ticks": rec.get("example_ticks"),
            **{k: rec[k].astype(float) for k in ("observed", "gates_initial",
                                                 "outputs_initial")}}


# --------------------------------------------------------------------------- run

@dataclasses.dataclass
class BoardState:
    """What ``clln run`` knows for sure after an epoch: the gates it read back then and
    the error sums of every epoch so far (a board's node voltages cannot be read or
    written, ``docs/controller.md``).

    Attributes
    ----------
    epoch : int
        Training epochs done.
    gates_q : ndarray of int64 (streams, edges)
        Gate LSBs.
    error_sums : list of list of int
        [epoch][stream] on-chip error sums (LSB^2).
    cycles : int
        Clock cycles of the training runs so far.
    saturation : int
        OR of READ_STATUS' sticky saturation flags over the runs so far.
    """
    epoch: int
    gates_q: np.ndarray
    error_sums: list
    cycles: int = 0
    saturation: int = 0


@dataclasses.dataclass
class SavedRun:
    """A ``clln run`` checkpoint, read and checked (:func:`load_run`)."""
    path: str
    seed: int
    order: str
    epochs_target: int
    board: BoardState


def run_doc(cfg, fmt, seed, order, board, epochs_target):
    """The checkpoint of a board run of ``cfg`` in ``board`` state: its gates (LSBs,
    and V for people) per stream, with stream 0's at the top level as before."""
    from .protocol import config_hash
    streams = [{"seed": seed + s, "gates_q": g.tolist(), "gates_final": fmt.g_to_volts(g).tolist()}
               for s, g in enumerate(board.gates_q)]
    return {"kind": "run", "config": cfg.name, "config_digest": checkpoint.config_digest(cfg),
            "config_hash": f"{config_hash(cfg):08x}", "seed": seed, "order": order,
            "epoch": board.epoch, "epochs_target": epochs_target,
            "gates_q": streams[0]["gates_q"], "gates_final": streams[0]["gates_final"],
            "streams": streams, "error_sums": board.error_sums, "cycles": board.cycles,
            "saturation": board.saturation,
            "node_state": "not saved (the fabric has no node write port): a resumed run "
                          "starts from node voltages 0 and the read-noise generators' first "
                          "state"}


def load_run(path, cfg):
    """Read a ``clln run`` checkpoint for ``cfg`` (ConfigError if it does not fit)."""
    doc = checkpoint.load(path, "run", cfg)
    f = checkpoint.field
    seed = f(doc, path, "seed", int, lambda s: s >= 0)
    order = f(doc, path, "order", str, lambda o: o in ("cyclic", "lfsr"))
    epoch = f(doc, path, "epoch", int, lambda e: e >= 0)
    target = f(doc, path, "epochs_target", int, lambda e: e >= epoch)
    n_edges = cfg.network.n_edges
    streams = f(doc, path, "streams", list, lambda s: s and all(
        isinstance(r, dict) and _int_list(r.get("gates_q")) and len(r["gates_q"]) == n_edges
        for r in s))
    n = len(streams)
    sums = f(doc, path, "error_sums", list, lambda s: len(s) == epoch and all(
        _int_list(e) and len(e) == n for e in s))
    board = BoardState(epoch, np.array([r["gates_q"] for r in streams], np.int64), sums,
                       f(doc, path, "cycles", int, lambda c: c >= 0),
                       f(doc, path, "saturation", int, lambda c: c >= 0))
    return SavedRun(str(path), seed, order, target, board)
