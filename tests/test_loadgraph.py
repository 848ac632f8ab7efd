"""The graph loaded at run time (``--capacity``): the core's rows and refusals, the
capacity serial fabric in amaranth.sim loaded with other graphs against the fixed-point
model, and the protocol's graph commands on the system model and the host driver."""

import copy
import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator
from conftest import LEARN, SETTLE, builtin_dict
from test_fabric_amaranth import ModelSide, read_state

from clln import config as config_mod
from clln import protocol as p
from clln import schedule as sch
from clln.cli_board import run_on_device
from clln.errors import ConfigError
from clln.flows import sim_board
from clln.formats import Formats
from clln.gateware.fabric import make_fabric
from clln.host.driver import Device, DeviceError, LoopbackTransport
from clln.sim.fixed import FixedPointModel
from clln.sim.system import SystemModel
from clln.sim.training import train

CAPACITY = sch.Capacity(16, 32)


def variant(name, network, io=None, **sections):
    """paper-xor with another graph (and I/O nodes, and other keys by section)."""
    data = copy.deepcopy(builtin_dict("paper-xor"))
    data["name"], data["network"] = name, network
    if io:
        data["io"].update(io)
    for section, keys in sections.items():
        data[section] = {**data.get(section, {}), **keys}
    return config_mod.parse(data, f"{name}.toml")


def regular16():
    """A random 4-regular graph on 16 nodes (32 edges), paper-xor's I/O."""
    return variant("xor-regular", {"topology": "random-regular", "nodes": 16, "degree": 4,
                                   "graph_seed": 3})


def torus34():
    """A 3x4 torus (12 nodes, 24 edges), its I/O on other node numbers than paper-xor's."""
    return variant("xor-t34", {"topology": "torus", "rows": 3, "cols": 4},
                   {"inputs": [11, 9], "rails": [[1, 0.11], [3, 0.33]], "outputs": [[6, 4]]})


def loadable(cfg, base=None):
    base = base or config_mod.load("paper-xor")
    return sch.check_loadable(cfg, base, Formats.from_config(base), Formats.from_config(cfg),
                              CAPACITY, int(base.network.degrees().max()))


# ---------------------------------------------------------------------------- core

def test_rows_pack_and_decode_to_the_graph():
    cfg = config_mod.load("paper-xor")
    fmt = Formats.from_config(cfg)
    fields = sch.row_fields(CAPACITY, fmt.v_bits, 4, 2)
    rows = sch.schedule_rows(cfg, fmt)
    assert len(rows) == 12 * 2 * 4 + 4 <= sch.max_rows(CAPACITY)
    assert sum(b for _, b, _ in fields) == 44 and sch.row_words(fields) == 2
    for r in rows:
        assert sch.unpack_row(sch.pack_row(r, fields), fields) == {k: r[k] for k, _, _ in fields}
    edges, vt_q, vt_c_q = sch.graph_from_rows(rows)
    np.testing.assert_array_equal(edges, cfg.network.edges)
    assert set(vt_q) == set(vt_c_q) == {int(fmt.vt_q[0])}
    # rows that are no graph's schedule: an edge seen with two pairs of ends
    assert sch.graph_from_rows([*rows, dict(rows[0], node=rows[0]["node"] + 2)]) is None


def test_relabel_places_the_io_and_keeps_every_bit():
    other = torus34()
    moved = loadable(other)
    assert moved.io.inputs == (0, 1) and moved.io.outputs == ((4, 5),)
    assert [n for n, _ in moved.io.rails] == [2, 3] and moved.network.n_nodes == 12
    again = sch.relabel(moved)
    assert again.io == moved.io and (again.network.edges == moved.network.edges).all()
    assert sch.placement(moved)[0] == [0, 1, 2, 3, 4, 5]
    # the same training, bit for bit: gates (by edge) and outputs
    a, b = FixedPointModel(other, [0]), FixedPointModel(moved, [0])
    for model in (a, b):
        for ex in range(4):
            model.run(40, ex, False)
            model.run(2, ex, True)
    np.testing.assert_array_equal(a.gates, b.gates)
    assert a.gates.std() > 0 and (a.gates != FixedPointModel(other, [0]).gates).any()


