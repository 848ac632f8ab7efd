"""Training controller (amaranth.sim) against its golden model ``clln.sim.system``."""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator
from conftest import tiny_config

from clln import config as config_mod
from clln import protocol as p
from clln.formats import Formats
from clln.gateware.controller import Controller
from clln.gateware.fabric import fabric_shape, make_fabric
from clln.gateware.stream_control import check_streams, connect_controller, make_controller
from clln.sim.system import SystemModel


class Harness:
    """Fabric + controller wired as in ``System``, driven port by port."""

    def __init__(self, cfg, max_examples=8):
        self.fabric = make_fabric(cfg)
        self.ctrl = make_controller(cfg, self.fabric.fmt, max_examples)
        m = self.m = Module()
        m.submodules.fabric, m.submodules.ctrl = fab, ctrl = self.fabric, self.ctrl
        connect_controller(m, ctrl, fab)


def run_harness(h, script):
    sim = Simulator(h.m)
    sim.add_clock(1e-8)
    sim.add_testbench(script)
    sim.run()


async def write_schedule(ctx, c, params):
    for port, value in ((c.sched_settle, params.settle_ticks), (c.sched_learn, params.learn_ticks),
                        (c.sched_epochs, params.epochs), (c.sched_n, params.n_examples),
                        (c.sched_order, int(params.order)), (c.sched_seed, params.seed),
                        (c.sched_still, params.still_ticks)):
        ctx.set(port, value)
    ctx.set(c.sched_we, 1)
    await ctx.tick()
    ctx.set(c.sched_we, 0)
    while ctx.get(c.busy):
        await ctx.tick()


async def run_epochs(ctx, c, epochs, learn, samples=None):
    """Run to the end; return the clock edges at which the controller was running (not
    idle), which its cycle counter must have counted. ``samples`` (a list) receives the
    counter every 50 cycles of the run."""
    ctx.set(c.start_epochs, epochs)
    ctx.set(c.start_learn, int(learn))
    ctx.set(c.start, 1)
    await ctx.tick()
    ctx.set(c.start, 0)
    assert ctx.get(c.busy) and ctx.get(c.cycles) == 0
    running = 0
    while ctx.get(c.busy):
        running += ctx.get(c.mode) != p.Mode.IDLE
        await ctx.tick()
        if samples is not None and running % 50 == 0:
            samples.append(ctx.get(c.cycles))
    return running


async def read_outputs(ctx, c, n_examples, n_outputs):
    out = np.zeros((n_examples, n_outputs), np.int64)
    for e in range(n_examples):
        for k in range(n_outputs):
            ctx.set(c.out_example, e)
            ctx.set(c.out_index, k)
            await ctx.tick()
            out[e, k] = ctx.get(c.out_data)
    return out


async def gates_of(ctx, fab):
    """Every gate (of every stream), read through the fabric's gate port as the command
    handler reads them (``rdata`` ``gate_read_latency`` cycles after ``raddr``)."""
    gates = []
    for e in range(fab.streams * fab.n_edges):
        ctx.set(fab.gate.raddr, e)
        await ctx.tick().repeat(fab.gate_read_latency)
        gates.append(ctx.get(fab.gate.rdata))
    return np.array(gates, np.int64)


def settle_until_still(cfg, relax, still_lsb):
    """``cfg`` with ``settle = "still"`` (its ``still_ticks`` 3), ``relax`` and ``still_lsb``
    (the last two are the fabric's)."""
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, settle="still", still_ticks=3, relax=relax, still_lsb=still_lsb))


#: Fixed settling (still_ticks 0: the count, as before settle-until-still), then the settle
#: phase ended by still_ticks quiet ticks of the real fabric, capped by settle_ticks.
FIXED_CASES = [
    (2, p.Order.CYCLIC, 6, 2, 1, 0), (0, p.Order.LFSR, 6, 2, 1, 0), (3, p.Order.LFSR, 0, 3, 2, 0),
    (7, p.Order.CYCLIC, 5, 0, 1, 0), (4, p.Order.LFSR, 4, 2, 2, 0),
    ("streams:2", p.Order.LFSR, 6, 2, 2, 0), ("streams:3", p.Order.CYCLIC, 0, 3, 1, 0),
    ("streams:5", p.Order.LFSR, 4, 1, 2, 0)]
STILL_CASES = [(0, p.Order.CYCLIC, 60, 2, 1, 3), (3, p.Order.LFSR, 60, 1, 2, 2),
               ("serial", p.Order.CYCLIC, 60, 2, 1, 3), ("streams:3", p.Order.LFSR, 60, 2, 2, 3)]


