"""The serial fabric's schedule, and the graph a capacity bitstream loads at run time (core).

The serial fabric (``gateware/fabric/serial.py``) walks one row per clock cycle: a visit of
one edge from one settling end in one network. The graph *is* the schedule, so a bitstream
built for a *capacity* (``--capacity NODES:EDGES``) keeps its schedule and initial gates in
RAM and the host writes the rows of another network over the link (``docs/protocol.md``,
"Loading a graph"). Both sides compute the rows here:

- :func:`serial_schedule`, the visits of one tick of a config;
- :func:`row_fields` and :func:`schedule_rows`, the loadable row layout and the rows (the
  four drain and commit rows included), :func:`pack_row` / :func:`unpack_row`;
- :func:`relabel`: a capacity bitstream has its inputs, rails and outputs at the first
  node numbers (:func:`placement`), so the host renames the nodes of the graph it loads
  (and the bitstream's own config) to put the I/O there (a renaming changes no bit:
  every node takes the same step);
- :func:`check_loadable`: a config beyond the capacity, or one that differs from the
  bitstream's config in something the bitstream fixes, is refused naming both values.
"""

import hashlib
import json
from collections import namedtuple
from dataclasses import replace

import numpy as np

from .errors import ConfigError
from .protocol import hash_document

__all__ = ["Capacity", "PIPELINE_CYCLES", "Visit", "capacity_identity", "check_capacity",
           "check_fixed", "check_loadable", "fixed_hash", "fixed_part", "graph_from_rows",
           "max_rows", "output_nodes", "pack_row", "parse_capacity", "placement", "relabel",
           "row_fields", "row_limits", "row_words", "schedule_rows", "serial_schedule",
           "unpack_row"]

#: One cycle of the serial schedule: accumulate the term of ``edge`` into ``node`` in
#: network ``net`` (0 free, 1 clamped); ``other`` is the edge's other end, ``plus`` is 1
#: when ``node`` is the edge's ``b`` end (the term counts positive). ``first``/``last``
#: open and close a node's sum; ``gate`` updates the edge's gate (when learning); ``term``
#: is 0 for a gate-only visit (an edge with no settling end).
Visit = namedtuple("Visit", "node other edge net plus first last gate term")

#: Cycles of a tick beyond its visits: three drain the pipeline, one commits.
PIPELINE_CYCLES = 4

#: The most edges of a capacity (its ``4 E + 4`` schedule rows fit IDENTIFY's u16).
MAX_EDGES = (0xFFFF - 4) // 4

#: What a capacity bitstream holds: nodes and edges.
Capacity = namedtuple("Capacity", "nodes edges")


def serial_schedule(cfg):
    """The visits of one tick, in order (the drain and commit cycles are not listed).

    Parameters
    ----------
    cfg : clln.config.Config

    Returns
    -------
    list of Visit
    """
    edges = [tuple(int(x) for x in e) for e in cfg.network.edges]
    driven = set(cfg.driven_nodes())
    incident = {n: [] for n in range(cfg.network.n_nodes)}
    for e, (a, b) in enumerate(edges):
        incident[a].append(e)
        incident[b].append(e)
    visits = []
    for n in range(cfg.network.n_nodes):
        if n in driven:
            continue
        for net in (0, 1):
            group = incident[n]
            for i, e in enumerate(group):
                a, b = edges[e]
                visits.append(Visit(n, a if n == b else b, e, net, int(n == b), int(i == 0),
                                    int(i == len(group) - 1), 0, 1))
    last_visit = {v.edge: i for i, v in enumerate(visits)}
    for i in last_visit.values():
        visits[i] = visits[i]._replace(gate=1)
    for e, (a, b) in enumerate(edges):
        if e not in last_visit:                      # both ends driven: only the gate
            visits.append(Visit(a, b, e, 0, 0, 0, 0, 1, 0))
    return visits


