"""Sparse LU on a fixed pattern, for the Newton steps of the quasi-static model.

The Jacobian of a network's free nodes is structurally symmetric (an edge couples both
its ends) and, negated, column diagonally dominant: each column holds a node's own
conductance on the diagonal and the same conductances, split among its neighbours, off
it. Gaussian elimination keeps that dominance, so it needs no pivoting (partial pivoting
would keep the diagonal too), and the fill of the factors depends only on the graph and
on which nodes are held. :func:`analyse` therefore orders the free nodes once per graph
and records where every update of the elimination lands; :func:`factor` and
:func:`solve` then run on plain arrays, any number of times.

The ordering is whichever of minimum degree and nested dissection (separators from
breadth-first level sets) leaves less elimination work; on an L x L torus nested
dissection does (a third fewer updates at 32 x 32), on small or irregular graphs
minimum degree may.

Values live in one vector: the diagonal (``m`` entries, the free nodes in elimination
order), then the off-diagonal pairs interleaved, ``U[p, j]`` at ``m + 2 t`` and
``L[j, p]`` at ``m + 2 t + 1`` for the slot ``t`` of ``j`` in ``index[ptr[p]:ptr[p+1]]``
(the later neighbours of p in the filled graph, sorted).
"""

import heapq
from collections import deque, namedtuple

import numpy as np
from numba import njit

#: The structure of one network's sparse solve (see :func:`analyse`).
#: ``order``: free nodes in elimination order; ``ptr``, ``index``: the filled pattern;
#: ``pair_slot``: for every pivot p and pair of its later neighbours i < j, in the order
#: :func:`factor` visits them, the slot of (i, j) in row i;
#: ``edge_entries`` (edges, 4): where the Jacobian entries (a, a), (a, b), (b, a), (b, b)
#: of every edge go in the value vector, -1 for an entry in a held row or column.
Pattern = namedtuple("Pattern", ["order", "ptr", "index", "pair_slot", "edge_entries"])

#: Pieces of at most this many nodes are ordered by minimum degree in nested dissection.
DISSECTION_LEAF = 64


def adjacency(n_nodes, edges, free):
    """Neighbour sets of the graph among the ``free`` nodes (empty for held ones)."""
    adjacent = [set() for _ in range(n_nodes)]
    for a, b in edges:
        if free[a] and free[b]:
            adjacent[a].add(b)
            adjacent[b].add(a)
    return adjacent


def _eliminate(adjacent, k):
    """Eliminate node ``k`` from the graph ``adjacent`` (in place): its neighbours
    become a clique. Returns them (its row of the filled pattern)."""
    clique = adjacent[k]
    for u in clique:
        adjacent[u] |= clique
        adjacent[u] -= {u, k}
    adjacent[k] = set()
    return clique


def minimum_degree(adjacent, nodes):
    """Minimum-degree order of ``nodes`` in the subgraph they induce (ties to the lowest)."""
    inside = set(nodes)
    graph = {u: adjacent[u] & inside for u in nodes}
    heap = [(len(graph[u]), u) for u in nodes]
    heapq.heapify(heap)
    order, done = [], set()
    while heap:
        degree, k = heapq.heappop(heap)
        if k in done or degree != len(graph[k]):
            continue   # a stale heap entry
        done.add(k)
        order.append(k)
        for u in _eliminate(graph, k):
            heapq.heappush(heap, (len(graph[u]), u))
    return order


def _levels(adjacent, start, inside):
    """Breadth-first levels from ``start`` within ``inside``: (level by node, visit order)."""
    level, order, queue = {start: 0}, [start], deque([start])
    while queue:
        u = queue.popleft()
        for w in adjacent[u]:
            if w in inside and w not in level:
                level[w] = level[u] + 1
                order.append(w)
                queue.append(w)
    return level, order


def _components(adjacent, nodes):
    """Connected components of the subgraph induced by ``nodes``, each in visit order."""
    left, parts = set(nodes), []
    while left:
        _, part = _levels(adjacent, min(left), left)
        parts.append(part)
        left -= set(part)
    return parts


def nested_dissection(adjacent, nodes, leaf=DISSECTION_LEAF):
    """Nested-dissection order of ``nodes``, each connected part of them on its own
    (:func:`_dissect`)."""
    order = []
    for part in _components(adjacent, nodes):
        order += _dissect(adjacent, part, leaf)
    return order


def _dissect(adjacent, nodes, leaf):
    """Nested dissection of connected ``nodes``: split by a level of a breadth-first
    search from a far node (the one that halves them, less its nodes with no neighbour
    beyond it), the parts first, the separator last; at most ``leaf`` nodes, or too
    round to split, by minimum degree."""
    if len(nodes) <= leaf:
        return minimum_degree(adjacent, nodes)
    inside = set(nodes)
    start = min(nodes)
    for _ in range(3):  # a pseudo-peripheral start: the last node reached, again
        level, visit = _levels(adjacent, start, inside)
        start = visit[-1]
    level, visit = _levels(adjacent, start, inside)
    depth = level[visit[-1]]
    if depth < 2:
        return minimum_degree(adjacent, nodes)
    counts = np.cumsum(np.bincount([level[u] for u in visit]))
    cut = min(max(int(np.searchsorted(counts, len(nodes) / 2)), 1), depth - 1)
    separator = [u for u in visit if level[u] == cut
                 and any(level.get(w) == cut + 1 for w in adjacent[u])]
    cut_off = set(separator)
    rest = [u for u in visit if u not in cut_off]
    return nested_dissection(adjacent, rest, leaf) + separator


