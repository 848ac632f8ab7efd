"""Quasi-static model: the physics truth, as the papers solve it.

Each network is solved for its steady state by Newton's method on Kirchhoff's current
law with the analytic Jacobian; learning follows the paper's locked-step protocol
(free solve, clamp, clamped solve, one gate update per example). The kernels are
compiled with numba and loop over a batch of seeds.

Each Newton step solves a linear system over the free nodes. Networks with fewer than
:data:`SPARSE_MIN_FREE` free nodes (the lab's 4 x 4 torus) use a dense LU with partial
pivoting; larger ones a sparse LU (:mod:`.sparse`) whose ordering and fill are worked
out once per network and held set, then reused by every step of every seed
(``solver="dense"`` or ``"sparse"`` forces one). The two agree to rounding: node
voltages within 1e-12 V (``tests/test_sparse.py``).
"""

from collections import namedtuple

import numpy as np
from numba import njit

from clln import nonideal
from clln.errors import SolverError

from . import sparse
from .noise import next_samples
from .problem import Problem
from .state import restore

#: Newton stops when no node moves by more than this (V).
NEWTON_TOL = 1e-11
NEWTON_MAX_ITER = 200
#: Net current (units of K/2, V^2; 4e-11 A for the paper's K) below which a solve that
#: Newton could not finish is still accepted (see :func:`solve_network`).
LOOSE_RESIDUAL_TOL = 1e-7
#: ... or when no node's net current exceeds this (units of K/2, V^2; about 4e-17 A
#: for the paper's K): below it, only the leak can still move a floating node.
RESIDUAL_TOL = 1e-13
#: Free nodes from which :func:`linear_system` chooses the sparse LU (:mod:`.sparse`)
#: over the dense one: above the lab's 4 x 4 torus (12 to 15 free nodes), which keeps the
#: dense solve it was always solved with (``bench/scaling.py`` measures both).
SPARSE_MIN_FREE = 16
#: The ``solver`` choices of :class:`QuasiStaticModel` and :func:`linear_system`.
SOLVERS = ("auto", "dense", "sparse")

#: The linear solve of one network's Newton steps (:func:`linear_system`): dense LU with
#: partial pivoting on ``jac`` (nodes, nodes), the Jacobian kept in ``jac0``; or, if
#: ``sparse``, :mod:`.sparse` on ``pattern``, the Jacobian kept in ``vals0``, factored in
#: ``vals``, the right-hand side in ``rhs`` (elimination order). The other's arrays are empty.
Linear = namedtuple("Linear", ["sparse", "jac", "jac0", "pattern", "vals", "vals0", "rhs"])


@njit(cache=True)
def _lu_solve(jac, rhs):
    """Solve ``jac @ x = rhs`` in place (Gaussian elimination, partial pivoting)."""
    n = len(rhs)
    for col in range(n):
        piv = col
        for r in range(col + 1, n):
            if abs(jac[r, col]) > abs(jac[piv, col]):
                piv = r
        if piv != col:
            for c in range(n):
                jac[col, c], jac[piv, c] = jac[piv, c], jac[col, c]
            rhs[col], rhs[piv] = rhs[piv], rhs[col]
        d = jac[col, col]
        for r in range(col + 1, n):
            f = jac[r, col] / d
            if f != 0.0:
                for c in range(col, n):
                    jac[r, c] -= f * jac[col, c]
                rhs[r] -= f * rhs[col]
    for r in range(n - 1, -1, -1):
        acc = rhs[r]
        for c in range(r + 1, n):
            acc -= jac[r, c] * rhs[c]
        rhs[r] = acc / jac[r, r]


@njit(cache=True)
def _held_range(v, held):
    """Lowest and highest held voltage: the box every node's solution lies in."""
    lo, hi = np.inf, -np.inf
    for i in range(len(v)):
        if held[i]:
            lo, hi = min(lo, v[i]), max(hi, v[i])
    return lo, hi


@njit(cache=True, inline="always")
def _edge(v, gate, device, leak, a, b, e):
    """Current of edge ``e`` from ``a`` to ``b`` (units of K/2) and its derivatives by
    ``V_a`` and by ``V_b``."""
    ov, gain = gate[e] - device[0, e], device[1, e]
    ua = max(ov - v[a], 0.0)
    ub = max(ov - v[b], 0.0)
    s = gain * (ub * ub - ua * ua) + leak * (v[a] - v[b])
    return s, 2.0 * gain * ua + leak, -2.0 * gain * ub - leak


