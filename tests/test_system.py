"""The board system end to end: host driver -> simulated UART -> System (Verilator).

One Verilator build (module fixture) per fabric of paper-xor with a short schedule,
settling until still (``settle = "still"``; a schedule with ``still_ticks`` 0 settles for
the fixed count on the same bitstream), serves every test; the golden model
``clln.sim.system.SystemModel`` answers the same requests through a loopback transport.
It counts no clock cycles: READ_STATUS is compared with the cycles set to 0, and the
gateware's count is checked against the ticks of each run.
"""

import dataclasses
import random
import struct

import numpy as np
import pytest
from conftest import LEARN, SETTLE, small_xor

from clln import protocol as p
from clln.flows import sim_board
from clln.gateware.fabric import fabric_shape
from clln.host.driver import Device, DeviceError, LoopbackTransport
from clln.protocol import Command, Status
from clln.sim.fixed import FixedPointModel
from clln.sim.system import SystemModel
from clln.sim.training import train

# one worker builds each simulated board once (make test: pytest-xdist, --dist loadgroup)
pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("simboard")]

#: The node step of the simulated boards.
RELAX = "euler"
#: The cap of a settle phase that ends when still (4 quiet ticks of at most 4 LSBs).
STILL_CAP, STILL_TICKS, STILL_LSB = 150, 4, 4


def still_xor(fold):
    """:func:`small_xor` settling until still, with node step :data:`RELAX`."""
    cfg = small_xor(fold)
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, relax=RELAX, settle="still", still_ticks=STILL_TICKS,
        still_lsb=STILL_LSB))


@pytest.fixture(scope="session")
def built_boards(tmp_path_factory):
    """The simulated boards built so far in this process, closed at its end: a worker
    of pytest-xdist may tear a module's fixture down between its tests, and a board
    takes a minute or two to build."""
    boards = {}
    yield boards, tmp_path_factory
    for _, tr in boards.values():
        tr.close()


@pytest.fixture(scope="module", params=[8, "serial", "streams:3"],
                ids=["8-units", "serial", "3-streams"])
def board(built_boards, request):
    boards, factory = built_boards
    if request.param not in boards:
        cfg = still_xor(request.param)
        boards[request.param] = cfg, sim_board(cfg, build_dir=factory.mktemp("simboard"),
                                               opt="-O0")
    return boards[request.param]


def without_cycles(status):
    """``status`` as the golden model reports it: no cycles counted."""
    return dataclasses.replace(status, cycles=0)


def check_cycles(cfg, statuses, ticks_before=0, n_examples=6):
    """Each status ends a run (of ``n_examples`` an epoch): its cycles are at least the
    run's ticks times the fabric's cycles per tick, and at most a few hundred cycles an
    example more (loading and observing it)."""
    cpt = fabric_shape(cfg)[1]
    for st in statuses:
        ticks = st.ticks - ticks_before
        examples = st.epoch * n_examples
        assert ticks * cpt <= st.cycles < ticks * cpt + 300 * examples, (st, cpt)
        ticks_before = st.ticks


def fresh(board):
    """The simulated device after RESET, and a new golden model with its driver."""
    cfg, tr = board
    dev = Device(tr, timeout=30)
    dev.reset()
    model = SystemModel(cfg)
    mdev = Device(LoopbackTransport(model.respond))
    return cfg, dev, model, mdev


def exchange(transport, raw, timeout=10.0):
    """Send raw bytes; return the reply bytes up to and including the first delimiter."""
    transport.write(raw)
    out = bytearray()
    import time
    deadline = time.monotonic() + timeout
    while p.DELIMITER not in out:
        out += transport.read(max(0.0, deadline - time.monotonic()))
        if time.monotonic() > deadline:
            raise AssertionError(f"no reply to {raw.hex()}")
    return bytes(out)