def fill(adjacent, order):
    """Rows of the filled pattern: the later neighbours of each node of ``order``."""
    graph = [set(s) for s in adjacent]
    return [_eliminate(graph, k) for k in order]


def updates(rows):
    """Updates an elimination with these filled rows makes (pairs of later neighbours)."""
    return sum(len(r) * (len(r) - 1) // 2 for r in rows)


@njit(cache=True)
def _pair_slots(ptr, index, pair_slot):
    """Fill ``pair_slot``: for pivot p and its later neighbours i = index[t1] <
    j = index[t2], the slot of j in row i (which holds it: the filled graph is chordal)."""
    k = 0
    for p in range(len(ptr) - 1):
        for t1 in range(ptr[p], ptr[p + 1]):
            i = index[t1]
            row = index[ptr[i]:ptr[i + 1]]
            for t2 in range(t1 + 1, ptr[p + 1]):
                pair_slot[k] = ptr[i] + np.searchsorted(row, index[t2])
                k += 1


def analyse(n_nodes, edge_a, edge_b, held):
    """The :class:`Pattern` of a graph whose ``held`` nodes are fixed by sources."""
    free = ~np.asarray(held, bool)
    adjacent = adjacency(n_nodes, zip(edge_a.tolist(), edge_b.tolist(), strict=True), free)
    nodes = np.flatnonzero(free).tolist()
    candidates = []
    for order in (minimum_degree(adjacent, nodes), nested_dissection(adjacent, nodes)):
        rows = fill(adjacent, order)
        candidates.append((updates(rows), order, rows))
    _, order, rows = min(candidates, key=lambda c: c[0])
    position = np.full(n_nodes, -1, np.int64)
    position[order] = np.arange(len(order))
    sizes = np.array([len(r) for r in rows], np.int64)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    index = np.empty(ptr[-1], np.int64)
    for p, row in enumerate(rows):
        index[ptr[p]:ptr[p + 1]] = np.sort(position[list(row)])
    pair_slot = np.empty(updates(rows), np.int32)
    _pair_slots(ptr, index, pair_slot)
    return Pattern(np.array(order, np.int64), ptr, index, pair_slot,
                   _edge_entries(position, ptr, index, edge_a, edge_b))


def _edge_entries(position, ptr, index, edge_a, edge_b):
    """Value-vector slot of each edge's four Jacobian entries (-1: a held row or column)."""
    m = len(ptr) - 1
    entries = np.full((len(edge_a), 4), -1, np.int64)
    for e, (a, b) in enumerate(zip(edge_a, edge_b, strict=True)):
        pa, pb = position[a], position[b]
        if pa >= 0:
            entries[e, 0] = pa
        if pb >= 0:
            entries[e, 3] = pb
        if pa >= 0 and pb >= 0:
            lo, hi = min(pa, pb), max(pa, pb)
            upper = m + 2 * (ptr[lo] + np.searchsorted(index[ptr[lo]:ptr[lo + 1]], hi))
            entries[e, 1], entries[e, 2] = (upper, upper + 1) if pa < pb else (upper + 1, upper)
    return entries


def values_size(pattern):
    """Length of a value vector of ``pattern``."""
    return len(pattern.order) + 2 * len(pattern.index)


def empty_pattern():
    """A :class:`Pattern` of no free node (the placeholder of a dense solve)."""
    none = np.zeros(0, np.int64)
    return Pattern(none, np.zeros(1, np.int64), none, np.zeros(0, np.int32),
                   np.zeros((0, 4), np.int64))


@njit(cache=True)
def factor(pattern, vals):
    """LU factorisation in place, no pivoting: afterwards the diagonal holds U's, the
    pairs U's rows and L's columns (unit diagonal implied)."""
    ptr, index, pair_slot = pattern.ptr, pattern.index, pattern.pair_slot
    m = len(ptr) - 1
    k = 0
    for p in range(m):
        lo, hi = ptr[p], ptr[p + 1]
        d = vals[p]
        for t in range(lo, hi):
            vals[m + 2 * t + 1] /= d
            vals[index[t]] -= vals[m + 2 * t + 1] * vals[m + 2 * t]
        for t1 in range(lo, hi):
            l_i, u_i = vals[m + 2 * t1 + 1], vals[m + 2 * t1]
            for t2 in range(t1 + 1, hi):
                s = np.uint64(m + 2 * pair_slot[k])   # unsigned: no wraparound check
                vals[s] -= l_i * vals[m + 2 * t2]
                vals[s + 1] -= vals[m + 2 * t2 + 1] * u_i
                k += 1


@njit(cache=True)
def solve(pattern, vals, rhs):
    """Solve ``L U x = rhs`` in place with the factors :func:`factor` left in ``vals``;
    ``rhs`` is indexed by elimination position."""
    ptr, index = pattern.ptr, pattern.index
    m = len(ptr) - 1
    for p in range(m):
        x = rhs[p]
        for t in range(ptr[p], ptr[p + 1]):
            rhs[index[t]] -= vals[m + 2 * t + 1] * x
    for p in range(m - 1, -1, -1):
        acc = rhs[p]
        for t in range(ptr[p], ptr[p + 1]):
            acc -= vals[m + 2 * t] * rhs[index[t]]
        rhs[p] = acc / vals[p]
