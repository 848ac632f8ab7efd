"""What the two tick models (dynamic float, fixed point) share: state and schedule.

A tick model holds, per seed, the node voltages of the free and the clamped network
and the gates. :meth:`TickModel.run` advances them by whole ticks; the presentation
schedule of ``[schedule]`` (settle ticks with learning off, a fixed number or until the
network is still, then learning ticks) is built on it here. Subclasses supply the kernel
and the number conversions.
"""

import numpy as np

from clln.formats import check_tick_stability

from .problem import Problem
from .state import restore


class TickModel:
    """Base of the dynamic and fixed-point models.

    Parameters
    ----------
    cfg : clln.config.Config
    seeds : sequence of int
        One independent network per seed.

    Attributes
    ----------
    h_free, h_clamped : ndarray (seeds, nodes)
        The node state the kernel steps, in the model's own number type: the voltages
        with ``node_extra_bits`` more fraction bits (fixed point; the voltages otherwise).
    v_free, v_clamped : ndarray (seeds, nodes)
        Node voltages, ``H >> node_extra_bits`` (:attr:`h_free` itself when that is 0;
        else read-only copies, and assigning one sets the state to the voltages with
        zero extra bits).
    m_free, m_clamped : ndarray (seeds, nodes)
        The node velocities of ``relax = "momentum"`` (the last move of each settling
        node's state; 0 for driven and clamped nodes and under the other node steps).
    gates : ndarray (seeds, edges)
        Gates in the model's own number type.
    flags : ndarray of int64 (seeds,)
        Sticky saturation flags: which values were clipped to their width (fixed point).
    ticks : int
        Ticks run since construction (the most of any seed, per call).
    example_ticks : list of ndarray (seeds,)
        Ticks of every example presented (settle and learn), per seed.
    """

    name = ""
    #: Extra fraction bits of the node state over the voltages (fixed point only).
    node_extra_bits = 0

    def __init__(self, cfg, seeds):
        self.cfg = cfg
        self.problem = Problem.from_config(cfg)
        self.seeds = list(seeds)
        check_tick_stability(cfg, self.kappa)
        p = self.problem
        init = np.stack([cfg.learning.initial_gates(p.n_edges, s) for s in self.seeds])
        self.gates = self.gates_from_volts(init)
        self.v_free = self.volts_to_state(np.zeros((len(self.seeds), p.n_nodes)))
        self.v_clamped = self.volts_to_state(np.zeros((len(self.seeds), p.n_nodes)))
        self.flags = np.zeros(len(self.seeds), np.int64)
        self.ticks = 0
        self.example_ticks = []
        self._drive = self.volts_to_state(p.drive)
        self._targets = self.volts_to_state(p.targets)

    @property
    def v_free(self):
        return self._voltages(self.h_free)

    @v_free.setter
    def v_free(self, values):
        self.h_free = self._state_of(values)
        self.m_free = np.zeros_like(self.h_free)

    @property
    def v_clamped(self):
        return self._voltages(self.h_clamped)

    @v_clamped.setter
    def v_clamped(self, values):
        self.h_clamped = self._state_of(values)
        self.m_clamped = np.zeros_like(self.h_clamped)

    def _voltages(self, h):
        if not self.node_extra_bits:
            return h
        v = h >> self.node_extra_bits
        v.flags.writeable = False          # a copy: writing it would change nothing
        return v

    def _state_of(self, values):
        if not self.node_extra_bits:
            return values
        return np.asarray(values, np.int64) << self.node_extra_bits

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

    def _kernel(self, n_ticks, example, learn, still_ticks, used):
        """Run up to ``n_ticks`` ticks, or until still (``still_ticks > 0``); ``used``
        (seeds,) receives the ticks each seed ran."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def state(self):
        """Everything that carries over from one example to the next (copies): gates,
        node states of both networks (they are not reset between examples), the sticky
        flags, the tick count and the read-noise generators. :meth:`load_state` of a model
        of the same config and seeds continues bit for bit from it."""
        arrays = {k: v.copy() for k, v in self._state_arrays().items()}
        return dict(arrays, ticks=np.array(self.ticks, np.int64))

    def load_state(self, state):
        """Continue from a :meth:`state` (ValueError if it does not fit this model)."""
        restore(dict(self._state_arrays(), ticks=np.zeros((), np.int64)), state)
        self.ticks = int(state["ticks"])

    def _state_arrays(self):
        # the node states H (the voltages themselves without node_extra_bits); their
        # velocities only under momentum (the other steps' states keep the arrays they had)
        arrays = {"gates": self.gates, "h_free": self.h_free, "h_clamped": self.h_clamped,
                  "flags": self.flags, "noise": self.edges.noise}
        if self.cfg.schedule.relax == "momentum":
            arrays.update(m_free=self.m_free, m_clamped=self.m_clamped)
        return arrays

    @property
    def still_ticks(self):
        """Consecutive still ticks that end a settle phase (0: ``settle = "fixed"``)."""
        sch = self.cfg.schedule
        return sch.still_ticks if sch.settle == "still" else 0

    def run(self, n_ticks, example, learn, still_ticks=0):
        """Advance every seed by ``n_ticks`` ticks with ``example`` applied; with
        ``still_ticks = k > 0``, by at most ``n_ticks``, until k consecutive ticks moved
        no node by more than ``still_lsb``. Returns the ticks run per seed (seeds,)."""
        used = np.zeros(len(self.seeds), np.int64)
        if n_ticks > 0:
            self._kernel(n_ticks, example, learn, still_ticks, used)
            self.ticks += int(used.max())
        return used

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
        used = self.run(sch.settle_ticks, example, False, still_ticks=self.still_ticks)
        observed = self.outputs() if sch.settle_ticks else None
        used = used + self.run(sch.learn_ticks, example, learn)
        self.example_ticks.append(used)
        return observed if observed is not None else self.outputs()

    def evaluate(self):
        """Free outputs (seeds, examples, outputs) of every example with learning off.

        Each example settles as in training, then runs its ``learn_ticks`` with learning
        off; the node state is restored afterwards, so evaluation leaves the training
        trajectory untouched.
        """
        saved = (self.h_free.copy(), self.h_clamped.copy(), self.m_free.copy(),
                 self.m_clamped.copy(), self.ticks, self.flags.copy())
        sch = self.cfg.schedule
        outs = []
        for i in range(self.problem.n_examples):
            self.run(sch.settle_ticks, i, False, still_ticks=self.still_ticks)
            self.run(sch.learn_ticks, i, False)
            outs.append(self.outputs())
        self.h_free, self.h_clamped, self.m_free, self.m_clamped, self.ticks, self.flags = saved
        return np.stack(outs, 1)
