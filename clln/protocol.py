"""The board link's wire protocol: the specification shared by every layer (core).

A packet travels as one COBS-encoded frame ended by a 0x00 byte. Decoded, a request is
``[version][request id][command][payload...][crc16]`` and a reply is
``[version][request id][command][status][payload...][crc16]``; the CRC is
CRC-16/CCITT-FALSE of everything before it, big-endian. ``docs/protocol.md`` is the
specification; this module is its code: commands, status codes, payload layouts, CRC
parameters, LFSR taps, the identity and the config hash. The gateware, the golden
models (``clln.sim.link``, ``clln.sim.system``) and the host driver all take them from here.
"""

import binascii
import enum
import hashlib
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
from cobs import cobs

from .errors import CllnError, ConfigError
from .formats import momentum_shift

PROTOCOL_VERSION = 6
DELIMITER = 0x00
#: Largest payload of a request or a reply, bytes.
MAX_PAYLOAD = 256
REQUEST_HEADER = 3
REPLY_HEADER = 4
CRC_BYTES = 2
#: Decoded length bounds of a request (header + payload + CRC).
MIN_REQUEST = REQUEST_HEADER + CRC_BYTES
MAX_REQUEST = REQUEST_HEADER + MAX_PAYLOAD + CRC_BYTES
MIN_REPLY = REPLY_HEADER + CRC_BYTES
#: The longest phase (``settle_ticks``, ``learn_ticks``) a WRITE_SCHEDULE may ask for, and
#: the most epochs a WRITE_SCHEDULE or RUN_EPOCHS may ask for (0: until STOP): the
#: controller counts them in 16 bits (the iCEBreaker's logic cells, ``docs/boards.md``),
#: although the fields are u32; beyond them the request is refused with OUT_OF_RANGE.
MAX_PHASE_TICKS = 2 ** 16 - 1
MAX_RUN_EPOCHS = 2 ** 16 - 1
#: The tick and cycle counters of a bitstream built for a known clock wrap no sooner
#: than this (:func:`counter_bits`).
COUNTER_WRAP_SECONDS = 86400
MAX_REPLY = REPLY_HEADER + MAX_PAYLOAD + CRC_BYTES


class Status(enum.IntEnum):
    """Status byte of a reply (and the end-of-frame status of the link gateware)."""
    OK = 0
    BAD_CRC = 1
    TRUNCATED = 2
    BAD_COBS = 3
    LINE_ERROR = 4
    TOO_LONG = 5
    BAD_VERSION = 6
    UNKNOWN_COMMAND = 7
    BAD_LENGTH = 8
    OUT_OF_RANGE = 9
    BUSY = 10


#: Statuses found before the header is read: the request id of such a reply is unreliable.
FRAME_STATUSES = frozenset({Status.BAD_CRC, Status.TRUNCATED, Status.BAD_COBS,
                            Status.LINE_ERROR, Status.TOO_LONG})


class Command(enum.IntEnum):
    """Command codes."""
    IDENTIFY = 0x01
    WRITE_DATASET = 0x02
    WRITE_SCHEDULE = 0x03
    READ_GATES = 0x04
    WRITE_GATES = 0x05
    START = 0x06
    STOP = 0x07
    RUN_EPOCHS = 0x08
    READ_STATUS = 0x09
    READ_OUTPUTS = 0x0A
    RESET = 0x0B
    WRITE_GRAPH = 0x0C
    WRITE_INIT_GATES = 0x0D
    COMMIT_GRAPH = 0x0E


#: The commands of a capacity bitstream (a graph loaded at run time); a fixed-graph one
#: answers them UNKNOWN_COMMAND.
GRAPH_COMMANDS = frozenset({Command.WRITE_GRAPH, Command.WRITE_INIT_GATES,
                            Command.COMMIT_GRAPH})


class Order(enum.IntEnum):
    """Order in which an epoch visits the examples."""
    CYCLIC = 0
    LFSR = 1


class Mode(enum.IntEnum):
    """Controller mode reported by READ_STATUS."""
    IDLE = 0
    TRAINING = 1
    EVALUATING = 2


class ProtocolError(CllnError):
    """Base class of every link error."""


class FrameError(ProtocolError):
    """A frame or request that must be refused; ``status`` is the reply status it earns."""

    def __init__(self, status, why=""):
        self.status = Status(status)
        super().__init__(f"{self.status.name}" + (f": {why}" if why else ""))


# --------------------------------------------------------------------------- CRC, COBS