@pytest.mark.parametrize("units,order,settle,learn,k,still", FIXED_CASES + STILL_CASES)
def test_controller_matches_model(tmp_path, units, order, settle, learn, k, still):
    cfg = tiny_config(tmp_path, units, settle, learn, two_outputs=k == 2)
    if still:
        cfg = settle_until_still(cfg, "euler", 64)
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
        await write_schedule(ctx, c, p.ScheduleParams(settle, learn, 3, 7, order, 11, still))
        running = await run_epochs(ctx, c, 3, True)
        results["train"] = dict(gates=await gates_of(ctx, fab), err=list(ctx.get(c.error_sum)),
                                epoch=ctx.get(c.epoch), ticks=ctx.get(c.ticks),
                                example=ctx.get(c.example), mode=ctx.get(c.mode),
                                running=running, cycles=ctx.get(c.cycles),
                                flags=ctx.get(fab.status.sat_flags.as_value()))
        await run_epochs(ctx, c, 1, False)
        results["eval"] = dict(out=await read_outputs(ctx, c, 7, k * fab.streams),
                               err=list(ctx.get(c.error_sum)),
                               ticks=ctx.get(c.ticks))

    run_harness(h, script)
    model.write_dataset(5, extra[:, :1], extra[:, 1:])
    model.write_schedule(p.ScheduleParams(settle, learn, 3, 7, order, 11, still))
    model.run(3, True)
    tr = results["train"]
    np.testing.assert_array_equal(tr["gates"], model.gates)
    assert tr["err"] == list(model.error_sums) and min(model.error_sums) > 0
    assert (tr["epoch"], tr["ticks"], tr["example"], tr["mode"]) == (
        3, model.twin.ticks, model.example, p.Mode.IDLE)
    assert tr["flags"] == int(np.bitwise_or.reduce(model.twin.flags))
    if still:       # some settle phases ended early, not all
        assert 3 * 7 * (3 + learn) < model.twin.ticks < 3 * 7 * (settle + learn)
        # each stream on its own schedule: they settled for different numbers of ticks
        ticks = [tw.ticks for tw in model.twins]
        assert len(set(ticks)) == len(ticks)
    else:
        assert model.twin.ticks == 3 * 7 * (settle + learn)
    # the cycle counter counted the cycles of the run: a tick takes cycles_per_tick
    assert tr["cycles"] == tr["running"] >= model.twin.ticks * fabric_shape(cfg)[1]
    assert not np.array_equal(model.gates, SystemModel(cfg, 8).gates) or learn == 0
    model.run(1, False)
    ev = results["eval"]
    np.testing.assert_array_equal(ev["out"], model.outputs[:7])
    assert ev["err"] == list(model.error_sums)
    assert ev["ticks"] == model.twin.ticks


class StubFabric(wiring.Component):
    """A fabric stand-in with scripted stillness: a tick every ``period`` cycles while
    ``run`` is high; t counts the ticks since the example was loaded (its first drive
    value d), the tick t moves while t < d and again at t = d + 1, and every output
    reads t (so the outputs recorded tell how many ticks the example had run)."""

    def __init__(self, signature, period):
        self.period, self.n_outputs = period, signature.n_outputs
        super().__init__({"control": In(signature)})

    def elaborate(self, platform):
        m = Module()
        c = self.control
        t, d = Signal(16), Signal(16)
        count = Signal(range(self.period + 1))
        with m.If(c.sample_we):
            m.d.sync += t.eq(0)
            with m.If(c.sample_addr == 0):
                m.d.sync += d.eq(c.sample_data)
        with m.Elif(c.run):
            m.d.sync += count.eq(count + 1)
            with m.If(count == self.period - 1):
                m.d.comb += [c.tick_done.eq(1), c.moved.eq((t < d) | (t == d + 1))]
                m.d.sync += [count.eq(0), t.eq(t + 1)]
        m.d.comb += [c.outputs[k].eq(t) for k in range(self.n_outputs)]
        return m


def settle_length(d, cap, still):
    """Ticks of the stub's settle phase for drive d: ``docs/semantics.md``'s rule."""
    if still == 0:
        return cap
    quiet = 0
    for t in range(cap):
        quiet = 0 if t < d or t == d + 1 else quiet + 1
        if quiet == still:
            return t + 1
    return cap


DRIVES = [0, 1, 3, 6, 50]


@pytest.mark.parametrize("settle,learn,still,period", [
    (12, 2, 3, 1), (12, 2, 0, 2), (0, 3, 3, 1), (12, 0, 1, 3), (9, 1, 1, 1), (300, 1, 255, 1)])
