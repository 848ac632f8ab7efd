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
    """Load two extra examples, ``cfg``'s schedule (LFSR ``seed``) and the gates of seeds
    ``gate_seed`` and on (one per stream), train 2 x 2 epochs, infer once; return what the
    host reads back."""
    fmt = FixedPointModel(cfg, [0]).formats
    x, y = fmt.volts_to_v(cfg.task.x), fmt.volts_to_v(cfg.task.y)
    extra_x = rng.integers(0, int(0.45 * 2 ** fmt.v_frac), (2, x.shape[1]))
    extra_y = rng.integers(-3000, 3000, (2, y.shape[1]))
    dev.write_dataset(np.concatenate([x, extra_x]), np.concatenate([y, extra_y]))
    n = len(x) + 2
    sch = cfg.schedule
    still = sch.still_ticks if sch.settle == "still" else 0
    dev.write_schedule(p.ScheduleParams(sch.settle_ticks, LEARN, 2, n, order, seed, still))
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


def until_still(cfg, relax):
    """``cfg`` settling until still (4 quiet ticks of at most 4 LSBs, capped at 200) with
    node step ``relax``."""
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, settle_ticks=200, relax=relax, settle="still", still_ticks=4,
        still_lsb=4))


@pytest.mark.parametrize("order,seed,settle", [(p.Order.LFSR, 77, "fixed"),
                                               (p.Order.CYCLIC, 4, "fixed"),
                                               (p.Order.LFSR, 77, "still"),
                                               (p.Order.CYCLIC, 4, "still")])
def test_streams_are_the_single_network_systems_of_their_seeds(order, seed, settle):
    """Stream s of a 3-stream system given LFSR seed ``seed`` is the single-network
    system given ``seed + s`` (its example order) and the gates of gate seed + s: gates,
    outputs, error sums; status: stream 0's epoch, example and ticks, the OR of the flags.
    Settling until still, the streams run different numbers of ticks."""
    def make(fold):
        cfg = small_xor(fold)
        if settle == "still":
            return until_still(cfg, "jacobi")
        return dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule,
                                                                     settle="fixed"))

    model = SystemModel(make("streams:3"), seed=10)
    assert model.seeds == [10, 11, 12] and model.identity.streams == 3
    dev = Device(LoopbackTransport(model.respond))
    got = session(dev, make("streams:3"), seed, 2 * seed, order, np.random.default_rng(seed))
    singles = [SystemModel(make(None), seed=10 + s) for s in range(3)]
    want = [session(Device(LoopbackTransport(single.respond)), make(None), seed + s,
                    2 * seed + s, order, np.random.default_rng(seed))
            for s, single in enumerate(singles)]
    for i in range(2):
        np.testing.assert_array_equal(got["gates"][i],
                                      np.concatenate([w["gates"][i] for w in want]))
    np.testing.assert_array_equal(got["outputs"],
                                  np.concatenate([w["outputs"] for w in want], axis=1))
    for i, st in enumerate(got["status"]):
        ones = [w["status"][i] for w in want]
        assert st.error_sums == tuple(one.error_sum for one in ones)
        assert (st.mode, st.epoch, st.example, st.ticks) == (
            ones[0].mode, ones[0].epoch, ones[0].example, ones[0].ticks)
        assert st.saturation == ones[0].saturation | ones[1].saturation | ones[2].saturation
    ticks = [one.twin.ticks for one in singles]
    assert [tw.ticks for tw in model.twins] == ticks
    if settle == "fixed":
        assert ticks == [(2 * 2 + 1) * 6 * (SETTLE + LEARN)] * 3
    else:                               # the streams settled for different numbers of ticks
        assert len(set(ticks)) == 3 and max(ticks) < (2 * 2 + 1) * 6 * (200 + LEARN)
    assert len(set(got["status"][0].error_sums)) == 3          # the streams differ
    assert not np.array_equal(got["gates"][0][:E], got["gates"][0][E:2 * E])


@pytest.mark.parametrize("relax,settle", [("euler", "fixed"), ("euler", "still"),
                                          ("jacobi", "still")])
