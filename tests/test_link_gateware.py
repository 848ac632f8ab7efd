"""Link gateware (UART, COBS, CRC) against the golden models of clln.host.protocol."""

import random

import pytest
from amaranth.sim import Simulator

from clln import protocol as p
from clln.gateware.framing import (
    CRC16,
    Byte,
    COBSDecoder,
    COBSEncoder,
    CRCChecker,
    CRCGenerator,
)
from clln.gateware.uart import UARTRx, UARTTx
from clln.protocol import Status
from clln.sim import link as link_model


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def stream_through(dut, items, to_payload, from_payload, rng, p_valid=0.7, p_ready=0.7,
                   idle_cycles=40, on_cycle=None):
    """Push ``items`` into ``dut.i`` and collect ``dut.o`` with random stalls on both sides."""
    out = []

    async def tb(ctx):
        pending = list(items)
        quiet = 0
        while pending or quiet < idle_cycles:
            busy = on_cycle(ctx, pending) if on_cycle else False
            give = bool(pending) and not busy and rng.random() < p_valid
            ctx.set(dut.i.valid, give)
            if give:
                ctx.set(dut.i.payload, to_payload(pending[0]))
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            if give and ctx.get(dut.i.ready):
                pending.pop(0)
            if ready and ctx.get(dut.o.valid):
                out.append(from_payload(ctx.get(dut.o.payload)))
                quiet = 0
            quiet += not pending
            await ctx.tick()

    run(dut, tb)
    return out


# --------------------------------------------------------------------------- UART

@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_uart_tx_cycle_exact(divisor):
    rng = random.Random(divisor)
    dut, model = UARTTx(divisor), link_model.UartTxModel(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(20)]
    line = []

    async def tb(ctx):
        pending = list(data)
        for cycle in range(len(data) * (10 * divisor + 1) * 2 + 50):
            valid = bool(pending) and rng.random() < 0.5
            byte = pending[0] if pending else 0
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, byte)
            got = (ctx.get(dut.i.ready), ctx.get(dut.tx))
            want = model.step(valid, byte)
            assert got == want, f"cycle {cycle}: gateware {got}, model {want}"
            line.append(got[1])
            if valid and got[0]:
                pending.pop(0)
            await ctx.tick()
        assert not pending

    run(dut, tb)
    # the line decodes back to the bytes through the receiver model
    rx = link_model.UartRxModel(divisor)
    got = [o[1] for o in (rx.step(v, 1) for v in line + [1] * 40) if o[0]]
    assert got == data


def noisy_line(rng, divisor, n_bytes):
    """A line with good bytes, framing errors, breaks, glitches and baud skew."""
    line = [1] * 10
    for _ in range(n_bytes):
        kind = rng.random()
        byte = rng.choice([0x00, 0xFF, rng.randrange(256)])
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        if kind < 0.15:
            bits[-1] = 0                     # framing error
        elif kind < 0.2:
            line += [0] * (divisor * rng.randrange(11, 25))   # break
            line += [1] * rng.randrange(1, 3 * divisor)
            continue
        elif kind < 0.27:
            line += [0] * rng.randrange(1, divisor // 2 + 1) + [1] * 3 * divisor  # glitch
            continue
        width = divisor + rng.choice([0, 0, 0, -1, 1]) if divisor >= 8 else divisor
        for b in bits:
            line += [b] * width
        line += [1] * rng.choice([0, 0, 1, divisor, 3 * divisor])
    return line + [1] * 4 * divisor


@pytest.mark.parametrize("divisor,seed", [(4, 0), (5, 1), (8, 2), (13, 3)])
def test_uart_rx_cycle_exact(divisor, seed):
    rng = random.Random(seed)
    line = noisy_line(rng, divisor, 60)
    dut, model = UARTRx(divisor), link_model.UartRxModel(divisor)
    counts = {"bytes": 0, "ferr": 0, "ovr": 0}

    async def tb(ctx):
        for cycle, level in enumerate(line):
            ready = rng.random() < 0.9 if cycle % 500 < 400 else False
            ctx.set(dut.rx, level)
            ctx.set(dut.o.ready, ready)
            got = (ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.framing_error),
                   ctx.get(dut.overrun))
            want = model.step(level, ready)
            assert got == want, f"cycle {cycle}: gateware {got}, model {want}"
            counts["bytes"] += got[0] and ready
            counts["ferr"] += got[2]
            counts["ovr"] += got[3]
            await ctx.tick()

    run(dut, tb)
    assert counts["bytes"] > 20 and counts["ferr"] > 3   # the test exercised both paths


