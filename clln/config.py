"""The network config: a TOML file, validated on load into frozen dataclasses.

Every key is documented in ``docs/config.md``. A bad value raises
:class:`~clln.errors.ConfigError` naming the file, the key and the reason.
The config core imports neither the golden models nor the gateware.
"""

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import datasets
from .errors import ConfigError, decode_utf8

#: Full scale of the paper's 8-bit DACs, volts: the default input range.
PAPER_FULL_SCALE = 0.4532

# Size bounds (docs/config.md), checked on load and by the CLI before any work starts.
#: Nodes of a network: the quasi-static model's dense Jacobian of 4096 nodes takes 128 MiB.
MAX_NODES = 4096
#: Edges of a network (a 64 x 64 torus has 8192).
MAX_EDGES = 16384
#: Examples of a dataset: the link protocol counts them in 16 bits.
MAX_EXAMPLES = 65535
#: Epochs of a run (``learning.epochs``, ``--epochs``).
MAX_EPOCHS = 10 ** 7
#: Largest seed (``learning.seed``, ``--seed``, ``--seeds``): the protocol's u32.
MAX_SEED = 2 ** 32 - 1
#: Seeds trained at once (``--seeds A-B``).
MAX_SEEDS = 10_000
#: Ticks of a phase (``settle_ticks``, ``learn_ticks``): the protocol's u32.
MAX_TICKS = 2 ** 32 - 1
#: Outputs a run records (seeds x epochs x examples x outputs): 1 GiB of float64.
MAX_RECORDED = 2 ** 27
#: A config's ``name`` names files (``<name>.v``, ``build/boards/<name>-<board>``): a
#: letter or digit, then letters, digits, ``.``, ``_``, ``+``, ``-``; at most 64.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
#: Bounds of the physical values (V, A/V^2, A/V, 1/V): beyond them the float models
#: overflow or lose every digit, and no transistor network is described.
VOLTS = 10.0
GATE_VOLTS = 100.0
MIN_ETA = 1e-6
MIN_POSITIVE, MAX_POSITIVE = 1e-12, 1e9


@dataclass(frozen=True)
class Network:
    """The graph: ``edges[e] = (a, b)``; current is counted positive from a to b."""
    topology: str
    n_nodes: int
    edges: np.ndarray = field(repr=False)
    rows: int = 0
    cols: int = 0

    @property
    def n_edges(self):
        return len(self.edges)

    def degrees(self):
        """Number of edges at each node."""
        return np.bincount(self.edges.ravel(), minlength=self.n_nodes)

    def positions(self):
        """(x, y) drawing position of every node: the lattice, or a circle."""
        if self.rows:
            r, c = np.divmod(np.arange(self.n_nodes), self.cols)
            return np.stack([c, -r], axis=1).astype(float)
        phi = 2 * np.pi * np.arange(self.n_nodes) / self.n_nodes
        return np.stack([np.cos(phi), np.sin(phi)], axis=1)


@dataclass(frozen=True)
class DevicePhysics:
    """Square-law transistor: threshold ``vt`` (V), gain ``k`` (A/V^2), leak ``gmin`` (A/V)."""
    vt: float
    k: float
    gmin: float


@dataclass(frozen=True)
class IO:
    """Driven nodes and outputs; ``outputs[i] = (plus, minus)``, minus is -1 if single-ended."""
    inputs: tuple
    rails: tuple
    outputs: tuple
    v_min: float
    v_max: float

    @property
    def differential(self):
        return np.array([m >= 0 for _, m in self.outputs])


@dataclass(frozen=True)
class Learning:
    """Coupled-learning parameters; ``gate_init`` is resolved per seed by :meth:`initial_gates`."""
    eta: float
    alpha: float
    gate_init: object
    gate_min: float
    gate_max: float
    epochs: int
    seed: int

    def initial_gates(self, n_edges, seed):
        """Gate voltages (V) of every edge for ``seed``."""
        init = self.gate_init
        if isinstance(init, float):
            return np.full(n_edges, init)
        if len(init) == 2 and n_edges != 2:          # [lo, hi], as ``_learning`` reads it
            return np.random.default_rng(seed).uniform(init[0], init[1], n_edges)
        return np.array(init, dtype=float)


@dataclass(frozen=True)
class Task:
    """The dataset, volts: ``x`` (examples, inputs) and ``y`` (examples, outputs) are the
    training examples in the order training presents them; ``x_test`` and ``y_test`` the
    examples held out by ``test_fraction`` (none by default). With ``classification``
    there is one output per class, and an example's class is its largest target."""
    dataset: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    mse_target: float = 1e-4
    x_test: np.ndarray = field(default=None, repr=False)
    y_test: np.ndarray = field(default=None, repr=False)
    classification: bool = False
    test_fraction: float = 0.0
    split_seed: int = 0

    @property
    def n_test(self):
        return 0 if self.x_test is None else len(self.x_test)

    @property
    def labels(self):
        """Class of every training example (None unless ``classification``)."""
        return self.y.argmax(axis=1) if self.classification else None

    @property
    def labels_test(self):
        """Class of every test example (None unless ``classification``)."""
        return self.y_test.argmax(axis=1) if self.classification else None


