"""The golden model of the board system (``clln.sim.system.SystemModel``) with several
streams: each stream must be the single-network system of its seed, bit for bit."""


import dataclasses

import numpy as np
import pytest
from conftest import LEARN, SETTLE, small_xor, tiny_config

from clln import protocol as p
from clln.formats import SAT_DG, SAT_V
from clln.host.driver import Device, LoopbackTransport
from clln.protocol import Command, Status
from clln.sim.fixed import FixedPointModel
from clln.sim.system import SystemModel
from clln.sim.training import train

E = 32                                      # edges of paper-xor


def ask(model, command, payload=b""):
    """Send one request to ``model``; return the reply packet."""
    return p.parse_reply(model.respond(p.encode_request(5, command, payload))[:-1])


def session(dev, cfg, seed, gate_seed, order, rng):
    """Load two extra examples, a schedule (LFSR ``seed``) and the gates of seeds
    ``gate_seed`` and on (one per stream), train 2 x 2 epochs, infer once; return what the
    host reads back."""
    fmt = FixedPointModel(cfg, [0]).formats
    x, y = fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y)
    extra_x = rng.integers(0, int(0.45 * 2 ** fmt.v_frac), (2, x.shape[1]))
    extra_y = rng.integers(-3000, 3000, (2, y.shape[1]))
    dev.write_dataset(np.concatenate([x, extra_x]), np.concatenate([y, extra_y]))
    n = len(x) + 2
    dev.write_schedule(p.ScheduleParams(SETTLE, LEARN, 2, n, order, seed))
    seeds = range(gate_seed, gate_seed + dev.identity.streams)
    dev.write_gates(np.concatenate([fmt.volts_to_g(cfg.learning.initial_gates(E, s))
                                    for s in seeds]))
    rec = {"status": [], "gates": []}
    for _ in range(2):
        dev.run_epochs(2, True)
        rec["status"].append(dev.wait_idle())
        rec["gates"].append(dev.read_gates())
    dev.run_epochs(1, False)
    rec["status"].append(dev.wait_idle())
    rec["outputs"] = dev.read_outputs(0, n)
    return rec


@pytest.mark.parametrize("order,seed", [(p.Order.LFSR, 77), (p.Order.CYCLIC, 4)])
def test_streams_are_the_single_network_systems_of_their_seeds(order, seed):
    model = SystemModel(small_xor("streams:3"), seed=10)
    assert model.seeds == [10, 11, 12] and model.identity.streams == 3
    dev = Device(LoopbackTransport(model.respond))
    got = session(dev, small_xor("streams:3"), seed, 2 * seed, order,
                  np.random.default_rng(seed))
    want = [session(Device(LoopbackTransport(SystemModel(small_xor(), seed=10 + s).respond)),
                    small_xor(), seed, 2 * seed + s, order, np.random.default_rng(seed))
            for s in range(3)]
    for i in range(2):
        np.testing.assert_array_equal(got["gates"][i],
                                      np.concatenate([w["gates"][i] for w in want]))
    np.testing.assert_array_equal(got["outputs"],
                                  np.concatenate([w["outputs"] for w in want], axis=1))
    for i, st in enumerate(got["status"]):
        singles = [w["status"][i] for w in want]
        assert st.error_sums == tuple(s.error_sum for s in singles)
        assert (st.mode, st.epoch, st.example, st.ticks) == (
            singles[0].mode, singles[0].epoch, singles[0].example, singles[0].ticks)
        assert st.saturation == singles[0].saturation | singles[1].saturation | \
            singles[2].saturation
    assert got["status"][1].ticks == 2 * 2 * 6 * (SETTLE + LEARN)
    assert len(set(got["status"][0].error_sums)) == 3          # the streams differ
    assert not np.array_equal(got["gates"][0][:E], got["gates"][0][E:2 * E])


def until_still(cfg, relax):
    """``cfg`` settling until still (4 quiet ticks of at most 4 LSBs, capped at 200) with
    node step ``relax``."""
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, settle_ticks=200, relax=relax, settle="still", still_ticks=4,
        still_lsb=4))


@pytest.mark.parametrize("relax,settle", [("euler", "fixed"), ("euler", "still"),
                                          ("jacobi", "still")])
