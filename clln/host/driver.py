"""Device driver: speaks the link protocol (``docs/protocol.md``) over a transport."""

import time

import numpy as np

from .. import protocol as p
from .. import schedule as sch
from ..errors import ConfigError
from ..formats import Formats
from ..protocol import Command, FrameError, ProtocolError, Status, Transport


class DeviceError(ProtocolError):
    """The device answered with an error status.

    Attributes
    ----------
    status : Status
    command : int
    """

    def __init__(self, status, command, detail=""):
        self.status, self.command = Status(status), command
        name = Command(command).name if command in Command._value2member_map_ else hex(command)
        super().__init__(f"device refused {name}: {self.status.name}"
                         + (f" ({detail})" if detail else ""))


class LinkTimeout(ProtocolError):
    """No valid reply arrived in time."""


class SerialTransport(Transport):
    """A serial port (pyserial), 8N1.

    Parameters
    ----------
    port : str
        Device name, e.g. ``/dev/ttyUSB1``.
    baud : int
    """

    def __init__(self, port, baud=115200):
        import serial
        self.port = serial.Serial(port, baud, timeout=0)
        self.port.reset_input_buffer()

    def write(self, data):
        self.port.write(data)
        self.port.flush()

    def read(self, timeout):
        self.port.timeout = timeout
        first = self.port.read(1)
        if not first:
            return b""
        self.port.timeout = 0
        return first + self.port.read(self.port.in_waiting or 0)

    def close(self):
        self.port.close()


class LoopbackTransport(Transport):
    """A transport answered by a Python callable (a model or a simulation of the device).

    Parameters
    ----------
    respond : callable
        Takes the bytes written, returns the bytes the device sends back (may be empty).
    """

    def __init__(self, respond):
        self.respond, self.pending = respond, bytearray()

    def write(self, data):
        self.pending += self.respond(bytes(data))

    def read(self, timeout):
        data, self.pending = bytes(self.pending), bytearray()
        return data