@dataclass(frozen=True)
class Schedule:
    """Tick models: how an example is presented and how nodes relax.

    ``settle_ticks`` ticks with learning off (with ``settle = "still"`` at most that many:
    the phase ends once no node moved by more than ``still_lsb`` voltage LSBs for
    ``still_ticks`` consecutive ticks), then ``learn_ticks`` with learning on. ``relax``
    is the node step: ``euler`` (``kappa`` (1/V) times the net current), ``jacobi`` (the
    net current over the power of two at or above the node's conductance, kept in a box)
    or ``momentum`` (half that step plus the node's last move decayed by ``1 -
    2**-momentum_shift``; ``momentum_shift = 0``: the graph's default,
    :func:`clln.formats.momentum_shift`).
    """
    settle_ticks: int
    learn_ticks: int
    kappa: float
    relax: str = "jacobi"
    settle: str = "still"
    still_ticks: int = 4
    still_lsb: int = 1
    momentum_shift: int = 0


@dataclass(frozen=True)
class Fixed:
    """Widths (bits, signed two's complement) and fractional bits of the fixed-point model."""
    v_frac: int = 16
    v_bits: int = 18
    g_frac: int = 24
    g_bits: int = 28
    term_bits: int = 40
    acc_bits: int = 42
    dv_bits: int = 18
    dg_bits: int = 28
    kappa_bits: int = 4
    lr_bits: int = 4
    eta_frac: int = 8
    #: Extra fraction bits of a settling node's state that the edges do not see
    #: (``relax = "jacobi"`` or ``"momentum"`` only; 0: none).
    node_extra_bits: int = 0


#: Most extra fraction bits of a settling node's state (``[fixed] node_extra_bits``).
MAX_NODE_EXTRA_BITS = 8
#: ``node_extra_bits`` of a ``relax = "momentum"`` config that names none: the momentum
#: step's sub-LSB moves and decays need them (docs/results.md, "Momentum").
MOMENTUM_EXTRA_BITS = 8
#: ``still_lsb`` of a ``relax = "momentum"`` config that names none: the heavy ball's
#: limit cycles of quantisation move nodes by up to 2 LSB (docs/results.md, "Momentum").
MOMENTUM_STILL_LSB = 2
#: Largest ``[schedule] momentum_shift``: ``beta = 1 - 2**-30`` is 1 to float64's eye.
MAX_MOMENTUM_SHIFT = 30

#: Most networks a pipelined fabric interleaves (its pipeline has this many stages).
MAX_STREAMS = 8


@dataclass(frozen=True)
class FabricFold:
    """Gateware folding: ``edge_units`` of 0 means one unit per edge; ``serial`` folds the
    whole tick (edges and nodes) onto one edge unit and one node unit; ``streams`` > 1
    interleaves that many independent networks (seeds ``learning.seed`` and on) in a
    pipelined, fully parallel fabric; ``banked`` (with ``edge_units = P``) keeps node
    state, gates and node sums in block RAM and takes P edges a cycle."""
    edge_units: int = 0
    serial: bool = False
    streams: int = 1
    banked: bool = False

    @property
    def still_lag(self):
        """Ticks by which the fabric reports whether a tick moved (``docs/semantics.md``,
        "Moving and still"): 1 for the pipelined fabric, whose round of ticks is still in
        the pipeline when the next one starts, else 0."""
        return 1 if self.streams > 1 else 0


@dataclass(frozen=True)
class Nonideal:
    """Analog non-idealities (``[nonideal]``); every default is the ideal device.

    Mismatch (``vt_sigma`` V, ``k_sigma`` relative, ``update_offset`` V^2) is drawn per
    edge from ``mismatch_seed`` and damage (``dead_*``, ``stuck_*``) from ``damage_seed``
    by :func:`clln.nonideal.draw`, the same for every seed of a run: they belong to the
    chip, not to the initial gates. ``read_noise`` (V rms) comes from per-edge generators
    seeded by ``noise_seed``; ``gate_leak`` is the fraction of ``gate - gate_rest`` a gate
    loses per learning tick; ``dac_bits`` (0: ideal) quantises inputs and targets.
    """
    vt_sigma: float = 0.0
    k_sigma: float = 0.0
    twin_mismatch: bool = False
    mismatch_seed: int = 0
    update_offset: float = 0.0
    read_noise: float = 0.0
    noise_seed: int = 1
    gate_leak: float = 0.0
    gate_rest: float = None
    dead_edges: tuple = ()
    dead_fraction: float = 0.0
    stuck_edges: tuple = ()
    stuck_fraction: float = 0.0
    damage_seed: int = 0
    dac_bits: int = 0

    @property
    def ideal(self):
        """No non-ideality at all (what a config without ``[nonideal]`` gets)."""
        return (self.vt_sigma == self.k_sigma == self.update_offset == self.read_noise
                == self.gate_leak == self.dead_fraction == self.stuck_fraction == 0
                and not self.dead_edges and not self.stuck_edges and not self.dac_bits)