def test_uart_rx_clean_bytes():
    data = list(range(256))
    line = [1] * 8 + link_model.uart_line(data, 6, idle=1)
    rx = link_model.UartRxModel(6)
    dut = UARTRx(6)
    got = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for level in line + [1] * 20:
            ctx.set(dut.rx, level)
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            assert ctx.get(dut.framing_error) == 0
            rx.step(level, 1)
            await ctx.tick()

    run(dut, tb)
    assert got == data


def test_uart_divisor():
    assert p.uart_divisor(12e6, 115200) == 104
    assert p.uart_divisor(24e6, 3e6) == 8
    with pytest.raises(ValueError, match="4.2%"):
        p.uart_divisor(25e6, 3e6)
    with pytest.raises(ValueError, match="misses"):
        p.uart_divisor(12e6, 3e6 * 1.1)   # 3.64 cycles per bit rounds to 4: 10% off
    with pytest.raises(ValueError, match="too slow"):
        p.uart_divisor(1e6, 500000)


# --------------------------------------------------------------------------- COBS / CRC

def model_tokens(stream_items):
    """Tokens of the decoder model for bytes and ``"E"`` (line error) markers."""
    dec, out = link_model.CobsDecoderModel(), []
    for item in stream_items:
        if item == "E":
            dec.line_error()
        else:
            out += dec.feed(item)
    return [(1 if k == "end" else 0, int(v)) for k, v in out]


def malformed_stream(rng, n_frames):
    """Encoded frames, some damaged, back to back, with stray delimiters and line errors."""
    items = []
    for _ in range(n_frames):
        body = bytes(rng.choice([0, 0xFF, rng.randrange(256)]) for _ in range(
            rng.choice([0, 1, 3, 10, 253, 254, 255, 300, rng.randrange(600)])))
        enc = bytearray(p.cobs_encode(body + p.crc16(body).to_bytes(2, "big")))
        kind = rng.random()
        if kind < 0.2 and len(enc) > 2:
            del enc[rng.randrange(1, len(enc)):]          # truncated
        elif kind < 0.4:
            i = rng.randrange(len(enc))
            enc[i] ^= 1 << rng.randrange(8)               # bit flip (may make a 0x00)
        elif kind < 0.5:
            enc = bytearray(rng.randrange(1, 256) for _ in range(rng.randrange(1, 40)))
        items += list(enc) + [0]
        if rng.random() < 0.2:
            items.append(0)                               # empty frame
        if rng.random() < 0.15:
            items.insert(rng.randrange(len(items) - 1, len(items)), "E")
    return items


@pytest.mark.parametrize("seed", [0, 1])
def test_cobs_decoder_matches_model(seed):
    rng = random.Random(seed)
    items = malformed_stream(rng, 25)
    dut = COBSDecoder()

    def on_cycle(ctx, pending):
        err = bool(pending) and pending[0] == "E"
        ctx.set(dut.line_error, err)
        if err:
            pending.pop(0)
        return err

    got = stream_through(dut, items, lambda b: 0 if b == "E" else b,
                         lambda t: (t.end, t.data), rng, on_cycle=on_cycle)
    want = model_tokens(items)
    assert got == want
    ends = [s for e, s in want if e]
    assert {Status.OK, Status.BAD_COBS} <= set(ends)


@pytest.mark.parametrize("seed", [0, 1])
def test_crc_checker_matches_model(seed):
    rng = random.Random(seed)
    tokens = model_tokens(malformed_stream(rng, 25))
    tokens += [(1, Status.LINE_ERROR), (0, 7), (1, Status.OK)]
    model = link_model.CrcCheckerModel(p.MIN_REQUEST, p.MAX_REQUEST)
    want = []
    for end, v in tokens:
        want += [(1 if k == "end" else 0, int(x)) for k, x in model.feed(
            ("end" if end else "data", Status(v) if end else v))]
    got = stream_through(CRCChecker(), tokens, lambda t: {"end": t[0], "data": t[1]},
                         lambda t: (t.end, t.data), rng)
    assert got == want
    ends = {s for e, s in want if e}
    assert {Status.OK, Status.BAD_CRC, Status.TRUNCATED, Status.TOO_LONG} <= ends


