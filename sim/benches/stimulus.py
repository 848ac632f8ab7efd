"""Stimulus and helpers shared by the bench and its runner (no cocotb import)."""

import dataclasses

import numpy as np

from clln.formats import Formats
from clln.sim.fixed import FixedPointModel, tick_constants
from clln.sim.problem import Problem

#: Ticks an example stays applied before the bench moves to the next one.
EXAMPLE_TICKS = 40
#: Learning is off for the first third of every ``3 * LEARN_RUN`` ticks.
LEARN_RUN = 13
#: Learning switch of each tick of the free-running part (``run`` held high throughout).
FREE_RUN = (False,) * 3 + (True,) * 9 + (False,) * 2 + (True,) * 6


class Stimulus:
    """What the bench applies, tick by tick.

    A tick of a fabric of several streams (``[fabric] streams``) is a round: one tick of
    every stream.

    Attributes
    ----------
    ticks : int
    streams : int
        Networks of the fabric (1 but for the pipelined fabric).
    example : ndarray of int (ticks,)
        Example applied at every tick; it changes every :data:`EXAMPLE_TICKS` ticks.
    learn : ndarray of bool (ticks,)
        Learning on or off; it switches every :data:`LEARN_RUN` ticks.
    drive : ndarray (examples, driven nodes)
        Drive register values (voltage LSBs) per example, in sample address order.
    target : ndarray (examples, outputs)
        Targets (voltage LSBs) per example.
    restores : dict
        ``{tick: (index, gate)}``: a gate written through the restore port before a tick;
        ``index`` is ``stream * E + edge`` (the gate port's address). The last stream's
        gate is restored at ``ticks // 2``, and with several streams stream 0's at
        ``ticks // 4``.
    free_example : int
        Example of the free-running part, after the tick-by-tick one.
    free_learn : ndarray of bool (free rounds,)
        Learning switch of every tick of the free-running part (``run`` stays high).
    """

    def __init__(self, cfg, model, ticks, free_rounds=None):
        fmt, p = model.formats, Problem.from_config(cfg)
        t = np.arange(ticks)
        self.ticks = ticks
        self.streams = streams = len(model.seeds)
        self.example = (t // EXAMPLE_TICKS) % p.n_examples
        self.learn = (t // LEARN_RUN) % 3 != 0
        self.drive = fmt.volts_to_v(p.drive)[:, cfg.driven_nodes()]
        self.target = fmt.volts_to_v(p.targets)
        self.restores = {}
        if ticks >= 4:
            gate = fmt.gate_min_q + (fmt.gate_max_q - fmt.gate_min_q) // 3
            edge = (ticks // 2) % p.n_edges
            self.restores[ticks // 2] = ((streams - 1) * p.n_edges + edge, int(gate))
        if ticks >= 8 and streams > 1:
            gate = fmt.gate_min_q + 2 * (fmt.gate_max_q - fmt.gate_min_q) // 3
            self.restores[ticks // 4] = ((ticks // 4 + 1) % p.n_edges, int(gate))
        self.free_example = int((self.example[-1] + 1) % p.n_examples) if ticks else 0
        self.free_learn = np.resize(np.array(FREE_RUN, bool),
                                     len(FREE_RUN) if free_rounds is None else free_rounds)


def restore(model, index, value):
    """Write gate ``index`` (``stream * E + edge``) of the model's seeds."""
    s, e = divmod(int(index), model.gates.shape[1])
    model.gates[s, e] = value


def bench_seeds(cfg, params):
    """Seeds of the DUT's streams: ``params["seeds"]`` (from the manifest), else
    ``seed, seed + 1, ...`` for the config's ``[fabric] streams``, ``seed`` being
    ``params["seed"]`` or ``learning.seed``."""
    if params.get("seeds"):
        seeds = [int(s) for s in params["seeds"]]
    else:
        seed = int(params.get("seed", cfg.learning.seed))
        seeds = [seed + s for s in range(cfg.fabric.streams)]
    if len(seeds) != cfg.fabric.streams:
        raise ValueError(f"{len(seeds)} seeds for a fabric of {cfg.fabric.streams} streams")
    return seeds


def make_model(cfg, params):
    """The golden model of the bench (one seed per stream), with an optional deliberate
    error.

    ``params["patch"]`` maps :class:`~clln.formats.Formats` fields to amounts added to
    them (e.g. ``{"lr_mul": 1}``): a broken model the bench must disagree with.
    """
    model = FixedPointModel(cfg, seeds=bench_seeds(cfg, params))
    patch = params.get("patch") or {}
    if patch:
        fmt = model.formats
        model.formats = dataclasses.replace(
            fmt, **{k: getattr(fmt, k) + v for k, v in patch.items()})
        model.constants = tick_constants(model.formats)
    return model


def unpack(raws, width, count):
    """Decode flat vectors (Python ints, element 0 in the low bits) of signed values.

    Returns
    -------
    ndarray of int64 (len(raws), count)
    """
    nbytes = (width * count + 7) // 8
    buf = b"".join(r.to_bytes(nbytes, "little") for r in raws)
    octets = np.frombuffer(buf, np.uint8).reshape(len(raws), nbytes)
    bits = np.unpackbits(octets, axis=1, bitorder="little")[:, :width * count]
    bits = bits.reshape(len(raws), count, width).astype(np.int64)
    values = bits @ (np.int64(1) << np.arange(width, dtype=np.int64))
    return values - (bits[..., -1] << width)


def widths(cfg):
    """Element widths of the flat state ports: ``{"v": v_bits, "g": g_bits}``."""
    fmt = Formats.from_config(cfg)
    return {"v": fmt.v_bits, "g": fmt.g_bits}
