"""Property-based tests (hypothesis, derandomized: the same examples on every run) of the
config loader, the command line and the host's frame decoder: whatever they are given,
they answer with a result or with the project's own error (a one-line message), never
with another exception and never by hanging.

Each test counts what it tried and asserts the issue's floor: 2,000 configs, 50,000
frames."""

import copy

import numpy as np
import pytest
from conftest import builtin_dict, toml_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clln import cli, config
from clln import protocol as p
from clln.errors import CllnError, ConfigError
from clln.formats import Formats
from clln.host.driver import Device, LoopbackTransport
from clln.protocol import Command, FrameError, Status
from clln.sim.training import MODELS, make_model, train


def fixed_settings(examples):
    """The same examples every run (CI), no example database, a deadline that finds
    hangs (one example takes milliseconds)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=2000,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- values and configs -------------------------------------------------------------------------

SPECIAL_FLOATS = [0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 1e300, 1e-12, 1e9, 1e-6, 10.0,
                  100.0, -10.0, float("inf"), float("nan")]
SPECIAL_INTS = [0, 1, -1, 2, 3, 255, 256, 4096, 4097, 16384, 65535, 65536, 2 ** 31, 2 ** 32,
                2 ** 32 - 1, 2 ** 63, 2 ** 64, 10 ** 400]
WORDS = ["xor", "paper-regression", "euler", "jacobi", "momentum", "still", "fixed", "torus",
         "grid", "edges", "../escaped", "a" * 300, "", "d.csv", "nope.csv", "é", "\x00"]

scalars = st.one_of(
    st.booleans(), st.sampled_from(SPECIAL_INTS), st.integers(-10 ** 6, 10 ** 6),
    st.sampled_from(SPECIAL_FLOATS), st.floats(-1e3, 1e3), st.floats(),
    st.sampled_from(WORDS), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.sampled_from(["a", "vt", "rows"]), inner,
                                        max_size=2), max_leaves=8)

#: Every key of every section (docs/config.md), the ones a mutation changes.
KEYS = {
    "network": ["topology", "rows", "cols", "nodes", "edges"],
    "device": ["vt", "k", "gmin"],
    "io": ["inputs", "rails", "outputs", "v_min", "v_max"],
    "learning": ["eta", "alpha", "gate_init", "gate_min", "gate_max", "epochs", "seed"],
    "task": ["dataset", "mse_target"],
    "schedule": ["settle_ticks", "learn_ticks", "kappa", "relax", "settle", "still_ticks",
                 "still_lsb", "momentum_shift"],
    "fixed": list(config.Fixed.__dataclass_fields__),
    "fabric": ["edge_units", "serial", "streams"],
    "nonideal": list(config.Nonideal.__dataclass_fields__),
    "": ["name"],
}
ALL_KEYS = [(s, k) for s, keys in KEYS.items() for k in keys]


def numeric_near(value):
    """Values around a valid one: numbers near it, scaled by powers of ten, at the bounds,
    of the other sign; for a string, it or another word."""
    if isinstance(value, str):
        return st.sampled_from([value, *WORDS])
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not config.finite(value) or abs(value) > 1e300):
        return values
    scale = st.sampled_from([1e-300, 1e-12, 1e-6, 0.5, 0.999, 1, 1.001, 2, 1e6, 1e12, 1e300,
                             -1])
    if isinstance(value, int):
        gentle = st.integers(-4, 4).map(lambda d: value + d)
        return st.one_of(gentle, gentle, st.sampled_from(SPECIAL_INTS),
                         scale.map(lambda f: int(value * f)))
    gentle = st.floats(min(value / 2, value * 2), max(value / 2, value * 2))
    return st.one_of(gentle, gentle, scale.map(lambda f: value * f),
                     st.sampled_from(SPECIAL_FLOATS), st.floats(value - 1, value + 1))


@st.composite
def mutated_configs(draw):
    """A built-in config with 1 to 4 keys (mostly 1 or 2) changed (near their value, or to
    anything), removed or added."""
    data = copy.deepcopy(builtin_dict(draw(st.sampled_from(["paper-xor", "paper-regression"]))))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        section, key = draw(st.sampled_from(ALL_KEYS))
        table = data if not section else data.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        action = draw(st.sampled_from(["near", "near", "near", "any", "remove", "unknown"]))
        if action == "remove":
            table.pop(key, None)
        elif action == "unknown":
            table[draw(st.sampled_from(["colour", "Eta", "x"]))] = draw(values)
        else:
            old = table.get(key, 0.5)
            table[key] = draw(numeric_near(old) if action == "near" else values)
    return data


def check_accepted(cfg, model):
    """What a loaded config must also pass without an exception but ConfigError: its
    formats, the protocol's fields, and (if cheap) one epoch of a model, whose results are
    finite."""
    try:
        Formats.from_config(cfg)
        p.check_fields(cfg, p.default_max_examples(cfg))
    except ConfigError:
        return False
    s = cfg.schedule
    if (s.settle_ticks + s.learn_ticks) * len(cfg.task.x) > 20_000 or cfg.network.n_nodes > 64:
        return True                     # valid, but too slow to train here
    try:
        history = train(make_model(cfg, model, [cfg.learning.seed]), 1)
    except CllnError:
        return True                     # ConfigError (a format, stability), SolverError
    for values in (history.gates_final, history.outputs_final, history.observed):
        assert np.isfinite(values).all()
    return True


def test_config_loader_never_raises_anything_else(tmp_path):
    """2,000 mutated configs: each loads or is refused with a ConfigError naming a key;
    those that load pass the formats and one training epoch, or are refused likewise."""
    seen = {"configs": 0, "loaded": 0, "trained": 0}
    (tmp_path / "d.csv").write_text("x1,x2,y1\n0,0,0\n0.45,0,-0.087\n")

    @fixed_settings(2000)
    @given(mutated_configs(), st.sampled_from(MODELS))
    def check(data, model):
        seen["configs"] += 1
        try:
            cfg = config.parse(data, "fuzz.toml", tmp_path)
        except ConfigError as e:
            assert str(e).startswith("fuzz.toml") and "\n" not in str(e)
            return
        seen["loaded"] += 1
        seen["trained"] += check_accepted(cfg, model)

    check()                 # (pytest turns warnings into errors: an overflow is a defect)
    assert seen["configs"] >= 2000 and seen["loaded"] >= 150, seen


#: The numeric keys and their documented bounds (docs/config.md), with paper-xor's values
#: for the rest of the config.
BOUNDED = {("device", "vt"): (-config.VOLTS, config.VOLTS),
           ("device", "k"): (config.MIN_POSITIVE, config.MAX_POSITIVE),
           ("device", "gmin"): (config.MIN_POSITIVE, config.MAX_POSITIVE),
           ("io", "v_min"): (-config.VOLTS, config.VOLTS),
           ("io", "v_max"): (-config.VOLTS, config.VOLTS),
           ("learning", "eta"): (config.MIN_ETA, 1.0),
           ("learning", "alpha"): (config.MIN_POSITIVE, config.MAX_POSITIVE),
           ("learning", "gate_min"): (-config.GATE_VOLTS, config.GATE_VOLTS),
           ("learning", "gate_max"): (-config.GATE_VOLTS, config.GATE_VOLTS),
           ("schedule", "kappa"): (config.MIN_POSITIVE, config.MAX_POSITIVE),
           ("task", "mse_target"): (1e-300, 1e300),
           ("nonideal", "gate_leak"): (config.MIN_POSITIVE, 0.999),
           ("nonideal", "update_offset"): (0.0, 1.0),
           ("nonideal", "vt_sigma"): (0.0, 0.5), ("nonideal", "k_sigma"): (0.0, 0.25)}


@st.composite
def bounded_configs(draw):
    """paper-xor (euler, jacobi or momentum) with 1 to 3 numeric keys anywhere within their
    bounds, their ends included."""
    data = copy.deepcopy(builtin_dict("paper-xor"))
    data["schedule"].update(settle_ticks=200, relax=draw(st.sampled_from(["jacobi", "euler",
                                                                          "momentum"])))
    for section, key in draw(st.lists(st.sampled_from(sorted(BOUNDED)), min_size=1,
                                      max_size=3, unique=True)):
        lo, hi = BOUNDED[section, key]
        data.setdefault(section, {})[key] = draw(st.one_of(
            st.sampled_from([lo, hi]), st.floats(lo, hi),
            st.floats(-300, 300).map(lambda e, lo=lo, hi=hi: min(max(10.0 ** e, lo), hi))))
    return data


def test_values_within_bounds_never_overflow(tmp_path):
    """500 configs whose numbers lie anywhere within the bounds: each is refused with a
    ConfigError, or trains an epoch on a model with finite results."""
    seen = {"configs": 0, "trained": 0}

    @fixed_settings(500)
    @given(bounded_configs(), st.sampled_from(MODELS))
    def check(data, model):
        seen["configs"] += 1
        try:
            cfg = config.parse(data, "fuzz.toml", tmp_path)
        except ConfigError:
            return
        seen["trained"] += check_accepted(cfg, model)

    check()
    assert seen["configs"] >= 500 and seen["trained"] >= 100, seen


def test_config_text_never_raises_anything_else(tmp_path):
    """Damaged TOML text (bytes flipped, cut, repeated, nested): read_toml gives a dict or
    a ConfigError."""
    text = toml_text(builtin_dict("paper-xor")).encode()
    path = tmp_path / "c.toml"
    seen = [0]

    @fixed_settings(300)
    @given(st.integers(0, len(text)), st.binary(max_size=6), st.integers(0, 3000),
           st.sampled_from([b"[", b"{", b'"', b"\xff", b"\n", b"="]))
    def check(at, junk, depth, opener):
        seen[0] += 1
        path.write_bytes(text[:at] + junk + opener * depth + text[at:])
        try:
            data = config.read_toml(path)
        except ConfigError as e:
            assert "\n" not in str(e).split(": not valid TOML: ")[0]
            return
        try:
            config.parse(data, str(path), tmp_path)
        except ConfigError:
            pass

    check()
    assert seen[0] >= 300


# -- the command line ----------------------------------------------------------------------------

FLAG_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "nan", "inf", "-inf", "1e309", "4294967296",
                     "65536", "65535", "10000000", "10000001", "0-9", "9-0", "0-99999999999",
                     "streams:2", "streams:0", "streams:9", "streams:²", "serial", "max",
                     "²", "١", "1_000", " 5", "x", "", "fixed", "euler", "a" * 300,
                     "afile/sub", "out.png", "out.svgx", "out", "cyclic", "lfsr", "-O0"]),
    st.integers(-10, 10 ** 12).map(str), st.floats(allow_nan=True).map(repr),
    st.text(alphabet=st.characters(exclude_characters="/\x00"), max_size=6))

COMMANDS = {
    "train": (["paper-xor"], ["--model", "--epochs", "--seed", "--seeds", "--plot", "--json"]),
    "build": (["paper-xor", "--board", "icebreaker"], [
        "--clock", "--pnr-clock", "--pnr-seed", "--baud", "--max-examples", "--fabric",
        "--build-dir", "--json"]),
    "run": (["paper-xor", "--sim"], ["--epochs", "--seed", "--order", "--baud", "--timeout",
                                     "--fabric", "--build-dir", "--plot", "--json"]),
    "generate": (["paper-xor", "-o", "gen"], ["--flat"]),
    "verify": (["paper-xor"], ["--sim", "--ticks", "--netlist", "--build-dir", "--json"]),
}
SWITCHES = {"--json", "--flat"}
#: Values aimed at each flag (its edge cases), beside the common ones.
AIMED = {
    "--fabric": ["streams:²", "streams:٣", "streams:0", "streams:9", "streams:", "serial", "0",
                 "99", "١", "streams:4"],
    "--seeds": ["0-9", "9-0", "0-99999999999", "4294967295-4294967296", "0-9999", "٠-٩",
                "1-1", "-1-2"],
    "--clock": ["1000", "0.001", "max", "nan", "inf", "12", "48", "1e-300"],
    "--pnr-clock": ["1000", "0.001", "36", "nan"],
    "--baud": ["1", "10000000", "3000000", "115200", "0"],
    "--max-examples": ["65535", "65536", "0", "1", "3"],
    "--timeout": ["0", "-1", "nan", "inf", "1e-300", "86401", "2"],
    "--plot": ["out", "out.png", "out.svgx", "out.PDF", ".png", "out."],
    "--epochs": ["4294967296", "10000000", "10000001", "0", "-1"],
    "--seed": ["4294967295", "4294967296", "-1", "0"],
    "--ticks": ["0", "1000000000", "1000000001"],
}


class WorkStarted(Exception):
    """The command got past its checks: a training, a build or a device would start."""


@pytest.fixture
def no_work(monkeypatch):
    from clln import cli_board, cli_hdl, flows
    from clln.boards import system
    from clln.gateware import export
    from clln.sim import training

    def started(*args, **kwargs):
        raise WorkStarted

    for module, name in ((training, "train"), (training, "make_model"),
                         (system, "build_system"), (system, "build_fitting"),
                         (export, "generate"), (cli_board, "_open_device"),
                         (flows, "verify")):
        monkeypatch.setattr(module, name, started)
    assert cli_hdl           # cmd_verify imports flows.verify at call time


def test_command_line_never_raises_anything_else(tmp_path, monkeypatch, capsys, no_work):
    """1,000 command lines of random flags and values: argparse's usage error (2), one
    line and 2, or the work starts; nothing else, no traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    seen = [0]

    @fixed_settings(1000)
    @given(st.sampled_from(sorted(COMMANDS)), st.data())
    def check(command, data):
        seen[0] += 1
        required, flags = COMMANDS[command]
        argv = [command, *required]
        for flag in data.draw(st.lists(st.sampled_from(flags), max_size=4, unique=True)):
            aimed = st.sampled_from(AIMED.get(flag, ["1"]))
            argv += [flag] if flag in SWITCHES else [flag, data.draw(aimed | FLAG_VALUES)]
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
        except WorkStarted:
            return
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.strip().splitlines()[-1].startswith("clln"), (argv, err)

    check()
    assert seen[0] >= 1000


