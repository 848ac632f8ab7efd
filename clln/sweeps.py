"""Parameter sweeps: a base config run on a golden model over the product of axes.

A sweep file (TOML, ``docs/sweep.md``) names a config, a model and axes, each a dotted
config key with a list of values. Every point of the product is the config's TOML with
those values put in, validated by :func:`clln.config.parse` before anything runs. Points
that differ only in ``learning.seed`` run as one model vectorised over seeds. Points run
on a local process pool or on a Dask cluster; each finished group of points is appended
to a journal (``rows.jsonl``) in the output folder, so an interrupted sweep resumes where
it stopped, and the results are written as ``results.parquet``, ``results.csv`` and a
``summary.png``.

This module is in the application layer (it drives the golden models); the golden models,
pandas, pyarrow, Dask and matplotlib are imported only when they are needed.
"""

import copy
import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config as config_mod
from .errors import CllnError, ConfigError

#: Keys a sweep file may have at its top level.
SWEEP_KEYS = ("config", "model", "epochs", "axes")
#: Models a sweep can run (as ``sim.training.MODELS``; not imported to keep this light).
MODELS = ("quasistatic", "dynamic", "fixed")
#: The axis whose points run together as one vectorised model.
SEED_AXIS = "learning.seed"
#: Result columns after the point index and the axis values.
METRICS = ("mse_initial", "mse_final", "reached", "ticks_per_example",
           "ticks_per_example_max", "saturated", "seconds")
JOURNAL = "rows.jsonl"
#: Version of the journal's layout and of what the digest covers.
JOURNAL_FORMAT = 1


class SweepError(CllnError):
    """A sweep could not run: a worker failed, the journal belongs to another sweep, ..."""


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file.

    Attributes
    ----------
    source : str
        The sweep file (named in error messages).
    config_path : pathlib.Path
        The base config's TOML file.
    config_data : dict
        The base config's TOML, as parsed by :mod:`tomllib` (never modified).
    model : str
        ``"quasistatic"``, ``"dynamic"`` or ``"fixed"``.
    epochs : int or None
        Epochs of every point; None: each point's ``learning.epochs``.
    axes : tuple of (str, tuple)
        ``(dotted key, values)`` in file order; the points are their product, the last
        axis varying fastest.
    """
    source: str
    config_path: Path
    config_data: dict = field(repr=False)
    model: str
    epochs: object
    axes: tuple

    @property
    def keys(self):
        """The axes' dotted keys, in order."""
        return [k for k, _ in self.axes]

    @property
    def n_points(self):
        return math.prod(len(v) for _, v in self.axes)

    def points(self):
        """Every point as a dict ``{dotted key: value}``, in product order."""
        keys = self.keys
        return [dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*(v for _, v in self.axes))]

    def point_data(self, values):
        """The config's TOML dict with ``values`` (``{dotted key: value}``) put in."""
        data = copy.deepcopy(self.config_data)
        for key, value in values.items():
            _set_dotted(data, key, value, self.source)
        return data

    def point_config(self, values):
        """The validated :class:`clln.config.Config` of a point.

        Raises
        ------
        ConfigError
            Naming the config file and the key, as :func:`clln.config.parse` does.
        """
        return config_mod.parse(self.point_data(values), str(self.config_path),
                                self.config_path.parent)

    def digest(self, cfg=None):
        """SHA-256 (hex) of everything that decides the rows: the config's TOML, the
        dataset of ``cfg`` (default: the first point's config), the model, the epochs and
        the axes. A journal records it."""
        if cfg is None:
            cfg = self.point_config(self.points()[0])
        h = hashlib.sha256()
        h.update(json.dumps({"format": JOURNAL_FORMAT, "config": self.config_data,
                             "model": self.model, "epochs": self.epochs,
                             "axes": [[k, list(v)] for k, v in self.axes]},
                            sort_keys=True, default=str).encode())
        for array in (cfg.task.x, cfg.task.y):
            h.update(array.astype(float).tobytes())
        return h.hexdigest()


def _set_dotted(data, key, value, source):
    """Put ``value`` at the dotted ``key`` of a TOML dict, creating missing tables."""
    parts = key.split(".")
    table = data
    for i, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(source, f'axes."{key}"',
                              f"{'.'.join(parts[:i + 1])} is not a table of the config")
    table[parts[-1]] = copy.deepcopy(value)


