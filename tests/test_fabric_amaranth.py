"""The Amaranth fabric in amaranth.sim against the fixed-point model, tick for tick; its
arithmetic parts and the serial fabric's schedule."""

import collections
import dataclasses

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, Signal, signed, unsigned
from amaranth.sim import DomainReset, Simulator
from fabric_configs import (
    driven_pair_config,
    jacobi_random_config,
    jacobi_xor_config,
    momentum_random_config,
    momentum_xor_config,
    narrow_config,
    saturating_config,
)

from clln import config as config_mod
from clln.errors import ConfigError
from clln.formats import Formats
from clln.gateware import fabric as fabric_mod
from clln.gateware.fabric import make_fabric
from clln.gateware.fabric.cells import product_operand_bits
from clln.gateware.fabric.serial import serial_schedule
from clln.sim.fixed import FixedPointModel, moved_as_reported, seeds_moved
from clln.sim.problem import Problem


async def read_state(ctx, dut):
    """Free and clamped node voltages and gates of a paused fabric (flat or through the
    read ports of the serial fabric)."""
    if hasattr(dut, "v_free"):
        return ctx.get(dut.v_free), ctx.get(dut.v_clamped), ctx.get(dut.gates)
    vf, vc, g = [], [], []
    for i in range(max(dut.n_nodes, dut.n_edges)):
        ctx.set(dut.node_raddr, min(i, dut.n_nodes - 1))
        ctx.set(dut.gate.raddr, min(i, dut.n_edges - 1))
        await ctx.tick()
        if i < dut.n_nodes:
            vf.append(ctx.get(dut.v_free_rdata))
            vc.append(ctx.get(dut.v_clamped_rdata))
        if i < dut.n_edges:
            g.append(ctx.get(dut.gate.rdata))
    return vf, vc, g


class ModelSide:
    """The fixed-point model of :func:`amaranth_run`: its state rows and, per tick, whether
    the tick moved (any seed, either network: :func:`clln.sim.fixed.seeds_moved`)."""

    def __init__(self, cfg, seeds):
        self.model = FixedPointModel(cfg, seeds=seeds)
        self.problem = Problem.from_config(cfg)
        self.rows, self.moved = [], []

    def tick(self, ex, learn):
        model = self.model
        before = model.v_free.copy(), model.v_clamped.copy()
        model.run(1, ex, learn)
        self.moved.append(bool(seeds_moved(*before, model.v_free, model.v_clamped,
                                           model.constants.still_lsb).any()))

    def record(self, ticks):
        model, p = self.model, self.problem
        vf = model.v_free
        outputs = vf[:, p.out_plus] - np.where(p.out_minus >= 0, vf[:, p.out_minus], 0)
        self.rows.append(np.concatenate([vf.ravel(), model.v_clamped.ravel(),
                                         model.gates.ravel(), outputs.ravel(),
                                         [np.bitwise_or.reduce(model.flags), ticks]]))