def test_streams_train_like_the_fixed_point_model(relax, settle):
    """Cyclic training from reset: stream s is ``train(FixedPointModel(cfg, [10 + s]))``
    (``clln train --model fixed --seed 10 + s``): same gates, same final outputs (the
    inference pass settles, then runs the learn ticks with learning off), error sums of
    its observed outputs, same ticks."""
    cfg, epochs = small_xor("streams:3"), 3
    if settle == "still":
        cfg = until_still(cfg, relax)
    else:
        cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(
            cfg.schedule, relax=relax, settle=settle))
    model = SystemModel(cfg, seed=10)
    assert model.schedule.still_ticks == (4 if settle == "still" else 0)
    model.run(epochs, True)
    gates, sums = model.gates.reshape(3, E).copy(), list(model.error_sums)
    ticks = [tw.ticks for tw in model.twins]
    model.run(1, False)
    fmt = model.fmt
    targets = fmt.volts_to_v(cfg.task.y)
    for s in range(3):
        alone = FixedPointModel(cfg, [10 + s])
        hist = train(alone, epochs)
        assert ticks[s] == alone.ticks
        if settle == "still":       # the settle phases ended early (4 examples an epoch)
            assert 4 * 4 * epochs < ticks[s] < 4 * epochs * (200 + LEARN)
        np.testing.assert_array_equal(gates[s], alone.gates[0])
        np.testing.assert_array_equal(fmt.v_to_volts(model.outputs[:4, s:s + 1]),
                                      hist.outputs_final[0])
        observed = np.round(hist.observed[0, -1] * 2 ** fmt.v_frac).astype(np.int64)
        assert sums[s] == int(((observed - targets) ** 2).sum()) > 0
    if settle == "still":
        assert len(set(ticks)) > 1
    else:                       # fixed settling: what the joint schedule (protocol 4) ran
        joint = FixedPointModel(cfg, [10, 11, 12], joint=True, lag=1)
        train(joint, epochs)
        np.testing.assert_array_equal(gates, joint.gates)


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
        assert (model.twins[0].gates[0, E - 1], model.twins[1].gates[0, 0]) == tuple(g)
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
    for tw in model.twins:
        tw.flags[:] = 0
    model.twins[-1].flags[0] = SAT_V
    model.twins[0].flags[0] |= SAT_DG
    reply = ask(model, Command.READ_STATUS)
    assert len(reply.payload) == 24 + 8 * streams
    st = p.DeviceStatus.unpack(reply.payload, streams)
    assert st == model.status()
    assert st.error_sums == tuple(model.error_sums) and all(st.error_sums)
    # stream 0's ticks (paper-xor settles until still, capped at SETTLE)
    assert st.ticks == model.twins[0].ticks and 4 * LEARN < st.ticks <= 4 * (SETTLE + LEARN)
    assert st.saturation == SAT_V | SAT_DG
    assert st.cycles == 0                           # the model counts no cycles
    # RESET: every stream back to its seed's gates, counters, sums and outputs cleared
    assert ask(model, Command.RESET).status == Status.OK
    np.testing.assert_array_equal(model.gates, initial)
    assert model.status() == p.DeviceStatus(p.Mode.IDLE, 0, 0, 0, (0,) * streams, 0)
    assert not model.outputs.any() and not any(tw.flags.any() for tw in model.twins)


def test_outputs_of_two_outputs_are_stream_major(tmp_path):
    """Column ``s * n_outputs + k`` is output k of stream s; a reply holds 64 values."""
    model = SystemModel(tiny_config(tmp_path, "streams:3", two_outputs=True), max_examples=16)
    singles = [SystemModel(tiny_config(tmp_path, 0, two_outputs=True), max_examples=16, seed=3 + s)
               for s in range(3)]
    for s, m in enumerate([model] + singles):
        # stream s's example order is a single network's of LFSR seed 9 + s
        m.write_schedule(p.ScheduleParams(6, 2, 2, 4, p.Order.LFSR, 9 + max(s - 1, 0)))
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
    those the board's golden model runs in the same training (each stream on its own
    schedule; the mean over them), times the cycles per tick over the clock; the time
    to train is the slowest stream's."""
    from clln.flows import expected_board_time
    cfg = until_still(small_xor(fold), "jacobi")
    cfg = dataclasses.replace(cfg, learning=dataclasses.replace(cfg.learning, epochs=3))
    got = expected_board_time(cfg, 8, 50e6)
    board = SystemModel(cfg)
    board.run(3, True)
    examples = 3 * len(cfg.task.x)
    ticks = [tw.ticks for tw in board.twins]
    assert got["ticks_per_example"] == pytest.approx(np.mean(ticks) / examples)
    assert got["ticks_per_example"] < cfg.schedule.settle_ticks + LEARN   # ended early
    assert got["seconds_per_example"] == pytest.approx(got["ticks_per_example"] * 8 / 50e6)
    assert got["seconds_per_example_all_streams"] == pytest.approx(
        got["seconds_per_example"] / cfg.fabric.streams)
    assert got["seconds_to_train"] == pytest.approx(max(ticks) * 8 / 50e6)