def _flatten_axes(table, source, prefix=""):
    """``[axes]`` as ``[(dotted key, value)]``: quoted keys (``"learning.eta"``) and
    TOML's own dotted keys (``learning.eta``, nested tables) are the same axis."""
    out = []
    for name, value in table.items():
        key = f"{prefix}{name}"
        if not name or any(not part for part in name.split(".")):
            raise ConfigError(source, f'axes."{key}"', "not a dotted config key")
        if isinstance(value, dict):
            out += _flatten_axes(value, source, key + ".")
        else:
            out.append((key, value))
    return out


def _check_axis(key, values, source):
    where = f'axes."{key}"'
    if not isinstance(values, list):
        raise ConfigError(source, where, f"must be a list of values, got {values!r}")
    if not values:
        raise ConfigError(source, where, "is empty: give at least one value")
    for i, v in enumerate(values):
        for w in values[:i]:
            if type(v) is type(w) and v == w or (_is_number(v) and _is_number(w) and v == w):
                raise ConfigError(source, where, f"value {v!r} is given twice")
    return key, tuple(values)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _config_path(name, base_dir, source):
    """The config a sweep names: a path relative to the sweep file, else a built-in."""
    if not isinstance(name, str) or not name:
        raise ConfigError(source, "config", "must be a built-in config name or a TOML path")
    p = Path(name)
    local = p if p.is_absolute() else Path(base_dir) / p
    try:
        if p.suffix == ".toml" or local.exists():
            if not local.is_file():
                raise ConfigError(source, "config", f"no such file: {local}")
            return local
    except OSError as e:            # a name too long for a file name, say
        raise ConfigError(source, "config", f"not a config file: {e.strerror}") from None
    return config_mod.resolve(name)


def parse_sweep(data, source="<sweep>", base_dir=Path(".")):
    """Validate a sweep already parsed from TOML into a dict.

    Parameters
    ----------
    data : dict
        The sweep file's TOML.
    source : str
        Named in error messages.
    base_dir : path-like
        Folder a relative ``config`` path is relative to.

    Returns
    -------
    Sweep

    Raises
    ------
    ConfigError
        For an unknown key, a bad model or epochs, a non-list, empty or duplicated axis.
        The points' configs are checked by :func:`check_points`.
    """
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown key (expected {', '.join(SWEEP_KEYS)})")
    if "config" not in data:
        raise ConfigError(source, "config", "missing")
    path = _config_path(data["config"], base_dir, source)
    model = data.get("model", "quasistatic")
    if model not in MODELS:
        raise ConfigError(source, "model", f"must be one of {', '.join(MODELS)}, got {model!r}")
    epochs = data.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)
                               or not 0 <= epochs <= config_mod.MAX_EPOCHS):
        raise ConfigError(source, "epochs", f"must be a whole number from 0 to "
                          f"{config_mod.MAX_EPOCHS}, got {epochs!r:.40}")
    table = data.get("axes")
    if not isinstance(table, dict) or not table:
        raise ConfigError(source, "axes", "missing: a table of at least one axis, "
                          '"dotted.key" = [values]')
    axes, seen = [], set()
    for key, values in _flatten_axes(table, source):
        if key in seen:
            raise ConfigError(source, f'axes."{key}"', "given twice")
        seen.add(key)
        axes.append(_check_axis(key, values, source))
    return Sweep(str(source), Path(path), config_mod.read_toml(path, source, "config"), model,
                 epochs, tuple(axes))


def load_sweep(path):
    """Read and validate a sweep file (see :func:`parse_sweep`)."""
    return parse_sweep(config_mod.read_toml(path, path), str(path), Path(path).parent)


@dataclass(frozen=True)
class Point:
    """One point of a sweep, checked: its index, axis values, seed, epochs and error
    target."""
    index: int
    values: dict
    seed: int
    epochs: int
    mse_target: float


def _blame(sweep, values, error):
    """The axis (and value) a config error is about, else the whole point."""
    if isinstance(error, ConfigError) and error.source == sweep.source:
        return error                              # already about the sweep file
    if isinstance(error, ConfigError):
        for key in values:
            if error.key == key or error.key.startswith(key + "."):
                return ConfigError(sweep.source, f'axes."{key}"',
                                   f"value {values[key]!r}: {error}")
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
    return ConfigError(sweep.source, "axes", f"point ({shown}): {error}")


def check_points(sweep):
    """Validate the config of every point, and build the model of each (cheap: no
    training), before anything runs.

    Returns
    -------
    list of Point

    Raises
    ------
    ConfigError
        Naming the sweep file, the axis and the value (or the point) and the config's
        own message.
    """
    from .sim.training import make_model
    points = []
    for index, values in enumerate(sweep.points()):
        try:
            cfg = sweep.point_config(values)
            make_model(cfg, sweep.model, [cfg.learning.seed])
        except CllnError as e:
            raise _blame(sweep, values, e) from None
        epochs = cfg.learning.epochs if sweep.epochs is None else sweep.epochs
        points.append(Point(index, values, cfg.learning.seed, epochs,
                            cfg.task.mse_target))
    return points