@njit(cache=True)
def _residual(v, gate, device, leak, edge_a, edge_b, held, res):
    """Net current into every free node (units of K/2), 0 at held nodes.

    Returns the squared norm of the residual over the free nodes.
    """
    res[:] = 0.0
    for e in range(len(edge_a)):
        a, b = edge_a[e], edge_b[e]
        s, _, _ = _edge(v, gate, device, leak, a, b, e)
        res[a] -= s
        res[b] += s
    norm = 0.0
    for i in range(len(v)):
        if held[i]:
            res[i] = 0.0
        norm += res[i] * res[i]
    return norm


@njit(cache=True)
def _jacobian(v, gate, device, leak, edge_a, edge_b, held, lin):
    """The Jacobian of :func:`_residual` at ``v``, into ``lin.jac0`` (held rows: the
    identity) or, for a sparse ``lin``, into ``lin.vals0`` (free rows and columns only)."""
    if lin.sparse:
        vals, entries = lin.vals0, lin.pattern.edge_entries
        vals[:] = 0.0
        for e in range(len(edge_a)):
            _, ds_a, ds_b = _edge(v, gate, device, leak, edge_a[e], edge_b[e], e)
            for k, d in ((0, -ds_a), (1, -ds_b), (2, ds_a), (3, ds_b)):
                if entries[e, k] >= 0:
                    vals[entries[e, k]] += d
        return
    jac = lin.jac0
    jac[:, :] = 0.0
    for e in range(len(edge_a)):
        a, b = edge_a[e], edge_b[e]
        _, ds_a, ds_b = _edge(v, gate, device, leak, a, b, e)
        jac[a, a] -= ds_a
        jac[a, b] -= ds_b
        jac[b, a] += ds_a
        jac[b, b] += ds_b
    for i in range(len(v)):
        if held[i]:
            jac[i, :] = 0.0
            jac[i, i] = 1.0


@njit(cache=True)
def _newton_step(lin, lam, held, res, step):
    """The Newton step ``(J - lambda I) step = -res`` over the free nodes (0 at held
    ones), with the Jacobian :func:`_jacobian` left in ``lin``."""
    if lin.sparse:
        order, vals, rhs = lin.pattern.order, lin.vals, lin.rhs
        vals[:] = lin.vals0
        for p in range(len(order)):
            vals[p] -= lam
            rhs[p] = -res[order[p]]
        sparse.factor(lin.pattern, vals)
        sparse.solve(lin.pattern, vals, rhs)
        step[:] = 0.0
        for p in range(len(order)):
            step[order[p]] = rhs[p]
        return
    jac = lin.jac
    jac[:, :] = lin.jac0
    for i in range(len(step)):
        step[i] = -res[i]
        if not held[i]:
            jac[i, i] -= lam
    _lu_solve(jac, step)


