"""Host protocol: CRC, COBS, frames, payloads, malformed input, and the driver."""

import dataclasses
import functools
import random

import numpy as np
import pytest

from clln import config, formats
from clln import protocol as p
from clln.host.driver import Device, DeviceError, LinkTimeout, LoopbackTransport
from clln.protocol import Command, FrameError, Status
from clln.sim import link as link_model


def identity(streams=1, clock_hz=0):
    cfg = config.load("paper-xor")
    if streams > 1:
        cfg = config.refold(cfg, f"streams:{streams}")
    return p.Identity.from_config(cfg, formats.Formats.from_config(cfg), 64, clock_hz)


def test_crc_and_cobs_known_values():
    assert p.crc16(b"123456789") == 0x29B1
    rng = random.Random(1)
    for n in (0, 1, 2, 17, 260):          # binascii's CRC is the gateware's, bit by bit
        data = bytes(rng.randrange(256) for _ in range(n))
        assert p.crc16(data) == functools.reduce(p.crc16_byte, data, p.CRC_INIT)
    body = b"\x01\x07\x09"
    assert p.crc16(body + p.crc16(body).to_bytes(2, "big")) == 0   # residue of a good frame
    assert p.cobs_encode(b"") == b"\x01"
    assert p.cobs_encode(b"\x00") == b"\x01\x01"
    assert p.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert p.cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
    assert p.cobs_encode(bytes(range(256))) == (b"\x01\xff" + bytes(range(1, 255))
                                                + b"\x02\xff")
    rng = random.Random(0)
    for n in [0, 1, 253, 254, 255, 508, 509, 1000]:
        data = bytes(rng.choice([0, 1, 255, rng.randrange(256)]) for _ in range(n))
        enc = p.cobs_encode(data)
        assert 0 not in enc and p.cobs_decode(enc) == data


def test_request_round_trip():
    wire = p.encode_request(42, Command.READ_GATES, p.pack_range(3, 5))
    assert wire[-1] == 0 and 0 not in wire[:-1]
    pk = p.parse_request(wire[:-1])
    assert (pk.request_id, pk.command, pk.payload) == (42, Command.READ_GATES, b"\x00\x03\x05")
    reply = p.parse_reply(p.encode_reply(42, Command.READ_GATES, Status.OK, b"xy")[:-1])
    assert (reply.request_id, reply.status, reply.payload) == (42, Status.OK, b"xy")


@pytest.mark.parametrize("frame,status", [
    (b"\x05\x01\x02", Status.BAD_COBS),                  # block runs past the end
    (b"\x03\x01\x01", Status.TRUNCATED),                 # 2 bytes < header + CRC
    (p.cobs_encode(b"\x01\x00\x01\x00\x00"), Status.BAD_CRC),
    (p.encode_request(1, 0x55)[:-1], Status.UNKNOWN_COMMAND),
    (p.encode_request(1, Command.STOP, version=1)[:-1], Status.BAD_VERSION),
    (p.cobs_encode(bytes(300)), Status.TOO_LONG),
])
def test_parse_request_errors(frame, status):
    with pytest.raises(FrameError) as e:
        p.parse_request(frame)
    assert e.value.status == status