#: CRC-16/CCITT-FALSE: polynomial, initial value (no reflection, no final XOR).
CRC_POLY, CRC_INIT = 0x1021, 0xFFFF


def crc16_byte(crc, byte):
    """One byte of the CRC (MSB first): the update the gateware and the link models make."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def crc16(data):
    """CRC-16/CCITT-FALSE of ``data`` (0 over a frame with its CRC appended): the C code
    of :func:`binascii.crc_hqx` (polynomial 0x1021, MSB first, no final XOR) from
    :data:`CRC_INIT`."""
    return binascii.crc_hqx(bytes(data), CRC_INIT)


def cobs_encode(data):
    """COBS-encode ``data`` (no delimiter appended); a final full block gets no 0x01 after it."""
    return cobs.encode(bytes(data))


def cobs_decode(encoded):
    """Decode one COBS frame (without its delimiter).

    Raises
    ------
    FrameError
        BAD_COBS if the frame contains 0x00 or ends inside a block.
    """
    if DELIMITER in encoded:
        raise FrameError(Status.BAD_COBS, "0x00 inside a frame")
    try:
        return cobs.decode(bytes(encoded))
    except cobs.DecodeError:
        raise FrameError(Status.BAD_COBS, "frame ends inside a COBS block") from None


def check_frame(encoded, min_length, max_length):
    """Decode and check one frame (without delimiter); return its bytes without the CRC.

    Raises
    ------
    FrameError
        BAD_COBS, TRUNCATED, TOO_LONG or BAD_CRC, in that order of precedence.
    """
    body = cobs_decode(encoded)
    if len(body) < min_length:
        raise FrameError(Status.TRUNCATED)
    if len(body) > max_length:
        raise FrameError(Status.TOO_LONG)
    if crc16(body) != 0:
        raise FrameError(Status.BAD_CRC)
    return body[:-CRC_BYTES]


def frame(body):
    """Append the CRC to ``body``, COBS-encode it and append the delimiter."""
    body = bytes(body)
    return cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


# --------------------------------------------------------------------------- packets

@dataclass(frozen=True)
class Packet:
    """A decoded request (``status`` None) or reply."""
    request_id: int
    command: int
    payload: bytes
    status: Status | None = None
    version: int = PROTOCOL_VERSION


def encode_request(request_id, command, payload=b"", version=PROTOCOL_VERSION):
    """Framed bytes of a request, delimiter included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return frame(bytes([version, request_id & 0xFF, command]) + bytes(payload))


