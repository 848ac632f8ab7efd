"""The device physics shared by every golden model, in NumPy (vectorised over edges).

Currents are given in units of ``K/2`` (V^2), which is what the tick models integrate:
the real current in amperes is ``k / 2`` times these values.
"""

import numpy as np


def edge_term(overdrive, v_a, v_b):
    """Square-law current from terminal a to terminal b, in units of ``K/2`` (V^2).

    ``relu(Vov - Vb)**2 - relu(Vov - Va)**2``: ohmic when the overdrive is above
    both terminals, saturated when it lies between them, cut off below both.
    """
    u_a = np.maximum(overdrive - v_a, 0.0)
    u_b = np.maximum(overdrive - v_b, 0.0)
    return (u_b - u_a) * (u_b + u_a)


def edge_current(gate, v_a, v_b, vt, k):
    """Current (A) from terminal a to terminal b of a transistor edge with gate voltage ``gate``."""
    return 0.5 * k * edge_term(np.asarray(gate) - vt, v_a, v_b)


def node_currents(voltages, gates, edges, vt):
    """Net current into every node (units of ``K/2``) for node ``voltages`` (..., nodes).

    Leading axes of ``voltages`` and ``gates`` broadcast (e.g. a batch of seeds).
    """
    a, b = edges[:, 0], edges[:, 1]
    s = edge_term(np.asarray(gates) - vt, voltages[..., a], voltages[..., b])
    into = np.zeros(np.broadcast_shapes(voltages.shape, s.shape[:-1] + voltages.shape[-1:]))
    np.add.at(into, (..., b), s)
    np.add.at(into, (..., a), -s)
    return into


def outputs(voltages, plus, minus):
    """Output voltages: ``V[plus]``, minus ``V[minus]`` where ``minus >= 0`` (differential)."""
    v = voltages[..., plus]
    return v - np.where(minus >= 0, voltages[..., np.maximum(minus, 0)], 0.0)