@njit(cache=True)
def _newton(v, gate, device, leak, edge_a, edge_b, held, lin, res):
    """Newton solve of one network in place; ``v`` holds the guess and the held values.

    Parameters
    ----------
    v : (nodes,) float
        Initial guess; held nodes keep their values.
    gate : (edges,) float
    device : (2, edges) float
        Threshold (V) and relative gain (0: a dead edge) of every edge's transistor.
    leak : float
        Linear conductance across every edge, in units of K/2 (SPICE's gmin).
    held : (nodes,) bool
        Nodes held by a source.
    lin : Linear
        The linear solver and its scratch (:func:`linear_system`).
    res : scratch array (nodes,).

    Returns
    -------
    int
        Iterations used, or -1 if Newton did not converge.

    Notes
    -----
    Every edge current rises with its own terminal voltage, so the solution lies
    between the lowest and highest held voltage (a maximum principle): iterates are
    projected into that box. Where edges saturate or cut off the Jacobian can be nearly
    singular (a node whose edges all saturate does not feel its own voltage); a step
    that does not lower the residual is retried with ``J - lambda I`` (Levenberg-
    Marquardt), which tends to the physical relaxation direction as lambda grows.
    Convergence is declared only on a pure Newton step (lambda = 0).
    """
    n = len(v)
    lo, hi = _held_range(v, held)
    for i in range(n):
        if not held[i]:
            v[i] = min(max(v[i], lo), hi)
    trial = np.empty(n)
    step = np.empty(n)
    scratch = np.empty(n)
    norm = _residual(v, gate, device, leak, edge_a, edge_b, held, res)
    _jacobian(v, gate, device, leak, edge_a, edge_b, held, lin)
    lam = 0.0
    for it in range(NEWTON_MAX_ITER):
        worst = 0.0
        for i in range(n):
            worst = max(worst, abs(res[i]))
        if worst < RESIDUAL_TOL:
            return it
        _newton_step(lin, lam, held, res, step)
        scale = 1.0
        accepted = False
        for _ in range(8):
            moved = 0.0
            for i in range(n):
                if held[i]:
                    trial[i] = v[i]
                else:
                    trial[i] = min(max(v[i] + scale * step[i], lo), hi)
                    moved = max(moved, abs(trial[i] - v[i]))
            if lam == 0.0 and scale == 1.0 and moved < NEWTON_TOL:
                for i in range(n):
                    v[i] = trial[i]
                return it + 1
            trial_norm = _residual(trial, gate, device, leak, edge_a, edge_b, held, scratch)
            if trial_norm < norm:
                accepted = True
                break
            scale *= 0.5
        if accepted:
            for i in range(n):
                v[i] = trial[i]
            norm = _residual(v, gate, device, leak, edge_a, edge_b, held, res)
            _jacobian(v, gate, device, leak, edge_a, edge_b, held, lin)
            lam = 0.0 if lam < 1e-6 else lam * 0.25
        else:
            lam = max(4.0 * lam, 1e-6)
    return -1


@njit(cache=True)
def _relax(v, gate, device, leak, edge_a, edge_b, held, res, n_steps):
    """Explicit relaxation ``V += dt * (net current in)``: slow, but always heads downhill.

    ``dt`` is set from the largest conductance so that each step is stable.
    """
    lo, hi = _held_range(v, held)
    cond = np.empty(len(v))
    for _ in range(n_steps):
        _residual(v, gate, device, leak, edge_a, edge_b, held, res)
        cond[:] = 0.0
        for e in range(len(edge_a)):
            a, b = edge_a[e], edge_b[e]
            _, ds_a, ds_b = _edge(v, gate, device, leak, a, b, e)
            cond[a] += ds_a
            cond[b] -= ds_b
        diag = 1e-12
        for i in range(len(v)):
            if not held[i]:
                diag = max(diag, cond[i])
        for i in range(len(v)):
            if not held[i]:
                v[i] = min(max(v[i] + 0.5 * res[i] / diag, lo), hi)


@njit(cache=True)
def solve_network(v, gate, device, leak, edge_a, edge_b, held, lin, res):
    """Steady state of one network, in place; ``v`` holds the guess and the held values.

    Newton (:func:`_newton`) first; if it fails, a few thousand relaxation steps bring
    the state into Newton's basin and Newton runs again (up to three rounds). A node
    that settles exactly at the cut-off of all its edges is a double root, where Newton
    converges slowly: such a solve is accepted once no net current exceeds
    ``LOOSE_RESIDUAL_TOL``. ``lin`` is the linear solver of this network's held nodes
    (:func:`linear_system`); ``res`` a scratch array (nodes,).

    Returns
    -------
    int
        Newton iterations of the last round (``NEWTON_MAX_ITER`` for a loose
        acceptance), or -1 if the solve failed.
    """
    for _ in range(4):
        it = _newton(v, gate, device, leak, edge_a, edge_b, held, lin, res)
        if it >= 0:
            return it
        _relax(v, gate, device, leak, edge_a, edge_b, held, res, 2000)
    _residual(v, gate, device, leak, edge_a, edge_b, held, res)
    worst = 0.0
    for i in range(len(v)):
        worst = max(worst, abs(res[i]))
    return NEWTON_MAX_ITER if worst < LOOSE_RESIDUAL_TOL else -1