@dataclass(frozen=True)
class Config:
    """One network and its experiment."""
    name: str
    source: str
    network: Network
    device: DevicePhysics
    io: IO
    learning: Learning
    task: Task
    schedule: Schedule
    fixed: Fixed
    fabric: FabricFold
    has_fabric: bool = False
    nonideal: Nonideal = Nonideal()

    def driven_nodes(self):
        """All nodes held by a source (inputs, then rails)."""
        return list(self.io.inputs) + [n for n, _ in self.io.rails]


def finite(v):
    """Whether a number is finite (an integer too large for a float is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


class _Table:
    """A TOML table being read: tracks which keys were used, names keys in errors."""

    def __init__(self, data, source, prefix):
        self.data, self.source, self.prefix, self.used = data, source, prefix, set()

    def key(self, name):
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name, why):
        return ConfigError(self.source, self.key(name), why)

    def get(self, name, default=...):
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing")
            return default
        return self.data[name]

    def number(self, name, default=..., lo=None, hi=None, lo_open=False, hi_open=False,
               least=None):
        """A finite number in ``[lo, hi]`` (open ends as asked); with ``least``, either 0
        or at least that much (a value closer to 0 underflows the models)."""
        v = self.get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v):
            raise self.error(name, f"must be a finite number, got {v!r}")
        if least is not None and v != 0 and abs(v) < least:
            raise self.error(name, f"must be 0 or at least {least:g}, got {v}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise self.error(name, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise self.error(name, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
        return float(v)

    def integer(self, name, default=..., lo=None, hi=None):
        v = self.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, f"must be an integer, got {v!r}")
        if lo is not None and v < lo:
            raise self.error(name, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.error(name, f"must be <= {hi}, got {v}")
        return v

    def boolean(self, name, default=...):
        v = self.get(name, default)
        if not isinstance(v, bool):
            raise self.error(name, f"must be true or false, got {v!r}")
        return v

    def table(self, name, required=True):
        v = self.get(name, ... if required else {})
        if not isinstance(v, dict):
            raise self.error(name, "must be a table ([section])")
        return _Table(v, self.source, self.key(name))

    def finish(self):
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key" + (
                f" (known: {', '.join(sorted(self.used))})" if self.used else ""))


def _lattice(rows, cols, periodic):
    """Edges of a rows x cols lattice: horizontal edges row-major, then vertical ones."""
    node = np.arange(rows * cols).reshape(rows, cols)
    if periodic:
        right, down = np.roll(node, -1, axis=1), np.roll(node, -1, axis=0)
        h = np.stack([node.ravel(), right.ravel()], axis=1)
        v = np.stack([node.ravel(), down.ravel()], axis=1)
    else:
        h = np.stack([node[:, :-1].ravel(), node[:, 1:].ravel()], axis=1)
        v = np.stack([node[:-1, :].ravel(), node[1:, :].ravel()], axis=1)
    return np.concatenate([h, v]).astype(np.int64)


#: Graphs ``random_regular`` draws before it gives up finding a connected one.
RANDOM_REGULAR_TRIES = 100


def _pairings(n_nodes, degree, rng):
    """A uniformly drawn d-regular simple graph (stub pairing, restarted on a dead end);
    edges as (a, b) with a < b. Used for ``degree <= (n_nodes - 1) / 2``."""
    while True:
        stubs = list(np.repeat(np.arange(n_nodes), degree))
        edges = set()
        while stubs:
            for _ in range(100):
                i, j = rng.integers(len(stubs)), rng.integers(len(stubs) - 1)
                j += j >= i
                a, b = sorted((int(stubs[i]), int(stubs[j])))
                if a != b and (a, b) not in edges:
                    break
            else:
                break                                   # dead end: start again
            edges.add((a, b))
            for k in sorted((i, j), reverse=True):
                stubs[k] = stubs[-1]
                stubs.pop()
        if not stubs:
            return edges


def random_regular(n_nodes, degree, seed):
    """Edges (E, 2) of a connected ``degree``-regular graph on ``n_nodes`` nodes drawn with
    ``seed``: no self-loops, no repeated pairs, each edge (a, b) with a < b, sorted.

    Degree 2 is a random cycle. A dense graph (degree above half the nodes) is the
    complement of a sparse one, which is always connected.

    Raises
    ------
    ValueError
        Naming why no such graph exists, or that none of the draws was connected.
    """
    if not 1 <= degree < n_nodes:
        raise ValueError(f"degree must be between 1 and nodes - 1 = {n_nodes - 1}, got {degree}")
    if n_nodes * degree % 2:
        raise ValueError(f"nodes * degree must be even (each edge has two ends), got "
                         f"{n_nodes} * {degree}")
    if degree == 1 and n_nodes > 2:
        raise ValueError(f"a 1-regular graph on {n_nodes} nodes is never connected")
    rng = np.random.default_rng(seed)
    if degree == 2:
        cycle = rng.permutation(n_nodes)
        edges = np.stack([cycle, np.roll(cycle, -1)], axis=1)
        return np.array(sorted(map(tuple, np.sort(edges, axis=1).tolist())), np.int64)
    complement = degree > (n_nodes - 1) / 2
    for _ in range(RANDOM_REGULAR_TRIES):
        edges = _pairings(n_nodes, n_nodes - 1 - degree if complement else degree, rng)
        if complement:
            edges = {(a, b) for a in range(n_nodes) for b in range(a + 1, n_nodes)} - edges
        edges = np.array(sorted(edges), np.int64).reshape(-1, 2)
        if _connected(n_nodes, edges):
            return edges
    raise ValueError(f"none of {RANDOM_REGULAR_TRIES} graphs drawn was connected")


def _connected(n_nodes, edges):
    parent = list(range(n_nodes))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[root(int(a))] = root(int(b))
    return len({root(i) for i in range(n_nodes)}) == 1


def _network(t):
    topology = t.get("topology")
    if topology in ("torus", "grid"):
        lo = 3 if topology == "torus" else 1
        rows = t.integer("rows", lo=lo, hi=MAX_NODES)
        cols = t.integer("cols", lo=lo, hi=MAX_NODES)
        if rows * cols < 2:
            raise t.error("rows", "a network needs at least two nodes")
        if rows * cols > MAX_NODES:
            raise t.error("rows", f"{rows} x {cols} = {rows * cols} nodes; at most "
                          f"{MAX_NODES}")
        edges = _lattice(rows, cols, topology == "torus")
        net = Network(topology, rows * cols, edges, rows, cols)
    elif topology == "edges":
        n = t.integer("nodes", lo=2, hi=MAX_NODES)
        net = Network("edges", n, _edge_pairs(t, n))
    elif topology == "random-regular":
        n, degree = t.integer("nodes", lo=2, hi=MAX_NODES), t.integer("degree", lo=1)
        try:
            edges = random_regular(n, degree, t.integer("graph_seed", 0, lo=0, hi=2 ** 63 - 1))
        except ValueError as e:
            raise t.error("degree", f"no connected {degree}-regular graph on {n} nodes: {e}"
                          ) from None
        net = Network("random-regular", n, edges)
    else:
        raise t.error("topology", 'must be "torus", "grid", "edges" or "random-regular", '
                      f"got {topology!r}")
    if net.n_edges > MAX_EDGES:
        raise t.error("topology", f"{net.n_edges} edges; at most {MAX_EDGES}")
    if not _connected(net.n_nodes, net.edges):
        raise t.error("topology", "the graph is not connected")
    t.finish()
    return net


def _edge_pairs(t, n):
    """The ``[[a, b], ...]`` of ``network.edges`` as an (E, 2) array, every pair checked
    (in range, no loop, no duplicate) before any array is made of it."""
    raw = t.get("edges")
    if (not isinstance(raw, list) or not raw or not all(
            isinstance(e, list) and len(e) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) for i in e) for e in raw)):
        raise t.error("edges", "must be a non-empty list of [a, b] node pairs")
    if len(raw) > MAX_EDGES:
        raise t.error("edges", f"{len(raw)} edges; at most {MAX_EDGES}")
    seen = {}
    for i, (a, b) in enumerate(raw):
        if not (0 <= a < n and 0 <= b < n):
            raise t.error("edges", f"edge {i} {raw[i]}: node out of range 0..{n - 1}")
        if a == b:
            raise t.error("edges", f"edge {i} {raw[i]} joins a node to itself")
        k = (min(a, b), max(a, b))
        if k in seen:
            raise t.error("edges", f"edges {seen[k]} and {i} both join nodes {a} and {b}")
        seen[k] = i
    return np.array(raw, dtype=np.int64)


def _device(t):
    device = DevicePhysics(t.number("vt", lo=-VOLTS, hi=VOLTS),
                           t.number("k", lo=MIN_POSITIVE, hi=MAX_POSITIVE),
                           t.number("gmin", 1e-10, lo=MIN_POSITIVE, hi=MAX_POSITIVE))
    # the leak conducts like a transistor at 2 gmin / k volts of overdrive
    if 2 * device.gmin / device.k > 1.0:
        raise t.error("gmin", f"2 gmin / k = {2 * device.gmin / device.k:.3g} V: a leak "
                      "above 1 V would outweigh every transistor")
    t.finish()
    return device


def _node(t, name, value, n_nodes, where):
    if isinstance(value, bool) or not isinstance(value, int):
        raise t.error(name, f"{where}: node must be an integer, got {value!r}")
    if not 0 <= value < n_nodes:
        raise t.error(name, f"{where}: node {value} out of range 0..{n_nodes - 1}")
    return value


def _io(t, n_nodes):
    v_min = t.number("v_min", 0.0, lo=-VOLTS, hi=VOLTS)
    v_max = t.number("v_max", PAPER_FULL_SCALE, lo=-VOLTS, hi=VOLTS)
    if v_min >= v_max:
        raise t.error("v_min", f"must be below io.v_max ({v_max}), got {v_min}")
    inputs = t.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise t.error("inputs", "must be a non-empty list of nodes")
    inputs = tuple(_node(t, "inputs", v, n_nodes, f"entry {i}") for i, v in enumerate(inputs))
    rails_raw = t.get("rails", [])
    if not isinstance(rails_raw, list):
        raise t.error("rails", "must be a list of [node, volts]")
    rails = []
    for i, r in enumerate(rails_raw):
        if not isinstance(r, list) or len(r) != 2:
            raise t.error("rails", f"entry {i}: must be [node, volts], got {r!r}")
        node = _node(t, "rails", r[0], n_nodes, f"entry {i}")
        volts = r[1]
        if isinstance(volts, bool) or not isinstance(volts, (int, float)):
            raise t.error("rails", f"entry {i}: volts must be a number, got {volts!r}")
        if not v_min <= volts <= v_max:
            raise t.error("rails", f"entry {i}: {volts} V outside the node range "
                          f"[{v_min}, {v_max}] (io.v_min, io.v_max)")
        rails.append((node, float(volts)))
    outputs_raw = t.get("outputs")
    if not isinstance(outputs_raw, list) or not outputs_raw:
        raise t.error("outputs", "must be a non-empty list of nodes or [plus, minus] pairs")
    outputs = []
    for i, o in enumerate(outputs_raw):
        if isinstance(o, list):
            if len(o) != 2:
                raise t.error("outputs", f"entry {i}: a differential output is [plus, minus]")
            outputs.append(tuple(_node(t, "outputs", v, n_nodes, f"entry {i}") for v in o))
        else:
            outputs.append((_node(t, "outputs", o, n_nodes, f"entry {i}"), -1))
    used = {}
    for role, nodes in (("inputs", inputs), ("rails", [n for n, _ in rails]),
                        ("outputs", [n for o in outputs for n in o if n >= 0])):
        for n in nodes:
            if n in used:
                raise t.error(role, f"node {n} is used twice (also in io.{used[n]})")
            used[n] = role
    if len(used) >= n_nodes:
        raise t.error("outputs", "no node is left free to settle: every node is driven or read")
    t.finish()
    return IO(inputs, tuple(rails), tuple(outputs), v_min, v_max)


def _learning(t, n_edges):
    eta = t.number("eta", lo=MIN_ETA, hi=1.0)
    alpha = t.number("alpha", lo=MIN_POSITIVE, hi=MAX_POSITIVE)
    gate_min = t.number("gate_min", lo=-GATE_VOLTS, hi=GATE_VOLTS)
    gate_max = t.number("gate_max", lo=-GATE_VOLTS, hi=GATE_VOLTS)
    if gate_min >= gate_max:
        raise t.error("gate_min", f"must be below learning.gate_max ({gate_max}), got {gate_min}")
    raw = t.get("gate_init")

    def in_bounds(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v):
            raise t.error("gate_init", f"{what} must be a number, got {v!r:.40}")
        if not gate_min <= v <= gate_max:
            raise t.error("gate_init", f"{what} {v} V is outside [gate_min, gate_max] = "
                          f"[{gate_min}, {gate_max}]")
        return float(v)

    if isinstance(raw, list) and len(raw) == 2 and n_edges != 2:
        lo, hi = in_bounds(raw[0], "lower bound"), in_bounds(raw[1], "upper bound")
        if lo > hi:
            raise t.error("gate_init", f"range [{lo}, {hi}] is empty")
        gate_init = (lo, hi)
    elif isinstance(raw, list):
        if len(raw) != n_edges:
            raise t.error("gate_init", f"{len(raw)} values for {n_edges} edges "
                          "(give one number, [lo, hi], or one value per edge)")
        gate_init = tuple(in_bounds(v, f"entry {i}") for i, v in enumerate(raw))
    else:
        gate_init = in_bounds(raw, "value")
    learning = Learning(eta, alpha, gate_init, gate_min, gate_max,
                        t.integer("epochs", lo=0, hi=MAX_EPOCHS),
                        t.integer("seed", 0, lo=0, hi=MAX_SEED))
    t.finish()
    return learning


def dac_quantise(volts, io, bits):
    """Volts as a ``bits``-bit DAC spanning ``[io.v_min, io.v_max]`` produces them: the
    nearest of ``2**bits`` levels, the grid extended beyond the range for differential
    targets (``bits = 0``: unchanged)."""
    if not bits:
        return volts
    step = (io.v_max - io.v_min) / (2 ** bits - 1)
    return io.v_min + np.round((volts - io.v_min) / step) * step


def _task(t, io, base_dir, dac_bits=0):
    name = t.get("dataset")
    if not isinstance(name, str) or not name:
        raise t.error("dataset", "must be a built-in name or a CSV path")
    if name in datasets.BUILTIN:
        x, y = datasets.BUILTIN[name]()
    else:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        if not path.exists():
            raise t.error("dataset", f"{name!r} is neither a built-in dataset "
                          f"({', '.join(datasets.BUILTIN)}) nor an existing file ({path})")
        x, y = datasets.load_csv(path, t.source, t.key("dataset"), MAX_EXAMPLES)
    if x.shape[1] != len(io.inputs):
        raise t.error("dataset", f"{x.shape[1]} input columns for {len(io.inputs)} io.inputs")
    if y.shape[1] != len(io.outputs):
        raise t.error("dataset", f"{y.shape[1]} target columns for {len(io.outputs)} io.outputs")
    x, y = dac_quantise(x, io, dac_bits), dac_quantise(y, io, dac_bits)
    bad = np.argwhere((x < io.v_min) | (x > io.v_max))
    if bad.size:
        i, j = bad[0]
        raise t.error("dataset", f"example {i}, input x{j + 1} = {x[i, j]} V is outside the node "
                      f"range [{io.v_min}, {io.v_max}] V (io.v_min, io.v_max)")
    # Node voltages obey a maximum principle (every edge current rises with its own
    # terminal voltage), so outputs stay within the span of the driven voltages.
    rails = np.array([v for _, v in io.rails])
    for i in range(len(x)):
        driven = np.concatenate([x[i], rails])
        lo, hi = driven.min(), driven.max()
        for j, (_, minus) in enumerate(io.outputs):
            target = y[i, j]
            ok = abs(target) <= hi - lo if minus >= 0 else lo <= target <= hi
            if not ok:
                span = f"|O| <= {hi - lo:.4g}" if minus >= 0 else f"[{lo:.4g}, {hi:.4g}]"
                raise t.error("dataset", f"example {i}, target y{j + 1} = {target} V cannot be "
                              f"reached: driven voltages bound that output to {span} V")
    mse_target = t.number("mse_target", 1e-4, lo=0.0, lo_open=True)
    classification = _classification(t, name, y)
    fraction = t.number("test_fraction", 0.0, lo=0.0, hi=1.0, hi_open=True)
    seed = t.integer("split_seed", 0, lo=0, hi=2 ** 63 - 1)
    train, test = _split(t, len(x), fraction, seed,
                         y.argmax(axis=1) if classification else None)
    t.finish()
    return Task(name, x[train], y[train], mse_target, x[test], y[test], classification,
                fraction, seed)


def _classification(t, name, y):
    """``task.classification``: the built-in's kind by default; a classification task
    needs one output per class and a single largest target in every example."""
    value = t.boolean("classification", name in datasets.CLASSIFICATION)
    if not value:
        return False
    if y.shape[1] < 2:
        raise t.error("classification", f"needs one output per class (at least 2), "
                      f"the dataset has {y.shape[1]}")
    ties = np.flatnonzero(np.sum(y == y.max(axis=1, keepdims=True), axis=1) > 1)
    if ties.size:
        raise t.error("classification", f"example {ties[0]} has no single largest target "
                      f"({y[ties[0]].tolist()}): its class is ambiguous")
    return True


def _split(t, n_examples, fraction, seed, labels):
    """Training and test indices (the dataset's order kept without a test set)."""
    if fraction == 0:
        return np.arange(n_examples), np.arange(0)
    train, test = datasets.split(n_examples, fraction, seed, labels)
    if not test.size:
        raise t.error("test_fraction", f"{fraction} of {n_examples} examples leaves no test "
                      "example (0: no test set)")
    if labels is not None:
        empty = np.setdiff1d(labels, labels[train])
        if empty.size:
            raise t.error("test_fraction", f"{fraction} leaves class {empty[0]} no training "
                          "example")
    elif not train.size:
        raise t.error("test_fraction", f"{fraction} of {n_examples} examples leaves no "
                      "training example")
    return train, test


#: Node steps and settle rules a ``[schedule]`` may name.
RELAXATIONS = ("euler", "jacobi", "momentum")
SETTLE_RULES = ("fixed", "still")
#: What a config that names none gets: the normalised step settles every valid network
#: (no kappa to refuse), and stillness ends its settle phases early.
DEFAULT_RELAX, DEFAULT_SETTLE = "jacobi", "still"


def _choice(t, name, default, allowed):
    v = t.get(name, default)
    if v not in allowed:
        raise t.error(name, f"must be one of {', '.join(map(repr, allowed))}, got {v!r}")
    return v


def _schedule(t):
    relax = _choice(t, "relax", DEFAULT_RELAX, RELAXATIONS)
    s = Schedule(t.integer("settle_ticks", 600, lo=0, hi=MAX_TICKS),
                 t.integer("learn_ticks", 50, lo=0, hi=MAX_TICKS),
                 t.number("kappa", 0.025, lo=MIN_POSITIVE, hi=MAX_POSITIVE), relax,
                 _choice(t, "settle", DEFAULT_SETTLE, SETTLE_RULES),
                 t.integer("still_ticks", 4, lo=1, hi=255),
                 t.integer("still_lsb", MOMENTUM_STILL_LSB if relax == "momentum" else 1,
                           lo=0, hi=255),
                 # 0 (the key left out): the graph's default, clln.formats.momentum_shift
                 t.integer("momentum_shift", 0, lo=1, hi=MAX_MOMENTUM_SHIFT)
                 if "momentum_shift" in t.data else 0)
    if s.settle_ticks + s.learn_ticks == 0:
        raise t.error("settle_ticks", "an example needs at least one tick "
                      "(settle_ticks + learn_ticks >= 1)")
    t.finish()
    return s


def _edge_list(t, name, n_edges):
    raw = t.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(e, int) and not isinstance(e, bool)
                                            for e in raw):
        raise t.error(name, f"must be a list of edge indices, got {raw!r}")
    bad = [e for e in raw if not 0 <= e < n_edges]
    if bad:
        raise t.error(name, f"edge {bad[0]} out of range 0..{n_edges - 1}")
    if len(set(raw)) != len(raw):
        raise t.error(name, "lists an edge twice")
    return tuple(sorted(raw))


