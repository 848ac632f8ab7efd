"""What ``clln build`` builds when neither the config nor the flags name a fabric.

The choice is made from estimates before any tool runs, so that a default build finishes
in minutes and meets timing (``docs/boards.md``, "Default builds"). The estimates are
measurements made in this repo (Yosys 0.70, nextpnr 0.11, the 2-core build machine):

- the serial fabric's size against the number of edges, from ``bench/synthesis.py`` on
  paper-xor and on L x L tori with its widths (:data:`SERIAL_FABRIC_LUT`);
- the rest of the training system (UART, framing, command handler, controller), the
  board build's total less the fabric's synthesis, for paper-xor (:data:`SYSTEM_LUT`);
- the block RAMs of serial builds against the number of edges (:data:`SERIAL_BRAM`):
  on the big tori it is the memories, not the logic, that run out;
- the routed fmax and the build time of paper-xor's serial system (:data:`SERIAL_BUILD`).

The faster fabrics are left to explicit flags, with the reason in the plan: the
pipelined fabric of 8 networks takes about 16 minutes and routes at 50 MHz with some
nextpnr seeds only; the fully parallel fabric spends about 20 minutes in Yosys for 32
edges; a fold of P edge units is larger than the serial fabric at every P and did not
route at 4 units.
"""

import math
from dataclasses import dataclass, field

from ..config import refold
from .catalog import TARGETS
from .system import multiplier_blocks
from .targets import BuildError

__all__ = ["BuildPlan", "plan_build", "estimated_serial_luts", "estimated_serial_brams"]

#: Logic of the serial fabric alone (``bench/synthesis.py CONFIG --units serial``) at
#: paper-xor's widths, by edges (paper-xor, and ``bench/scaling.py``'s paper-xor on 8x8,
#: 16x16 and 32x32 tori): LUT4 + 2 per carry cell (ECP5 CCU2C, two slices of logic) on
#: ECP5, LUT4 on iCE40 (carries share the logic cell). One edge unit and the state in
#: block RAM: it hardly grows with the graph. On iCE40 the fabric alone even shrinks
#: (2,931 LUT4 at 32 edges, 2,886 at 128) while the packed system grows (5,275 -> 5,337
#: logic cells for paper-xor's widths on an 8x8 torus, ``synth_ice40 -dsp -dff`` and
#: ``nextpnr-ice40 --pack-only``, with the controller of then), so its 128-edge point is
#: that growth on the 32-edge point.
SERIAL_FABRIC_LUT = {
    "ecp5": ((32, 2312 + 2 * 507), (128, 2138 + 2 * 510), (512, 2124 + 2 * 513),
             (2048, 2450 + 2 * 516)),
    "ice40": ((32, 2931), (128, 2931 + 5337 - 5275)),
}

#: Logic of the training system besides the fabric, from paper-xor's serial builds:
#: ULX3S-85F 6,217 TRELLIS_COMB (at 40.6 MHz; 6,514 at 40 MHz in a later build: placement
#: varies by a few per cent), iCEBreaker 5,032 ICESTORM_LC (``-dsp -dff``; 5,275 before
#: the controller's 16-bit phase and epoch counters and 40-bit tick and cycle counters,
#: which took 243 cells off paper-xor and 228 off smooth-xor-torus8), Tang Nano 9K
#: 6,042 LUT4 + ALU, less the fabric's synthesis (Gowin: ECP5's fabric figures, as Yosys
#: reports no Gowin synthesis of the fabric alone here). Checked against the ULX3S-85F's
#: serial builds of smooth-xor on 32x32 and 64x64 tori: 6,505 and 7,353 TRELLIS_COMB.
SYSTEM_LUT = {"ecp5": 6217 - (2312 + 2 * 507), "ice40": 5032 - 2931,
              "gowin": 6042 - (2312 + 2 * 507)}

#: Block RAMs of serial training systems as built, by edges: ULX3S-85F (DP16KD) paper-xor
#: 5, smooth-xor on 8x8, 16x16, 32x32 and 64x64 tori 12, 15, 46 and 162 (``bench/builds.json``);
#: iCEBreaker (SB_RAM40_4K) paper-xor 24, smooth-xor-torus8 26 (packed, did not fit); Tang Nano 9K
#: paper-xor 5 BSRAM, 18 Kbit blocks as ECP5's, whose counts it takes. Per edge: the node
#: memories, the gates (with their reset ROM) and a schedule row per edge end and network.
SERIAL_BRAM = {"ecp5": ((32, 5), (128, 12), (512, 15), (2048, 46), (8192, 162)),
               "ice40": ((32, 24), (128, 26))}
SERIAL_BRAM["gowin"] = SERIAL_BRAM["ecp5"]


@dataclass(frozen=True)
class SerialBuild:
    """A measured build of paper-xor's serial system on one family."""
    fmax_mhz: float          # routed fmax
    minutes: float           # one place-and-route run, tools cached, 2 cores
    clock: object            # the clock policy the plan asks for: None (oscillator) or "max"


#: paper-xor's serial system, docs/boards.md: ECP5 fmax 44.0 MHz, 5.2 minutes for both
#: builds of ``--clock max`` (the second at 40.6 MHz; the machine loaded); iCE40
#: 12.06 MHz (nextpnr seed 5, the slimmer controller; smooth-xor-torus8 12.10 MHz),
#: about 4 minutes; Gowin 29.0 MHz, 8.8 minutes (load 8).
SERIAL_BUILD = {
    "ecp5": SerialBuild(44.0, 2.6, "max"),
    "ice40": SerialBuild(12.06, 4.0, None),
    "gowin": SerialBuild(29.0, 8.8, None),
}