def test_refusals_name_the_numbers_and_the_key():
    with pytest.raises(ConfigError, match=r"big.toml: 25 nodes, 50 edges > capacity 16:32"):
        loadable(variant("big", {"topology": "torus", "rows": 5, "cols": 5}))
    with pytest.raises(ConfigError, match=r"wide.toml: \[fixed\] v_bits 18 differs from "
                                          r"the bitstream's 17"):
        loadable(variant("wide", {"topology": "torus", "rows": 4, "cols": 4},
                         fixed={"v_bits": 18}))
    with pytest.raises(ConfigError, match=r"\[learning\] eta 0.5 differs .* 0.3"):
        loadable(variant("eta", {"topology": "torus", "rows": 4, "cols": 4},
                         learning={"eta": 0.5}))
    base, other = config_mod.load("paper-xor"), regular16()
    with pytest.raises(ConfigError, match=r"degree 4 > the bitstream's largest degree 3"):
        sch.check_loadable(other, base, Formats.from_config(base), Formats.from_config(other),
                           CAPACITY, 3)
    with pytest.raises(ConfigError, match=r"expected NODES:EDGES"):
        sch.parse_capacity("32x64")
    with pytest.raises(ConfigError, match=r"edges 1 to 16382"):
        sch.parse_capacity("32:16383")
    assert sch.max_rows(sch.parse_capacity("32:16382")) == 0xFFFF - 3


# ---------------------------------------------------------------------------- fabric