def encode_reply(request_id, command, status, payload=b"", version=PROTOCOL_VERSION):
    """Framed bytes of a reply, delimiter included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return frame(bytes([version, request_id & 0xFF, command, status]) + bytes(payload))


def parse_request(encoded):
    """Parse one request frame (without delimiter).

    Raises
    ------
    FrameError
        Frame statuses as in :func:`check_frame`, then BAD_VERSION, UNKNOWN_COMMAND.
    """
    body = check_frame(encoded, MIN_REQUEST, MAX_REQUEST)
    if body[0] != PROTOCOL_VERSION:
        raise FrameError(Status.BAD_VERSION, f"version {body[0]}, expected {PROTOCOL_VERSION}")
    if body[2] not in Command._value2member_map_:
        raise FrameError(Status.UNKNOWN_COMMAND, f"command 0x{body[2]:02x}")
    return Packet(body[1], Command(body[2]), body[3:])


def parse_reply(encoded):
    """Parse one reply frame (without delimiter).

    Raises
    ------
    FrameError
        Frame statuses as in :func:`check_frame`, then BAD_VERSION, then OUT_OF_RANGE for
        a status byte outside :class:`Status`.
    """
    body = check_frame(encoded, MIN_REPLY, MAX_REPLY)
    if body[0] != PROTOCOL_VERSION:
        raise FrameError(Status.BAD_VERSION, f"version {body[0]}, expected {PROTOCOL_VERSION}")
    if body[3] not in Status._value2member_map_:
        raise FrameError(Status.OUT_OF_RANGE, f"unknown status byte {body[3]}")
    return Packet(body[1], body[2], body[4:], Status(body[3]))


class FrameReader:
    """Split a byte stream into frames at 0x00 and parse each one.

    Parameters
    ----------
    parse : callable
        :func:`parse_reply` (host side) or :func:`parse_request` (device side).
    max_encoded : int
        Bytes kept per frame; a longer frame is consumed and reported as TOO_LONG.
    """

    def __init__(self, parse=parse_reply, max_encoded=2 * MAX_REPLY):
        self.parse, self.max_encoded = parse, max_encoded
        self.buf, self.overflow = bytearray(), False

    def feed(self, data):
        """Return a list with a :class:`Packet` or a :class:`FrameError` per completed frame."""
        results = []
        for b in bytes(data):
            if b != DELIMITER:
                if len(self.buf) < self.max_encoded:
                    self.buf.append(b)
                else:
                    self.overflow = True
                continue
            if self.overflow:
                results.append(FrameError(Status.TOO_LONG, "frame exceeds the buffer"))
            elif self.buf:
                try:
                    results.append(self.parse(bytes(self.buf)))
                except FrameError as e:
                    results.append(e)
            self.buf.clear()
            self.overflow = False
        return results


# --------------------------------------------------------------------------- transport

class Transport:
    """A byte pipe to a device: a serial port (``clln.host.driver``), a simulated board
    (``clln.sim.benches.board``) or a model. Subclasses implement :meth:`write` and
    :meth:`read`."""

    def write(self, data):
        """Send ``data`` (bytes)."""
        raise NotImplementedError

    def read(self, timeout):
        """Return the bytes received within ``timeout`` seconds (may be empty)."""
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



# --------------------------------------------------------------------------- UART

def uart_divisor(clk_hz, baud, tolerance=0.02):
    """Clock cycles per bit, rounded; raises ValueError beyond ``tolerance`` baud error."""
    div = round(clk_hz / baud)
    if div < 4:
        raise ValueError(f"{clk_hz} Hz is too slow for {baud} baud (needs 4 cycles per bit)")
    err = abs(clk_hz / div - baud) / baud
    if err > tolerance:
        raise ValueError(f"{clk_hz} Hz / {div} misses {baud} baud by {100 * err:.1f}%")
    return div


# --------------------------------------------------------------------------- LFSR order

#: Taps (1-based bit positions) of a maximal-length Fibonacci LFSR for each width.
LFSR_TAPS = {2: (2, 1), 3: (3, 2), 4: (4, 3), 5: (5, 3), 6: (6, 5), 7: (7, 6),
             8: (8, 6, 5, 4), 9: (9, 5), 10: (10, 7), 11: (11, 9), 12: (12, 6, 4, 1),
             13: (13, 4, 3, 1), 14: (14, 5, 3, 1), 15: (15, 14), 16: (16, 15, 13, 4)}


def lfsr_step(state, width):
    """One step of the width-bit Fibonacci LFSR: shift left, feed back the XOR of the taps."""
    fb = 0
    for t in LFSR_TAPS[width]:
        fb ^= (state >> (t - 1)) & 1
    return ((state << 1) | fb) & ((1 << width) - 1)


def lfsr_seed_state(seed, stream, width):
    """The state a width-bit LFSR starts from for ``stream`` of a schedule ``seed``:
    ``(seed + stream) mod 2**32``, reduced mod ``2**width - 1``, plus 1 (stream s of a
    fabric of several networks visits the examples as a single network given the seed
    plus s does)."""
    return (seed + stream) % (1 << 32) % ((1 << width) - 1) + 1


def lfsr_order(n_examples, seed, epochs):
    """Example indices visited in ``epochs`` epochs with order LFSR (see docs/protocol.md).

    The LFSR has ``w = max(2, bit_length(n_examples))`` bits and starts at
    ``seed mod (2**w - 1) + 1``; each epoch takes the next states, skipping those above
    ``n_examples``, until every example was visited once; index = state - 1.
    """
    w = max(2, n_examples.bit_length())
    state = seed % ((1 << w) - 1) + 1
    order = []
    for _ in range(epochs):
        epoch = []
        while len(epoch) < n_examples:
            if state <= n_examples:
                epoch.append(state - 1)
            state = lfsr_step(state, w)
        order.append(epoch)
    return order


# --------------------------------------------------------------------------- payloads

def _u(fmt, payload, command):
    if len(payload) != struct.calcsize(fmt):
        raise FrameError(Status.BAD_LENGTH, f"{Command(command).name} takes "
                         f"{struct.calcsize(fmt)} payload bytes, got {len(payload)}")
    return struct.unpack(fmt, payload)


MIN_DEFAULT_EXAMPLES = 16


def default_max_examples(cfg):
    """Dataset capacity of a system built without an explicit ``max_examples``: the
    config's dataset size, at least :data:`MIN_DEFAULT_EXAMPLES`."""
    return max(MIN_DEFAULT_EXAMPLES, len(cfg.task.x))