def test_still_ends_the_settle_phase(tmp_path, settle, learn, still, period):
    """With a scripted fabric: the settle phase ends after the tick that makes ``still``
    consecutive quiet ticks (a moving tick resets the count), at ``settle_ticks`` at the
    latest; ``still = 0`` settles for exactly ``settle_ticks``; training observes at the
    end of the settle phase, inference after the learn ticks too; the cycle counter."""
    cfg = tiny_config(tmp_path, 0, settle, learn)
    ctrl = Controller(cfg, Formats.from_config(cfg), 8)
    stub = StubFabric(ctrl.control_signature, period)
    m = Module()
    m.submodules.ctrl, m.submodules.fabric = ctrl, stub
    wiring.connect(m, ctrl.fabric, stub.control)
    c = ctrl.command
    targets = [5, -3, 9, 0, 12]
    got = {}

    async def script(ctx):
        for e, (d, y) in enumerate(zip(DRIVES, targets, strict=True)):
            for j, v in enumerate((d, y)):
                ctx.set(c.ds_we, 1)
                ctx.set(c.ds_example, e)
                ctx.set(c.ds_index, j)
                ctx.set(c.ds_data, v)
                await ctx.tick()
        ctx.set(c.ds_we, 0)
        await write_schedule(ctx, c, p.ScheduleParams(settle, learn, 2, 5, p.Order.CYCLIC, 1,
                                                      still))
        samples = []
        got["running"] = await run_epochs(ctx, c, 2, True, samples)
        got["train"] = ((await read_outputs(ctx, c, 5, 1))[:, 0], ctx.get(c.ticks),
                        ctx.get(c.error_sum[0]), ctx.get(c.cycles), samples)
        await ctx.tick().repeat(20)
        got["frozen"] = ctx.get(c.cycles)
        await run_epochs(ctx, c, 1, False)
        got["eval"] = ((await read_outputs(ctx, c, 5, 1))[:, 0], ctx.get(c.ticks),
                       ctx.get(c.cycles))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(script)
    sim.run()
    length = np.array([settle_length(d, settle, still) for d in DRIVES])
    if still and settle:
        assert 0 < length.min() and length.max() == settle > length.min()  # early and capped
    observed = length if settle else length + learn
    out, ticks, err, cycles, samples = got["train"]
    np.testing.assert_array_equal(out, observed)
    assert ticks == 2 * (length + learn).sum()
    assert err == int(((observed - np.array(targets)) ** 2).sum())
    assert cycles == got["running"] == got["frozen"] >= ticks * period
    assert samples == sorted(samples) and len(set(samples)) == len(samples) > 1
    out, ticks_after, cycles = got["eval"]
    np.testing.assert_array_equal(out, length + learn)
    assert ticks_after - ticks == (length + learn).sum()
    assert (ticks_after - ticks) * period <= cycles < got["running"]


def test_lfsr_order_model_matches_protocol(tmp_path):
    """Stream s visits the examples in the order of LFSR seed 1234 + s."""
    cfg = tiny_config(tmp_path, "streams:3")
    model = SystemModel(cfg, max_examples=8)
    model.write_schedule(p.ScheduleParams(2, 1, 4, 5, p.Order.LFSR, 1234))
    for s, stream in enumerate(model.streams):
        seen = [[model._select(stream, i) for i in range(5)] for _ in range(3)]
        assert seen == p.lfsr_order(5, 1234 + s, 3)
        assert sorted(seen[0]) == list(range(5)) and seen[0] != list(range(5))
    assert p.lfsr_order(5, 1234, 1) != p.lfsr_order(5, 1235, 1)


def without_cycles(reply):
    """A framed reply with a READ_STATUS payload's cycle count set to 0 (the golden model
    counts no cycles), and that count (None for other replies)."""
    pk = p.parse_reply(reply[:-1])
    if pk.command != p.Command.READ_STATUS or pk.status != p.Status.OK:
        return reply, None
    streams = (len(pk.payload) - 24) // 8
    st = p.DeviceStatus.unpack(pk.payload, streams)
    return (p.encode_reply(pk.request_id, pk.command, pk.status,
                           dataclasses.replace(st, cycles=0).pack()), st.cycles)


def over_uart(dut, div, requests):
    """Send each request bit by bit on ``dut.rx`` (``div`` cycles a bit), decode its reply
    from ``dut.tx`` and wait until the system is idle; return the replies (amaranth.sim)."""
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
    return replies