def session(dev, cfg, seed, epochs, order, rng, still=0):
    """What a host does (settling for SETTLE ticks, or until ``still`` quiet ticks, at
    most STILL_CAP); returns everything it read back."""
    fmt = FixedPointModel(cfg, [0]).formats
    x = fmt.volts_to_v(cfg.task.x)
    y = fmt.volts_to_v(cfg.task.y)
    extra_x = rng.integers(0, int(0.45 * 2 ** fmt.v_frac), (2, x.shape[1]))
    extra_y = rng.integers(-3000, 3000, (2, y.shape[1]))
    dev.write_dataset(np.concatenate([x, extra_x]), np.concatenate([y, extra_y]))
    n = len(x) + 2
    dev.write_schedule(p.ScheduleParams(STILL_CAP if still else SETTLE, LEARN, epochs, n,
                                        order, seed, still))
    dev.write_gates(fmt.volts_to_g(cfg.learning.initial_gates(cfg.network.n_edges, seed)))
    rec = {"status": [], "gates": []}
    for _ in range(2):
        dev.run_epochs(epochs, True)
        rec["status"].append(dev.wait_idle(timeout=120, poll=0.01))
        rec["gates"].append(dev.read_gates())
    dev.run_epochs(1, False)
    rec["status"].append(dev.wait_idle(timeout=120, poll=0.01))
    rec["outputs"] = dev.read_outputs(0, n)
    rec["gates"].append(dev.read_gates(3, 7))
    return rec


@pytest.mark.parametrize("order,seed,still", [(p.Order.LFSR, 77, 0), (p.Order.CYCLIC, 4, 0),
                                              (p.Order.LFSR, 5, STILL_TICKS),
                                              (p.Order.CYCLIC, 6, 1)])
def test_driver_over_simulated_uart_matches_golden_model(board, order, seed, still):
    """Gates, status (but for the cycles) and the outputs of the inference pass, example
    by example; settling for SETTLE ticks, or until still, capped at STILL_CAP."""
    cfg, dev, model, mdev = fresh(board)
    got = session(dev, cfg, seed, 2, order, np.random.default_rng(seed), still)
    want = session(mdev, cfg, seed, 2, order, np.random.default_rng(seed), still)
    for g, w in zip(got["gates"], want["gates"], strict=True):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got["outputs"], want["outputs"])
    assert [without_cycles(st) for st in got["status"]] == want["status"]
    check_cycles(cfg, got["status"])
    ticks = got["status"][1].ticks
    if still:           # settle phases ended early (2 x 2 epochs of 6 examples)
        assert 2 * 2 * 6 * (still + LEARN) < ticks < 2 * 2 * 6 * (STILL_CAP + LEARN)
        # streams on their own schedules: each settled for its own number of ticks
        per_stream = [tw.ticks for tw in model.twins]
        assert len(set(per_stream)) == len(per_stream)
    else:
        assert ticks == 2 * 2 * 6 * (SETTLE + LEARN)
    assert got["status"][0].error_sum > 0
    assert not np.array_equal(got["gates"][0], got["gates"][1])


def test_cyclic_training_equals_clln_train(board):
    """Same gates and final outputs as ``train(FixedPointModel)`` (clln train --model fixed)."""
    cfg, dev, _, _ = fresh(board)
    from clln.cli_board import run_on_device
    seed, epochs = 5, 3
    res = run_on_device(dev, cfg, epochs, seed)
    hist = train(FixedPointModel(cfg, [seed]), epochs)
    fmt = FixedPointModel(cfg, [seed]).formats
    np.testing.assert_array_equal(fmt.g_to_volts(res["gates"]), hist.gates_final[0])
    np.testing.assert_array_equal(fmt.v_to_volts(res["outputs"]), hist.outputs_final[0])
    # the on-chip error is the golden curve with targets rounded to the voltage LSB
    np.testing.assert_allclose(res["mse_per_epoch"], hist.mse_curve[0], rtol=2e-3)