def amaranth_run(cfg, ticks, switch=7, mult_bits=None, free=6):
    """Run the fabric in amaranth.sim; return (dut states, model states, dut, moves).

    A state row is ``v_free, v_clamped, gates, outputs`` (every stream's, stream after
    stream), the sticky saturation flags (of all streams) and the tick counter, after
    every tick; then, after ``free`` more ticks run back to back with ``run`` held high
    (``learn`` switching between them, and the opposite of
    its value on all but a tick's first cycle), a last row. ``moves`` (ticks + free, 2)
    has, for every tick (or round of ticks of the streams), ``control.moved`` in the
    cycle of ``tick_done`` and the model's moved as the fabric reports it
    (:func:`clln.sim.fixed.moved_as_reported`: the pipelined fabric's a tick late).
    """
    dut = make_fabric(cfg, mult_bits=mult_bits)
    ms = ModelSide(cfg, getattr(dut, "seeds", [cfg.learning.seed]))
    fmt, p = ms.model.formats, ms.problem
    drive = fmt.volts_to_v(p.drive)[:, cfg.driven_nodes()]
    targets = fmt.volts_to_v(p.targets)
    got, got_moved = [], []

    async def cycle(ctx):
        """One clock cycle; records ``moved`` when a tick commits in it."""
        if ctx.get(dut.control.tick_done):
            got_moved.append(ctx.get(dut.control.moved))
        await ctx.tick()

    async def write_sample(ctx, ex):
        ctx.set(dut.control.sample_we, 1)
        for addr, v in enumerate(list(drive[ex]) + list(targets[ex])):
            ctx.set(dut.control.sample_addr, addr)
            ctx.set(dut.control.sample_data, int(v))
            await cycle(ctx)
        ctx.set(dut.control.sample_we, 0)

    async def record(ctx, ticks):
        got.append(np.concatenate([*(await read_state(ctx, dut)), ctx.get(dut.control.outputs),
                                   [ctx.get(dut.status.sat_flags.as_value()),
                                    ctx.get(dut.status.ticks)]]))
        ms.record(ticks)

    async def drain(ctx):
        while ctx.get(dut.control.busy):      # serial: clearing; streams: ticks in flight
            await cycle(ctx)

    async def bench(ctx):
        await drain(ctx)
        for t in range(ticks):
            ex, learn = (t // switch) % p.n_examples, (t // 3) % 2 == 1
            if t % switch == 0:
                await write_sample(ctx, ex)
            ctx.set(dut.control.run, 1)
            ctx.set(dut.control.learn, learn)
            for _ in range(dut.cycles_per_tick):
                await cycle(ctx)
            ctx.set(dut.control.run, 0)
            await drain(ctx)
            ms.tick(ex, learn)
            await record(ctx, t + 1)
        if free:
            ex = (ticks // switch + 1) % p.n_examples
            await write_sample(ctx, ex)
            ctx.set(dut.control.run, 1)
            for r in range(free):
                learn = r % 3 != 0
                for c in range(dut.cycles_per_tick):
                    ctx.set(dut.control.learn, learn if c == 0 else not learn)
                    await cycle(ctx)
                ms.tick(ex, learn)
            ctx.set(dut.control.run, 0)
            await drain(ctx)
            await record(ctx, ticks + free)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got_moved) == len(ms.moved), "one tick_done per tick (round of ticks)"
    expected_moved = moved_as_reported(ms.moved, cfg.fabric.still_lag)
    return np.array(got), np.array(ms.rows), dut, np.array([got_moved, expected_moved], int).T


@pytest.mark.parametrize("units", [0, 1, 5, 31, "serial", "streams:2", "streams:5", "streams:8"])
def test_amaranth_fabric_matches_model(units):
    cfg = config_mod.refold(config_mod.load("paper-xor"), units)
    streams = int(units.split(":")[1]) if str(units).startswith("streams") else 1
    ticks = 30 if units else 60
    got, exp, dut, moves = amaranth_run(cfg, ticks)
    # serial: 12 settling nodes x 2 networks x 4 edges, the 16 edges at the 4 driven
    # nodes are seen from one end only, plus three cycles to drain the pipeline and a commit
    if units == "serial":
        assert dut.cycles_per_tick == 12 * 2 * 4 + 4
    elif streams > 1:
        assert (dut.streams, dut.cycles_per_tick) == (streams, streams)
        assert dut.seeds == [cfg.learning.seed + s for s in range(streams)]
    else:
        assert dut.cycles_per_tick == (-(-32 // units) if units else 1)
    N, E = 16, 32
    assert got.shape == exp.shape and got.shape[1] == streams * (2 * N + E + 1) + 2
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    assert got[-2, -1] == ticks and got[-1, -1] == ticks + 6
    gates = slice(2 * streams * N, streams * (2 * N + E))
    assert np.any(got[-1, gates] != got[0, gates])        # gates learned something
    g0 = got[0, gates].reshape(streams, E)
    assert len({tuple(g) for g in g0}) == streams          # every stream has its own seed


#: Fabric kinds of the jacobi checks: parallel, one unit, folded (15 units: a last phase
#: with fewer edges than units, on 32 edges and on 16), serial, pipelined.
JACOBI_FOLDS = [0, 1, 5, 15, "serial", "streams:3"]


def test_fabric_without_jacobi_refuses_it():
    """A fabric that does not list ``jacobi`` in its ``RELAXATIONS`` (or names none)
    refuses it by name instead of computing euler bits; euler it takes."""
    from clln.gateware.fabric import check_relaxation

    class EulerOnly(fabric_mod.Fabric):
        RELAXATIONS = ("euler",)

    class Unnamed:
        pass

    euler_xor = config_mod.load("paper-xor")
    euler_xor = dataclasses.replace(euler_xor, schedule=dataclasses.replace(
        euler_xor.schedule, relax="euler"))
    for kind in (EulerOnly, Unnamed):
        with pytest.raises(ConfigError, match="schedule.relax.*not implemented"):
            check_relaxation(jacobi_xor_config(), kind)
        check_relaxation(euler_xor, kind)
    check_relaxation(jacobi_xor_config(), fabric_mod.Fabric)


@pytest.mark.parametrize("fold", JACOBI_FOLDS)
@pytest.mark.parametrize("name", ["paper-xor", "random-graph"])
def test_amaranth_jacobi_matches_model(name, fold, tmp_path):
    """``relax = "jacobi"``: every fabric gives the model's bits tick for tick, and
    ``control.moved`` is the model's moved at every tick. With ``still_lsb = 128`` and
    16 ticks per example both values occur (the nodes settle to within 128 LSBs a tick
    about 12 ticks into an example)."""
    base = (jacobi_xor_config(still_lsb=128) if name == "paper-xor"
            else jacobi_random_config(tmp_path, still_lsb=128))
    cfg = config_mod.refold(base, fold)
    assert Formats.from_config(cfg).relax == "jacobi"
    got, exp, dut, moves = amaranth_run(cfg, 40 if fold in (0, 5) else 24, switch=16)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    assert set(moves[:, 1]) == {0, 1}                  # still ticks and moving ones
    assert got[-1, -1] == len(moves)
    gates = slice(2 * dut.streams * dut.n_nodes, dut.streams * (2 * dut.n_nodes + dut.n_edges))
    assert np.any(got[-1, gates] != got[0, gates])        # gates learned something


@pytest.mark.parametrize("fold", [0, 5, "serial", "streams:3"])
def test_amaranth_node_extra_bits_match_model(fold, tmp_path):
    """``[fixed] node_extra_bits``: every fabric keeps the node states with the model's
    extra bits (seen through the voltages it reports, tick for tick) and judges moves on
    the voltages as the model does."""
    cfg = config_mod.refold(jacobi_random_config(tmp_path, still_lsb=128, extra=3), fold)
    assert Formats.from_config(cfg).node_extra_bits == 3
    got, exp, dut, moves = amaranth_run(cfg, 30, switch=12)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    assert set(moves[:, 1]) == {0, 1}


@pytest.mark.parametrize("name, fold", [("paper-xor", 0), ("random-graph", 5),
                                        ("random-graph", "serial"),
                                        ("random-graph", "streams:3")])
def test_amaranth_momentum_matches_model(name, fold, tmp_path):
    """``relax = "momentum"``: every fabric keeps the velocities as the model does (seen
    through the voltages, tick for tick: a wrong velocity moves a node one tick later;
    the random graph has a single-ended and a differential output, whose clamped nodes
    have no velocity),
    with ``momentum_shift`` 1 and 3 extra bits; ``still_lsb = 128`` and 16 ticks per
    example give moving and still ticks (the last 2 or 3 of an example are still)."""
    base = (momentum_xor_config(still_lsb=128, shift=1) if name == "paper-xor"
            else momentum_random_config(tmp_path, still_lsb=128, shift=1))
    cfg = config_mod.refold(base, fold)
    fmt = Formats.from_config(cfg)
    assert (fmt.relax, fmt.momentum_shift, fmt.node_extra_bits) == ("momentum", 1, 3)
    got, exp, dut, moves = amaranth_run(cfg, 24, switch=16)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    assert set(moves[:, 1]) == {0, 1}


@pytest.mark.parametrize("name, fold, mult_bits", [
    ("paper-xor", 0, 18), ("paper-xor", 0, 16), ("narrow", 0, 18), ("narrow", 0, 16),
    ("narrow", 5, 16), ("paper-xor", "streams:3", 16)])
def test_amaranth_split_products_match_model(name, fold, mult_bits):
    """With ``mult_bits``, every variable product is one mult_bits x mult_bits product plus
    shift-and-add rows, and the bits stay the model's."""
    cfg = config_mod.refold(narrow_config() if name == "narrow" else config_mod.load(name),
                            fold)
    bits = product_operand_bits(Formats.from_config(cfg))
    assert max(bits["term"]) > mult_bits               # the edge terms are split
    got, exp, dut, moves = amaranth_run(cfg, 24, mult_bits=mult_bits)
    assert dut.mult_bits == mult_bits
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    assert np.any(got[-1] != got[0])
    # two edge terms and a gate step per edge unit, each one multiplier block
    for mb in (mult_bits, None):
        muls = design_multiplications(make_fabric(cfg, mult_bits=mb))
        assert len(muls) == 3 * dut.edge_units
        assert (max(max(w) for w in muls) <= mult_bits) == (mb is not None)


def test_amaranth_streams_saturation_flags_match_model():
    """Every saturation flag of the pipelined fabric comes from its own stage: with all
    seven cuts, the flags after each tick are the model's (ORed over the streams)."""
    from clln.gateware.fabric.ports import SAT_MASK
    cfg = config_mod.refold(saturating_config(), "streams:8")
    got, exp, dut, moves = amaranth_run(cfg, 24, mult_bits=18)
    np.testing.assert_array_equal(got, exp)
    np.testing.assert_array_equal(moves[:, 0], moves[:, 1])
    flags = [int(x) for x in got[:, -2]]
    assert flags[0] == 0 and flags[1] == SAT_MASK["term"] | SAT_MASK["dv"]
    assert flags[-1] == SAT_MASK["term"] | SAT_MASK["acc"] | SAT_MASK["dv"] | SAT_MASK["dg"]


#: (a bits, b bits, mult_bits) of the split_mul check: no split, one operand split, both,
#: much wider than the multiplier, tiny multipliers.
SPLIT_WIDTHS = [(18, 18, 18), (17, 12, 18), (19, 18, 18), (18, 23, 18), (23, 23, 18),
                (23, 23, 16), (20, 17, 16), (40, 12, 18), (12, 40, 18), (36, 36, 18),
                (9, 30, 4), (7, 6, 1), (2, 2, 1)]


def multiplications(value, found=None):
    """Operand widths of every variable multiplication in an expression, by the
    multiplication's identity (a value used twice is built once: Amaranth caches it)."""
    from amaranth.hdl import _ast
    found = {} if found is None else found
    if isinstance(value, _ast.Operator):
        if value.operator == "*":
            found[id(value)] = tuple(len(x) for x in value.operands)
        for x in value.operands:
            multiplications(x, found)
    elif isinstance(value, (_ast.Slice, _ast.Part)):
        multiplications(value.value, found)
    elif isinstance(value, _ast.Concat):
        for x in value.parts:
            multiplications(x, found)
    elif isinstance(value, _ast.SwitchValue):
        multiplications(value.test, found)
        for _, x in value.cases:
            multiplications(x, found)
    else:
        assert isinstance(value, (_ast.Signal, _ast.Const, _ast.ResetSignal)), type(value)
    return found


def design_multiplications(fabric):
    """Operand widths of every variable multiplication of an elaborated design."""
    from amaranth.hdl import Fragment, _ast
    found = {}

    def statements(stmts):
        for st in stmts:
            if isinstance(st, _ast.Assign):
                multiplications(st.rhs, found)
            elif isinstance(st, _ast.Switch):
                multiplications(st.test, found)
                for case in st.cases:
                    statements(case[1])

    def fragment(frag):
        for stmts in frag.statements.values():
            statements(stmts)
        for sub, *_ in frag.subfragments:
            fragment(sub)

    fragment(Fragment.get(fabric, None))
    return list(found.values())


def _simulate_products(m, a, b, out, pairs):
    """Drive ``(a, b)`` through ``pairs`` in amaranth.sim; return the ``(x, y, out)``
    where ``out != x * y``."""
    bad = []

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            if ctx.get(out) != x * y:
                bad.append((x, y, ctx.get(out)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return bad


def test_split_mul_is_exact():
    """``split_mul`` is ``a * b`` for signed operands, with one multiplication of at most
    ``mult_bits x mult_bits`` bits."""
    rng = np.random.default_rng(5)
    for wa, wb, mult_bits in SPLIT_WIDTHS:
        a, b = Signal(signed(wa), name="a"), Signal(signed(wb), name="b")
        product = fabric_mod.arith.split_mul(a, b, mult_bits)
        assert list(multiplications(product).values()) == [(min(wa, mult_bits),
                                                             min(wb, mult_bits))]
        out = Signal(product.shape(), name="out")      # the expression's own width
        m = Module()
        m.d.comb += out.eq(product)

        def extremes(w):
            lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
            return sorted(x for x in {lo, lo + 1, -1, 0, 1, hi - 1, hi} if lo <= x <= hi)

        pairs = [(x, y) for x in extremes(wa) for y in extremes(wb)]
        pairs += [(int(rng.integers(-(1 << (wa - 1)), 1 << (wa - 1))),
                   int(rng.integers(-(1 << (wb - 1)), 1 << (wb - 1)))) for _ in range(60)]
        bad = _simulate_products(m, a, b, out, pairs)
        assert not bad, f"{wa} x {wb} bits, mult_bits {mult_bits}: (a, b, got) {bad[:5]}"


@pytest.mark.parametrize("wa, wb, mult_bits", [(8, 3, 18), (18, 18, 18), (22, 18, 18),
                                               (20, 21, 16)])
def test_split_mul_unsigned_operand(wa, wb, mult_bits):
    """An unsigned operand's top bit is a value bit, not a sign (``a`` unsigned)."""
    a, b = Signal(unsigned(wa), name="a"), Signal(signed(wb), name="b")
    out = Signal(signed(wa + wb + 2), name="out")
    m = Module()
    m.d.comb += out.eq(fabric_mod.arith.split_mul(a, b, mult_bits))
    pairs = [((1 << wa) - 1, -(1 << (wb - 1))), ((1 << wa) - 1, (1 << (wb - 1)) - 1),
             (1 << (wa - 1), -1), (200 % (1 << wa), 3), (0, 5)]
    got = []

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [x * y for x, y in pairs]


def test_serial_fabric_clear_clears_its_memories():
    cfg = config_mod.refold(config_mod.load("paper-xor"), "serial")
    dut = make_fabric(cfg)
    reset = dut.control.clear
    top = dut

    async def bench(ctx):
        while ctx.get(dut.control.busy):
            await ctx.tick()
        ctx.set(dut.control.run, 1)
        ctx.set(dut.control.learn, 1)
        await ctx.tick().repeat(5 * dut.cycles_per_tick)
        ctx.set(dut.control.run, 0)
        vf, vc, g = await read_state(ctx, dut)
        assert any(vf) and any(vc) and list(g) != list(dut.gate_init)
        ctx.set(dut.control.run, 1)                  # asked to run on: waits for the clearing
        ctx.set(reset, 1)
        await ctx.tick()
        ctx.set(reset, 0)
        cycles = 0
        while ctx.get(dut.control.busy):
            assert ctx.get(dut.status.ticks) == 0
            await ctx.tick()
            cycles += 1
        assert cycles == 2 * 16 + 1
        ctx.set(dut.control.run, 0)
        vf, vc, g = await read_state(ctx, dut)
        assert not any(vf) and not any(vc) and list(g) == list(dut.gate_init)
        assert ctx.get(dut.status.ticks) == 0

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_amaranth_gate_restore_and_flags():
    cfg = config_mod.load("paper-regression")
    dut = make_fabric(cfg)

    async def bench(ctx):
        assert ctx.get(dut.gates[3]) == int(dut.gate_init[3])
        ctx.set(dut.gate.we, 1)
        ctx.set(dut.gate.addr, 3)
        ctx.set(dut.gate.data, 12345678)
        await ctx.tick()
        ctx.set(dut.gate.we, 0)
        assert ctx.get(dut.gates[3]) == 12345678
        for e in (3, 4, 3):                          # registered read port
            ctx.set(dut.gate.raddr, e)
            await ctx.tick()
            assert ctx.get(dut.gate.rdata) == ctx.get(dut.gates[e])
        assert ctx.get(dut.gate.rdata) == 12345678
        assert ctx.get(dut.status.ticks) == 0
        assert ctx.get(dut.status.saturated) == 0
        assert ctx.get(dut.v_free[7]) == 0           # rail register not applied yet
        ctx.set(dut.control.run, 1)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.status.ticks) == 3
        assert ctx.get(dut.v_free[7]) == round(0.45 * 2 ** 16)   # rail held at 0.45 V

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_every_allowed_streams_count_has_its_cuts():
    """``[fabric] streams`` allows 1 .. MAX_STREAMS; the pipeline has a cut for each."""
    from clln.config import MAX_STREAMS
    from clln.gateware.fabric.streams import CUTS, pipeline_cuts
    assert [len(pipeline_cuts(c)) for c in range(1, MAX_STREAMS + 1)] == \
        list(range(MAX_STREAMS))
    assert len(CUTS) == MAX_STREAMS - 1
    with pytest.raises(ValueError):
        pipeline_cuts(MAX_STREAMS + 1)


def test_streams_fabric_keeps_gate_writes_within_bounds():
    """The pipelined fabric keeps written gates within [gate_min, gate_max], as learning
    does, so its narrowed products hold (``bounded_usum_bits``); in-range writes land as
    they are, in the addressed stream, once that stream's slot passes (``busy`` until
    then); the read port gives any stream's gate ``gate_read_latency`` cycles after its
    address."""
    cfg = config_mod.refold(config_mod.load("paper-xor"), "streams:3")
    dut = make_fabric(cfg, mult_bits=18)
    f, E = dut.fmt, dut.n_edges
    writes = [(E + 3, f.gate_max_q + 5000), (2 * E + 1, f.gate_min_q - 1),
              (5, -(1 << (f.g_bits - 1))), (E + 4, f.gate_min_q + 77)]
    want = [f.gate_max_q, f.gate_min_q, f.gate_min_q, f.gate_min_q + 77]

    async def bench(ctx):
        await ctx.tick().repeat(2)                      # any phase of the ring
        for addr, value in writes:
            ctx.set(dut.gate.we, 1)
            ctx.set(dut.gate.addr, addr)
            ctx.set(dut.gate.data, value)
            await ctx.tick()
            ctx.set(dut.gate.we, 0)
            waited = 0
            while ctx.get(dut.control.busy):            # until it has reached its stream
                await ctx.tick()
                waited += 1
            assert 1 <= waited <= dut.streams + 3
        assert [ctx.get(dut.gates[a]) for a, _ in writes] == want
        assert ctx.get(dut.gates[3]) == int(dut.stream_gate_init[0][3])
        # reads: every gate of every stream, gate_read_latency cycles after its address
        for addr in [E + 3, 0, 2 * E + 1, 3 * E - 1, 5, E + 4]:
            ctx.set(dut.gate.raddr, addr)
            await ctx.tick().repeat(dut.gate_read_latency)
            assert ctx.get(dut.gate.rdata) == ctx.get(dut.gates[addr])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("streams,use_clear", [(3, True), (5, True), (4, False)])
def test_streams_fabric_clear_wipes_the_ring(streams, use_clear):
    """``clear`` (or the domain's reset) restores every stream of the pipelined fabric,
    whose ring has no reset: ticks in flight are dropped, each slot is wiped as it enters
    the state register (``busy`` for that turn), and the slots keep their streams, so the
    same ticks after the clear give the same bits as from power-up."""
    cfg = config_mod.refold(config_mod.load("paper-xor"), f"streams:{streams}")
    dut = make_fabric(cfg, mult_bits=18)
    C, N, E = dut.streams, dut.n_nodes, dut.n_edges
    f = dut.fmt
    drive = [int(f.volts_to_v(v)) for v in (0.45, 0.0, 0.11, 0.33)]
    target = int(f.volts_to_v(-0.087))

    def snapshot(ctx):
        return ([ctx.get(dut.v_free[i]) for i in range(C * N)],
                [ctx.get(dut.v_clamped[i]) for i in range(C * N)],
                [ctx.get(dut.gates[i]) for i in range(C * E)],
                [ctx.get(dut.control.outputs[i]) for i in range(C * dut.n_outputs)],
                ctx.get(dut.status.ticks), ctx.get(dut.status.sat_flags.as_value()))

    async def settle(ctx):
        while ctx.get(dut.control.busy):
            await ctx.tick()

    async def train(ctx, rounds):
        for i, value in enumerate(drive + [target]):
            ctx.set(dut.control.sample_we, 1)
            ctx.set(dut.control.sample_addr, i)
            ctx.set(dut.control.sample_data, value)
            await ctx.tick()
        ctx.set(dut.control.sample_we, 0)
        ctx.set(dut.control.run, 1)
        for r in range(rounds):
            ctx.set(dut.control.learn, r % 3 == 2)
            await ctx.tick().repeat(C)
        ctx.set(dut.control.run, 0)
        await settle(ctx)
        return snapshot(ctx)

    top = Module()
    top.submodules.dut = dut
    top.domains.sync = domain = ClockDomain("sync")

    async def restore(ctx):
        signal = dut.control.clear if use_clear else domain.rst
        ctx.set(signal, 1)
        for _ in range(1 if use_clear else 2):
            try:
                await ctx.tick()
            except DomainReset:                         # the wait ends in the reset
                pass
        ctx.set(signal, 0)
        if use_clear:                                   # registered first
            await ctx.tick()
        waited = 0
        while ctx.get(dut.control.busy):
            await ctx.tick()
            waited += 1
        assert waited <= C + 1

    async def bench(ctx):
        await ctx.tick().repeat(3)
        power_up = snapshot(ctx)
        first = await train(ctx, 12)
        assert first[2] != power_up[2] and first[0] != power_up[0]
        for extra in range(C + 1):                     # a clear at every phase of the ring
            for _ in range(extra):
                await ctx.tick()
            ctx.set(dut.control.run, 1)                         # with ticks in flight
            await ctx.tick().repeat(extra % C + 1)
            ctx.set(dut.control.run, 0)
            await restore(ctx)
            assert snapshot(ctx) == power_up, extra
            assert await train(ctx, 12) == first, extra

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()



def test_serial_schedule_visits_every_edge_term_and_gate_once(tmp_path):
    cfg, pair = driven_pair_config(tmp_path)
    schedule = serial_schedule(cfg)
    driven = set(cfg.driven_nodes())
    edges = [tuple(e) for e in np.asarray(cfg.network.edges).tolist()]
    terms = collections.Counter((v.node, v.net, v.edge) for v in schedule if v.term)
    expected = {(n, net, e) for e, ab in enumerate(edges) for n in ab if n not in driven
                for net in (0, 1)}
    assert set(terms) == expected and set(terms.values()) == {1}
    assert sorted(v.edge for v in schedule if v.gate) == list(range(len(edges)))
    gate_only = [v for v in schedule if not v.term]
    both_driven = [e for e, (a, b) in enumerate(edges) if {a, b} <= driven]
    assert [v.edge for v in gate_only] == both_driven and edges.index(pair) in both_driven
    assert all(v.gate for v in gate_only)
    for i, v in enumerate(schedule):
        if v.term:
            a, b = edges[v.edge]
            assert (v.node, v.other) == ((b, a) if v.plus else (a, b))
            # no later visit reads a gate once it has been updated
            assert not (v.gate and any(w.edge == v.edge for w in schedule[i + 1:]))
    groups = [(v.node, v.net) for v in schedule if v.first]
    assert groups == [(v.node, v.net) for v in schedule if v.last]
    assert len(groups) == len(set(groups)) == 2 * len(set(n for n, _ in groups))