def test_system_over_uart_two_outputs_amaranth_sim(tmp_path):
    """Whole System (UART bit by bit) with two outputs, against SystemModel byte for byte
    (but for READ_STATUS' cycle count); settling until still, then for a fixed count."""
    from clln.gateware.system import System
    cfg = settle_until_still(tiny_config(tmp_path, units=2, settle=4, learn=2,
                                         two_outputs=True), "euler", 64)
    div = 4
    dut = System(cfg, div, max_examples=8, clock_hz=12e6)
    model = SystemModel(cfg, max_examples=8, clock_hz=12e6)
    requests = [
        p.encode_request(1, p.Command.WRITE_SCHEDULE,
                         p.ScheduleParams(4, 2, 2, 5, p.Order.LFSR, 9).pack()),
        p.encode_request(2, p.Command.WRITE_DATASET,
                         p.pack_write_dataset(5, [[-7000]], [[1234, -4321]])),
        p.encode_request(3, p.Command.WRITE_SCHEDULE,
                         p.ScheduleParams(40, 2, 2, 6, p.Order.LFSR, 9, 3).pack()),
        p.encode_request(4, p.Command.RUN_EPOCHS, p.pack_run(2, True)),
        p.encode_request(5, p.Command.READ_GATES, p.pack_range(0, 7)),
        p.encode_request(6, p.Command.RUN_EPOCHS, p.pack_run(1, False)),
        p.encode_request(7, p.Command.READ_OUTPUTS, p.pack_range(0, 6)),
        p.encode_request(8, p.Command.READ_OUTPUTS, p.pack_range(1, 33)),   # 66 words: refused
        p.encode_request(9, p.Command.READ_STATUS),
        p.encode_request(10, p.Command.IDENTIFY),
        p.encode_request(11, p.Command.RESET),          # reloads the LFSR from the seed
        p.encode_request(12, p.Command.READ_STATUS),
        p.encode_request(13, p.Command.WRITE_SCHEDULE,
                         p.ScheduleParams(4, 2, 2, 6, p.Order.LFSR, 9).pack()),
        p.encode_request(14, p.Command.RUN_EPOCHS, p.pack_run(1, True)),
        p.encode_request(15, p.Command.READ_GATES, p.pack_range(0, 7)),
        p.encode_request(16, p.Command.READ_STATUS),
    ]
    replies = over_uart(dut, div, requests)
    want, ticks = [], []
    for raw in requests:
        want.append(model.respond(raw))
        ticks.append(model.twin.ticks)
    masked = [without_cycles(r) for r in replies]
    assert [r for r, _ in masked] == want
    statuses = [p.parse_reply(r[:-1]).status for r in replies]
    assert statuses == [p.Status.OK] * 7 + [p.Status.OUT_OF_RANGE] + [p.Status.OK] * 8
    outs = p.unpack_values(p.parse_reply(replies[6][:-1]).payload).reshape(6, 2)
    status = [p.DeviceStatus.unpack(p.parse_reply(replies[i][:-1]).payload)
              for i in (8, 11, 15)]
    assert np.all(outs != 0) and p.Identity.unpack(
        p.parse_reply(replies[9][:-1]).payload).clock_hz == 12_000_000
    # settled until still (3 quiet ticks) in 2 epochs and an inference pass: less than
    # the cap of 40, more than 3 ticks per example
    assert 3 * 6 * (3 + 2) < status[0].ticks == ticks[8] < 3 * 6 * (40 + 2)
    assert (status[1].ticks, status[1].cycles) == (0, 0)                  # after RESET
    assert (status[2].ticks, status[2].epoch) == (6 * 6, 1)
    # the cycles of the last run (the inference pass, then the epoch after RESET)
    cpt = fabric_shape(cfg)[1]
    # (each example adds a few cycles: its row's load, the squarer of its observation)
    eval_ticks = ticks[5] - ticks[4]
    assert eval_ticks * cpt <= status[0].cycles < eval_ticks * cpt + 6 * 100
    assert 6 * 6 * cpt <= status[2].cycles < 6 * 6 * cpt + 6 * 100


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
                # the parallel fabric's gate registers themselves
                np.testing.assert_array_equal(
                    [ctx.get(fab.gates[e]) for e in range(fab.streams * fab.n_edges)], written)

    run_harness(h, script)
    assert [r[3] for r in replies] == [p.Status.OK] * 3
    np.testing.assert_array_equal(p.unpack_values(replies[1][4:]), written)
    np.testing.assert_array_equal(p.unpack_values(replies[2][4:]), written[-3:])


def test_streams_with_read_noise_are_refused(tmp_path):
    """A board of several streams has no per-stream noise generators: refused, naming the
    key (one network with read noise is built)."""
    cfg = tiny_config(tmp_path, "streams:2")
    noisy = dataclasses.replace(cfg, nonideal=dataclasses.replace(cfg.nonideal,
                                                                  read_noise=1e-3))
    with pytest.raises(config_mod.ConfigError, match="nonideal.read_noise"):
        make_controller(noisy, Formats.from_config(noisy), 8)
    check_streams(config_mod.refold(noisy, 0))          # one network: built
    check_streams(cfg)                                  # no read noise: built
