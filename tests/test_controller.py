"""Training controller (amaranth.sim) against its golden model ``clln.sim.system``."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from conftest import tiny_config

from clln import protocol as p
from clln.gateware.controller import Controller
from clln.gateware.fabric import make_fabric
from clln.sim.system import SystemModel


class Harness:
    """Fabric + controller wired as in ``System``, driven port by port."""

    def __init__(self, cfg, max_examples=8):
        self.fabric = make_fabric(cfg)
        self.ctrl = Controller(cfg, self.fabric.fmt, max_examples)
        m = self.m = Module()
        m.submodules.fabric, m.submodules.ctrl = fab, ctrl = self.fabric, self.ctrl
        wiring.connect(m, ctrl.fabric, fab.control)


def run_harness(h, script):
    sim = Simulator(h.m)
    sim.add_clock(1e-8)
    sim.add_testbench(script)
    sim.run()


async def write_schedule(ctx, c, params):
    for port, value in ((c.sched_settle, params.settle_ticks), (c.sched_learn, params.learn_ticks),
                        (c.sched_epochs, params.epochs), (c.sched_n, params.n_examples),
                        (c.sched_order, int(params.order)), (c.sched_seed, params.seed)):
        ctx.set(port, value)
    ctx.set(c.sched_we, 1)
    await ctx.tick()
    ctx.set(c.sched_we, 0)
    while ctx.get(c.busy):
        await ctx.tick()


async def run_epochs(ctx, c, epochs, learn):
    ctx.set(c.start_epochs, epochs)
    ctx.set(c.start_learn, int(learn))
    ctx.set(c.start, 1)
    await ctx.tick()
    ctx.set(c.start, 0)
    assert ctx.get(c.busy)
    n = 0
    while ctx.get(c.busy):
        await ctx.tick()
        n += 1
    return n


async def read_outputs(ctx, c, n_examples, n_outputs):
    out = np.zeros((n_examples, n_outputs), np.int64)
    for e in range(n_examples):
        for k in range(n_outputs):
            ctx.set(c.out_example, e)
            ctx.set(c.out_index, k)
            await ctx.tick()
            out[e, k] = ctx.get(c.out_data)
    return out


def gates_of(ctx, fab):
    return np.array([ctx.get(fab.gates[e]) for e in range(fab.streams * fab.n_edges)],
                    np.int64)


@pytest.mark.parametrize("units,order,settle,learn,k", [
    (2, p.Order.CYCLIC, 6, 2, 1), (0, p.Order.LFSR, 6, 2, 1), (3, p.Order.LFSR, 0, 3, 2),
    (7, p.Order.CYCLIC, 5, 0, 1), (4, p.Order.LFSR, 4, 2, 2), ("streams:2", p.Order.LFSR, 6, 2, 2),
    ("streams:3", p.Order.CYCLIC, 0, 3, 1), ("streams:5", p.Order.LFSR, 4, 1, 2)])
def test_controller_matches_model(tmp_path, units, order, settle, learn, k):
    cfg = tiny_config(tmp_path, units, settle, learn, two_outputs=k == 2)
    h = Harness(cfg)
    model = SystemModel(cfg, max_examples=8)
    c, fab = h.ctrl.command, h.fabric
    rng = np.random.default_rng(units if isinstance(units, int) else 100 + fab.streams)
    extra = rng.integers(-20000, 20000, (2, 1 + k))     # two more examples, rows 5 and 6
    results = {}

    async def script(ctx):
        for i, row in enumerate(extra):
            for j, v in enumerate(row):
                ctx.set(c.ds_we, 1)
                ctx.set(c.ds_example, 5 + i)
                ctx.set(c.ds_index, j)
                ctx.set(c.ds_data, int(v))
                await ctx.tick()
        ctx.set(c.ds_we, 0)
        await write_schedule(ctx, c, p.ScheduleParams(settle, learn, 3, 7, order, 11))
        cycles = await run_epochs(ctx, c, 3, True)
        results["train"] = dict(gates=gates_of(ctx, fab), err=list(ctx.get(c.error_sum)),
                                epoch=ctx.get(c.epoch), ticks=ctx.get(c.ticks),
                                example=ctx.get(c.example), mode=ctx.get(c.mode),
                                cycles=cycles, flags=ctx.get(fab.status.sat_flags.as_value()))
        await run_epochs(ctx, c, 1, False)
        results["eval"] = dict(out=await read_outputs(ctx, c, 7, k * fab.streams),
                               err=list(ctx.get(c.error_sum)),
                               ticks=ctx.get(c.ticks))

    run_harness(h, script)
    model.write_dataset(5, extra[:, :1], extra[:, 1:])
    model.write_schedule(p.ScheduleParams(settle, learn, 3, 7, order, 11))
    model.run(3, True)
    tr = results["train"]
    np.testing.assert_array_equal(tr["gates"], model.gates)
    assert tr["err"] == list(model.error_sums) and min(model.error_sums) > 0
    assert (tr["epoch"], tr["ticks"], tr["example"], tr["mode"]) == (
        3, model.twin.ticks, model.example, p.Mode.IDLE)
    assert tr["flags"] == int(np.bitwise_or.reduce(model.twin.flags))
    assert model.twin.ticks == 3 * 7 * (settle + learn)
    assert not np.array_equal(model.gates, SystemModel(cfg, 8).gates) or learn == 0
    model.run(1, False)
    ev = results["eval"]
    np.testing.assert_array_equal(ev["out"], model.outputs[:7])
    assert ev["err"] == list(model.error_sums)
    assert ev["ticks"] == model.twin.ticks


def test_lfsr_order_model_matches_protocol(tmp_path):
    cfg = tiny_config(tmp_path)
    model = SystemModel(cfg, max_examples=8)
    model.write_schedule(p.ScheduleParams(2, 1, 4, 5, p.Order.LFSR, 1234))
    seen = []
    for _ in range(3):
        seen.append([model._select(i) for i in range(5)])
    assert seen == p.lfsr_order(5, 1234, 3)
    assert sorted(seen[0]) == list(range(5)) and seen[0] != list(range(5))


def test_system_over_uart_two_outputs_amaranth_sim(tmp_path):
    """Whole System (UART bit by bit) with two outputs, against SystemModel byte for byte."""
    from clln.gateware.system import System
    cfg = tiny_config(tmp_path, units=2, settle=4, learn=2, two_outputs=True)
    div = 4
    dut = System(cfg, div, max_examples=8)
    model = SystemModel(cfg, max_examples=8)
    requests = [
        p.encode_request(1, p.Command.WRITE_SCHEDULE,
                         p.ScheduleParams(4, 2, 2, 5, p.Order.LFSR, 9).pack()),
        p.encode_request(2, p.Command.WRITE_DATASET,
                         p.pack_write_dataset(5, [[-7000]], [[1234, -4321]])),
        p.encode_request(3, p.Command.WRITE_SCHEDULE,
                         p.ScheduleParams(4, 2, 2, 6, p.Order.LFSR, 9).pack()),
        p.encode_request(4, p.Command.RUN_EPOCHS, p.pack_run(2, True)),
        p.encode_request(5, p.Command.READ_GATES, p.pack_range(0, 7)),
        p.encode_request(6, p.Command.RUN_EPOCHS, p.pack_run(1, False)),
        p.encode_request(7, p.Command.READ_OUTPUTS, p.pack_range(0, 6)),
        p.encode_request(8, p.Command.READ_OUTPUTS, p.pack_range(1, 33)),   # 66 words: refused
        p.encode_request(9, p.Command.READ_STATUS),
        p.encode_request(10, p.Command.IDENTIFY),
        p.encode_request(11, p.Command.RESET),          # reloads the LFSR from the seed
        p.encode_request(12, p.Command.RUN_EPOCHS, p.pack_run(1, True)),
        p.encode_request(13, p.Command.READ_GATES, p.pack_range(0, 7)),
        p.encode_request(14, p.Command.READ_STATUS),
    ]
    replies = []

    async def tb(ctx):
        await ctx.tick().repeat(3)
        for raw in requests:
            for b in raw:
                for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                    ctx.set(dut.rx, bit)
                    await ctx.tick().repeat(div)
            frame, cycles = bytearray(), 0
            while not frame or frame[-1] != 0:       # decode tx: start edge, mid-bit samples
                await ctx.tick()
                cycles += 1
                assert cycles < 200000
                if ctx.get(dut.tx) == 0:
                    await ctx.tick().repeat(div // 2 + div)
                    value = 0
                    for i in range(8):
                        value |= ctx.get(dut.tx) << i
                        await ctx.tick().repeat(div)
                    frame.append(value)
            replies.append(bytes(frame))
            while not ctx.get(dut.idle):
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    want = [model.respond(raw) for raw in requests]
    assert replies == want
    statuses = [p.parse_reply(r[:-1]).status for r in replies]
    assert statuses == [p.Status.OK] * 7 + [p.Status.OUT_OF_RANGE] + [p.Status.OK] * 6
    outs = p.unpack_values(p.parse_reply(replies[6][:-1]).payload).reshape(6, 2)
    status = [p.DeviceStatus.unpack(p.parse_reply(replies[i][:-1]).payload) for i in (8, 13)]
    assert np.all(outs != 0) and status[0].ticks == 3 * 6 * 6
    assert (status[1].ticks, status[1].epoch) == (6 * 6, 1)


def test_handler_writes_and_reads_every_gate_of_eight_streams(tmp_path):
    """WRITE_GATES then READ_GATES of all gates of an 8-stream fabric, straight into the
    command handler with the reply always accepted (no UART to hide latencies): the
    handler waits for each write to land and for the fabric's gate read latency."""
    from clln.gateware.handler import CommandHandler
    cfg = tiny_config(tmp_path, units="streams:8")
    h = Harness(cfg)
    fab = h.fabric
    ident = p.Identity.from_config(cfg, fab.fmt, 8)
    h.m.submodules.handler = hnd = CommandHandler(
        ident, h.ctrl.command_signature, fab.gate.signature.flip(), fab.gate_read_latency)
    wiring.connect(h.m, hnd.ctrl, h.ctrl.command)
    wiring.connect(h.m, hnd.gates, fab.gate)
    wiring.connect(h.m, fab.status, hnd.fabric_status)
    n = fab.streams * fab.n_edges
    rng = np.random.default_rng(8)
    written = rng.integers(ident.gate_min_q, ident.gate_max_q + 1, n)
    requests = [(1, p.Command.WRITE_GATES, p.pack_write_gates(0, written)),
                (2, p.Command.READ_GATES, p.pack_range(0, n)),
                (3, p.Command.READ_GATES, p.pack_range(n - 3, 3))]
    replies = []

    async def script(ctx):
        ctx.set(hnd.o.ready, 1)
        for rid, cmd, payload in requests:
            body = bytes([p.PROTOCOL_VERSION, rid, cmd]) + payload
            for token in [(b, 0) for b in body] + [(int(p.Status.OK), 1)]:
                ctx.set(hnd.i.payload, {"data": token[0], "end": token[1]})
                ctx.set(hnd.i.valid, 1)
                await ctx.tick().until(hnd.i.ready)
            ctx.set(hnd.i.valid, 0)
            reply = bytearray()
            while True:
                await ctx.tick()
                if ctx.get(hnd.o.valid):
                    reply.append(ctx.get(hnd.o.payload.data))
                    if ctx.get(hnd.o.payload.last):
                        break
            replies.append(bytes(reply))
            if cmd == p.Command.WRITE_GATES:
                np.testing.assert_array_equal(gates_of(ctx, fab), written)

    run_harness(h, script)
    assert [r[3] for r in replies] == [p.Status.OK] * 3
    np.testing.assert_array_equal(p.unpack_values(replies[1][4:]), written)
    np.testing.assert_array_equal(p.unpack_values(replies[2][4:]), written[-3:])
