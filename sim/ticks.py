"""What the two tick models (dynamic float, fixed point) share: state and schedule.

A tick model holds, per seed, the node voltages of the free and the clamped network
and the gates. :meth:`TickModel.run` advances them by whole ticks; the presentation
schedule of ``[schedule]`` (settle ticks with learning off, then learning ticks) is
built on it here. Subclasses supply the kernel and the number conversions.
"""

import numpy as np

from clln.formats import check_tick_stability

from .problem import Problem


class TickModel:
    """Base of the dynamic and fixed-point models.

    Parameters
    ----------
    cfg : clln.config.Config
    seeds : sequence of int
        One independent network per seed.

    Attributes
    ----------
    v_free, v_clamped : ndarray (seeds, nodes)
        Node voltages in the model's own number type.
    gates : ndarray (seeds, edges)
        Gates in the model's own number type.
    flags : ndarray of int64 (seeds,)
        Sticky saturation flags: which values were clipped to their width (fixed point).
    ticks : int
        Ticks run since construction.
    """

    name = ""

    def __init__(self, cfg, seeds):
        self.cfg = cfg
        self.problem = Problem.from_config(cfg)
        self.seeds = list(seeds)
        check_tick_stability(cfg, self.kappa)
        p = self.problem
        init = np.stack([cfg.learning.initial_gates(p.n_edges, s) for s in self.seeds])
        self.gates = self.gates_from_volts(init)
        self.v_free = self.volts_to_state(np.zeros((len(self.seeds), p.n_nodes)))
        self.v_clamped = self.v_free.copy()
        self.flags = np.zeros(len(self.seeds), np.int64)
        self.ticks = 0
        self._drive = self.volts_to_state(p.drive)
        self._targets = self.volts_to_state(p.targets)

    # -- supplied by subclasses --------------------------------------------------------
    kappa = 0.0

    def volts_to_state(self, volts):
        raise NotImplementedError

    def gates_from_volts(self, volts):
        raise NotImplementedError

    def state_to_volts(self, values):
        raise NotImplementedError

    def gates_volts(self):
        raise NotImplementedError

    def _kernel(self, n_ticks, example, learn):
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def run(self, n_ticks, example, learn):
        """Advance every seed by ``n_ticks`` ticks with ``example`` applied."""
        if n_ticks > 0:
            self._kernel(n_ticks, example, learn)
            self.ticks += n_ticks

    def outputs(self):
        """Free-network outputs (seeds, outputs) in volts."""
        p = self.problem
        v = self.state_to_volts(self.v_free)
        return v[:, p.out_plus] - np.where(p.out_minus >= 0, v[:, np.maximum(p.out_minus, 0)], 0)

    def present(self, example, learn):
        """One example of the schedule: settle ticks, then learning ticks.

        Returns the free outputs (seeds, outputs) at the end of the settle phase, or at
        the end of the example when there are no settle ticks (continuous learning).
        """
        sch = self.cfg.schedule
        self.run(sch.settle_ticks, example, False)
        observed = self.outputs() if sch.settle_ticks else None
        self.run(sch.learn_ticks, example, learn)
        return observed if observed is not None else self.outputs()

    def evaluate(self):
        """Free outputs (seeds, examples, outputs) of every example with learning off.

        Each example runs ``settle_ticks + learn_ticks`` ticks; the node state is
        restored afterwards, so evaluation leaves the training trajectory untouched.
        """
        saved = self.v_free.copy(), self.v_clamped.copy(), self.ticks, self.flags.copy()
        ticks = self.cfg.schedule.settle_ticks + self.cfg.schedule.learn_ticks
        outs = []
        for i in range(self.problem.n_examples):
            self.run(ticks, i, False)
            outs.append(self.outputs())
        self.v_free, self.v_clamped, self.ticks, self.flags = saved
        return np.stack(outs, 1)
