"""The training system on a board: :class:`~clln.gateware.system.System` on its UART,
and the search for the largest fold (``edge_units``) that fits a board.
"""

import dataclasses
import math
import time
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import io, wiring

from clln import protocol as p

from ..config import refold
from ..errors import ConfigError
from ..formats import Formats
from ..gateware.fabric import fabric_shape
from ..gateware.fabric.cells import product_operand_bits
from ..gateware.system import System
from .targets import BuildError, build, overused, target, utilization_from_log


class BoardSystem(wiring.Component):
    """:class:`System` wired to the board's ``uart`` resource (for :func:`build`).

    Parameters
    ----------
    cfg : clln.config.Config
    clk_hz : float
        The clock (the PLL's achieved frequency): the UART divisor and IDENTIFY's clock.
    baud : int
    max_examples : int, optional
    mult_bits : int, optional
        Operand bits of the board's multiplier blocks when each product is to take one
        (``gateware.fabric.arith.split_mul``).
    capacity : clln.schedule.Capacity, optional
        A bitstream whose graph is loaded at run time (``System``'s ``capacity``).
    """

    def __init__(self, cfg, clk_hz, baud=115200, max_examples=None, mult_bits=None,
                 capacity=None):
        try:
            divisor = p.uart_divisor(clk_hz, baud)
        except ValueError as e:
            raise ConfigError("--baud", "", str(e)) from None
        self.system = System(cfg, divisor, max_examples=max_examples,
                             mult_bits=mult_bits, clock_hz=clk_hz, capacity=capacity)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = sysm = self.system
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [sysm.rx.eq(rx_buf.i), tx_buf.o.eq(sysm.tx)]
        return m


@dataclasses.dataclass
class Attempt:
    """One build tried by :func:`build_fitting` (``edge_units`` is 1 for the serial fabric)."""
    edge_units: int
    ok: bool
    why: str
    seconds: float
    serial: bool = False

    @property
    def label(self):
        """``serial fabric`` or ``edge_units P`` (for messages)."""
        return "serial fabric" if self.serial else f"edge_units {self.edge_units}"


def _fits(rep, t):
    over = []
    if t.luts and rep.lut > t.luts:
        over.append(f"{rep.lut} logic cells > {t.luts}")
    if t.dsps and rep.dsp > t.dsps:
        over.append(f"{rep.dsp} multipliers > {t.dsps}")
    if t.brams and rep.bram > t.brams:
        over.append(f"{rep.bram} block RAMs > {t.brams}")
    return over


