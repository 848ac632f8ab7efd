"""The boards clln builds for: one table, with no import of Amaranth (the CLI reads it).

Each :class:`Target` names its Amaranth platform, FPGA family, oscillator, resource
budget, multiplier blocks and programmer; :data:`OFFERED` are those ``clln build``
offers. ``clln.boards.targets`` builds bitstreams for them.
"""

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "OFFERED"]


@dataclass(frozen=True)
class Target:
    """A board: its Amaranth platform, FPGA family, oscillator and synthesis options."""
    name: str
    platform: str           # "module:Class" in amaranth_boards
    family: str             # ice40, ecp5, gowin
    osc_mhz: float
    synth_opts: str = ""
    luts: int = 0           # logic budget, for the report
    dsps: int = 0
    brams: int = 0
    mult_bits: int = 0      # operand bits of a multiplier block; 0: multipliers in logic
    split_products: bool = False    # one block per product (gateware.fabric.arith.split_mul)
    programmer: tuple = ()  # command that loads a bitstream (its path appended)
    offered: bool = False   # offered by ``clln build`` (built and tested here)
    pnr_seed: int | None = None     # nextpnr's seed when the build names none


TARGETS = {t.name: t for t in [
    Target("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40", 12.0, "-dsp -dff",
           5280, 8, 30, 16, programmer=("iceprog",), offered=True, pnr_seed=5),
    Target("ulx3s-12f", "ulx3s:ULX3S_12F_Platform", "ecp5", 25.0, "", 12288, 28, 56, 18, True,
           programmer=("openFPGALoader", "-b", "ulx3s")),
    Target("ulx3s-25f", "ulx3s:ULX3S_25F_Platform", "ecp5", 25.0, "", 24288, 28, 56, 18, True,
           programmer=("openFPGALoader", "-b", "ulx3s")),
    Target("ulx3s-45f", "ulx3s:ULX3S_45F_Platform", "ecp5", 25.0, "", 43848, 72, 108, 18, True,
           programmer=("openFPGALoader", "-b", "ulx3s")),
    Target("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "ecp5", 25.0, "", 83640, 156, 208, 18, True,
           programmer=("openFPGALoader", "-b", "ulx3s"), offered=True),
    Target("tangnano9k", "tang_nano_9k:TangNano9kPlatform", "gowin", 27.0, "",
           8640, 20, 26, 18, programmer=("openFPGALoader", "-b", "tangnano9k"), offered=True),
]}

#: Boards ``clln build`` offers, in the order of its help.
OFFERED = tuple(name for name, t in TARGETS.items() if t.offered)