def test_malformed_frames_are_rejected_with_the_right_error():
    """Thousands of damaged frames: each is refused with its status, nothing else escapes."""
    rng = random.Random(1)
    seen = {}
    for trial in range(3000):
        payload = bytes(rng.choice([0, 0xFF, rng.randrange(256)])
                        for _ in range(rng.randrange(0, p.MAX_PAYLOAD + 1)))
        good = p.encode_request(rng.randrange(256), rng.choice(list(Command)), payload)[:-1]
        body = p.cobs_decode(good)
        kind = trial % 4
        if kind == 0:                                  # a data bit flipped
            code_pos, pos = set(), 0
            while pos < len(good):
                code_pos.add(pos)
                pos += good[pos]
            data_pos = [i for i in range(len(good)) if i not in code_pos]
            if not data_pos:
                continue
            i = rng.choice(data_pos)
            bad = bytearray(good)
            bad[i] ^= 1 << rng.randrange(8)
            if bad[i] == 0:
                continue
            expect = {Status.BAD_CRC}
        elif kind == 1:                                # cut short
            cut = rng.randrange(1, len(good))
            bad = good[:cut]
            # the CRC of a prefix is wrong; a prefix shorter than 5 decoded bytes is truncated
            expect = {Status.BAD_COBS, Status.TRUNCATED, Status.BAD_CRC}
        elif kind == 2:                                # random bytes, no delimiter
            bad = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 400)))
            expect = {Status.BAD_COBS, Status.TRUNCATED, Status.BAD_CRC, Status.TOO_LONG}
        else:                                          # any bit flipped (code bytes too)
            bad = bytearray(good)
            i = rng.randrange(len(bad))
            bad[i] ^= 1 << rng.randrange(8)
            expect = {Status.BAD_COBS, Status.TRUNCATED, Status.BAD_CRC, Status.TOO_LONG}
        bad = bytes(bad)
        results = p.FrameReader(p.parse_request).feed(bad + b"\x00")
        if 0 in bad:        # a flip made a delimiter: two frames, both refused
            assert len(results) >= 1
        else:
            assert len(results) == 1
        for r in results:
            assert isinstance(r, FrameError), f"trial {trial}: accepted {bad.hex()}"
            assert r.status in expect, f"trial {trial}: {r.status!r} for {bad.hex()}"
            seen[r.status] = seen.get(r.status, 0) + 1
        if kind == 1 and len(results) == 1:
            if link_model.CobsDecoderModel and len(bad) < len(good):
                try:
                    dec = p.cobs_decode(bad)
                except FrameError:
                    assert results[0].status == Status.BAD_COBS
                else:
                    want = Status.TRUNCATED if len(dec) < p.MIN_REQUEST else Status.BAD_CRC
                    assert results[0].status == want and dec == body[:len(dec)]
    assert {Status.BAD_CRC, Status.BAD_COBS, Status.TRUNCATED, Status.TOO_LONG} <= set(seen)


def test_frame_reader_back_to_back_and_garbage():
    frames = [p.encode_request(i, Command.IDENTIFY) for i in range(5)]
    stream = b"\x00\x00" + frames[0] + frames[1] + b"\x07\x07\x00" + frames[2] + frames[3]
    reader = p.FrameReader(p.parse_request, max_encoded=50)
    out = reader.feed(stream[:7]) + reader.feed(stream[7:]) + reader.feed(
        bytes(range(1, 200)) + b"\x00" + frames[4])
    kinds = [r.status if isinstance(r, FrameError) else r.request_id for r in out]
    assert kinds == [0, 1, Status.BAD_COBS, 2, 3, Status.TOO_LONG, 4]