def malformed_frames(ident, rng, n_random=60):
    """(name, raw bytes) of requests every one of which must be refused, then
    ``n_random`` valid requests randomly damaged (which may or may not be refused)."""
    def req(cmd, payload=b"", version=p.PROTOCOL_VERSION, rid=9):
        return p.encode_request(rid, cmd, payload, version)

    good = req(Command.READ_STATUS)
    body = bytes([p.PROTOCOL_VERSION, 9, Command.READ_GATES]) + p.pack_range(0, 2)
    crc = p.crc16(body).to_bytes(2, "big")
    ex_bytes = ident.example_bytes
    frames = [
        ("bad crc", p.cobs_encode(body + bytes([crc[0] ^ 1, crc[1]])) + b"\0"),
        ("truncated", p.cobs_encode(b"\x01\x02") + b"\0"),
        ("one byte", b"\x05\0"),
        ("bad cobs", b"\x05\x01\x02\0"),
        ("too long", p.frame(bytes([p.PROTOCOL_VERSION, 3, 2]) + bytes(300))),
        ("bad version", req(Command.IDENTIFY, version=p.PROTOCOL_VERSION + 1)),
        ("unknown 0", req(0)), ("unknown 0x0c", req(0x0C)), ("unknown 0xff", req(0xFF)),
        ("identify len", req(Command.IDENTIFY, b"\0")),
        ("start len", req(Command.START, b"\0\0")),
        ("stop len", req(Command.STOP, b"x")),
        ("status len", req(Command.READ_STATUS, b"\0")),
        ("schedule len", req(Command.WRITE_SCHEDULE, bytes(18))),
        ("read gates len", req(Command.READ_GATES, bytes(4))),
        ("run len", req(Command.RUN_EPOCHS, bytes(4))),
        ("outputs len", req(Command.READ_OUTPUTS, bytes(2))),
        ("dataset short", req(Command.WRITE_DATASET, b"\0\0")),
        ("dataset len", req(Command.WRITE_DATASET, struct.pack(">HB", 0, 2) + bytes(ex_bytes))),
        ("gates len", req(Command.WRITE_GATES, struct.pack(">HB", 0, 1) + bytes(5))),
        ("dataset count 0", req(Command.WRITE_DATASET, struct.pack(">HB", 0, 0))),
        ("dataset past end", req(Command.WRITE_DATASET, p.pack_write_dataset(
            ident.max_examples - 1, [[0, 0]] * 2, [[0]] * 2))),
        ("dataset value", req(Command.WRITE_DATASET, p.pack_write_dataset(
            1, [[5, 6], [7, 1 << (ident.v_bits - 1)]], [[1], [2]]))),
        ("dataset negative", req(Command.WRITE_DATASET, p.pack_write_dataset(
            0, [[5, 6]], [[-(1 << (ident.v_bits - 1)) - 1]]))),
        ("gates count 0", req(Command.WRITE_GATES, struct.pack(">HB", 3, 0))),
        ("gates past end", req(Command.WRITE_GATES, p.pack_write_gates(
            ident.n_gates - 1, [ident.gate_min_q] * 2))),
        ("gate low", req(Command.WRITE_GATES, p.pack_write_gates(
            4, [ident.gate_min_q, ident.gate_min_q - 1]))),
        ("gate high", req(Command.WRITE_GATES, p.pack_write_gates(0, [ident.gate_max_q + 1]))),
        ("gate negative", req(Command.WRITE_GATES, p.pack_write_gates(0, [-5]))),
        ("read gates 0", req(Command.READ_GATES, p.pack_range(0, 0))),
        ("read gates end", req(Command.READ_GATES, p.pack_range(ident.n_gates - 3, 4))),
        ("outputs end", req(Command.READ_OUTPUTS, p.pack_range(ident.max_examples, 1))),
        ("outputs 0", req(Command.READ_OUTPUTS, p.pack_range(2, 0))),
        ("schedule zero ticks", req(Command.WRITE_SCHEDULE, p.ScheduleParams(0, 0, 1, 4).pack())),
        ("schedule n 0", req(Command.WRITE_SCHEDULE, p.ScheduleParams(3, 1, 1, 0).pack())),
        ("schedule n big", req(Command.WRITE_SCHEDULE,
                               p.ScheduleParams(3, 1, 1, ident.max_examples + 1).pack())),
        ("schedule order", req(Command.WRITE_SCHEDULE, struct.pack(">IIIHBI", 3, 1, 1, 4, 2, 0))),
        ("run learn 2", req(Command.RUN_EPOCHS, struct.pack(">IB", 1, 2))),
        # the controller counts phases and epochs in 16 bits (protocol.MAX_*)
        ("schedule settle big", req(Command.WRITE_SCHEDULE, p.ScheduleParams(
            p.MAX_PHASE_TICKS + 1, 1, 1, 4).pack())),
        ("schedule learn big", req(Command.WRITE_SCHEDULE, p.ScheduleParams(
            3, 1 << 31, 1, 4).pack())),
        ("schedule epochs big", req(Command.WRITE_SCHEDULE, p.ScheduleParams(
            3, 1, p.MAX_RUN_EPOCHS + 1, 4).pack())),
        ("run epochs big", req(Command.RUN_EPOCHS, p.pack_run(p.MAX_RUN_EPOCHS + 1))),
    ]
    # random damage to valid requests (never a start or a run: they would take long)
    valid = [req(Command.WRITE_GATES, p.pack_write_gates(2, [ident.gate_min_q + 99] * 3)),
             req(Command.READ_GATES, p.pack_range(1, 5)), good,
             req(Command.WRITE_SCHEDULE, p.ScheduleParams(7, 1, 2, 3, p.Order.LFSR, 5).pack()),
             req(Command.WRITE_DATASET, p.pack_write_dataset(2, [[1, 2]], [[3]]))]
    for i in range(n_random):
        raw = bytearray(rng.choice(valid)[:-1])
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            pos = rng.randrange(len(raw))
            if kind < 0.5:
                raw[pos] = rng.randrange(1, 256)
            elif kind < 0.8:
                del raw[pos]
            else:
                raw.insert(pos, rng.randrange(1, 256))
        try:
            body = p.cobs_decode(bytes(raw))
            if len(body) >= 3 and body[2] in (Command.START, Command.RUN_EPOCHS):
                continue
        except p.FrameError:
            pass
        frames.append((f"random {i}", bytes(raw) + b"\0"))
    return frames