def test_streams_train_like_the_fixed_point_model(relax, settle):
    """Cyclic training from reset: the streams are ``train(FixedPointModel(cfg, [10, 11,
    12], joint=True, lag=1))`` (with fixed settling: stream s is the model of seed 10 + s
    alone): same gates, same final outputs (the inference pass settles, then runs the
    learn ticks with learning off), error sums of its observed outputs, same ticks."""
    cfg, epochs = small_xor("streams:3"), 3
    if settle == "still":
        cfg = until_still(cfg, relax)
    else:
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(
            cfg.schedule, relax=relax, settle=settle))
    model = SystemModel(cfg, seed=10)
    assert model.schedule.still_ticks == (4 if settle == "still" else 0)
    model.run(epochs, True)
    gates, sums, ticks = model.gates.reshape(3, E).copy(), list(model.error_sums), \
        model.twin.ticks
    model.run(1, False)
    fmt = model.fmt
    targets = fmt.volts_to_v(cfg.task.y)
    joint = FixedPointModel(cfg, [10, 11, 12], joint=True, lag=cfg.fabric.still_lag)
    assert joint.lag == 1
    hist = train(joint, epochs)
    assert ticks == joint.ticks
    if settle == "still":       # the settle phases ended early (4 examples an epoch)
        assert 4 * 4 * epochs < ticks < 4 * epochs * (200 + LEARN)
    for s in range(3):
        np.testing.assert_array_equal(gates[s], joint.gates[s])
        np.testing.assert_array_equal(fmt.v_to_volts(model.outputs[:4, s:s + 1]),
                                      hist.outputs_final[s])
        observed = np.round(hist.observed[s, -1] * 2 ** fmt.v_frac).astype(np.int64)
        assert sums[s] == int(((observed - targets) ** 2).sum()) > 0
        if settle == "fixed":
            alone = FixedPointModel(cfg, [10 + s])
            train(alone, epochs)
            np.testing.assert_array_equal(gates[s], alone.gates[0])


def test_still_settle_phase_and_inference_pass_tick_by_tick():
    """One stream settling until still: each example's settle phase ends where
    ``run_ticks``' rule says, at the cap at the latest; training observes there, the
    inference pass after the learn ticks run with learning off (gates unchanged)."""
    cfg = until_still(small_xor(), "jacobi")
    model = SystemModel(cfg)
    ref = FixedPointModel(cfg, [cfg.learning.seed])
    model.run(1, True)
    lengths = []
    for i in range(4):
        used = ref.run(200, i, False, still_ticks=4)[0]
        lengths.append(int(used))
        observed = np.round(ref.outputs()[0] * 2 ** ref.formats.v_frac).astype(np.int64)
        np.testing.assert_array_equal(model.outputs[i], observed)
        ref.run(LEARN, i, True)
    assert 4 < min(lengths) and max(lengths) < 200 and model.twin.ticks == ref.ticks
    gates = model.gates.copy()
    model.run(1, False)
    np.testing.assert_array_equal(model.gates, gates)
    for i in range(4):
        ref.run(200, i, False, still_ticks=4)
        ref.run(LEARN, i, False)
        observed = np.round(ref.outputs()[0] * 2 ** ref.formats.v_frac).astype(np.int64)
        np.testing.assert_array_equal(model.outputs[i], observed)
    assert model.twin.ticks == ref.ticks
    # a schedule written with still_ticks 0 settles for the whole count again
    model.write_schedule(dataclasses.replace(model.schedule, still_ticks=0))
    before = model.twin.ticks
    model.run(1, True)
    assert model.twin.ticks - before == 4 * (200 + LEARN)