# -- frames ---------------------------------------------------------------------------------------

def identity(streams=1):
    cfg = config.load("paper-xor")
    if streams > 1:
        cfg = config.refold(cfg, f"streams:{streams}")
    return p.Identity.from_config(cfg, Formats.from_config(cfg), 64)


IDENTITIES = [identity(1), identity(3)]


def damage(rng, wire):
    """One frame's bytes, damaged one of several ways (or not)."""
    kind = rng.integers(7)
    wire = bytearray(wire)
    if kind == 1 and len(wire) > 1:                            # a flipped bit
        i = rng.integers(len(wire) - 1)
        wire[i] ^= 1 << rng.integers(8)
    elif kind == 2:                                            # cut short
        wire = wire[:rng.integers(len(wire))] + b"\x00"
    elif kind == 3:                                            # a byte dropped or doubled
        i = rng.integers(len(wire))
        wire = wire[:i] + wire[i + 1:] if rng.integers(2) else wire[:i] + wire[i:]
    elif kind == 4:                                            # noise
        wire = bytearray(rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8).tobytes())
        wire.append(0)
    elif kind == 5:                                            # far too long
        wire = bytearray(rng.integers(1, 256, 700, dtype=np.uint8).tobytes()) + b"\x00"
    return bytes(wire)