@dataclass(frozen=True)
class Identity:
    """Reply of IDENTIFY: what the bitstream was built for.

    ``n_edges`` and ``n_outputs`` are those of one network; the fabric holds ``streams``
    networks, so the gate table has :attr:`n_gates` entries and an example
    :attr:`n_output_values` recorded outputs, both stream-major. ``clock_hz`` is the clock
    the bitstream was built for (Hz, rounded; 0: not known, e.g. a simulation), which
    turns READ_STATUS' cycle counter into seconds. A capacity bitstream (a graph loaded
    at run time, ``clln.schedule``) reports its capacity as ``n_nodes``/``n_edges``, the
    rows of its schedule RAM (``graph_rows``; 0: a fixed graph), the largest node degree
    its accumulators hold, the hash of what it fixes (``fixed_hash``,
    :func:`clln.schedule.fixed_hash`) and, as ``config_hash``, that of the config loaded.
    """
    protocol_version: int
    config_hash: int
    v_bits: int
    v_frac: int
    g_bits: int
    g_frac: int
    n_nodes: int
    n_edges: int
    n_inputs: int
    n_outputs: int
    max_examples: int
    gate_min_q: int
    gate_max_q: int
    streams: int
    clock_hz: int = 0
    graph_rows: int = 0
    max_degree: int = 0
    fixed_hash: int = 0

    FORMAT = ">BIBBBBHHBBHiiBIHBI"

    def pack(self):
        return struct.pack(self.FORMAT, *(getattr(self, f) for f in self.__dataclass_fields__))

    @classmethod
    def unpack(cls, payload):
        return cls(*_u(cls.FORMAT, payload, Command.IDENTIFY))

    @property
    def n_driven(self):
        """Drive values per example (inputs only; rails are fixed in the bitstream)."""
        return self.n_inputs

    @property
    def example_bytes(self):
        return 4 * (self.n_inputs + self.n_outputs)

    @property
    def n_gates(self):
        """Gates of all streams (READ_GATES / WRITE_GATES index ``s * n_edges + e``)."""
        return self.n_edges * self.streams

    @property
    def n_output_values(self):
        """Recorded outputs per example, all streams (index ``s * n_outputs + k``)."""
        return self.n_outputs * self.streams

    @classmethod
    def from_config(cls, cfg, fmt, max_examples, clock_hz=0):
        """The identity a bitstream built from ``cfg`` and ``fmt`` for a clock of
        ``clock_hz`` (0: not known) must report; :func:`check_fields` first."""
        check_fields(cfg, max_examples)
        return cls(PROTOCOL_VERSION, config_hash(cfg), fmt.v_bits, fmt.v_frac, fmt.g_bits,
                   fmt.g_frac, cfg.network.n_nodes, cfg.network.n_edges, len(cfg.io.inputs),
                   len(cfg.io.outputs), max_examples, fmt.gate_min_q, fmt.gate_max_q,
                   cfg.fabric.streams, round(clock_hz))


def check_fields(cfg, max_examples):
    """Refuse a config whose numbers the link's fields cannot carry (``docs/protocol.md``,
    "Limits"), naming the key: before a bitstream or a simulated board is built for it.

    Raises
    ------
    ConfigError
    """
    n_in, n_out, streams = len(cfg.io.inputs), len(cfg.io.outputs), cfg.fabric.streams
    limits = [
        ("network", cfg.network.n_nodes, 0xFFFF, "nodes (IDENTIFY's n_nodes is u16)"),
        ("fabric.streams", cfg.network.n_edges * streams, 0x10000,
         "gates of all streams (a gate index is u16)"),
        ("io.inputs", n_in + n_out, (MAX_PAYLOAD - 3) // 4,
         "inputs and outputs (an example's i32 values must fit one WRITE_DATASET frame)"),
        ("io.outputs", n_out * streams, MAX_PAYLOAD // 4,
         "outputs of all streams (an example's outputs must fit one READ_OUTPUTS reply)"),
        ("fixed.v_bits", cfg.fixed.v_bits, 32, "bits (voltages travel as i32)"),
        ("fixed.g_bits", cfg.fixed.g_bits, 32, "bits (gates travel as i32)"),
        ("--max-examples", max_examples, 0xFFFF, "examples (counted in u16)"),
        ("schedule.settle_ticks", cfg.schedule.settle_ticks, MAX_PHASE_TICKS,
         "ticks (the controller counts a phase in 16 bits)"),
        ("schedule.learn_ticks", cfg.schedule.learn_ticks, MAX_PHASE_TICKS,
         "ticks (the controller counts a phase in 16 bits)"),
    ]
    for key, value, most, what in limits:
        if value > most:
            source = key if key.startswith("--") else cfg.source
            raise ConfigError(source, "" if key.startswith("--") else key,
                              f"{value} {what}; the link protocol carries at most {most}")
    if max_examples < 1:
        raise ConfigError("--max-examples", "", f"must be >= 1, got {max_examples}")


