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
    kind = (StreamFabric if cfg.fabric.streams > 1 else SerialFabric if cfg.fabric.serial
            else Fabric)
    check_relaxation(cfg, kind)
    check_nonideal(cfg)
    return kind(cfg, fmt, seed, mult_bits)


def check_relaxation(cfg, kind):
    """Refuse a ``[schedule] relax`` that the fabric ``kind`` does not implement (its
    ``RELAXATIONS``; a fabric that names none has only ``euler``)."""
    relax = cfg.schedule.relax
    if relax not in getattr(kind, "RELAXATIONS", ("euler",)):
        raise ConfigError(cfg.source, "schedule.relax", f"{relax!r} is not implemented in "
                          f"the {kind.__name__} yet (issue 14); use relax = \"euler\" or the "
                          "parallel fabric")



#: ``[nonideal]`` keys the fabrics build in, as per-edge constants: thresholds of one
#: transistor per edge (``vt_sigma`` without ``twin_mismatch``) and the DAC quantisation
#: of the dataset (``dac_bits``), which only changes the data.
GATEWARE_NONIDEAL = ("vt_sigma", "mismatch_seed", "dac_bits", "noise_seed", "damage_seed",
                     "gate_rest")


def check_nonideal(cfg):
    """Refuse, before any HDL is written, a non-ideality the fabrics do not build in yet
    (every one is in the golden models; ``docs/semantics.md``, "Non-idealities")."""
    ni, defaults = cfg.nonideal, type(cfg.nonideal)()
    for name in type(ni).__dataclass_fields__:
        if name in GATEWARE_NONIDEAL or getattr(ni, name) == getattr(defaults, name):
            continue
        if name == "twin_mismatch" and not (ni.vt_sigma or ni.k_sigma):
            continue
        raise ConfigError(cfg.source, f"nonideal.{name}", "is in the golden models but not "
                          "built into the gateware yet (issue 15); the fabrics take "
                          "nonideal.vt_sigma and nonideal.dac_bits")