def fabric_run(dut, loads, ticks=10, switch=4):
    """Load each config of ``loads`` (relabeled) into the capacity fabric ``dut`` through
    its graph port, clear, run ``ticks`` ticks; return per load (dut rows, model rows)."""
    out = []

    async def load(ctx, cfg):
        fmt = Formats.from_config(cfg)
        rows = sch.schedule_rows(cfg, fmt)
        fields = sch.row_fields(CAPACITY, fmt.v_bits, len(cfg.driven_nodes()),
                                len(sch.output_nodes(cfg)))
        ctx.set(dut.graph.row_we, 1)
        for i, r in enumerate(rows):
            ctx.set(dut.graph.row_addr, i)
            ctx.set(dut.graph.row_data, sch.pack_row(r, fields))
            await ctx.tick()
        ctx.set(dut.graph.row_we, 0)
        ctx.set(dut.graph.init_we, 1)
        for e, g in enumerate(fmt.volts_to_g(cfg.learning.initial_gates(cfg.network.n_edges,
                                                                        cfg.learning.seed))):
            ctx.set(dut.graph.init_addr, e)
            ctx.set(dut.graph.init_data, int(g))
            await ctx.tick()
        ctx.set(dut.graph.init_we, 0)
        ctx.set(dut.graph.n_rows, len(rows))
        ctx.set(dut.control.clear, 1)
        await ctx.tick()
        ctx.set(dut.control.clear, 0)

    async def run(ctx, cfg):
        ms = ModelSide(cfg, [cfg.learning.seed])
        fmt, p = ms.model.formats, ms.problem
        drive, targets = fmt.volts_to_v(p.drive)[:, cfg.driven_nodes()], fmt.volts_to_v(p.targets)
        N, E = cfg.network.n_nodes, cfg.network.n_edges
        got = []
        for t in range(ticks):
            while ctx.get(dut.control.busy):
                await ctx.tick()
            ex, learn = (t // switch) % p.n_examples, (t // 3) % 2 == 1
            if t % switch == 0:
                ctx.set(dut.control.sample_we, 1)
                for addr, v in enumerate([*drive[ex], *targets[ex]]):
                    ctx.set(dut.control.sample_addr, addr)
                    ctx.set(dut.control.sample_data, int(v))
                    await ctx.tick()
                ctx.set(dut.control.sample_we, 0)
            ctx.set(dut.control.run, 1)
            ctx.set(dut.control.learn, learn)
            ticked = False
            while not ticked:
                ticked = ctx.get(dut.control.tick_done)
                await ctx.tick()
            ctx.set(dut.control.run, 0)
            ms.tick(ex, learn)
            ms.record(t + 1)
            vf, vc, g = await read_state(ctx, dut)
            got.append(np.concatenate([vf[:N], vc[:N], g[:E], ctx.get(dut.control.outputs)]))
        m_rows = [np.concatenate([r[:2 * N + E], r[2 * N + E:-2]]) for r in ms.rows]
        out.append((np.array(got), np.array(m_rows)))

    async def bench(ctx):
        ctx.set(dut.graph.n_rows, dut.cycles_per_tick)      # the power-up graph's rows
        await run(ctx, dut.cfg)
        for cfg in loads:
            await load(ctx, cfg)
            await run(ctx, cfg)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def test_capacity_fabric_runs_loaded_graphs_bit_exact():
    base = config_mod.refold(config_mod.load("paper-xor"), "serial")
    dut = make_fabric(base, capacity=CAPACITY)
    assert (dut.n_nodes, dut.n_edges, dut.rows_depth) == (16, 32, 132)
    # a smaller graph with its I/O elsewhere (the Verilated test loads a regular one too)
    results = fabric_run(dut, [loadable(torus34())])
    assert len(results) == 2
    for got, exp in results:
        assert got.shape == exp.shape
        np.testing.assert_array_equal(got, exp)
    # 12 nodes and 24 edges of the torus: free and clamped voltages, gates, the output
    assert results[1][0].shape == (10, 2 * 12 + 24 + 1)
    assert len(np.unique(results[1][0][:, 24:48])) > 24       # the gates learnt


# ---------------------------------------------------------------------------- protocol

def short(cfg):
    """``cfg`` with a short schedule and few epochs."""
    return dataclasses.replace(cfg, schedule=dataclasses.replace(
        cfg.schedule, settle_ticks=SETTLE, learn_ticks=LEARN))


def test_system_model_loads_graphs_and_trains_like_the_fixed_model():
    """A capacity system model built from paper-xor, loaded over the link with two other
    graphs in turn (``Device.load_graph`` through ``run_on_device``): each trains as
    ``clln train X --model fixed`` does (gates, outputs, error sums); IDENTIFY reports
    the loaded config's hash."""
    base = short(config_mod.load("paper-xor"))
    model = SystemModel(base, capacity="16:32")
    dev = Device(LoopbackTransport(model.respond))
    ident = dev.identify()
    assert (ident.n_nodes, ident.n_edges, ident.graph_rows, ident.max_degree) == (16, 32, 132, 4)
    assert ident.config_hash == p.config_hash(base)
    for other in (short(regular16()), short(torus34())):
        res = run_on_device(dev, other, 2, other.learning.seed, base=base)
        assert dev.identify().config_hash == p.config_hash(other)
        alone = FixedPointModel(other, [other.learning.seed])
        hist = train(alone, 2)
        np.testing.assert_array_equal(res["gates"], alone.gates[0])
        np.testing.assert_array_equal(model.fmt.v_to_volts(res["outputs"][:, 0]),
                                      hist.outputs_final[0][:, 0])
        E = other.network.n_edges
        assert len(res["gates"]) == E and (res["gates"] != model.graph.init[:E]).any()
    # loaded already: nothing sent
    assert not dev.load_graph(short(torus34()))


def test_graph_commands_refused():
    base = short(config_mod.load("paper-xor"))
    model = SystemModel(base, capacity="20:32")
    dev = Device(LoopbackTransport(model.respond))
    ident = dev.identify()
    fields = model.graph.fields
    row = sch.schedule_rows(model.cfg, model.fmt)[0]

    def write_row(word):
        words = [[word >> 32, word & 0xFFFFFFFF]]
        dev.request(p.Command.WRITE_GRAPH, p.pack_write_graph(0, words))

    for bad in (sch.pack_row(dict(row, node=20), fields),
                sch.pack_row(dict(row, clamp=3), fields), sch.pack_row(row, fields) | 1 << 63):
        with pytest.raises(DeviceError, match="OUT_OF_RANGE"):
            write_row(bad)
    write_row(sch.pack_row(dict(row, node=19), fields))
    for n_rows in (4, ident.graph_rows + 1):
        with pytest.raises(DeviceError, match="OUT_OF_RANGE"):
            dev.request(p.Command.COMMIT_GRAPH, p.pack_commit(n_rows, 1))
    # 132 rows: no graph's schedule, which the model cannot follow (the gateware runs them)
    with pytest.raises(DeviceError, match="OUT_OF_RANGE"):
        dev.request(p.Command.COMMIT_GRAPH, p.pack_commit(ident.graph_rows, 1))
    with pytest.raises(DeviceError, match="OUT_OF_RANGE"):
        dev.request(p.Command.WRITE_GRAPH, p.pack_write_graph(ident.graph_rows, [[0, 0]]))
    with pytest.raises(ConfigError, match=r"25 nodes, 50 edges > capacity 20:32"):
        dev.load_graph(variant("big", {"topology": "torus", "rows": 5, "cols": 5}))
    with pytest.raises(ConfigError, match=r"\[fixed\] v_bits 18 differs from the "
                                          r"bitstream's 17"):
        dev.load_graph(variant("wide", {"topology": "torus", "rows": 4, "cols": 4},
                               fixed={"v_bits": 18}), base)
    with pytest.raises(ConfigError, match=r"fixed hash"):
        dev.load_graph(variant("wide", {"topology": "torus", "rows": 4, "cols": 4},
                               fixed={"v_bits": 18}))
    model.run(0, True)                  # running until stopped: BUSY
    with pytest.raises(DeviceError, match="BUSY"):
        dev.load_graph(short(torus34()))
    model.stop()
    # a fixed-graph bitstream knows no graph commands
    fixed = Device(LoopbackTransport(SystemModel(base).respond))
    with pytest.raises(DeviceError, match="UNKNOWN_COMMAND"):
        fixed.request(p.Command.COMMIT_GRAPH, p.pack_commit(10, 1))
    with pytest.raises(ConfigError, match=r"graph is fixed"):
        fixed.load_graph(short(torus34()))


# ---------------------------------------------------------------------------- Verilator

@pytest.fixture(scope="module")
def capacity_board(tmp_path_factory):
    """paper-xor's board system for capacity 16:32, Verilated, and its golden model."""
    base = short(config_mod.refold(config_mod.load("paper-xor"), "serial"))
    tr = sim_board(base, build_dir=tmp_path_factory.mktemp("capacity"), opt="-O0",
                   capacity="16:32")
    yield base, tr
    tr.close()


@pytest.mark.sim
def test_simulated_capacity_board_loads_graphs_like_its_model(capacity_board):
    """The Verilated capacity board, loaded over the UART with two other graphs in turn,
    answers as its golden model (gates, outputs, status but the cycles) and trains each
    as ``clln train X --model fixed``; refusals byte for byte."""
    base, tr = capacity_board
    dev = Device(tr, timeout=30)
    model = SystemModel(base, capacity="16:32")
    mdev = Device(LoopbackTransport(model.respond))
    assert dev.identify() == mdev.identify()
    for other in (short(regular16()), short(torus34())):
        got, want = (run_on_device(d, other, 2, 3, base=base) for d in (dev, mdev))
        np.testing.assert_array_equal(got["gates"], want["gates"])
        np.testing.assert_array_equal(got["outputs"], want["outputs"])
        assert dataclasses.replace(got["status"], cycles=0) == want["status"]
        assert dev.identify() == mdev.identify()
        assert dev.identify().config_hash == p.config_hash(other)
        alone = FixedPointModel(other, [3])
        train(alone, 2)
        np.testing.assert_array_equal(got["gates"], alone.gates[0])
    row = sch.schedule_rows(model.cfg, model.fmt)[0]
    word = sch.pack_row(row, model.graph.fields) | 1 << 63
    for cmd, payload in ((p.Command.WRITE_GRAPH, p.pack_write_graph(0, [[word >> 32, 0]])),
                         (p.Command.WRITE_GRAPH, p.pack_write_graph(132, [[0, 0]])),
                         (p.Command.WRITE_GRAPH, p.pack_write_graph(0, [[0]])),
                         (p.Command.WRITE_INIT_GATES, p.pack_write_gates(31, [0, 0])),
                         (p.Command.WRITE_INIT_GATES, p.pack_write_gates(0, [1 << 30])),
                         (p.Command.COMMIT_GRAPH, p.pack_commit(4, 0)),
                         (p.Command.COMMIT_GRAPH, p.pack_commit(133, 0))):
        frame = p.encode_request(7, cmd, payload)
        assert tr_exchange(tr, frame) == model.respond(frame)
        assert p.parse_reply(model.respond(frame)[:-1]).status != p.Status.OK


def tr_exchange(transport, raw, timeout=10.0):
    """Send raw bytes; the reply bytes up to and including the first delimiter."""
    import time
    transport.write(raw)
    out, deadline = bytearray(), time.monotonic() + timeout
    while p.DELIMITER not in out:
        out += transport.read(max(0.0, deadline - time.monotonic()))
        assert time.monotonic() < deadline, f"no reply to {raw.hex()}"
    return bytes(out)