def test_malformed_frames_get_error_replies_and_change_nothing(board):
    cfg, dev, model, mdev = fresh(board)
    ident = dev.identify()
    assert ident == model.identity
    seed = 2
    fmt = FixedPointModel(cfg, [0]).formats
    gates0 = fmt.volts_to_g(cfg.learning.initial_gates(cfg.network.n_edges, seed))
    for d in (dev, mdev):
        d.write_gates(gates0)
        d.write_schedule(p.ScheduleParams(SETTLE, LEARN, 1, 4, p.Order.CYCLIC, 3))
        d.write_dataset(fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y))
    frames = malformed_frames(ident, random.Random(1))
    statuses = set()
    refused = 0
    for name, raw in frames:
        got = exchange(dev.transport, raw)
        want = model.respond(raw)
        assert got == want, name
        reply = p.parse_reply(got[:-1])
        statuses.add(reply.status)
        if not name.startswith("random"):
            assert reply.status != Status.OK, name
            refused += 1
    assert refused >= 38
    assert {Status.BAD_CRC, Status.TRUNCATED, Status.BAD_COBS, Status.TOO_LONG,
            Status.BAD_VERSION, Status.UNKNOWN_COMMAND, Status.BAD_LENGTH,
            Status.OUT_OF_RANGE} <= statuses
    # same state: gates, status, and a training epoch from it
    np.testing.assert_array_equal(dev.read_gates(), mdev.read_gates())
    assert dev.status() == mdev.status()            # no run since RESET: 0 cycles
    for d in (dev, mdev):
        d.run_epochs(1, True)
    sg, sm = dev.wait_idle(poll=0.01), mdev.wait_idle()
    assert (sg.epoch, sg.error_sums, sg.example) == (sm.epoch, sm.error_sums, sm.example)
    np.testing.assert_array_equal(dev.read_gates(), mdev.read_gates())
    np.testing.assert_array_equal(dev.read_outputs(0, 5), mdev.read_outputs(0, 5))