def _nonideal(t, n_edges, learning):
    seed = dict(lo=0, hi=2 ** 63 - 1)
    rest = t.number("gate_rest", learning.gate_min)
    if not learning.gate_min <= rest <= learning.gate_max:
        raise t.error("gate_rest", f"{rest} V is outside [gate_min, gate_max] = "
                      f"[{learning.gate_min}, {learning.gate_max}]")
    n = Nonideal(
        t.number("vt_sigma", 0.0, lo=0.0, hi=0.5), t.number("k_sigma", 0.0, lo=0.0, hi=0.25),
        t.boolean("twin_mismatch", False), t.integer("mismatch_seed", 0, **seed),
        t.number("update_offset", 0.0, lo=0.0, hi=1.0), t.number("read_noise", 0.0, lo=0.0,
                                                                  hi=0.5),
        t.integer("noise_seed", 1, **seed), t.number("gate_leak", 0.0, lo=0.0, hi=1.0,
                                                     hi_open=True, least=MIN_POSITIVE),
        rest, _edge_list(t, "dead_edges", n_edges), t.number("dead_fraction", 0.0, lo=0.0,
                                                             hi=1.0),
        _edge_list(t, "stuck_edges", n_edges), t.number("stuck_fraction", 0.0, lo=0.0, hi=1.0),
        t.integer("damage_seed", 0, **seed), t.integer("dac_bits", 0, lo=0, hi=24))
    if n.dac_bits == 1:
        raise t.error("dac_bits", "a DAC needs at least 2 bits (0: ideal)")
    if n.dead_fraction + n.stuck_fraction > 1:
        raise t.error("stuck_fraction", "dead_fraction + stuck_fraction must be <= 1")
    t.finish()
    return n


