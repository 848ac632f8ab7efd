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


class Stimulus:
    """What the bench applies, tick by tick.

    Attributes
    ----------
    ticks : int
    example : ndarray of int (ticks,)
        Example applied at every tick; it changes every :data:`EXAMPLE_TICKS` ticks.
    learn : ndarray of bool (ticks,)
        Learning on or off; it switches every :data:`LEARN_RUN` ticks.
    drive : ndarray (examples, driven nodes)
        Drive register values (voltage LSBs) per example, in sample address order.
    target : ndarray (examples, outputs)
        Targets (voltage LSBs) per example.
    restores : dict
        ``{tick: (edge, gate)}``: a gate written through the restore port before a tick.
    """

    def __init__(self, cfg, model, ticks):
        fmt, p = model.formats, Problem.from_config(cfg)
        t = np.arange(ticks)
        self.ticks = ticks
        self.example = (t // EXAMPLE_TICKS) % p.n_examples
        self.learn = (t // LEARN_RUN) % 3 != 0
        self.drive = fmt.volts_to_v(p.drive)[:, cfg.driven_nodes()]
        self.target = fmt.volts_to_v(p.targets)
        self.restores = {}
        if ticks >= 4:
            gate = fmt.gate_min_q + (fmt.gate_max_q - fmt.gate_min_q) // 3
            self.restores[ticks // 2] = ((ticks // 2) % p.n_edges, int(gate))


def make_model(cfg, params):
    """The golden model of the bench, with an optional deliberate error.

    ``params["patch"]`` maps :class:`~clln.formats.Formats` fields to amounts added to
    them (e.g. ``{"lr_mul": 1}``): a broken model the bench must disagree with.
    """
    model = FixedPointModel(cfg, seeds=[params.get("seed", cfg.learning.seed)])
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