def build_system(cfg, board, build_dir, clock_mhz=None, baud=115200, max_examples=None,
                 pnr_clock_mhz=None, pnr_seed=None, capacity=None):
    """Build ``cfg``'s system for ``board``.

    With ``clock_mhz`` None the board oscillator is tried first; if timing fails there
    (the fabric computes a whole edge-and-node path per cycle, so fmax is often below the
    oscillator), the build is repeated once at 95% of the reported fmax through the PLL.
    With ``clock_mhz="max"`` a build that meets timing at the oscillator
    with room to spare is also repeated there, in ``build_dir/max``; if that one fails,
    the oscillator's build stands. An explicit ``clock_mhz`` is built as given and must
    meet timing; with ``pnr_clock_mhz`` nextpnr places and routes for that clock instead,
    with ``pnr_seed`` from that seed (``targets.build``). A ``capacity`` builds the
    serial fabric whose graph is loaded at run time (``cfg``'s at power-up).

    Returns
    -------
    (BuildReport, edge_units, cycles_per_tick)
    """
    import json

    from .targets import achieved_clock_mhz, parse_report
    units, cpt = fabric_shape(cfg)
    t = target(board)
    mult_bits = t.mult_bits if t.split_products else None
    # Yosys 0.70's ABC9 fails on the pipelined and the banked fabric (the banked one:
    # ``Assert GetSize(conn.first) == GetSize(conn.second)`` in its reintegration at
    # smooth-xor-torus32, banked:4; targets.ECP5_CLASSIC_ABC)
    classic_abc = (cfg.fabric.streams > 1 or cfg.fabric.banked) and t.family == "ecp5"
    # router2 routes the large pipelined builds where router1 stalls on congestion, and
    # after the electrostatic placer (static) better than after the default (heap)
    router = "router2" if classic_abc else None
    placer = "static" if classic_abc else None

    if pnr_clock_mhz is not None and clock_mhz in (None, "max"):
        raise BuildError("a place-and-route clock needs an explicit clock (MHz)")

    def go(clk, folder=build_dir):
        return build(lambda clk_hz: BoardSystem(cfg, clk_hz, baud, max_examples, mult_bits,
                                                capacity),
                     board, folder, clock_mhz=clk, classic_abc=classic_abc,
                     router=router, placer=placer, pnr_clock_mhz=pnr_clock_mhz,
                     pnr_seed=pnr_seed)

    def pll_clock(fmax):
        """The highest clock the PLL makes at or below 95% of ``fmax``."""
        clk = math.floor(fmax * 0.95 * 10) / 10
        while clk > 1 and achieved_clock_mhz(board, clk) > 0.95 * fmax:
            clk = round(clk - 0.1, 1)          # the PLL's nearest may lie above the request
        return clk

    if clock_mhz not in (None, "max"):
        return go(clock_mhz), units, cpt
    try:
        rep = go(None)
    except BuildError as e:
        report = Path(build_dir) / "top.report.json"
        if "timing failed" not in str(e) or not report.exists():
            raise
        fmax = parse_report(json.loads(report.read_text()), t.family)[0]
        clk = pll_clock(fmax)
        if achieved_clock_mhz(board, clk) > 0.95 * fmax:
            raise BuildError(f"{e}; the PLL cannot make a clock below "
                             f"{achieved_clock_mhz(board, clk):.1f} MHz") from None
        try:
            return go(clk), units, cpt
        except BuildError as e2:
            raise BuildError(f"{e}; at {clk} MHz (95% of that fmax): {e2}") from None
    clk = pll_clock(rep.fmax_mhz)
    if clock_mhz != "max" or achieved_clock_mhz(board, clk) <= \
            1.05 * rep.clock_mhz:
        return rep, units, cpt
    try:
        return go(clk, Path(build_dir) / "max"), units, cpt
    except BuildError:
        return rep, units, cpt


def _predict(u_lo, p_lo, u_hi, p_hi, margin=0.97):
    """Largest P in [p_lo, p_hi) whose linearly interpolated use fits every resource."""
    best = p_lo
    for units in range(p_lo, p_hi):
        ok = True
        for k, (hi_used, avail) in u_hi.items():
            lo_used = u_lo.get(k, (0, avail))[0]
            est = lo_used + (hi_used - lo_used) * (units - p_lo) / max(p_hi - p_lo, 1)
            if avail and est > margin * avail:
                ok = False
        if ok:
            best = units
    return best