#: Measured facts behind leaving the faster fabrics to explicit flags.
NOT_BY_DEFAULT = {
    "streams": "the pipelined fabric (--fabric streams:C) takes about 16 minutes to build "
               "and, at 8 networks and 50 MHz, routes with some nextpnr seeds only "
               "(--fabric streams:8 --clock 50 --pnr-clock 36 --pnr-seed 3 on the "
               "ULX3S-85F, docs/boards.md)",
    "parallel": "the fully parallel fabric (--fabric 0) spends about 20 minutes in Yosys "
                "for 32 edges, and its one-cycle tick has not met a board clock here",
    "folded": "a fold of P edge units (--fabric P) is larger than the serial fabric at "
              "every P (one unit: 10,392 LUT4 on ECP5, serial 1,294 then, 2,312 now) and "
              "did not route at 4 units",
}


@dataclass(frozen=True)
class BuildPlan:
    """The fabric and clock of a default build, and why.

    Attributes
    ----------
    fabric : str
        ``"serial"``.
    clock_mhz : None or "max"
        :func:`clln.boards.system.build_system`'s clock policy.
    lut, dsp : int
        Estimated logic and multiplier blocks of the whole system.
    bram : int
        Estimated block RAMs.
    minutes : float
        Estimated build time (both builds of ``"max"``).
    reasons : list of str
        The choice and what was left out, one sentence each.
    """
    fabric: str
    clock_mhz: object
    lut: int
    dsp: int
    minutes: float
    bram: int = 0
    reasons: list = field(default_factory=list)

    def as_dict(self):
        """The plan as JSON-ready values (``clln build --json``'s ``plan``)."""
        return {"fabric": self.fabric, "clock": self.clock_mhz or "oscillator",
                "estimated_lut": self.lut, "estimated_dsp": self.dsp,
                "estimated_bram": self.bram,
                "estimated_minutes": self.minutes, "reasons": list(self.reasons)}


def _interpolate(points, x):
    """Piecewise-linear through ``points`` ((x, y), ...), continued along the end segments."""
    if len(points) == 1:
        return points[0][1]
    i = next((i for i in range(1, len(points) - 1) if x <= points[i][0]), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def estimated_serial_brams(cfg, family):
    """Estimated block RAMs of ``cfg``'s serial training system on ``family`` (linear in
    the edges between and beyond the measured builds; the node memories' depth doubles
    at each power of two of the nodes, so it is rough between the points)."""
    return int(math.ceil(_interpolate(SERIAL_BRAM[family], cfg.network.n_edges)))


def estimated_serial_luts(cfg, family):
    """Estimated logic (LUT4, logic cells or LUT4 + ALU) of ``cfg``'s serial training
    system on ``family``."""
    points = SERIAL_FABRIC_LUT.get(family, SERIAL_FABRIC_LUT["ecp5"])
    fabric = _interpolate(points, cfg.network.n_edges)
    return int(math.ceil(SYSTEM_LUT[family] + fabric))


def plan_build(cfg, board):
    """The :class:`BuildPlan` of a default build of ``cfg`` (no ``[fabric]``) on ``board``.

    Raises
    ------
    BuildError
        When even the serial fabric is estimated not to fit, with the numbers.
    """
    t = TARGETS[board]
    serial = refold(cfg, "serial")
    lut = estimated_serial_luts(serial, t.family)
    dsp = (multiplier_blocks(serial, "serial", t.mult_bits, t.split_products)
           if t.mult_bits else 0)
    bram = estimated_serial_brams(serial, t.family)
    over = []
    if t.luts and lut > t.luts:
        over.append(f"about {lut:,} logic cells > {t.luts:,}")
    if t.dsps and dsp > t.dsps:
        over.append(f"about {dsp} multiplier blocks > {t.dsps}")
    if t.brams and bram > t.brams:
        over.append(f"about {bram} block RAMs > {t.brams}")
    if over:
        raise BuildError(f"{cfg.name} ({cfg.network.n_edges} edges) is estimated not to fit "
                        f"{board} even as the serial fabric: {', '.join(over)}; narrow the "
                        f"[fixed] widths or choose a larger board")
    measured = SERIAL_BUILD[t.family]
    clock = measured.clock
    builds = 2 if clock == "max" else 1
    reasons = [f"serial fabric: about {lut:,} of {t.luts:,} logic cells, {dsp} of "
               f"{t.dsps} multiplier blocks and {bram} of {t.brams} block RAMs, about "
               f"{measured.minutes * builds:.0f} min to build"]
    if clock == "max":
        reasons.append(f"clock: the {t.osc_mhz:g} MHz oscillator, then once more through "
                       f"the PLL at 95% of the routed fmax (paper-xor's serial system: "
                       f"{measured.fmax_mhz:g} MHz)")
    else:
        reasons.append(f"clock: the {t.osc_mhz:g} MHz oscillator (paper-xor's serial "
                       f"system routes at {measured.fmax_mhz:g} MHz; a miss is rebuilt "
                       f"once at 95% of the routed fmax)")
    reasons += [f"not chosen: {why}" for why in NOT_BY_DEFAULT.values()]
    return BuildPlan("serial", clock, lut, dsp, measured.minutes * builds, bram=bram,
                     reasons=reasons)