def test_payload_layouts_and_range_checks():
    ident = identity()
    assert p.Identity.unpack(ident.pack()) == ident
    assert ident.n_edges == ident.n_gates == 32 and len(ident.pack()) == 37
    drives, targets = np.array([[1, -2], [3, 4]]), np.array([[5], [-6]])
    first, d, t = p.unpack_write_dataset(p.pack_write_dataset(7, drives, targets), ident)
    assert first == 7 and (d == drives).all() and (t == targets).all()
    with pytest.raises(FrameError) as e:
        p.unpack_write_dataset(p.pack_write_dataset(0, [[1 << 17, 0]], [[0]]), ident)
    assert e.value.status == Status.OUT_OF_RANGE
    with pytest.raises(FrameError) as e:
        p.unpack_write_dataset(p.pack_write_dataset(63, drives, targets), ident)
    assert e.value.status == Status.OUT_OF_RANGE
    with pytest.raises(FrameError) as e:
        p.unpack_write_dataset(p.pack_write_dataset(0, drives, targets)[:-1], ident)
    assert e.value.status == Status.BAD_LENGTH
    sched = p.ScheduleParams(600, 50, 100, 4, p.Order.LFSR, 9, still_ticks=17)
    assert len(sched.pack()) == p.REQUEST_LENGTHS[Command.WRITE_SCHEDULE] == 20
    assert p.ScheduleParams.unpack(sched.pack(), ident) == sched
    assert sched.pack()[19] == 17 and p.SCHEDULE_FIELDS["still_ticks"] == (19, 1)
    with pytest.raises(FrameError) as e:            # version 2's 19 bytes
        p.ScheduleParams.unpack(sched.pack()[:19], ident)
    assert e.value.status == Status.BAD_LENGTH
    for bad in [p.ScheduleParams(0, 0, 1, 4), p.ScheduleParams(1, 1, 1, 65)]:
        with pytest.raises(FrameError) as e:
            p.ScheduleParams.unpack(bad.pack(), ident)
        assert e.value.status == Status.OUT_OF_RANGE
    gates = [ident.gate_min_q, ident.gate_max_q]
    assert p.unpack_write_gates(p.pack_write_gates(14, gates), ident)[1].tolist() == gates
    with pytest.raises(FrameError) as e:
        p.unpack_write_gates(p.pack_write_gates(31, gates), ident)
    assert e.value.status == Status.OUT_OF_RANGE
    with pytest.raises(FrameError) as e:
        p.unpack_write_gates(p.pack_write_gates(0, [ident.gate_max_q + 1]), ident)
    assert e.value.status == Status.OUT_OF_RANGE
    st = p.DeviceStatus(p.Mode.TRAINING, 3, 1, 2 ** 40, (12345,), 0b10010, 2 ** 50 + 3)
    assert len(st.pack()) == 32 and p.DeviceStatus.unpack(st.pack()) == st
    assert st.pack()[15:23] == (2 ** 50 + 3).to_bytes(8, "big")      # cycles after ticks
    assert p.unpack_run(p.pack_run(10, False)) == (10, False)


@pytest.mark.parametrize("streams", [1, 3])
def test_identity_and_status_with_streams(streams):
    ident = identity(streams, clock_hz=57.24e6)
    payload = ident.pack()
    assert len(payload) == 37 and payload[25] == streams and payload[0] == p.PROTOCOL_VERSION == 6
    assert payload[26:30] == (57_240_000).to_bytes(4, "big") and payload[30:] == bytes(7)
    assert ident.clock_hz == 57_240_000
    assert p.Identity.unpack(payload) == ident and ident.streams == streams
    assert (ident.n_edges, ident.n_gates) == (32, 32 * streams)
    assert (ident.n_outputs, ident.n_output_values) == (1, streams)
    with pytest.raises(FrameError) as e:
        p.Identity.unpack(payload[:-1])
    assert e.value.status == Status.BAD_LENGTH
    sums = tuple(range(7, 7 + streams))[:-1] + ((1 << 64) - 1,)
    st = p.DeviceStatus(p.Mode.EVALUATING, 4, 2, 2 ** 33 + 5, sums, 0b01001, (1 << 64) - 2)
    payload = st.pack()
    assert len(payload) == 24 + 8 * streams
    assert payload[7:23] == (2 ** 33 + 5).to_bytes(8, "big") + ((1 << 64) - 2).to_bytes(8, "big")
    assert payload[23:23 + 8 * streams] == b"".join(v.to_bytes(8, "big") for v in sums)
    back = p.DeviceStatus.unpack(payload, streams)
    assert back == st and back.error_sums == sums and back.error_sum == sums[0]
    assert (back.mode, back.ticks, back.saturation) == (p.Mode.EVALUATING, 2 ** 33 + 5, 0b01001)
    assert back.cycles == (1 << 64) - 2
    for wrong in {1, 2, 3} - {streams}:           # another stream count: another length
        with pytest.raises(FrameError) as e:
            p.DeviceStatus.unpack(payload, wrong)
        assert e.value.status == Status.BAD_LENGTH
    with pytest.raises(FrameError) as e:
        p.DeviceStatus.unpack(b"\x03" + payload[1:], streams)
    assert e.value.status == Status.OUT_OF_RANGE