@pytest.fixture(scope="module")
def soak_board(built_boards):
    """The 8-unit board compiled with the C++ optimiser (a minute longer to build than
    the ``-O0`` boards, several times faster to run: for the slow tier)."""
    boards, factory = built_boards
    if "soak" not in boards:
        cfg = still_xor(8)
        boards["soak"] = cfg, sim_board(cfg, build_dir=factory.mktemp("soakboard"))
    return boards["soak"]


@pytest.mark.slow_sim
def test_ten_thousand_damaged_frames_through_the_board(soak_board):
    """At least 10,000 damaged requests through the simulated UART: each reply byte for
    byte the golden model's, and the state afterwards the same (slow tier: about 25 ms a
    frame, 5 minutes)."""
    cfg, dev, model, mdev = fresh(soak_board)
    ident = dev.identify()
    fmt = FixedPointModel(cfg, [0]).formats
    for d in (dev, mdev):
        d.write_gates(fmt.volts_to_g(cfg.learning.initial_gates(cfg.network.n_edges, 5)))
        d.write_dataset(fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y))
    frames = malformed_frames(ident, random.Random(7), n_random=11_000)
    assert len(frames) >= 10_000
    for name, raw in frames:
        assert exchange(dev.transport, raw) == model.respond(raw), name
    np.testing.assert_array_equal(dev.read_gates(), mdev.read_gates())
    assert without_cycles(dev.status()) == mdev.status()


@pytest.mark.slow_sim
def test_ten_million_tick_soak(soak_board):
    """10^7 ticks of training on the simulated board against the golden model, compared
    every 20,000 ticks: gates, epoch, error sums, outputs, and the sticky flags (slow tier;
    minutes)."""
    cfg, dev, model, mdev = fresh(soak_board)
    fmt = FixedPointModel(cfg, [0]).formats
    n = len(cfg.task.x)
    for d in (dev, mdev):
        d.write_gates(fmt.volts_to_g(cfg.learning.initial_gates(cfg.network.n_edges, 11)))
        d.write_dataset(fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y))
        d.write_schedule(p.ScheduleParams(SETTLE, LEARN, 1, n, p.Order.LFSR, 13))
    ticks_per_epoch = n * (SETTLE + LEARN)
    epochs = 20_000 // ticks_per_epoch
    done = 0
    while done < 10_000_000:
        for d in (dev, mdev):
            d.run_epochs(epochs, True)
        got, want = dev.wait_idle(timeout=600, poll=1.0), mdev.wait_idle()
        assert without_cycles(got) == want, done
        np.testing.assert_array_equal(dev.read_gates(), mdev.read_gates())
        done = got.ticks
    assert done >= 10_000_000
    np.testing.assert_array_equal(dev.read_outputs(0, n), mdev.read_outputs(0, n))


def test_busy_and_stop(board):
    cfg, dev, model, mdev = fresh(board)
    gates = dev.read_gates()
    for d in (dev, mdev):
        d.write_schedule(p.ScheduleParams(SETTLE, LEARN, 1, 4))
    dev.run_epochs(0, False)             # inference until stopped: gates stay
    st = dev.status()
    assert st.mode == p.Mode.EVALUATING
    for call in (lambda: dev.write_gates([gates[0]]), dev.start,
                 lambda: dev.run_epochs(1), lambda: dev.write_dataset([[0, 0]], [[0]]),
                 lambda: dev.write_schedule(p.ScheduleParams(1, 1, 1, 1))):
        with pytest.raises(DeviceError) as e:
            call()
        assert e.value.status == Status.BUSY
    running = dev.status()
    assert running.ticks > st.ticks and running.cycles > st.cycles   # counting on
    dev.stop()
    st = dev.wait_idle(poll=0.01)
    assert st.mode == p.Mode.IDLE and st.cycles >= running.cycles
    assert st.cycles >= st.ticks * fabric_shape(cfg)[1]         # the run began at RESET
    assert dev.status().cycles == st.cycles                       # frozen
    np.testing.assert_array_equal(dev.read_gates(), gates)
    dev.run_epochs(1, False)                                      # a new run starts at 0
    again = dev.wait_idle(poll=0.01)
    check_cycles(cfg, [again], st.ticks, n_examples=4)
    dev.reset()
    assert dev.status() == model.status()           # RESET clears the counters
    np.testing.assert_array_equal(dev.read_gates(), model.gates)