def random_frame(rng):
    """A request or reply frame (its bytes, its payload, whether a reply) of a random
    command and payload (the right length for its command or not)."""
    command = int(rng.choice([*map(int, Command), 0, 0x55, 255]))
    size = int(rng.choice([0, 1, 3, 5, 20, 30, 32, 35, 40, 259, 256]))
    payload = rng.integers(0, 256, min(size, p.MAX_PAYLOAD), dtype=np.uint8).tobytes()
    rid = int(rng.integers(256))
    version = p.PROTOCOL_VERSION if rng.integers(8) else int(rng.integers(256))
    if rng.integers(2):
        return p.encode_request(rid, command, payload, version), payload, False
    return p.encode_reply(rid, command, int(rng.integers(12)), payload, version), payload, True


PAYLOAD_DECODERS = [
    lambda b, i: p.Identity.unpack(b),
    lambda b, i: p.DeviceStatus.unpack(b, i.streams),
    lambda b, i: p.ScheduleParams.unpack(b, i),
    lambda b, i: p.unpack_write_dataset(b, i),
    lambda b, i: p.unpack_write_gates(b, i),
    lambda b, i: p.unpack_range(b, i.n_gates, Command.READ_GATES),
    lambda b, i: p.unpack_values(b),
    lambda b, i: p.unpack_run(b),
]