def _fixed(t, relax):
    defaults = Fixed()
    values = {}
    for name in Fixed.__dataclass_fields__:
        if name == "node_extra_bits":
            default = MOMENTUM_EXTRA_BITS if relax == "momentum" else 0
            values[name] = t.integer(name, default, lo=0, hi=MAX_NODE_EXTRA_BITS)
        else:
            values[name] = t.integer(name, getattr(defaults, name), lo=1, hi=62)
    f = Fixed(**values)
    if f.g_frac < f.v_frac:
        raise t.error("g_frac", f"must be >= fixed.v_frac ({f.v_frac}), got {f.g_frac}")
    if f.v_frac >= f.v_bits:
        raise t.error("v_frac", f"must be below fixed.v_bits ({f.v_bits}), got {f.v_frac}")
    t.finish()
    return f


def _fabric(t, n_edges):
    fab = FabricFold(t.integer("edge_units", 0, lo=0, hi=n_edges), t.boolean("serial", False),
                 t.integer("streams", 1, lo=1, hi=MAX_STREAMS))
    if fab.serial and fab.edge_units:
        raise t.error("serial", "the serial fabric has one edge unit: leave out edge_units")
    if fab.streams > 1 and (fab.serial or fab.edge_units):
        raise t.error("streams", "streams need the fully parallel fabric: leave out "
                      "edge_units and serial")
    fab = dataclasses.replace(fab, banked=t.boolean("banked", False))
    if fab.banked and (fab.serial or fab.streams > 1 or not fab.edge_units):
        raise t.error("banked", f"the banked fabric takes edge_units = P edge units, 1 to "
                      f"the {n_edges} edges (and no serial or streams)")
    t.finish()
    return fab