def counter_bits(clock_hz):
    """Width of the tick and cycle counters of a bitstream built for ``clock_hz``: the
    fewest bits that count :data:`COUNTER_WRAP_SECONDS` of cycles (40 at 12 MHz: they wrap
    after 2**40 cycles, 25.4 hours; the tick counter, at least one cycle a tick, later
    still); 64 when the clock is not known (0, a simulation). READ_STATUS carries them
    zero-extended to u64 and counts modulo ``2**counter_bits``."""
    if not clock_hz:
        return 64
    return min(64, math.ceil(clock_hz * COUNTER_WRAP_SECONDS).bit_length())


def schedule_limits(settle_ticks, learn_ticks, epochs):
    """What exceeds :data:`MAX_PHASE_TICKS` or :data:`MAX_RUN_EPOCHS` (``"settle_ticks
    70000 > 65535"``, ...), an empty list when nothing does."""
    return [f"{name} {value} > {most}" for name, value, most in
            (("settle_ticks", settle_ticks, MAX_PHASE_TICKS),
             ("learn_ticks", learn_ticks, MAX_PHASE_TICKS), ("epochs", epochs, MAX_RUN_EPOCHS))
            if value > most]


def config_hash(cfg):
    """32-bit hash of what a bitstream depends on: graph, I/O, device, learning, widths,
    the node step (``relax``; ``momentum``: its ``momentum_shift``), the still rule's
    ``still_lsb`` and the chip's
    non-idealities (``[nonideal]`` but ``dac_bits``).

    The fabric's folding (``[fabric]``) is left out: every fold computes the same bits, so
    a bitstream whose fold was chosen by ``clln build`` serves the config it was built from.

    The first four bytes (big-endian) of SHA-256 over a canonical JSON of those values
    (:func:`hash_document`).
    """
    text = json.dumps(hash_document(cfg), sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def hash_document(cfg):
    """The values :func:`config_hash` hashes, by key (a dict)."""
    doc = {
        "nodes": cfg.network.n_nodes, "edges": np.asarray(cfg.network.edges).tolist(),
        "inputs": list(cfg.io.inputs), "rails": [list(r) for r in cfg.io.rails],
        "outputs": [list(o) for o in cfg.io.outputs],
        "vt": cfg.device.vt, "eta": cfg.learning.eta, "alpha": cfg.learning.alpha,
        "gate_min": cfg.learning.gate_min, "gate_max": cfg.learning.gate_max,
        "kappa": cfg.schedule.kappa, "learn_ticks": cfg.schedule.learn_ticks,
        # ``node_extra_bits`` only when used: a config without it keeps the hash it had
        "fixed": {k: getattr(cfg.fixed, k) for k in cfg.fixed.__dataclass_fields__
                  if k != "node_extra_bits" or cfg.fixed.node_extra_bits},
        # baked into the fabric as well: the leak, the node step and its box, the still rule
        "gmin": cfg.device.gmin, "k": cfg.device.k, "v_range": [cfg.io.v_min, cfg.io.v_max],
        "relax": cfg.schedule.relax, "still_lsb": cfg.schedule.still_lsb,
    }
    if cfg.schedule.relax == "momentum":        # its beta is baked in too
        doc["momentum_shift"] = momentum_shift(cfg)
    chip = _chip_keys(cfg.nonideal)
    if chip:                      # an ideal chip keeps the hash it always had
        doc["nonideal"] = chip
    return doc


def _chip_keys(ni):
    """The ``[nonideal]`` keys a bitstream bakes in that differ from the ideal chip (a
    dict): all but ``dac_bits``, which only changes the dataset the host sends, and
    ``gate_rest`` without a gate leak."""
    defaults = type(ni)()
    keys = {}
    for name in type(ni).__dataclass_fields__:
        value = getattr(ni, name)
        if name == "dac_bits" or (name == "gate_rest" and not ni.gate_leak):
            continue
        if value != getattr(defaults, name):
            keys[name] = list(value) if isinstance(value, tuple) else value
    return keys


def _check_signed(values, bits, what):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise FrameError(Status.OUT_OF_RANGE, f"{what} {bad[0]} outside [{lo}, {hi}]")


def _block(first, count, limit, what):
    if count == 0 or first + count > limit:
        raise FrameError(Status.OUT_OF_RANGE, f"{what} {first}..{first + count - 1} outside "
                         f"0..{limit - 1}")


def pack_write_dataset(first, drives, targets):
    """Payload of WRITE_DATASET: ``first`` u16, count u8, then per example the drive
    values then the targets, each i32 in voltage LSBs."""
    drives, targets = np.asarray(drives, np.int64), np.asarray(targets, np.int64)
    rows = np.concatenate([drives, targets], axis=1)
    return struct.pack(">HB", first, len(rows)) + b"".join(
        struct.pack(f">{rows.shape[1]}i", *map(int, r)) for r in rows)


def unpack_write_dataset(payload, ident):
    """``(first, drives, targets)`` of a WRITE_DATASET payload, validated against ``ident``."""
    if len(payload) < 3:
        raise FrameError(Status.BAD_LENGTH, "WRITE_DATASET needs at least 3 bytes")
    first, count = struct.unpack(">HB", payload[:3])
    if len(payload) != 3 + count * ident.example_bytes:
        raise FrameError(Status.BAD_LENGTH, f"{count} examples need "
                         f"{3 + count * ident.example_bytes} bytes, got {len(payload)}")
    _block(first, count, ident.max_examples, "examples")
    k = ident.n_inputs + ident.n_outputs
    vals = np.array(struct.unpack(f">{count * k}i", payload[3:]), np.int64).reshape(count, k)
    _check_signed(vals.ravel().tolist(), ident.v_bits, "value")
    return first, vals[:, :ident.n_inputs], vals[:, ident.n_inputs:]


@dataclass(frozen=True)
class ScheduleParams:
    """Payload of WRITE_SCHEDULE.

    ``still_ticks`` > 0 ends a settle phase once that many consecutive ticks moved no node
    by more than the bitstream's ``still_lsb`` (``settle_ticks`` is then the cap); 0 settles
    for exactly ``settle_ticks``.
    """
    settle_ticks: int
    learn_ticks: int
    epochs: int
    n_examples: int
    order: Order = Order.CYCLIC
    seed: int = 1
    still_ticks: int = 0

    FORMAT = ">IIIHBIB"

    def pack(self):
        return struct.pack(self.FORMAT, self.settle_ticks, self.learn_ticks, self.epochs,
                           self.n_examples, self.order, self.seed, self.still_ticks)

    @classmethod
    def from_config(cls, cfg, n_examples, order=Order.CYCLIC, seed=None):
        """The schedule of ``cfg`` (its ``[schedule]`` and ``learning.epochs``, at most
        :data:`MAX_RUN_EPOCHS`: more are run one RUN_EPOCHS at a time)."""
        sch = cfg.schedule
        return cls(sch.settle_ticks, sch.learn_ticks, min(cfg.learning.epochs, MAX_RUN_EPOCHS),
                   n_examples, order,
                   cfg.learning.seed if seed is None else seed,
                   sch.still_ticks if sch.settle == "still" else 0)

    @classmethod
    def unpack(cls, payload, ident):
        """Decode and validate against ``ident``."""
        s, lt, ep, n, order, seed, still = _u(cls.FORMAT, payload, Command.WRITE_SCHEDULE)
        if s + lt == 0:
            raise FrameError(Status.OUT_OF_RANGE, "settle_ticks + learn_ticks must be >= 1")
        if not 1 <= n <= ident.max_examples:
            raise FrameError(Status.OUT_OF_RANGE, f"n_examples {n} outside "
                             f"1..{ident.max_examples}")
        if order not in Order._value2member_map_:
            raise FrameError(Status.OUT_OF_RANGE, f"order {order}")
        over = schedule_limits(s, lt, ep)
        if over:
            raise FrameError(Status.OUT_OF_RANGE, ", ".join(over))
        return cls(s, lt, ep, n, Order(order), seed, still)

    def beyond_limits(self):
        """What of this schedule a device refuses (:func:`schedule_limits`)."""
        return schedule_limits(self.settle_ticks, self.learn_ticks, self.epochs)


def pack_range(first, count):
    """Payload of READ_GATES and READ_OUTPUTS: first u16, count u8."""
    return struct.pack(">HB", first, count)


def unpack_range(payload, limit, command):
    first, count = _u(">HB", payload, command)
    _block(first, count, limit, "index")
    return first, count


def pack_values(values):
    """Concatenated i32 big-endian values (gates, outputs)."""
    values = [int(v) for v in np.asarray(values).ravel()]
    return struct.pack(f">{len(values)}i", *values)


def unpack_values(payload, count=None):
    if len(payload) % 4 or (count is not None and len(payload) != 4 * count):
        raise FrameError(Status.BAD_LENGTH, f"{len(payload)} bytes of i32 values"
                         + (f", expected {count}" if count is not None else ""))
    return np.array(struct.unpack(f">{len(payload) // 4}i", payload), np.int64)


def pack_write_gates(first, gates):
    """Payload of WRITE_GATES: first u16, count u8, count gates i32 in gate LSBs."""
    return struct.pack(">HB", first, len(gates)) + pack_values(gates)


def unpack_write_gates(payload, ident):
    """``(first, gates)`` of a WRITE_GATES payload, validated against ``ident``; ``first``
    indexes the gates of all streams (``s * n_edges + e``)."""
    if len(payload) < 3:
        raise FrameError(Status.BAD_LENGTH, "WRITE_GATES needs at least 3 bytes")
    first, count = struct.unpack(">HB", payload[:3])
    gates = unpack_values(payload[3:], count)
    _block(first, count, ident.n_gates, "gates")
    bad = [g for g in gates.tolist() if not ident.gate_min_q <= g <= ident.gate_max_q]
    if bad:
        raise FrameError(Status.OUT_OF_RANGE, f"gate {bad[0]} outside "
                         f"[{ident.gate_min_q}, {ident.gate_max_q}]")
    return first, gates


def pack_run(epochs, learn=True):
    """Payload of RUN_EPOCHS: epochs u32, learn u8 (1 train, 0 evaluate)."""
    return struct.pack(">IB", epochs, int(learn))


def unpack_run(payload):
    epochs, learn = _u(">IB", payload, Command.RUN_EPOCHS)
    if learn > 1:
        raise FrameError(Status.OUT_OF_RANGE, f"learn flag {learn}")
    if epochs > MAX_RUN_EPOCHS:
        raise FrameError(Status.OUT_OF_RANGE, f"epochs {epochs} > {MAX_RUN_EPOCHS}")
    return epochs, bool(learn)


@dataclass(frozen=True)
class DeviceStatus:
    """Reply of READ_STATUS.

    Attributes
    ----------
    mode : Mode
        The run's while any stream runs.
    epoch, example : int
        Stream 0's (each stream runs the schedule on its own).
    ticks : int
        Ticks since reset or RESET (stream 0's).
    error_sums : tuple of int
        Last epoch error sum of each stream (LSB^2, saturating at 2**64 - 1).
    saturation : int
        Sticky saturation flags, OR of all streams.
    cycles : int
        Clock cycles of the current (or last) run: counted from START / RUN_EPOCHS while
        the controller runs, frozen when the run ends, 0 after reset or RESET. The golden
        model (``clln.sim.system``) counts no cycles and reports 0.

    The payload is mode, epoch, example, ticks, cycles, the error sums, the flags
    (:meth:`format`); ``cycles`` is the dataclass's last field so that it may be left out.
    """
    mode: Mode
    epoch: int
    example: int
    ticks: int
    error_sums: tuple
    saturation: int
    cycles: int = 0

    @staticmethod
    def format(streams):
        """``struct`` format of the payload for ``streams`` networks."""
        return ">BIHQQ" + "Q" * streams + "B"

    @property
    def error_sum(self):
        """Error sum of stream 0 (the only one of a single-network fabric)."""
        return self.error_sums[0]

    def pack(self):
        return struct.pack(self.format(len(self.error_sums)), self.mode, self.epoch,
                           self.example, self.ticks, self.cycles, *self.error_sums,
                           self.saturation)

    @classmethod
    def unpack(cls, payload, streams=1):
        """Decode a READ_STATUS payload of a fabric of ``streams`` networks."""
        mode, epoch, example, ticks, cycles, *sums, sat = _u(cls.format(streams), payload,
                                                             Command.READ_STATUS)
        if mode not in Mode._value2member_map_:
            raise FrameError(Status.OUT_OF_RANGE, f"mode {mode}")
        return cls(Mode(mode), epoch, example, ticks, tuple(sums), sat, cycles)


#: COMMIT_GRAPH's payload: the rows of a tick u16 (drain and commit rows included), the
#: loaded config's hash u32.
COMMIT_FORMAT = ">HI"

#: Exact payload lengths of the fixed-size requests.
REQUEST_LENGTHS = {Command.IDENTIFY: 0, Command.WRITE_SCHEDULE: struct.calcsize(
    ScheduleParams.FORMAT), Command.READ_GATES: 3, Command.START: 0, Command.STOP: 0,
    Command.RUN_EPOCHS: 5, Command.READ_STATUS: 0, Command.READ_OUTPUTS: 3, Command.RESET: 0,
    Command.COMMIT_GRAPH: struct.calcsize(COMMIT_FORMAT)}

#: Commands refused with BUSY unless the controller is idle (the handler and the golden
#: model take them from here).
IDLE_ONLY = frozenset({Command.WRITE_DATASET, Command.WRITE_SCHEDULE, Command.WRITE_GATES,
                       Command.START, Command.RUN_EPOCHS, Command.RESET, *GRAPH_COMMANDS})

#: The ``first`` u16, ``count`` u8 prefix of WRITE_DATASET, WRITE_GATES, READ_GATES and
#: READ_OUTPUTS (:func:`pack_range`).
RANGE_FORMAT = ">HB"
#: RUN_EPOCHS' payload (:func:`pack_run`): epochs u32, learn u8.
RUN_FORMAT = ">IB"


def struct_fields(fmt, names):
    """``{name: (offset, size)}`` of the fields of a big-endian struct format with one
    code per field (``">IIIHBI"``), from ``struct.calcsize`` of its prefixes."""
    order, codes = fmt[0], fmt[1:]
    if len(codes) != len(names):
        raise ValueError(f"{fmt!r} has {len(codes)} fields, not {len(names)}")
    return {name: (struct.calcsize(order + codes[:i]), struct.calcsize(order + code))
            for i, (name, code) in enumerate(zip(names, codes, strict=True))}


#: Byte offset and size of each field of WRITE_SCHEDULE's payload.
SCHEDULE_FIELDS = struct_fields(ScheduleParams.FORMAT, list(ScheduleParams.__dataclass_fields__))
#: Byte offset and size of ``first`` and ``count`` in a range payload.
RANGE_FIELDS = struct_fields(RANGE_FORMAT, ["first", "count"])
#: Byte offset and size of ``epochs`` and ``learn`` in RUN_EPOCHS' payload.
RUN_FIELDS = struct_fields(RUN_FORMAT, ["epochs", "learn"])
#: Byte offset and size of ``n_rows`` and ``config_hash`` in COMMIT_GRAPH's payload.
COMMIT_FIELDS = struct_fields(COMMIT_FORMAT, ["n_rows", "config_hash"])


def pack_write_graph(first, words):
    """Payload of WRITE_GRAPH: first row u16, count u8, then each row's u32 words (a
    packed row of ``clln.schedule.row_fields``, most significant word first)."""
    words = np.asarray(words, np.int64)
    return struct.pack(">HB", first, len(words)) + b"".join(
        struct.pack(f">{len(r)}I", *map(int, r)) for r in words)


def unpack_write_graph(payload, ident, row_words):
    """``(first, rows)`` of a WRITE_GRAPH payload (rows as unsigned integers)."""
    if len(payload) < 3:
        raise FrameError(Status.BAD_LENGTH, "WRITE_GRAPH needs at least 3 bytes")
    first, count = struct.unpack(">HB", payload[:3])
    if len(payload) != 3 + 4 * row_words * count:
        raise FrameError(Status.BAD_LENGTH, f"{count} rows need {3 + 4 * row_words * count} "
                         f"bytes, got {len(payload)}")
    _block(first, count, ident.graph_rows, "rows")
    words = struct.unpack(f">{row_words * count}I", payload[3:])
    rows = [0] * count
    for i, w in enumerate(words):
        rows[i // row_words] = (rows[i // row_words] << 32) | w
    return first, rows


def pack_commit(n_rows, hash_value):
    """Payload of COMMIT_GRAPH."""
    return struct.pack(COMMIT_FORMAT, n_rows, hash_value)


def unpack_commit(payload, ident, least):
    """``(n_rows, config_hash)`` of COMMIT_GRAPH; ``least``: the fewest rows of a tick."""
    n_rows, hash_value = _u(COMMIT_FORMAT, payload, Command.COMMIT_GRAPH)
    if not least <= n_rows <= ident.graph_rows:
        raise FrameError(Status.OUT_OF_RANGE, f"n_rows {n_rows} outside "
                         f"{least}..{ident.graph_rows}")
    return n_rows, hash_value
