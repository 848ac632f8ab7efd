"""Analog non-idealities of one chip, drawn from a config's ``[nonideal]`` section.

The golden models and the gateware share these draws: :func:`draw` turns the seeds and
sigmas of :class:`~clln.config.Nonideal` into per-edge arrays (thresholds and gains of the
free and the clamped transistor, learning-rule offsets, damage masks), and
:func:`noise_states` gives the per-edge read-noise generators their first states.
``docs/semantics.md`` ("Non-idealities") defines how a tick uses them.
"""

from dataclasses import dataclass

import numpy as np

#: Relative gain below which a drawn ``k`` is clipped (a transistor never inverts).
K_FLOOR = 0.05
#: Bytes summed into one read-noise sample (an Irwin-Hall approximation of a normal).
NOISE_BYTES = 4
#: Mean and standard deviation of the sum of :data:`NOISE_BYTES` uniform bytes.
NOISE_MEAN = NOISE_BYTES * 255 // 2  # exact: NOISE_BYTES is even
NOISE_STD = float(np.sqrt(NOISE_BYTES * (256 ** 2 - 1) / 12))


@dataclass(frozen=True)
class Impairments:
    """Per-edge non-idealities of one chip (arrays of length ``edges``).

    Attributes
    ----------
    vt_free, vt_clamped : ndarray of float
        Threshold of the free and of the clamped transistor (V).
    k_free, k_clamped : ndarray of float
        Gain relative to ``device.k``; 0 on a dead edge (its transistors conduct nothing).
    offset : ndarray of float
        Bias added to ``dV_F^2 - dV_C^2`` by each edge's learning rule (V^2).
    dead : ndarray of bool
        Open edges: no transistor current (the ``gmin`` leak remains), gate frozen.
    frozen : ndarray of bool
        Gates that never change: dead and stuck edges.
    """
    vt_free: np.ndarray
    vt_clamped: np.ndarray
    k_free: np.ndarray
    k_clamped: np.ndarray
    offset: np.ndarray
    dead: np.ndarray
    frozen: np.ndarray


def draw(cfg):
    """The :class:`Impairments` of ``cfg`` (ideal arrays for an ideal config).

    Five standard normals per edge are drawn from ``mismatch_seed`` in a fixed order
    (free threshold, clamped threshold, free gain, clamped gain, offset) whatever the
    sigmas, so changing one sigma never changes another draw; without ``twin_mismatch``
    the clamped transistor takes the free one's values. A dead edge's gains are 0. Damage picks
    ``round(fraction * edges)`` edges of one permutation drawn from ``damage_seed``: the
    first ones dead, the next ones stuck, joined with the listed edges (dead wins).
    """
    ni, n_edges = cfg.nonideal, cfg.network.n_edges
    z = np.random.default_rng([ni.mismatch_seed, 0x6d69736d]).standard_normal((5, n_edges))
    vt_free = cfg.device.vt + ni.vt_sigma * z[0]
    k_free = np.maximum(1.0 + ni.k_sigma * z[2], K_FLOOR)
    if ni.twin_mismatch:
        vt_clamped = cfg.device.vt + ni.vt_sigma * z[1]
        k_clamped = np.maximum(1.0 + ni.k_sigma * z[3], K_FLOOR)
    else:
        vt_clamped, k_clamped = vt_free.copy(), k_free.copy()
    perm = np.random.default_rng([ni.damage_seed, 0x64616d67]).permutation(n_edges)
    n_dead = round(ni.dead_fraction * n_edges)
    n_stuck = round(ni.stuck_fraction * n_edges)
    dead = np.zeros(n_edges, bool)
    dead[perm[:n_dead]] = True
    dead[list(ni.dead_edges)] = True
    k_free, k_clamped = np.where(dead, 0.0, k_free), np.where(dead, 0.0, k_clamped)
    stuck = np.zeros(n_edges, bool)
    stuck[perm[n_dead:n_dead + n_stuck]] = True
    stuck[list(ni.stuck_edges)] = True
    return Impairments(vt_free, vt_clamped, k_free, k_clamped, ni.update_offset * z[4], dead,
                       dead | stuck)


def gate_rest(cfg):
    """The voltage a leaking gate droops toward (V): ``gate_rest``, else ``gate_min``."""
    rest = cfg.nonideal.gate_rest
    return cfg.learning.gate_min if rest is None else rest


def noise_states(cfg):
    """First states (uint32, nonzero) of the per-edge xorshift32 read-noise generators.

    Edge e starts from a SplitMix64 hash of ``(noise_seed, e)`` folded to 32 bits; a zero
    (which xorshift cannot leave) is replaced by 1.
    """
    mask = (1 << 64) - 1
    out = np.empty(cfg.network.n_edges, np.uint32)
    for e in range(len(out)):
        x = (cfg.nonideal.noise_seed * 0x9E3779B97F4A7C15 + e + 1) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        x ^= x >> 31
        out[e] = ((x ^ (x >> 32)) & 0xFFFFFFFF) or 1
    return out


def noise_scale(cfg):
    """Volts per unit of a read-noise sample: a drop is read by two node readings of
    ``read_noise`` V rms each, so a sample of standard deviation :data:`NOISE_STD` becomes
    ``read_noise * sqrt(2)`` V rms."""
    return cfg.nonideal.read_noise * np.sqrt(2.0) / NOISE_STD