@njit(cache=True)
def _present(gates, x, leak, edge_a, edge_b, driven, clamped, drive, out_plus, out_minus,
             target, eta, rate, gate_min, gate_max, learn, warm_free, warm_clamped, observed,
             lin_free, lin_clamped):
    """Present one example to every seed: free solve, and if ``learn`` the update.

    ``x`` is a :class:`Chip`; ``lin_free``, ``lin_clamped`` the linear solvers of the two
    networks. Returns the index of a seed whose solve failed, or -1.
    """
    n_seeds, n = warm_free.shape
    res = np.empty(n)
    for s in range(n_seeds):
        vf = warm_free[s]
        for i in range(n):
            if driven[i]:
                vf[i] = drive[i]
        if solve_network(vf, gates[s], x.free, leak, edge_a, edge_b, driven, lin_free, res) < 0:
            return s
        for k in range(len(out_plus)):
            p, m = out_plus[k], out_minus[k]
            observed[s, k] = vf[p] - (vf[m] if m >= 0 else 0.0)
        if not learn:
            continue
        vc = warm_clamped[s]
        vc[:] = vf
        for k in range(len(out_plus)):
            p, m = out_plus[k], out_minus[k]
            if m < 0:
                vc[p] = vf[p] + eta * (target[k] - vf[p])
            else:
                half = 0.5 * eta * (target[k] - observed[s, k])
                vc[p] = vf[p] + half
                vc[m] = vf[m] - half
        if solve_network(vc, gates[s], x.clamped, leak, edge_a, edge_b, clamped, lin_clamped,
                         res) < 0:
            return s
        for e in range(len(edge_a)):
            if x.frozen[e]:
                continue
            df = vf[edge_a[e]] - vf[edge_b[e]] + x.noise_f[e]
            dc = vc[edge_a[e]] - vc[edge_b[e]] + x.noise_c[e]
            g = gates[s, e] + rate * (df * df - dc * dc + x.offset[e])
            g += x.droop * (x.rest - gates[s, e])
            gates[s, e] = min(max(g, gate_min), gate_max)
    return -1