def build_fitting(cfg, board, build_dir, clock_mhz=None, baud=115200, max_examples=None,
                  log=None, pnr_clock_mhz=None, pnr_seed=None):
    """Build with the largest ``edge_units`` that places, routes and meets timing.

    Tries the fully parallel fabric (E units), then one unit; between them, predicts the
    largest fold from the two builds' resource use (linear in the number of units), builds
    it, then walks up one unit while that fits, or bisects downwards when it did not.
    Folds whose estimated multiplier blocks (:func:`multiplier_blocks`) exceed the
    board's are skipped without a build. When not even one edge unit fits, tries the
    serial fabric (``[fabric] serial``).

    Returns
    -------
    (BuildReport, edge_units, cycles_per_tick, attempts)

    Raises
    ------
    BuildError
        When not even the serial fabric fits; the message gives the resource use.
    """
    attempts = []
    results = {}

    def attempt(units):
        if units in results:
            return results[units]
        t0 = time.monotonic()
        serial = units == "serial"
        folder = Path(build_dir) / ("serial" if serial else f"p{units}")
        try:
            rep, u, c = build_system(refold(cfg, units), board, folder, clock_mhz, baud,
                                     max_examples, pnr_clock_mhz, pnr_seed)
        except BuildError as e:
            why = str(e).splitlines()[0]
            use = utilization_from_log(folder / "top.tim")
            over = overused(use)
            if over:
                why = "needs " + ", ".join(over)
            attempts.append(Attempt(1 if serial else units, False, why, time.monotonic() - t0,
                                    serial))
            if log:
                log(f"{attempts[-1].label}: does not fit ({why}, {attempts[-1].seconds:.0f} s)")
            results[units] = (None, use)
            return results[units]
        attempts.append(Attempt(1 if serial else units, True,
                                f"{rep.lut} LC, {rep.dsp} DSP, {rep.bram} BRAM, "
                                f"fmax {rep.fmax_mhz:.1f} MHz", time.monotonic() - t0, serial))
        if log:
            log(f"{attempts[-1].label}: fits ({attempts[-1].why}, {attempts[-1].seconds:.0f} s)")
        results[units] = ((rep, u, c), utilization_from_log(folder / "top.tim"))
        return results[units]

    t = target(board)
    top = _largest_multiplier_fold(cfg, t, attempts, log)
    res_hi, use_hi = attempt(top) if top >= 1 else (None, {})
    if res_hi:
        return (*res_hi, attempts)
    res_lo, use_lo = attempt(1) if top > 1 else (None, use_hi)
    if not res_lo:
        if not _multipliers_fit(cfg, "serial", t):
            need = multiplier_blocks(cfg, "serial", t.mult_bits, t.split_products)
            raise BuildError(f"{cfg.name} does not fit {board}: even the serial fabric needs "
                             f"about {need} multiplier blocks (of {t.dsps}); narrow the "
                             f"[fixed] widths")
        res_serial, _ = attempt("serial")
        if res_serial:
            return (*res_serial, attempts)
        tried = "; ".join(f"{a.label}: {a.why}" for a in reversed(attempts[:-1]))
        raise BuildError(f"{cfg.name} does not fit {board} even as the serial fabric "
                         f"({attempts[-1].why}); {tried}")
    good = _search_fold(lambda units: attempt(units)[0] is not None,
                        _predict(use_lo, 1, use_hi, top), top)
    return (*results[good][0], attempts)


def _largest_multiplier_fold(cfg, t, attempts, log):
    """The largest fold whose estimated multiplier blocks fit target ``t`` (0: none).

    Candidates whose multipliers cannot fit are not built: this is the top of the search.
    A skipped fully parallel fabric is recorded in ``attempts``.
    """
    E = cfg.network.n_edges
    top = E
    while top >= 1 and not _multipliers_fit(cfg, top, t):
        top -= 1
    if top < E:
        need = multiplier_blocks(cfg, E, t.mult_bits, t.split_products)
        attempts.append(Attempt(E, False, f"skipped: about {need} multiplier blocks > "
                                f"{t.dsps}", 0.0))
        if log:
            within = (f"largest fold within them: {top} edge units" if top else
                      "not even one edge unit fits them")
            log(f"edge_units {E}: skipped (about {need} multiplier blocks > {t.dsps}); "
                f"{within}")
    return top


def _search_fold(fits, predicted, top):
    """The largest fold in ``1 .. top - 1`` for which ``fits(units)`` holds, given that 1
    fits and ``top`` does not: build the prediction, walk up one unit while that fits,
    or bisect downwards when it did not."""
    good, bad = 1, top
    if predicted > 1:
        if fits(predicted):
            good = predicted
            while good + 1 < bad and fits(good + 1):
                good += 1
            bad = min(bad, good + 1)
        else:
            bad = predicted
    while bad - good > 1:                # bisect when the prediction was too optimistic
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def multiplier_blocks(cfg, units, mult_bits, split=False):
    """Estimated multiplier blocks of ``cfg``'s fabric with ``units`` edge units.

    ``units == "serial"`` is the serial fabric (one edge term and one gate step). Each
    product of ``a x b`` signed bits is counted as ``ceil(a / mult_bits) * ceil(b /
    mult_bits)`` blocks of ``mult_bits x mult_bits`` (Yosys sometimes does a little
    better), or as one block with ``split`` (``gateware.fabric.arith.split_mul``).
    """
    ops = product_operand_bits(Formats.from_config(cfg))

    def blocks(a, b):
        if split:
            return 1
        return math.ceil(a / mult_bits) * math.ceil(b / mult_bits)
    term, learn = blocks(*ops["term"]), blocks(*ops["learn"])
    return term + learn if units == "serial" else units * (2 * term + learn)


def _multipliers_fit(cfg, units, board):
    if not board.mult_bits or not board.dsps:
        return True
    return multiplier_blocks(cfg, units, board.mult_bits,
                             board.split_products) <= board.dsps