class Device:
    """A clln bitstream on a board, seen through a :class:`Transport`.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds to wait for each reply.
    """

    def __init__(self, transport, timeout=1.0):
        self.transport, self.timeout = transport, timeout
        self.reader = p.FrameReader(p.parse_reply)
        self.next_id = 0
        self._identity = None

    def request(self, command, payload=b""):
        """Send one request and return the payload of its OK reply.

        Raises
        ------
        DeviceError
            On an error reply (a frame-level error reply is taken for this request
            whatever its request id, since the device could not read the id).
        LinkTimeout
            If no reply arrives within ``timeout``.
        """
        rid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFF
        self.transport.write(p.encode_request(rid, command, payload))
        deadline = time.monotonic() + self.timeout
        garbled = 0
        while True:
            left = deadline - time.monotonic()
            data = self.transport.read(max(left, 0.0))
            for item in self.reader.feed(data):
                if isinstance(item, FrameError):
                    garbled += 1
                    continue
                if item.status in p.FRAME_STATUSES:
                    raise DeviceError(item.status, command, "the request was damaged in transit")
                if item.request_id != rid:
                    continue  # stale reply of an earlier, timed-out request
                if item.command != command:
                    raise ProtocolError(f"reply to {Command(command).name} names command "
                                        f"0x{item.command:02x}")
                if item.status != Status.OK:
                    raise DeviceError(item.status, command)
                return item.payload
            if left <= 0:
                raise LinkTimeout(f"no reply to {Command(command).name} within {self.timeout} s"
                                  + (f" ({garbled} damaged frames received)" if garbled else ""))

    def identify(self):
        """The :class:`~clln.host.protocol.Identity` of the bitstream (cached)."""
        self._identity = p.Identity.unpack(self.request(Command.IDENTIFY))
        if self._identity.protocol_version != p.PROTOCOL_VERSION:
            raise ProtocolError(f"device speaks protocol {self._identity.protocol_version}, "
                                f"this host {p.PROTOCOL_VERSION}")
        return self._identity

    @property
    def identity(self):
        return self._identity or self.identify()

    def write_dataset(self, drives, targets, first=0):
        """Write examples (drive values and targets, voltage LSBs), several per frame."""
        drives = np.asarray(drives, np.int64).reshape(len(drives), -1)
        targets = np.asarray(targets, np.int64).reshape(len(targets), -1)
        per = (p.MAX_PAYLOAD - 3) // self.identity.example_bytes
        for i in range(0, len(drives), per):
            self.request(Command.WRITE_DATASET, p.pack_write_dataset(
                first + i, drives[i:i + per], targets[i:i + per]))

    def write_schedule(self, params):
        """Write a :class:`~clln.host.protocol.ScheduleParams`; one beyond the protocol's
        limits (``ScheduleParams.beyond_limits``) is refused here, unsent, as the device
        would refuse it (DeviceError OUT_OF_RANGE)."""
        over = params.beyond_limits()
        if over:
            raise DeviceError(Status.OUT_OF_RANGE, Command.WRITE_SCHEDULE,
                              f"not sent: {', '.join(over)}")
        self.request(Command.WRITE_SCHEDULE, params.pack())

    def read_gates(self, first=0, count=None):
        """Gates (gate LSBs) ``first .. first + count - 1`` (default: all) of the table of
        all streams, stream-major (index ``s * n_edges + e``)."""
        count = self.identity.n_gates - first if count is None else count
        out = []
        for i in range(first, first + count, p.MAX_PAYLOAD // 4):
            n = min(p.MAX_PAYLOAD // 4, first + count - i)
            out.append(p.unpack_values(self.request(Command.READ_GATES, p.pack_range(i, n)), n))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def write_gates(self, gates, first=0):
        """Write gates (gate LSBs) from index ``first`` (``s * n_edges + e``) on."""
        gates = np.asarray(gates, np.int64).ravel()
        per = (p.MAX_PAYLOAD - 3) // 4
        for i in range(0, len(gates), per):
            self.request(Command.WRITE_GATES, p.pack_write_gates(first + i, gates[i:i + per]))

    def load_graph(self, cfg, base=None):
        """Load ``cfg``'s graph into a capacity bitstream (``docs/protocol.md``, "Loading
        a graph"): its schedule rows (its I/O placed first, ``clln.schedule.relabel``),
        its initial gates (seed ``learning.seed``) and COMMIT_GRAPH with its config
        hash, which resets the fabric. Nothing is sent when IDENTIFY already reports that
        hash. Returns whether it loaded.

        Raises
        ------
        ConfigError
            A fixed-graph bitstream; a graph beyond the capacity or of a larger degree; a
            config that differs in what the bitstream fixes (``base``, the bitstream's
            config when known, names the key and both values; else the fixed hashes).
        """
        ident = self.identify()
        if not ident.graph_rows:
            raise ConfigError(cfg.source, "", "the bitstream's graph is fixed (built without "
                              "--capacity): it runs only the config it was built from")
        hash_value = p.config_hash(cfg)
        if ident.config_hash == hash_value:
            return False
        fmt, cap = Formats.from_config(cfg), sch.Capacity(ident.n_nodes, ident.n_edges)
        sch.check_capacity(cfg, cap, ident.max_degree)
        if base is not None:
            sch.check_fixed(cfg, sch.fixed_part(cfg, fmt),
                            sch.fixed_part(base, Formats.from_config(base)))
        mine = sch.fixed_hash(cfg, fmt)
        if mine != ident.fixed_hash:
            raise ConfigError(cfg.source, "", f"differs from the bitstream's config in what it "
                              f"fixes (widths, constants, the task's shape, the I/O; fixed "
                              f"hash {mine:#010x}, the bitstream's {ident.fixed_hash:#010x})")
        placed = sch.relabel(cfg)
        fields = sch.row_fields(cap, ident.v_bits, len(placed.driven_nodes()),
                                len(sch.output_nodes(placed)))
        W = sch.row_words(fields)
        rows = [sch.pack_row(r, fields) for r in sch.schedule_rows(placed, fmt)]
        words = [[(r >> (32 * (W - 1 - i))) & 0xFFFFFFFF for i in range(W)] for r in rows]
        per = (p.MAX_PAYLOAD - 3) // (4 * W)
        for i in range(0, len(words), per):
            self.request(Command.WRITE_GRAPH, p.pack_write_graph(i, words[i:i + per]))
        E = cfg.network.n_edges
        gates = fmt.volts_to_g(cfg.learning.initial_gates(E, cfg.learning.seed))
        for i in range(0, E, (p.MAX_PAYLOAD - 3) // 4):
            chunk = gates[i:i + (p.MAX_PAYLOAD - 3) // 4]
            self.request(Command.WRITE_INIT_GATES, p.pack_write_gates(i, chunk))
        self.request(Command.COMMIT_GRAPH, p.pack_commit(len(rows), hash_value))
        self._identity = None
        return True

    def start(self):
        """Train for the scheduled number of epochs."""
        self.request(Command.START)

    def stop(self):
        """Stop at the end of the current tick."""
        self.request(Command.STOP)

    def run_epochs(self, epochs, learn=True):
        """Run ``epochs`` epochs (at most ``protocol.MAX_RUN_EPOCHS``, else refused
        unsent: DeviceError OUT_OF_RANGE), learning (``learn``) or evaluating."""
        if epochs > p.MAX_RUN_EPOCHS:
            raise DeviceError(Status.OUT_OF_RANGE, Command.RUN_EPOCHS,
                              f"not sent: epochs {epochs} > {p.MAX_RUN_EPOCHS}")
        self.request(Command.RUN_EPOCHS, p.pack_run(epochs, learn))

    def reset(self):
        """Reset the fabric (node voltages 0, the bitstream's initial gates, flags and the
        tick counter cleared) and the controller's counters (the cycle counter too);
        dataset and schedule stay."""
        self.request(Command.RESET)

    def status(self):
        """The :class:`~clln.host.protocol.DeviceStatus` (``cycles``: the clock cycles of
        the current or last run; seconds with :attr:`Identity.clock_hz
        <clln.protocol.Identity>`)."""
        return p.DeviceStatus.unpack(self.request(Command.READ_STATUS),
                                     self.identity.streams)

    def read_outputs(self, first=0, count=1):
        """Free outputs (voltage LSBs) of examples ``first ..``, shape (count,
        n_output_values): column ``s * n_outputs + k`` is output k of stream s."""
        n_out = self.identity.n_output_values
        per = p.MAX_PAYLOAD // (4 * n_out)
        rows = []
        for i in range(first, first + count, per):
            n = min(per, first + count - i)
            payload = self.request(Command.READ_OUTPUTS, p.pack_range(i, n))
            rows.append(p.unpack_values(payload, n * n_out).reshape(n, n_out))
        return np.concatenate(rows)

    def wait_idle(self, timeout=60.0, poll=0.05):
        """Poll READ_STATUS until the mode is IDLE; return the last status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st.mode == p.Mode.IDLE:
                return st
            if time.monotonic() > deadline:
                raise LinkTimeout(f"device still {st.mode.name} after {timeout} s")
            time.sleep(poll)