# -- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Points that differ only in their seed, run as one model: what a worker gets.

    Attributes
    ----------
    data : dict
        The points' config TOML (with the first point's seed; the model takes the seeds
        explicitly).
    source, base_dir : str
        The config file and its folder, for :func:`clln.config.parse`.
    model : str
    epochs : int
    seeds : tuple of int
    points : tuple of int
        Point index of each seed.
    mse_target : float
    """
    data: dict = field(repr=False)
    source: str
    base_dir: str
    model: str
    epochs: int
    seeds: tuple
    points: tuple
    mse_target: float


#: Tasks per worker a sweep is split into, for the load to balance (points take unequal
#: times) and the journal to advance; seed groups are split evenly to reach it.
TASKS_PER_WORKER = 4


def make_tasks(sweep, points, workers=1, group=True):
    """The tasks that run ``points``: with ``group``, points that differ only in
    ``learning.seed`` share a task; with more than one worker the groups are split
    evenly into tasks of at most ``len(points) / (TASKS_PER_WORKER * workers)`` points
    (rounded up), so that the workers stay busy to the end.

    Returns
    -------
    list of Task
    """
    groups = {}
    for p in points:
        rest = tuple((k, json.dumps(v, sort_keys=True)) for k, v in p.values.items()
                     if k != SEED_AXIS)
        groups.setdefault(rest if group else (p.index,), []).append(p)
    most = len(points) if workers <= 1 else math.ceil(len(points) / (TASKS_PER_WORKER * workers))
    tasks = []
    for members in groups.values():
        size = math.ceil(len(members) / math.ceil(len(members) / max(1, most)))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            first = chunk[0]
            tasks.append(Task(sweep.point_data(first.values), str(sweep.config_path),
                              str(sweep.config_path.parent), sweep.model, first.epochs,
                              tuple(p.seed for p in chunk), tuple(p.index for p in chunk),
                              first.mse_target))
    return tasks


def _finite(x):
    """A float for the journal and JSON: None for NaN."""
    x = float(x)
    return None if math.isnan(x) else x


def run_task(task):
    """Train one task's model; a worker's whole job.

    Returns
    -------
    list of dict
        One row per point: ``point`` and the :data:`METRICS`; ``seconds`` is the task's
        training time shared equally among its seeds; ``ticks_per_example`` and
        ``ticks_per_example_max`` are None for the quasi-static model.
    """
    from .sim.training import make_model, train
    try:
        cfg = config_mod.parse(copy.deepcopy(task.data), task.source, Path(task.base_dir))
        history = train(make_model(cfg, task.model, list(task.seeds)), task.epochs)
    except CllnError as e:
        raise SweepError(f"points {list(task.points)} (seeds {list(task.seeds)}): {e}") \
            from None
    rows = []
    for i, point in enumerate(task.points):
        ticks = history.ticks_per_example
        rows.append({
            "point": point,
            "mse_initial": float(history.mse_initial[i]),
            "mse_final": float(history.mse_final[i]),
            "reached": bool(history.mse_final[i] <= task.mse_target),
            "ticks_per_example": None if ticks is None else _finite(ticks[i]),
            "ticks_per_example_max": (None if ticks is None
                                      else int(history.ticks_per_example_max[i])),
            "saturated": bool(history.saturated[i]),
            "seconds": history.seconds / len(task.points),
        })
    return rows


# -- the journal ----------------------------------------------------------------------------


class Journal:
    """``rows.jsonl`` in a sweep's output folder: a header line naming the sweep (its
    :meth:`Sweep.digest`), then one JSON line per finished point, appended, flushed and
    fsynced group by group. A partial last line (an interrupted write) is dropped when the
    journal is opened again. Held under an exclusive lock while open.

    Parameters
    ----------
    path : path-like
    digest : str
        The sweep's digest: a journal with another one is refused.
    n_points : int

    Attributes
    ----------
    rows : dict
        Point index -> the journalled row (``point`` and :data:`METRICS`).
    """

    def __init__(self, path, digest, n_points):
        self.path, self.rows = Path(path), {}
        self.file = open(self.path, "ab+")
        try:
            _lock(self.file, self.path)
            self.file.seek(0)
            end = self._read(self.file.read(), digest, n_points)
            self.file.truncate(end)
            if end == 0:
                self._write([{"sweep": digest, "points": n_points, "format": JOURNAL_FORMAT}])
        except BaseException:
            self.file.close()
            raise

    def _read(self, data, digest, n_points):
        """Load the complete lines of ``data``; returns where the last one ends."""
        lines = data.split(b"\n")[:-1]        # what follows the last newline is partial
        if not lines:
            return 0
        try:
            header = json.loads(lines[0])
            rows = [json.loads(line) for line in lines[1:]]
        except ValueError:
            raise SweepError(f"{self.path}: not a clln sweep journal (delete it or choose "
                             "another --out)") from None
        if not isinstance(header, dict) or header.get("sweep") != digest:
            raise SweepError(f"{self.path.parent} holds the journal of a different sweep "
                             "(another sweep file, config, model, epochs or axes): delete "
                             f"{self.path} or choose another --out")
        for row in rows:
            i = row.get("point")
            if not isinstance(i, int) or not 0 <= i < n_points or i in self.rows:
                raise SweepError(f"{self.path}: bad or repeated point {i!r}")
            self.rows[i] = row
        return sum(len(line) + 1 for line in lines)

    def _write(self, records):
        self.file.write(b"".join(json.dumps(r).encode() + b"\n" for r in records))
        self.file.flush()
        os.fsync(self.file.fileno())

    def append(self, rows):
        """Journal finished points' rows (dicts with ``point``), durably."""
        self._write(rows)
        for row in rows:
            self.rows[row["point"]] = row

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lock(file, path):
    try:
        import fcntl
    except ImportError:                    # not POSIX: no lock
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SweepError(f"{path}: another sweep is running in {path.parent}") from None