@pytest.mark.parametrize("streams", [1, 3])
def test_gate_index_range_spans_every_stream(streams):
    ident = identity(streams)
    g = ident.gate_min_q + 5
    # the first gate of stream 1 exists only with several streams
    for first, count, ok in [(0, 1, True), (ident.n_gates - 2, 2, True),
                             (ident.n_gates - 1, 2, False), (ident.n_gates, 1, False),
                             (32, 1, streams > 1), (60, 8, streams > 1)]:
        payload = p.pack_write_gates(first, [g] * count)
        if ok:
            got_first, gates = p.unpack_write_gates(payload, ident)
            assert got_first == first and gates.tolist() == [g] * count
            assert p.unpack_range(p.pack_range(first, count), ident.n_gates,
                                  Command.READ_GATES) == (first, count)
        else:
            with pytest.raises(FrameError) as e:
                p.unpack_write_gates(payload, ident)
            assert e.value.status == Status.OUT_OF_RANGE
            with pytest.raises(FrameError) as e:
                p.unpack_range(p.pack_range(first, count), ident.n_gates, Command.READ_GATES)
            assert e.value.status == Status.OUT_OF_RANGE


def test_lfsr_order_is_a_permutation_per_epoch():
    for w in p.LFSR_TAPS:          # every tap set is maximal-length
        state, seen = 1, set()
        while state not in seen:
            seen.add(state)
            state = p.lfsr_step(state, w)
        assert len(seen) == 2 ** w - 1, w
    for n in [1, 2, 3, 7, 8, 100]:
        order = p.lfsr_order(n, 12345, 3)
        assert all(sorted(e) == list(range(n)) for e in order)
    assert p.lfsr_order(5, 1, 2) != p.lfsr_order(5, 2, 2)


class FakeDevice:
    """A protocol responder for driver tests (stores gates and outputs, answers status)."""

    def __init__(self, ident, corrupt=0):
        self.ident, self.gates, self.corrupt = ident, [0] * ident.n_gates, corrupt
        # outputs of example i, value j (stream-major): 1000 * i + j
        self.outputs = 1000 * np.arange(ident.max_examples)[:, None] + np.arange(
            ident.n_output_values)
        self.reader = p.FrameReader(p.parse_request, max_encoded=2 * p.MAX_REQUEST)
        self.requests = []

    def __call__(self, data):
        out = b""
        for req in self.reader.feed(data):
            if isinstance(req, FrameError):
                out += p.encode_reply(0, 0, req.status)
                continue
            self.requests.append(req)
            try:
                payload = self.handle(req)
                reply = p.encode_reply(req.request_id, req.command, Status.OK, payload)
            except FrameError as e:
                reply = p.encode_reply(req.request_id, req.command, e.status)
            if self.corrupt:
                self.corrupt -= 1
                reply = b"\x05\x01\x00" + p.encode_reply(req.request_id ^ 1, req.command,
                                                        Status.OK) + reply
            out += reply
        return out

    def handle(self, req):
        if req.command == Command.IDENTIFY:
            return self.ident.pack()
        if req.command == Command.WRITE_GATES:
            first, g = p.unpack_write_gates(req.payload, self.ident)
            self.gates[first:first + len(g)] = g.tolist()
            return b""
        if req.command == Command.READ_GATES:
            first, n = p.unpack_range(req.payload, self.ident.n_gates, req.command)
            return p.pack_values(self.gates[first:first + n])
        if req.command == Command.READ_OUTPUTS:
            first, n = p.unpack_range(req.payload, self.ident.max_examples, req.command)
            if n * self.ident.n_output_values > p.MAX_PAYLOAD // 4:
                raise FrameError(Status.OUT_OF_RANGE)
            return p.pack_values(self.outputs[first:first + n])
        if req.command == Command.READ_STATUS:
            sums = tuple(7 + s for s in range(self.ident.streams))
            return p.DeviceStatus(p.Mode.IDLE, 5, 0, 99, sums, 0, 12_345).pack()
        raise FrameError(Status.UNKNOWN_COMMAND)