def linear_system(solver, n_nodes, edge_a, edge_b, held):
    """The :class:`Linear` solver of a network whose ``held`` nodes are fixed.

    ``solver`` is ``"dense"``, ``"sparse"`` or ``"auto"``: sparse from
    :data:`SPARSE_MIN_FREE` free nodes on (where its symbolic analysis, done here once,
    pays off), dense below. Both solve the same equations; they differ by rounding.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    held = np.asarray(held, bool)
    if solver == "auto":
        solver = "sparse" if (~held).sum() >= SPARSE_MIN_FREE else "dense"
    no_values, no_jac = np.empty(0), np.empty((0, 0))
    if solver == "dense":
        return Linear(False, np.empty((n_nodes, n_nodes)), np.empty((n_nodes, n_nodes)),
                      sparse.empty_pattern(), no_values, no_values, no_values)
    pattern = sparse.analyse(n_nodes, edge_a, edge_b, held)
    size = sparse.values_size(pattern)
    return Linear(True, no_jac, no_jac, pattern, np.empty(size), np.empty(size),
                  np.empty(len(pattern.order)))


#: One chip's non-idealities as the quasi-static kernels take them: ``free``, ``clamped``
#: (2, edges) thresholds and gains (0 for dead edges), learning-rule ``offset`` (V^2),
#: ``frozen`` gates, the gate ``droop`` per example toward ``rest``, and this example's
#: read noise on every edge's drops (V).
Chip = namedtuple("Chip", ["free", "clamped", "offset", "frozen", "droop", "rest", "noise_f",
                           "noise_c"])


class QuasiStaticModel:
    """Quasi-static coupled learning for a batch of seeds of one config.

    Parameters
    ----------
    cfg : clln.config.Config
    seeds : sequence of int
        One independent network per seed (the seed draws the initial gates).
    solver : {"auto", "dense", "sparse"}
        The linear solve of the Newton steps (:func:`linear_system`).

    Attributes
    ----------
    solver : str
        ``"dense"`` or ``"sparse"``: the one chosen.
    """

    name = "quasistatic"

    def __init__(self, cfg, seeds, solver="auto"):
        self.cfg = cfg
        self.problem = Problem.from_config(cfg)
        p = self.problem
        self.seeds = list(seeds)
        self.gates = np.stack([cfg.learning.initial_gates(p.n_edges, s) for s in self.seeds])
        imp = nonideal.draw(cfg)
        # one update per example stands for learn_ticks learning ticks of the tick models
        droop = 1.0 - (1.0 - cfg.nonideal.gate_leak) ** max(cfg.schedule.learn_ticks, 1)
        zeros = np.zeros(p.n_edges)
        self.chip = Chip(np.stack([imp.vt_free, imp.k_free]),
                         np.stack([imp.vt_clamped, imp.k_clamped]), imp.offset,
                         imp.frozen, droop, nonideal.gate_rest(cfg), zeros, zeros.copy())
        self.noise = nonideal.noise_states(cfg).astype(np.int64)
        # the update stands for learn_ticks updates, each with its own noisy reading:
        # their average reads with 1/sqrt(learn_ticks) of the noise
        self._noise_scale = nonideal.noise_scale(cfg) / np.sqrt(max(cfg.schedule.learn_ticks, 1))
        self.leak = 2 * cfg.device.gmin / cfg.device.k
        start = np.mean(p.drive[:, p.driven])
        shape = (p.n_examples, len(self.seeds), p.n_nodes)
        self._warm_free = np.full(shape, start)
        self._warm_clamped = np.full(shape, start)
        self._lin_free = linear_system(solver, p.n_nodes, p.edge_a, p.edge_b, p.driven)
        self.solver = "sparse" if self._lin_free.sparse else "dense"
        # a dense solve's scratch does not depend on the held nodes: the two share it
        self._lin_clamped = (linear_system("sparse", p.n_nodes, p.edge_a, p.edge_b, p.clamped)
                             if self._lin_free.sparse else self._lin_free)

    def present(self, example, learn):
        """Solve the free network for ``example``; learn from it if asked.

        Returns
        -------
        ndarray (seeds, outputs)
            Free outputs (V), observed before the update.
        """
        p, cfg = self.problem, self.cfg
        observed = np.empty((len(self.seeds), len(p.out_plus)))
        chip = self.chip
        if learn and self._noise_scale:
            drawn_f, drawn_c = np.empty(p.n_edges, np.int64), np.empty(p.n_edges, np.int64)
            next_samples(self.noise, drawn_f, drawn_c)
            chip = chip._replace(noise_f=drawn_f * self._noise_scale,
                                 noise_c=drawn_c * self._noise_scale)
        failed = _present(
            self.gates, chip, self.leak, p.edge_a, p.edge_b, p.driven, p.clamped,
            p.drive[example], p.out_plus, p.out_minus, p.targets[example], cfg.learning.eta,
            cfg.learning.alpha / cfg.learning.eta, cfg.learning.gate_min, cfg.learning.gate_max,
            learn, self._warm_free[example], self._warm_clamped[example], observed,
            self._lin_free, self._lin_clamped)
        if failed >= 0:
            raise SolverError(f"the steady-state solve did not converge "
                              f"(seed {self.seeds[failed]}, example {example})")
        return observed

    def evaluate(self):
        """Free outputs (seeds, examples, outputs) of every example, with no learning."""
        return np.stack([self.present(i, False) for i in range(self.problem.n_examples)], 1)

    def gates_volts(self):
        return self.gates.copy()

    def state(self):
        """Everything that carries over from one example to the next (copies): gates,
        read-noise generators and the last solution of each example in both networks,
        from which the next solve of that example starts (Newton stops within its
        tolerance, so the start shows in the last bits). :meth:`load_state` of a model
        of the same config and seeds continues bit for bit from it."""
        return {k: v.copy() for k, v in self._state_arrays().items()}

    def load_state(self, state):
        """Continue from a :meth:`state` (ValueError if it does not fit this model)."""
        restore(self._state_arrays(), state)

    def _state_arrays(self):
        return {"gates": self.gates, "noise": self.noise, "warm_free": self._warm_free,
                "warm_clamped": self._warm_clamped}

    def free_state(self, example):
        """Node voltages (seeds, nodes) of the last free solve of ``example``."""
        return self._warm_free[example].copy()