# -- executors ------------------------------------------------------------------------------


def _worker_init():
    """Pool workers leave Ctrl-C to the parent, which terminates them."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(tasks, workers, finished):
    """Run ``tasks`` on a pool of ``workers`` processes (in this process if 1), calling
    ``finished(rows)`` as each task ends. The pool is terminated on leaving, also on an
    error or a ``SystemExit`` from SIGTERM, so no worker outlives the caller."""
    workers = min(workers, len(tasks))
    if workers <= 1:
        for task in tasks:
            finished(run_task(task))
        return
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(workers, _worker_init) as pool:
        for rows in pool.imap_unordered(run_task, tasks):
            finished(rows)


def run_dask(make_tasks_for, address, finished):
    """Run the tasks on the Dask cluster at ``address``.

    Parameters
    ----------
    make_tasks_for : callable(int) -> list of Task
        Given the cluster's number of worker threads.
    address : str
        The scheduler, ``tcp://HOST:PORT``.
    finished : callable(list of dict)
        Called with each task's rows as it ends.
    """
    from dask.distributed import Client, as_completed
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    with client:
        threads = sum(client.nthreads().values())
        futures = client.map(run_task, make_tasks_for(max(1, threads)), pure=False)
        try:
            for future in as_completed(futures, loop=client.loop):
                finished(future.result())
        finally:
            client.cancel(futures)


# -- results --------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced.

    Attributes
    ----------
    rows : list of dict
        One per point in product order: ``point``, each axis key, then :data:`METRICS`
        (None where NaN).
    table : pandas.DataFrame
        The same rows as written to ``results.parquet`` and ``results.csv``.
    out_dir : pathlib.Path
    ran, resumed : int
        Points run now, and points found in the journal.
    seconds : float
        Wall time of this run.
    """
    rows: list
    table: object = field(repr=False)
    out_dir: Path
    ran: int
    resumed: int
    seconds: float


def result_rows(points, journalled):
    """Rows of ``points`` in product order from their journalled metrics."""
    return [{"point": p.index, **p.values, **{m: journalled[p.index][m] for m in METRICS}}
            for p in points]


def _column(values):
    """An axis's values as table cells: as they are if they are all numbers, all
    booleans or all strings, else each as JSON text (lists, tables, mixed kinds)."""
    kinds = {"number" if _is_number(v) else type(v).__name__ for v in values}
    if len(kinds) == 1 and kinds <= {"number", "bool", "str"}:
        return list(values)
    return [json.dumps(v) for v in values]


def make_table(rows, keys):
    """The rows as a DataFrame: NaN for missing ticks, nullable integers for the most
    ticks, axis values of several kinds (lists, tables, ...) as JSON text."""
    import pandas as pd
    columns = ["point", *keys, *METRICS]
    table = pd.DataFrame({c: _column([r[c] for r in rows]) if c in keys
                          else [r[c] for r in rows] for c in columns}, columns=columns)
    table["ticks_per_example"] = table["ticks_per_example"].astype("float64")
    table["ticks_per_example_max"] = table["ticks_per_example_max"].astype("Int64")
    for c in ("reached", "saturated"):
        table[c] = table[c].astype(bool)
    return table


