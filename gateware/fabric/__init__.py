"""The clln fabric: a twin (free + clamped) transistor network in Amaranth.

- :mod:`.arith`: rounding, saturation, selection, adder trees and products;
- :mod:`.cells`: the edge, gate and node steps of ``docs/semantics.md``;
- :mod:`.parallel`: the parallel and folded fabric (:class:`Fabric`), base of the others;
- :mod:`.serial`: one edge term per cycle, state in block RAM;
- :mod:`.banked`: P edge units, state, gates and node sums in block RAM;
- :mod:`.streams`: every edge its own cell, the tick cut into a C-slow pipeline ring.

The package imports only the config and the number formats, never golden models or
board code.
"""

from clln.errors import ConfigError

from .banked import BankedFabric, banked_cycles_per_tick, check_banked
from .parallel import Fabric, folded_shape
from .serial import SerialFabric, serial_cycles_per_tick
from .streams import StreamFabric

__all__ = ["BankedFabric", "Fabric", "SerialFabric", "StreamFabric", "fabric_shape", "make_fabric"]


def fabric_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of the fabric ``cfg`` asks for, without building it.

    A tick is one network's: a fabric of ``cfg.fabric.streams`` networks completes that
    many ticks every ``cycles_per_tick`` cycles."""
    if cfg.fabric.streams > 1:
        return cfg.network.n_edges, cfg.fabric.streams
    if cfg.fabric.serial:
        return 1, serial_cycles_per_tick(cfg)
    if cfg.fabric.banked:
        return cfg.fabric.edge_units, banked_cycles_per_tick(cfg)
    return folded_shape(cfg)


def make_fabric(cfg, fmt=None, seed=None, mult_bits=None, capacity=None):
    """The fabric ``cfg`` asks for: :class:`Fabric`, the serial one (``[fabric] serial``),
    the banked one (``[fabric] banked``) or the pipelined one of several networks
    (``[fabric] streams``); with a ``capacity`` (``NODES:EDGES``), the serial fabric whose
    graph is loaded at run time."""
    if capacity is not None:
        check_relaxation(cfg, SerialFabric)
        return SerialFabric(cfg, fmt, seed, mult_bits, capacity=capacity)
    kind = fabric_kind(cfg)
    check_relaxation(cfg, kind)
    if kind is BankedFabric:
        check_banked(cfg)
    return kind(cfg, fmt, seed, mult_bits)


def check_relaxation(cfg, kind):
    """Refuse a ``[schedule] relax`` that the fabric ``kind`` does not implement (its
    ``RELAXATIONS``; a fabric that names none has only ``euler``)."""
    relax = cfg.schedule.relax
    if relax not in getattr(kind, "RELAXATIONS", ("euler",)):
        raise ConfigError(cfg.source, "schedule.relax", f"{relax!r} is not implemented in "
                          f"the {kind.__name__} yet (issue 14); use relax = \"euler\" or the "
                          "parallel fabric")



def fabric_kind(cfg):
    """The fabric class ``cfg`` asks for."""
    if cfg.fabric.banked:
        return BankedFabric
    return (StreamFabric if cfg.fabric.streams > 1 else SerialFabric if cfg.fabric.serial
            else Fabric)