def test_receive_chain_agrees_with_frame_parser():
    """Decoder + checker give the status and bytes of protocol.check_frame for each frame."""
    rng = random.Random(5)
    items = [b for b in malformed_stream(rng, 30) if b != "E"]
    dec_tokens = model_tokens(items)
    got = stream_through(CRCChecker(), dec_tokens, lambda t: {"end": t[0], "data": t[1]},
                         lambda t: (t.end, t.data), rng)
    frames = [f for f in bytes(items).split(b"\x00")[:-1] if f]
    results = []
    body = bytearray()
    for end, v in got:
        if end:
            results.append((Status(v), bytes(body)))
            body.clear()
        else:
            body.append(v)
    assert len(results) == len(frames)
    for enc, (status, body) in zip(frames, results, strict=True):
        try:
            want = (Status.OK, p.check_frame(enc, p.MIN_REQUEST, p.MAX_REQUEST))
        except p.FrameError as e:
            want = (e.status, None)
        assert status == want[0]
        if status == Status.OK:
            assert body == want[1]


def packets_as_bytes(packets):
    return [(b, int(i == len(pk) - 1)) for pk in packets for i, b in enumerate(pk)]


def extreme_packets(rng):
    return [bytes([0]), bytes([5]), bytes(254 * [1]), bytes(253 * [7]) + b"\x00",
            bytes(255 * [0xFF]), bytes(508 * [3]), bytes(600), bytes([0, 1, 0]),
            bytes(rng.randrange(1, 256) for _ in range(254)) + bytes([0]),
            *(bytes(rng.choice([0, rng.randrange(256)]) for _ in range(rng.randrange(1, 300)))
              for _ in range(6))]


def test_crc_generator_matches_model():
    rng = random.Random(2)
    packets = extreme_packets(rng)
    got = stream_through(CRCGenerator(), packets_as_bytes(packets),
                         lambda t: {"data": t[0], "last": t[1]},
                         lambda t: (t.data, t.last), rng)
    want = packets_as_bytes([pk + p.crc16(pk).to_bytes(2, "big") for pk in packets])
    assert got == want
    assert p.crc16(b"123456789") == 0x29B1          # the CCITT-FALSE check value


def test_amaranth_crc_is_the_protocols_crc():
    """framing.CRC16 (amaranth.lib.crc) against clln.protocol.crc16 and the byte update
    of the link model (clln.protocol.crc16_byte, as CrcCheckerModel runs it), in
    simulation and through amaranth's own software model."""
    rng = random.Random(7)
    messages = [b"", b"123456789", bytes(range(256)),
                *(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                  for _ in range(8))]
    assert (CRC16.algorithm.crc_width, CRC16.algorithm.polynomial,
            CRC16.algorithm.initial_crc) == (16, p.CRC_POLY, p.CRC_INIT)
    dut = CRC16.create()
    got = []

    async def tb(ctx):
        for msg in messages:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for b in msg:
                ctx.set(dut.data, b)
                ctx.set(dut.valid, 1)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            got.append(ctx.get(dut.crc))

    run(dut, tb)
    for msg, crc in zip(messages, got, strict=True):
        model = link_model.CrcCheckerModel()
        for b in msg:
            model.feed(("data", b))
        assert crc == p.crc16(msg) == model.crc == CRC16.compute(msg), msg
    assert got[1] == 0x29B1                         # the CCITT-FALSE check value


def test_cobs_encoder_matches_model():
    rng = random.Random(3)
    packets = extreme_packets(rng)
    got = stream_through(COBSEncoder(), packets_as_bytes(packets),
                         lambda t: {"data": t[0], "last": t[1]}, int, rng)
    want = b"".join(p.cobs_encode(pk) + b"\x00" for pk in packets)
    assert bytes(got) == want
    for pk in packets:
        assert p.cobs_decode(p.cobs_encode(pk)) == pk


def test_transmit_chain_round_trip():
    """CRC generator into COBS encoder: the Python parser reads the frames back."""
    from amaranth.hdl import Module
    from amaranth.lib import stream, wiring

    class Chain(wiring.Component):
        i: wiring.In(stream.Signature(Byte))
        o: wiring.Out(stream.Signature(8))

        def elaborate(self, platform):
            m = Module()
            m.submodules.gen = gen = CRCGenerator()
            m.submodules.enc = enc = COBSEncoder()
            wiring.connect(m, wiring.flipped(self.i), gen.i)
            wiring.connect(m, gen.o, enc.i)
            wiring.connect(m, enc.o, wiring.flipped(self.o))
            return m

    rng = random.Random(4)
    replies = [bytes([p.PROTOCOL_VERSION, i, 0x09, 0])
               + bytes(rng.randrange(256) for _ in range(i * 9)) for i in range(0, 29, 4)]
    got = stream_through(Chain(), packets_as_bytes(replies),
                         lambda t: {"data": t[0], "last": t[1]}, int, rng)
    parsed = p.FrameReader(p.parse_reply).feed(bytes(got))
    assert [(r.request_id, r.payload) for r in parsed] == [(pk[1], pk[4:]) for pk in replies]