def refold(cfg, fold, source=None):
    """``cfg`` with another fabric: ``fold`` is a number of edge units (0: one per edge),
    ``"serial"``, ``"streams:C"`` (C interleaved networks) or ``"banked:P"`` (the
    block-RAM fabric with P edge units). Folding never changes the bits a fabric
    computes; streams add networks of the next seeds. A bad fold is named as coming from
    ``source`` (default the config's file)."""
    if fold == "serial":
        data = {"serial": True}
    elif isinstance(fold, str) and fold.startswith("banked:"):
        count = fold.split(":", 1)[1]
        data = {"banked": True, "edge_units": int(count) if count.isdigit() else count}
    elif isinstance(fold, str) and fold.startswith("streams:"):
        count = fold.split(":", 1)[1]
        data = {"streams": int(count) if count.isdigit() else count}
    else:
        data = {"edge_units": fold}
    fab = _fabric(_Table(data, source or cfg.source, "fabric"), cfg.network.n_edges)
    return dataclasses.replace(cfg, fabric=fab, has_fabric=True)


def builtin_names():
    """Names of the example configs shipped with the package."""
    return sorted(p.name[:-5] for p in resources.files("clln.configs").iterdir()
                  if p.name.endswith(".toml"))


def resolve(name_or_path):
    """Path of a config given as a file path or as a built-in name."""
    p = Path(name_or_path)
    try:
        if p.suffix == ".toml" or p.exists():
            return p
    except OSError as e:                # a name too long for a file name, say
        raise ConfigError(f"{name_or_path:.80}", "", f"not a config file: {e.strerror}"
                          ) from None
    builtin = resources.files("clln.configs") / f"{name_or_path}.toml"
    if builtin.is_file():
        return Path(str(builtin))
    raise ConfigError(name_or_path, "", "no such file, and not a built-in config "
                      f"({', '.join(builtin_names())})")