def test_driver_round_trips_and_errors():
    ident = identity()
    fake = FakeDevice(ident, corrupt=2)
    dev = Device(LoopbackTransport(fake), timeout=0.05)
    assert dev.identify() == ident                      # despite garbage and a stale reply
    gates = np.linspace(ident.gate_min_q, ident.gate_max_q, ident.n_edges).astype(int)
    dev.write_gates(gates)
    assert (dev.read_gates() == gates).all()
    st = dev.status()
    assert st.ticks == 99 and st.error_sums == (7,) and st.error_sum == 7 and st.cycles == 12_345
    with pytest.raises(DeviceError) as e:
        dev.write_gates([ident.gate_max_q + 1], first=3)
    assert e.value.status == Status.OUT_OF_RANGE and "WRITE_GATES" in str(e.value)
    with pytest.raises(DeviceError) as e:
        dev.start()
    assert e.value.status == Status.UNKNOWN_COMMAND


def test_driver_with_streams():
    """Gates of all streams (96 > 64 per reply), outputs and error sums of all streams."""
    ident = identity(3)
    fake = FakeDevice(ident)
    dev = Device(LoopbackTransport(fake), timeout=0.05)
    gates = ident.gate_min_q + 7 * np.arange(ident.n_gates)
    dev.write_gates(gates)
    assert fake.gates == gates.tolist()
    got = dev.read_gates()
    assert got.shape == (96,) and (got == gates).all()
    assert dev.read_gates(30, 5).tolist() == gates[30:35].tolist()   # across streams 0, 1
    dev.write_gates([ident.gate_max_q] * 2, first=94)                 # the last of stream 2
    assert fake.gates[94:] == [ident.gate_max_q] * 2
    with pytest.raises(DeviceError) as e:
        dev.write_gates([ident.gate_max_q] * 2, first=95)
    assert e.value.status == Status.OUT_OF_RANGE
    st = dev.status()
    assert st.error_sums == (7, 8, 9) and st.error_sum == 7 and st.ticks == 99
    assert st.cycles == 12_345
    fake.requests.clear()
    out = dev.read_outputs(2, 30)                       # 21 examples of 3 values per reply
    assert out.shape == (30, 3)
    assert out.tolist() == [[1000 * i + j for j in range(3)] for i in range(2, 32)]
    assert [p.unpack_range(r.payload, 64, r.command) for r in fake.requests] == [(2, 21),
                                                                                (23, 9)]
    with pytest.raises(DeviceError) as e:              # 22 x 3 values exceed a reply
        dev.request(Command.READ_OUTPUTS, p.pack_range(0, 22))
    assert e.value.status == Status.OUT_OF_RANGE


def test_driver_timeout_and_damaged_request():
    silent = Device(LoopbackTransport(lambda data: b""), timeout=0.02)
    with pytest.raises(LinkTimeout, match="IDENTIFY"):
        silent.identify()
    fake = FakeDevice(identity())

    def flip(data):                                      # the line damages every request
        data = bytearray(data)
        data[2] ^= 0x10
        return fake(bytes(data))

    dev = Device(LoopbackTransport(flip), timeout=0.02)
    with pytest.raises(DeviceError) as e:
        dev.request(Command.READ_STATUS)
    assert e.value.status in p.FRAME_STATUSES