def parse_capacity(text, source="--capacity"):
    """``"NODES:EDGES"`` (or a :class:`Capacity`) as a :class:`Capacity`."""
    if isinstance(text, Capacity):
        return text
    parts = str(text).split(":")
    if len(parts) != 2 or not all(s.strip().isdigit() for s in parts):
        raise ConfigError(source, "", f"expected NODES:EDGES (e.g. 32:64), got {text!r}")
    cap = Capacity(*(int(s) for s in parts))
    if not (2 <= cap.nodes <= 0xFFFF and 1 <= cap.edges <= MAX_EDGES):
        raise ConfigError(source, "", f"{text}: nodes 2 to 65535, edges 1 to {MAX_EDGES} "
                          "(IDENTIFY's graph_rows, 4 edges + 4, is u16)")
    return cap


def max_rows(capacity):
    """Rows of the schedule RAM: each edge is seen at most from both ends in both
    networks, then the drain and commit rows."""
    return 4 * capacity.edges + PIPELINE_CYCLES


def output_nodes(cfg):
    """The output nodes (the clamped ones), sorted."""
    return sorted({n for out in cfg.io.outputs for n in out if n >= 0})


def _bits(n):
    """Bits of an unsigned field holding 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def row_fields(capacity, v_bits, n_driven, n_clamp):
    """The loadable row layout: ``[(name, bits, signed)]``, from bit 0 up (as
    ``amaranth.lib.data.StructLayout`` places them)."""
    return [("node", _bits(capacity.nodes), False), ("other", _bits(capacity.nodes), False),
            ("edge", _bits(capacity.edges), False), *((k, 1, False) for k in (
                "net", "plus", "first", "last", "gate", "term")),
            ("vt", v_bits, True), ("node_driven", 1, False), ("other_driven", 1, False),
            ("node_slot", _bits(max(n_driven, 1)), False),
            ("other_slot", _bits(max(n_driven, 1)), False),
            ("clamp", _bits(n_clamp + 1), False)]


def row_limits(fields, capacity, n_driven, n_clamp):
    """The index fields of a row and their bounds: ``[(name, lo, bits, most)]``, a value
    ``< most`` at bits ``lo .. lo + bits - 1`` (WRITE_GRAPH refuses others)."""
    most = {"node": capacity.nodes, "other": capacity.nodes, "edge": capacity.edges,
            "node_slot": max(n_driven, 1), "other_slot": max(n_driven, 1),
            "clamp": n_clamp + 1}
    out, lo = [], 0
    for name, bits, _ in fields:
        if name in most:
            out.append((name, lo, bits, most[name]))
        lo += bits
    return out


def row_words(fields):
    """u32 words of one packed row."""
    return -(-sum(b for _, b, _ in fields) // 32)


def schedule_rows(cfg, fmt):
    """The rows of ``cfg``'s schedule (dicts of :func:`row_fields`' names), the drain and
    commit rows last; ``fmt`` gives the thresholds (``clln.formats.Formats``)."""
    driven = {n: i for i, n in enumerate(cfg.driven_nodes())}
    clamp = {n: i + 1 for i, n in enumerate(output_nodes(cfg))}
    rows = [dict(v._asdict(), vt=int((fmt.vt_c_q if v.net else fmt.vt_q)[v.edge]),
                 node_driven=int(v.node in driven), other_driven=int(v.other in driven),
                 node_slot=driven.get(v.node, 0), other_slot=driven.get(v.other, 0),
                 clamp=clamp.get(v.node, 0) if v.net else 0)
            for v in serial_schedule(cfg)]
    # The drain and commit rows do nothing; their other fields repeat the last visit's.
    idle = dict(rows[-1], first=0, last=0, gate=0, term=0)
    return rows + [idle] * PIPELINE_CYCLES


def pack_row(row, fields):
    """One row (a dict) as an unsigned integer of the layout ``fields``."""
    word, at = 0, 0
    for name, bits, _ in fields:
        value = int(row[name])
        lo = -(1 << (bits - 1)) if _ else 0
        if not lo <= value < lo + (1 << bits):
            raise ValueError(f"row field {name} = {value} does not fit {bits} bits")
        word |= (value & ((1 << bits) - 1)) << at
        at += bits
    return word


def unpack_row(word, fields):
    """The dict of a packed row (signed fields sign-extended)."""
    row, at = {}, 0
    for name, bits, signed in fields:
        value = (word >> at) & ((1 << bits) - 1)
        if signed and value >> (bits - 1):
            value -= 1 << bits
        row[name] = value
        at += bits
    return row


def graph_from_rows(rows):
    """The graph a list of rows visits: ``(edges, vt_q, vt_c_q)`` (edges ``(a, b)`` by edge
    index, the thresholds each row gives its edge in the free and the clamped network), or
    None when the rows are not the schedule of one graph (an edge seen with two pairs of
    ends, or an edge index not visited)."""
    ends, vt = {}, {}
    for r in rows:
        if r["term"]:
            ab = (r["other"], r["node"]) if r["plus"] else (r["node"], r["other"])
        elif r["gate"]:
            ab = (r["node"], r["other"])
        else:
            continue
        if ends.setdefault(r["edge"], ab) != ab:
            return None
        vt.setdefault((r["edge"], r["net"]), r["vt"])
    if sorted(ends) != list(range(len(ends))):
        return None
    n = len(ends)
    vt_q = np.array([vt.get((e, 0), vt.get((e, 1), 0)) for e in range(n)], np.int64)
    vt_c_q = np.array([vt.get((e, 1), vt_q[e]) for e in range(n)], np.int64)
    return np.array([ends[e] for e in range(n)], np.int64).reshape(n, 2), vt_q, vt_c_q


def _roles(cfg):
    """The I/O nodes of a config in role order: inputs, rails, output ends (+, -)."""
    nodes = list(cfg.io.inputs) + [n for n, _ in cfg.io.rails]
    return nodes + [n for out in cfg.io.outputs for n in out]


def placement(cfg):
    """The node each I/O role of ``cfg`` takes in a capacity bitstream: the I/O nodes are
    numbered first, 0, 1, ... in role order (inputs, rails, output ends; -1 for the
    missing minus end of a single-ended output), a node in several roles once."""
    placed = {}
    for n in _roles(cfg):
        if n >= 0 and n not in placed:
            placed[n] = len(placed)
    return [placed.get(n, -1) for n in _roles(cfg)], placed


def relabel(cfg):
    """``cfg`` with its nodes renamed for a capacity bitstream: its I/O nodes first
    (:func:`placement`), then the others in order. The edges keep their order (and so
    their gates); every node takes the same step, so no bit of a run changes. Idempotent.
    """
    _, placed = placement(cfg)
    perm = np.empty(cfg.network.n_nodes, np.int64)
    for n, to in placed.items():
        perm[n] = to
    others = [n for n in range(cfg.network.n_nodes) if n not in placed]
    perm[others] = np.arange(len(placed), cfg.network.n_nodes)

    def io_node(n):
        return int(perm[n]) if n >= 0 else n

    io = replace(cfg.io, inputs=tuple(io_node(n) for n in cfg.io.inputs),
                 rails=tuple((io_node(n), v) for n, v in cfg.io.rails),
                 outputs=tuple((io_node(a), io_node(b)) for a, b in cfg.io.outputs))
    net = replace(cfg.network, topology="edges", edges=perm[cfg.network.edges], rows=0, cols=0)
    return replace(cfg, network=net, io=io)


#: The config section of each key of the config hash's document.
_SECTION = {"vt": "device", "k": "device", "gmin": "device", "eta": "learning",
            "alpha": "learning", "gate_min": "learning", "gate_max": "learning",
            "kappa": "schedule", "learn_ticks": "schedule", "relax": "schedule",
            "still_lsb": "schedule", "momentum_shift": "schedule", "v_range": "io"}


def fixed_part(cfg, fmt):
    """What a capacity bitstream fixes, by key (a dict of comparable values): the
    config hash's document but the graph and the I/O nodes, the task's shape, the rails'
    voltages, and the scalar constants of the formats (``fmt``)."""
    doc = {}
    for k, v in hash_document(cfg).items():
        if k in ("nodes", "edges", "inputs", "rails", "outputs"):
            continue
        if isinstance(v, dict):
            doc.update({f"[{k}] {sub}": x for sub, x in v.items()})
        else:
            doc[f"[{_SECTION.get(k, k)}] {k}"] = v
    doc["[io] inputs (count)"] = len(cfg.io.inputs)
    doc["[io] outputs (count)"] = len(cfg.io.outputs)
    doc["[io] outputs (differential)"] = [int(m >= 0) for _, m in cfg.io.outputs]
    doc["[io] rails (volts)"] = [float(v) for _, v in cfg.io.rails]
    doc["[io] nodes (placed)"] = placement(cfg)[0]
    for name in type(fmt).__dataclass_fields__:
        value = getattr(fmt, name)
        if not isinstance(value, np.ndarray) and value is not None:
            doc[f"formats {name}"] = value
    return doc


def fixed_hash(cfg, fmt):
    """32-bit hash of :func:`fixed_part` (IDENTIFY's ``fixed_hash``)."""
    text = json.dumps(fixed_part(cfg, fmt), sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def check_fixed(cfg, mine, theirs):
    """Refuse ``cfg`` when its :func:`fixed_part` ``mine`` differs from the bitstream's,
    naming the first key that differs and both values."""
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise ConfigError(cfg.source, "", f"{key} {mine.get(key)} differs "
                              f"from the bitstream's {theirs.get(key)}")


def capacity_identity(ident, cfg, fmt, capacity, max_degree):
    """The IDENTIFY of a capacity bitstream built from ``cfg`` (``ident``: the one of
    its config): the capacity as ``n_nodes``/``n_edges``, ``graph_rows``, ``max_degree``
    and ``fixed_hash``."""
    return replace(ident, n_nodes=capacity.nodes, n_edges=capacity.edges,
                   graph_rows=max_rows(capacity), max_degree=max_degree,
                   fixed_hash=fixed_hash(cfg, fmt))


def check_capacity(cfg, capacity, max_degree):
    """Refuse a graph beyond ``capacity`` or a node degree above ``max_degree``."""
    N, E = cfg.network.n_nodes, cfg.network.n_edges
    if N > capacity.nodes or E > capacity.edges:
        raise ConfigError(cfg.source, "", f"{N} nodes, {E} edges > capacity "
                          f"{capacity.nodes}:{capacity.edges}")
    degree = int(cfg.network.degrees().max())
    if degree > max_degree:
        raise ConfigError(cfg.source, "network", f"a node of degree {degree} > the "
                          f"bitstream's largest degree {max_degree}")
    if cfg.fabric.streams != 1:
        raise ConfigError(cfg.source, "fabric.streams", "a loaded graph is one network")


def check_loadable(cfg, base, base_fmt, fmt, capacity, max_degree):
    """Refuse ``cfg`` on a bitstream built from ``base`` for ``capacity`` (whose
    accumulators hold ``max_degree`` terms); return it relabeled (:func:`relabel`).

    Raises
    ------
    ConfigError
        Beyond the capacity ("40 nodes, 96 edges > capacity 32:64"), a degree above the
        bitstream's, or a fixed key that differs (naming both values).
    """
    check_capacity(cfg, capacity, max_degree)
    check_fixed(cfg, fixed_part(cfg, fmt), fixed_part(base, base_fmt))
    return relabel(cfg)