def write_results(table, out_dir):
    """Write ``results.parquet`` and ``results.csv`` (each through a temporary file)."""
    out_dir = Path(out_dir)
    for name, write in (("results.parquet", lambda p: table.to_parquet(p, index=False)),
                        ("results.csv", lambda p: table.to_csv(p, index=False))):
        tmp = out_dir / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, out_dir / name)


def _positions(values):
    """x positions and tick labels of axis values: numbers as they are, else in order."""
    if all(_is_number(v) for v in values):
        return [float(v) for v in values], None
    return list(range(len(values))), [str(v) for v in values]


def plot_summary(sweep, points, rows, path):
    """``summary.png``: per axis other than the seed, the success rate and the final MSE
    (median, quartiles over the seeds and the other axes) against the axis value; with
    no such axis, the final MSE of each seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    targets = sorted({p.mse_target for p in points})
    axes = [(k, v) for k, v in sweep.axes if k != SEED_AXIS] or [(None, None)]
    fig, panels = plt.subplots(len(axes), 2, figsize=(10, 3.4 * len(axes)), squeeze=False)
    for (key, values), (left, right) in zip(axes, panels, strict=True):
        if key is None:
            values = [r["point"] for r in rows]
            by_value = [[r] for r in rows]
            key = "point"
        else:
            by_value = [[r for r in rows if r[key] == v and type(r[key]) is type(v)
                         or (_is_number(v) and r[key] == v)] for v in values]
        x, labels = _positions(values)
        rate = [np.mean([r["reached"] for r in group]) for group in by_value]
        mse = [np.array([r["mse_final"] for r in group]) for group in by_value]
        q1, med, q3 = (np.array([np.percentile(m, q) for m in mse]) for q in (25, 50, 75))
        left.plot(x, rate, "o-")
        left.set(ylim=(-0.05, 1.05), xlabel=key, ylabel="reached the target (fraction)")
        right.fill_between(x, q1, q3, alpha=0.3, label="quartiles")
        right.plot(x, med, "o-", label="median")
        for t in targets:
            right.axhline(t, color="k", ls=":", lw=1, label=f"target {t:g} V$^2$")
        right.set(yscale="log", xlabel=key, ylabel="final MSE (V$^2$)")
        right.legend(fontsize=8)
        for ax in (left, right):
            if labels is not None:
                ax.set_xticks(x, labels, rotation=30 if len(labels) > 4 else 0)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(sweep.source).name}: {sweep.config_path.stem}, {sweep.model} model, "
                 f"{len(rows)} points")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def run_sweep(sweep, out_dir, workers=None, scheduler=None, progress=None, group=True):
    """Run every point of a sweep not yet in ``out_dir``'s journal, then write the results.

    Parameters
    ----------
    sweep : Sweep or path-like
        A parsed sweep, or a sweep file to load.
    out_dir : path-like
        Output folder (created): ``rows.jsonl``, ``results.parquet``, ``results.csv``,
        ``summary.png``.
    workers : int, optional
        Local worker processes (default ``os.cpu_count()``; 1 runs in this process).
        Ignored with ``scheduler``.
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:PORT``): run there instead.
    progress : callable(done, total), optional
        Called once the journal is read and after every finished task.
    group : bool
        Run the points that differ only in ``learning.seed`` as one model (same rows).

    Returns
    -------
    SweepResult

    Raises
    ------
    ConfigError
        A bad sweep file or a point whose config is invalid: before anything runs.
    SweepError
        A journal of another sweep in ``out_dir``, an unreachable scheduler, a failed
        point (the points finished before it stay journalled).
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    points = check_points(sweep)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create {out_dir}: {e.strerror}") from None
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    with Journal(out_dir / JOURNAL, sweep.digest(), len(points)) as journal:
        todo = [p for p in points if p.index not in journal.rows]
        resumed = len(points) - len(todo)

        def finished(rows):
            journal.append(rows)
            if progress is not None:
                progress(len(journal.rows), len(points))

        if progress is not None:
            progress(resumed, len(points))
        if todo and scheduler:
            run_dask(lambda n: make_tasks(sweep, todo, n, group), scheduler, finished)
        elif todo:
            run_local(make_tasks(sweep, todo, workers, group), workers, finished)
        rows = result_rows(points, journal.rows)
    table = make_table(rows, sweep.keys)
    write_results(table, out_dir)
    plot_summary(sweep, points, rows, out_dir / "summary.png")
    return SweepResult(rows, table, out_dir, len(todo), resumed, time.perf_counter() - start)