def test_frame_decoder_never_raises_anything_else():
    """50,000 frames, good and damaged, through the host's decoder (FrameReader with
    parse_reply, and parse_request) and every payload decoder: each is a packet or a
    FrameError with a status; a good reply decodes to what was sent."""
    seen = {"frames": 0, "packets": 0, "errors": 0}

    @fixed_settings(2000)
    @given(st.integers(0, 2 ** 32 - 1))
    def check(seed):
        rng = np.random.default_rng(seed)
        reader = p.FrameReader(p.parse_reply)
        for _ in range(25):
            seen["frames"] += 1
            wire, payload, reply = random_frame(rng)
            bad = damage(rng, wire)
            results = reader.feed(bad)
            for item in results:
                if isinstance(item, FrameError):
                    seen["errors"] += 1
                    assert isinstance(item.status, Status)
                else:
                    seen["packets"] += 1
            if reply and bad == wire and results and not isinstance(results[-1], FrameError):
                assert results[-1].payload == payload
            try:
                p.parse_request(bad[:-1])
            except FrameError:
                pass
            ident = IDENTITIES[int(rng.integers(2))]
            for decode in PAYLOAD_DECODERS:
                try:
                    decode(payload, ident)
                except FrameError:
                    pass

    check()
    assert seen["frames"] >= 50_000 and min(seen["packets"], seen["errors"]) > 5000, seen


def test_driver_never_raises_anything_else():
    """A device that answers with noise or damaged replies: the driver raises its
    ProtocolError (a one-line CllnError) or returns, whatever the bytes."""
    seen = [0]

    @fixed_settings(500)
    @given(st.integers(0, 2 ** 32 - 1))
    def check(seed):
        rng = np.random.default_rng(seed)

        def respond(data):
            request = p.parse_request(data[:-1])
            good = p.encode_reply(request.request_id, request.command, Status.OK,
                                  rng.integers(0, 256, int(rng.integers(0, 40)),
                                               dtype=np.uint8).tobytes())
            return damage(rng, good)

        dev = Device(LoopbackTransport(respond), timeout=0)
        for call in (dev.identify, dev.status, lambda: dev.read_gates(0, 3), dev.stop):
            seen[0] += 1
            try:
                call()
            except CllnError as e:
                assert "\n" not in str(e)

    check()
    assert seen[0] >= 2000