def test_config_hash_ignores_the_fold_but_not_the_formats():
    import dataclasses

    from clln import config
    from clln.protocol import config_hash
    cfg = config.load("paper-xor")
    folds = [dataclasses.replace(cfg.fabric, edge_units=4),
             dataclasses.replace(cfg.fabric, serial=True)]
    assert {config_hash(dataclasses.replace(cfg, fabric=f)) for f in folds} == {config_hash(cfg)}
    narrow = dataclasses.replace(cfg, fixed=dataclasses.replace(cfg.fixed, g_bits=27))
    assert config_hash(narrow) != config_hash(cfg)
    # the node step, the still rule's threshold and the leak are in the fabric too; the
    # schedule's settle rule and counts are written at run time
    sch = cfg.schedule
    for changed in (dataclasses.replace(sch, relax="euler"),
                    dataclasses.replace(sch, still_lsb=sch.still_lsb + 3)):
        assert config_hash(dataclasses.replace(cfg, schedule=changed)) != config_hash(cfg)
    leaky = dataclasses.replace(cfg, device=dataclasses.replace(cfg.device, gmin=2e-6))
    assert config_hash(leaky) != config_hash(cfg)
    for same in (dataclasses.replace(sch, settle="fixed", still_ticks=9),
                 dataclasses.replace(sch, settle_ticks=7),
                 dataclasses.replace(sch, momentum_shift=3)):    # jacobi: no momentum
        assert config_hash(dataclasses.replace(cfg, schedule=same)) == config_hash(cfg)
    # momentum's beta is baked in: its shift (given, or the graph's 1) is in the hash
    hashes = {config_hash(dataclasses.replace(cfg, schedule=dataclasses.replace(
        sch, relax="momentum", momentum_shift=b))) for b in (0, 1, 2)}
    assert len(hashes) == 2 and config_hash(cfg) not in hashes


def test_schedule_limits_and_counter_widths():
    """Phases and epochs beyond the controller's 16-bit counters are refused by the
    model (OUT_OF_RANGE) and by the driver before sending; the counters' width follows
    the clock, and the model's tick counter wraps at it."""
    ident = identity()
    top = p.ScheduleParams(p.MAX_PHASE_TICKS, p.MAX_PHASE_TICKS, p.MAX_RUN_EPOCHS, 4)
    assert p.ScheduleParams.unpack(top.pack(), ident) == top and top.beyond_limits() == []
    for bad, named in [((65536, 1, 1), "settle_ticks 65536 > 65535"),
                       ((1, 2 ** 32 - 1, 1), "learn_ticks 4294967295 > 65535"),
                       ((1, 1, 65536), "epochs 65536 > 65535")]:
        sched = p.ScheduleParams(*bad, 4)
        assert sched.beyond_limits() == [named]
        with pytest.raises(FrameError) as e:
            p.ScheduleParams.unpack(sched.pack(), ident)
        assert e.value.status == Status.OUT_OF_RANGE and named in str(e.value)
    assert p.unpack_run(p.pack_run(p.MAX_RUN_EPOCHS)) == (p.MAX_RUN_EPOCHS, True)
    with pytest.raises(FrameError) as e:
        p.unpack_run(p.pack_run(p.MAX_RUN_EPOCHS + 1))
    assert e.value.status == Status.OUT_OF_RANGE
    sent = []
    dev = Device(LoopbackTransport(lambda data: sent.append(data) or b""), timeout=0.05)
    with pytest.raises(DeviceError) as e:
        dev.write_schedule(p.ScheduleParams(70_000, 1, 1, 4))
    assert e.value.status == Status.OUT_OF_RANGE and "settle_ticks 70000 > 65535" in str(e.value)
    with pytest.raises(DeviceError) as e:
        dev.run_epochs(100_000)
    assert e.value.status == Status.OUT_OF_RANGE and "RUN_EPOCHS" in str(e.value)
    assert sent == []                                   # nothing went over the link
    # a config whose phases the controller cannot count is refused before any build
    cfg = config.load("paper-xor")
    cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule,
                                                                settle_ticks=70_000))
    with pytest.raises(config.ConfigError, match="schedule.settle_ticks.*70000 ticks"):
        p.check_fields(cfg, 16)
    # 1 day of cycles: 40 bits at 12 MHz (2**40 cycles = 25.4 h), 42 at 50 MHz
    assert p.counter_bits(0) == 64 and p.counter_bits(12e6) == 40
    assert p.counter_bits(50e6) == 42 and p.counter_bits(2e9) == 48
    assert 2 ** 39 / 12e6 < p.COUNTER_WRAP_SECONDS <= 2 ** 40 / 12e6
    from clln.sim.system import SystemModel
    model = SystemModel(config.load("paper-xor"), clock_hz=12e6)
    model.twin.ticks = 2 ** 40 + 5
    assert model.status().ticks == 5
    assert SystemModel(config.load("paper-xor")).tick_mask == 2 ** 64 - 1