class Unclosed:
    """A transport that ``clln run`` may close: the shared simulated board stays open."""

    def __init__(self, transport):
        self.transport = transport

    def write(self, data):
        self.transport.write(data)

    def read(self, timeout):
        return self.transport.read(timeout)

    def close(self):
        pass


@pytest.mark.parametrize("board", [8], indirect=True)
def test_clln_run_resumed_on_the_simulated_board(board, tmp_path, monkeypatch, capsys):
    """``clln run --sim`` for 2 epochs with a checkpoint, then ``--resume`` for 1 more, on
    the Verilated board (8 edge units; the UART's bytes take most of the time, and a
    single stream has fewest): every gate, error sum and output of both runs is the
    golden model's, and the resumed gates are the fixed-point model's continued by the
    board's rule (the checkpoint's gates, node voltages 0): the fabric has no node write
    port, so they differ from 3 epochs straight, whose nodes carry over. Streams:
    ``tests/test_checkpoint.py`` on the golden model."""
    import json

    from clln import cli_board
    from clln import config as config_mod
    cfg, transport = board
    text = config_mod.resolve("paper-xor").read_text()
    import re
    for old, new in ((r'relax = "jacobi"', f'relax = "{RELAX}"'),
                     (r"still_lsb = \d+", f"still_lsb = {STILL_LSB}"),
                     (r"settle_ticks = 1000", f"settle_ticks = {SETTLE}"),
                     (r"learn_ticks = 1 ", f"learn_ticks = {LEARN} ")):
        text, n = re.subn(old, new, text)
        assert n == 1, old
    path = tmp_path / "still-xor.toml"
    path.write_text(text + "\n[fabric]\nedge_units = 8\n")
    assert p.config_hash(config_mod.load(path)) == p.config_hash(cfg)

    def runs(open_device):
        monkeypatch.setattr(cli_board, "_open_device", open_device)
        ckpt = tmp_path / "c.json"
        out = []
        for flags in (["--epochs", "2", "--seed", "5", "--checkpoint", str(ckpt)],
                      ["--epochs", "1", "--resume", str(ckpt)]):
            assert cli_board.cmd_run(cli_board_args(path, flags)) == 0
            out.append(json.loads(capsys.readouterr().out))
        return out, json.loads(ckpt.read_text())

    sim, sim_ckpt = runs(lambda c, a, s: (Device(transport, timeout=60), Unclosed(transport)))
    model, model_ckpt = runs(lambda c, a, s: (Device(LoopbackTransport(SystemModel(c).respond)),
                                              Unclosed(None)))
    for got, want in zip(sim, model, strict=True):
        for key in ("mse_per_epoch", "error_sums", "mse_final", "outputs_final", "gates_final",
                    "streams", "epochs", "resumed_at_epoch", "saturated"):
            assert got[key] == want[key], key
    assert sim_ckpt["streams"] == model_ckpt["streams"] and sim_ckpt["epoch"] == 3
    first, resumed = sim
    assert resumed["error_sums"][:2] == first["error_sums"] and len(resumed["error_sums"]) == 3
    fixed = FixedPointModel(cfg, [5])
    fixed.gates[:] = [fixed.formats.volts_to_g(np.array(s["gates_final"]))
                      for s in first["streams"]]            # the first run's checkpoint
    hist = train(fixed, 1)
    assert [s["gates_final"] for s in resumed["streams"]] == hist.gates_final.tolist()
    straight = train(FixedPointModel(cfg, [5]), 3)
    assert [s["gates_final"] for s in resumed["streams"]] != straight.gates_final.tolist()


def cli_board_args(config, flags):
    """The parsed arguments of ``clln run CONFIG --sim --json FLAGS``."""
    import argparse

    from clln import cli_board
    parser = argparse.ArgumentParser(prog="clln")
    cli_board.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["run", str(config), "--sim", "--json", *flags])