def load(name_or_path):
    """Load and validate a config given as a path or a built-in name (a :class:`Config`
    is returned as it is).

    Raises
    ------
    ConfigError
        For a missing file, bad TOML or any invalid value.
    """
    if isinstance(name_or_path, Config):
        return name_or_path
    path = resolve(name_or_path)
    data = read_toml(path)
    return parse(data, str(path), path.parent)


def read_toml(path, source=None, key=""):
    """The TOML file ``path`` as a dict; unreadable, non-UTF-8, invalid or too deeply
    nested TOML is a :class:`ConfigError` naming ``source`` (default ``path``) and ``key``.
    """
    source = path if source is None else source
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(source, key, f"cannot read {path}: {e.strerror}") from None
    try:
        return tomllib.loads(decode_utf8(raw, path, ""))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(path, "", "not valid TOML: arrays or tables nested too deeply"
                          ) from None


def parse(data, source="<config>", base_dir=Path(".")):
    """Validate a config already parsed from TOML into a dict."""
    root = _Table(data, source, "")
    name = root.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise root.error("name", "must name files: a letter or digit, then letters, digits, "
                         f"'.', '_', '+' or '-', at most 64 characters; got {name!r:.80}")
    network = _network(root.table("network"))
    device = _device(root.table("device"))
    io = _io(root.table("io"), network.n_nodes)
    learning = _learning(root.table("learning"), network.n_edges)
    nonideal = _nonideal(root.table("nonideal", required=False), network.n_edges, learning)
    task = _task(root.table("task"), io, Path(base_dir), nonideal.dac_bits)
    schedule = _schedule(root.table("schedule", required=False))
    fixed_t = root.table("fixed", required=False)
    fixed = _fixed(fixed_t, schedule.relax)
    has_fabric = "fabric" in data
    fabric = _fabric(root.table("fabric", required=False), network.n_edges)
    root.finish()
    return Config(name, source, network, device, io, learning, task, schedule, fixed, fabric,
                  has_fabric, nonideal)