@pytest.mark.parametrize("streams", [1, 3])
def test_gate_table_outputs_status_and_reset(streams):
    fold = f"streams:{streams}" if streams > 1 else None
    model = SystemModel(small_xor(fold), max_examples=70)
    ident = model.identity
    assert (ident.streams, ident.n_gates, ident.n_output_values) == (streams, streams * E,
                                                                     streams)
    assert model.gates.shape == (streams * E,) and model.outputs.shape == (70, streams)
    initial = model.gates.copy()
    np.testing.assert_array_equal(initial.reshape(streams, E), [
        model.fmt.volts_to_g(model.cfg.learning.initial_gates(E, model.cfg.learning.seed + s))
        for s in range(streams)])
    # the last gate of one stream and the first of the next in one write
    first = E - 1 if streams > 1 else E - 2
    g = [ident.gate_min_q + 1, ident.gate_max_q - 1]
    assert ask(model, Command.WRITE_GATES, p.pack_write_gates(first, g)).status == Status.OK
    assert model.gates[first:first + 2].tolist() == g
    if streams > 1:
        assert (model.twin.gates[0, E - 1], model.twin.gates[1, 0]) == tuple(g)
    reply = ask(model, Command.READ_GATES, p.pack_range(first, 2))
    assert p.unpack_values(reply.payload).tolist() == g
    before = model.gates.copy()
    for payload in (p.pack_write_gates(streams * E - 1, g),
                    p.pack_write_gates(0, [ident.gate_max_q + 1])):
        assert ask(model, Command.WRITE_GATES, payload).status == Status.OUT_OF_RANGE
    assert ask(model, Command.READ_GATES, p.pack_range(streams * E - 1, 2)).status == \
        Status.OUT_OF_RANGE
    np.testing.assert_array_equal(model.gates, before)
    # outputs: one row per example, stream-major; a reply holds 64 values
    model.run(1, True)
    assert model.outputs[:4].any() and not model.outputs[4:].any()
    per = 64 // streams
    reply = ask(model, Command.READ_OUTPUTS, p.pack_range(0, per))
    assert reply.status == Status.OK
    np.testing.assert_array_equal(p.unpack_values(reply.payload).reshape(per, streams),
                                  model.outputs[:per])
    assert ask(model, Command.READ_OUTPUTS, p.pack_range(0, per + 1)).status == \
        Status.OUT_OF_RANGE
    # status: every stream's error sum, ticks of one stream, flags of all streams
    model.twin.flags[:] = 0
    model.twin.flags[-1] = SAT_V
    model.twin.flags[0] |= SAT_DG
    reply = ask(model, Command.READ_STATUS)
    assert len(reply.payload) == 24 + 8 * streams
    st = p.DeviceStatus.unpack(reply.payload, streams)
    assert st == model.status()
    assert st.error_sums == tuple(model.error_sums) and all(st.error_sums)
    assert st.ticks == 4 * (SETTLE + LEARN) and st.saturation == SAT_V | SAT_DG
    assert st.cycles == 0                           # the model counts no cycles
    # RESET: every stream back to its seed's gates, counters, sums and outputs cleared
    assert ask(model, Command.RESET).status == Status.OK
    np.testing.assert_array_equal(model.gates, initial)
    assert model.status() == p.DeviceStatus(p.Mode.IDLE, 0, 0, 0, (0,) * streams, 0)
    assert not model.outputs.any() and not model.twin.flags.any()


def test_outputs_of_two_outputs_are_stream_major(tmp_path):
    """Column ``s * n_outputs + k`` is output k of stream s; a reply holds 64 values."""
    model = SystemModel(tiny_config(tmp_path, "streams:3", two_outputs=True), max_examples=16)
    singles = [SystemModel(tiny_config(tmp_path, 0, two_outputs=True), max_examples=16, seed=3 + s)
               for s in range(3)]
    for m in [model] + singles:
        m.write_schedule(p.ScheduleParams(6, 2, 2, 4, p.Order.LFSR, 9))
        m.run(2, True)
        m.run(1, False)
    assert model.outputs.shape == (16, 6) and model.identity.n_output_values == 6
    np.testing.assert_array_equal(model.outputs, np.concatenate([m.outputs for m in singles],
                                                                axis=1))
    assert model.error_sums == [m.error_sums[0] for m in singles]
    # the inference pass's sums: every example and output of each stream
    errors = model.outputs[:4].reshape(4, 3, 2) - model.dataset[:4, None, 1:]
    assert model.error_sums == (errors ** 2).sum(axis=(0, 2)).tolist()
    assert not np.array_equal(model.outputs[:, 0:2], model.outputs[:, 2:4])
    reply = ask(model, Command.READ_OUTPUTS, p.pack_range(1, 10))
    np.testing.assert_array_equal(p.unpack_values(reply.payload).reshape(10, 6),
                                  model.outputs[1:11])
    assert ask(model, Command.READ_OUTPUTS, p.pack_range(0, 11)).status == Status.OUT_OF_RANGE


@pytest.mark.parametrize("fold", [0, "streams:3"])
def test_expected_board_time_counts_the_ticks_the_board_runs(fold):
    """``clln build``'s expected time per example: the ticks per training example are
    those the board's golden model runs in the same training (all streams settling
    jointly, judged as late as the fabric knows), times the cycles per tick over the
    clock."""
    from clln.flows import expected_board_time
    cfg = until_still(small_xor(fold), "jacobi")
    cfg = dataclasses.replace(cfg, learning=dataclasses.replace(cfg.learning, epochs=3))
    got = expected_board_time(cfg, 8, 50e6)
    board = SystemModel(cfg)
    board.run(3, True)
    examples = 3 * len(cfg.task.x)
    assert got["ticks_per_example"] == pytest.approx(board.twin.ticks / examples)
    assert got["ticks_per_example"] < cfg.schedule.settle_ticks + LEARN   # ended early
    assert got["seconds_per_example"] == pytest.approx(got["ticks_per_example"] * 8 / 50e6)
    assert got["seconds_per_example_all_streams"] == pytest.approx(
        got["seconds_per_example"] / cfg.fabric.streams)
    assert got["seconds_to_train"] == pytest.approx(got["seconds_per_example"] * examples)
