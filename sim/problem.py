"""Arrays every golden model needs, derived once from a config."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    """A config flattened into arrays.

    Attributes
    ----------
    edge_a, edge_b : ndarray of int64, (edges,)
        Terminals of every edge; current is positive from a to b.
    driven : ndarray of bool, (nodes,)
        Nodes held by a source (inputs and rails) in both networks.
    clamped : ndarray of bool, (nodes,)
        Nodes held in the clamped network: the driven ones and the outputs.
    drive : ndarray of float, (examples, nodes)
        Source voltage of every driven node for every example (0 elsewhere).
    out_plus, out_minus : ndarray of int64, (outputs,)
        Output nodes; ``out_minus`` is -1 for a single-ended output.
    targets : ndarray of float, (examples, outputs)
    """
    edge_a: np.ndarray
    edge_b: np.ndarray
    driven: np.ndarray
    clamped: np.ndarray
    drive: np.ndarray
    out_plus: np.ndarray
    out_minus: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_config(cls, cfg):
        n = cfg.network.n_nodes
        x = cfg.task.x
        drive = np.zeros((len(x), n))
        drive[:, list(cfg.io.inputs)] = x
        for node, volts in cfg.io.rails:
            drive[:, node] = volts
        driven = np.zeros(n, bool)
        driven[cfg.driven_nodes()] = True
        out_plus = np.array([p for p, _ in cfg.io.outputs], np.int64)
        out_minus = np.array([m for _, m in cfg.io.outputs], np.int64)
        clamped = driven.copy()
        clamped[out_plus] = True
        clamped[out_minus[out_minus >= 0]] = True
        edges = cfg.network.edges
        return cls(np.ascontiguousarray(edges[:, 0]), np.ascontiguousarray(edges[:, 1]),
                   driven, clamped, drive, out_plus, out_minus, cfg.task.y.copy())

    @property
    def n_examples(self):
        return len(self.drive)

    @property
    def n_nodes(self):
        return len(self.driven)

    @property
    def n_edges(self):
        return len(self.edge_a)
