"""The clln fabric: a twin (free + clamped) transistor network in Amaranth.

- :mod:`.arith`: rounding, saturation, selection, adder trees and products;
- :mod:`.cells`: the edge, gate and node steps of ``docs/semantics.md``;
- :mod:`.parallel`: the parallel and folded fabric (:class:`Fabric`), base of the others;
- :mod:`.serial`: one edge term per cycle, state in block RAM;
- :mod:`.streams`: every edge its own cell, the tick cut into a C-slow pipeline ring.

The package imports only the config and the number formats, never golden models or
board code.
"""

from clln.errors import ConfigError

from .parallel import Fabric, folded_shape
from .serial import SerialFabric, serial_cycles_per_tick
from .streams import StreamFabric

__all__ = ["Fabric", "SerialFabric", "StreamFabric", "fabric_shape", "make_fabric"]


def fabric_shape(cfg):
    """``(edge_units, cycles_per_tick)`` of the fabric ``cfg`` asks for, without building it.

    A tick is one network's: a fabric of ``cfg.fabric.streams`` networks completes that
    many ticks every ``cycles_per_tick`` cycles."""
    if cfg.fabric.streams > 1:
        return cfg.network.n_edges, cfg.fabric.streams
    if cfg.fabric.serial:
        return 1, serial_cycles_per_tick(cfg)
    return folded_shape(cfg)


def make_fabric(cfg, fmt=None, seed=None, mult_bits=None):
    """The fabric ``cfg`` asks for: :class:`Fabric`, the serial one (``[fabric] serial``)
    or the pipelined one of several networks (``[fabric] streams``)."""
    kind = fabric_kind(cfg)
    check_relaxation(cfg, kind)
    check_nonideal(cfg, kind)
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
    return (StreamFabric if cfg.fabric.streams > 1 else SerialFabric if cfg.fabric.serial
            else Fabric)


def check_nonideal(cfg, kind=None):
    """Refuse, before any HDL is written, a non-ideality the fabric ``kind`` (default: the
    one ``cfg`` asks for) does not build in yet: the keys of its ``NONIDEAL`` (every key
    when it names none). Every one is in the golden models (``docs/semantics.md``)."""
    kind = fabric_kind(cfg) if kind is None else kind
    supported = getattr(kind, "NONIDEAL", None)
    if supported is None:
        return
    ni, defaults = cfg.nonideal, type(cfg.nonideal)()
    for name in type(ni).__dataclass_fields__:
        if name in supported or getattr(ni, name) == getattr(defaults, name):
            continue
        if name == "twin_mismatch" and not (ni.vt_sigma or ni.k_sigma):
            continue
        raise ConfigError(cfg.source, f"nonideal.{name}", f"is not built into the "
                          f"{kind.__name__} yet (issue 15; the parallel and folded fabric "
                          f"have every non-ideality); this one takes {', '.join(supported)}")
