"""The fabric's seams: the signatures every fabric exposes, and its saturation flags.

- :class:`ControlSignature`: run, learn, clear, the sample writes, and what a tick gives
  back (``tick_done``, ``moved``, the free ``outputs``, ``busy``); the controller drives it.
- :class:`GatePortSignature`: gate writes and a registered gate read; the command
  handler drives it.
- :class:`StatusSignature`: tick count and sticky saturation flags, cleared on request.

Each is written from the side that drives it (the controller or the handler has it as
``Out``, the fabric as ``In``; the status the other way round), so a system joins the
parts with :func:`amaranth.lib.wiring.connect`. Members a fabric does not use are tied
off inside it.
"""

from amaranth.hdl import Cat, Const, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from clln.formats import SATURATION_FLAGS

__all__ = ["SatFlags", "SAT_MASK", "sat_bits", "TICKS_BITS", "ControlSignature",
           "GatePortSignature", "GraphPortSignature", "StatusSignature"]

#: Sticky saturation flags (``docs/semantics.md``, names from
#: :data:`clln.formats.SATURATION_FLAGS`): bit 0 ``term`` .. bit 4 ``dg``.
SatFlags = data.StructLayout({name: 1 for name in SATURATION_FLAGS})
#: Bit mask of each flag in a value of :data:`SatFlags` (from the layout's offsets).
SAT_MASK = {name: 1 << field.offset for name, field in SatFlags}


def sat_bits(**bits):
    """A value of :data:`SatFlags`' width: each named flag from its 1-bit value
    (``sat_bits(v=clipped)``), the others 0."""
    unknown = set(bits) - set(SAT_MASK)
    if unknown:
        raise ValueError(f"no such saturation flags: {sorted(unknown)}")
    return Cat(*(bits.get(name, Const(0, 1)) for name, _ in
                 sorted(SatFlags, key=lambda item: item[1].offset)))
#: Width of the tick counter (wraps).
TICKS_BITS = 32


class ControlSignature(wiring.Signature):
    """Run, learn, clear and sample writes to a fabric; tick results back.

    ``moved`` is valid with ``tick_done``: 1 when the tick that just committed moved some
    node of either network (of any stream) by more than ``still_lsb`` LSBs
    (``docs/semantics.md``, "Moving and still"). A pipelined fabric (``cfg.fabric.still_lag``
    1) gives the round of ticks before's: the one whose ``tick_done`` it is is still in its
    pipeline (0 before the first round after a reset).

    Parameters
    ----------
    n_samples : int
        Drive plus target registers (sample addresses ``0 .. n_samples - 1``).
    v_bits : int
        Node voltage bits (samples are node voltages).
    n_outputs : int
        Output values of all streams (``streams * len(io.outputs)``).
    """

    def __init__(self, n_samples, v_bits, n_outputs):
        self.n_samples, self.v_bits, self.n_outputs = n_samples, v_bits, n_outputs
        super().__init__({
            "run": Out(1),
            "learn": Out(1),
            "clear": Out(1),
            "sample_we": Out(1),
            "sample_addr": Out(range(max(n_samples, 2))),
            "sample_data": Out(signed(v_bits)),
            "tick_done": In(1),
            "moved": In(1),
            "outputs": In(data.ArrayLayout(signed(v_bits + 1), n_outputs)),
            "busy": In(1),
        })

    def __eq__(self, other):
        return (isinstance(other, ControlSignature) and
                (self.n_samples, self.v_bits, self.n_outputs)
                == (other.n_samples, other.v_bits, other.n_outputs))

    def __hash__(self):
        return hash((ControlSignature, self.n_samples, self.v_bits, self.n_outputs))

    def __repr__(self):
        return f"ControlSignature({self.n_samples}, {self.v_bits}, {self.n_outputs})"


class GraphPortSignature(wiring.Signature):
    """The graph a capacity build loads (``docs/gateware.md``, "The graph loaded at run
    time"), from the command handler's side: schedule rows (``row_we/addr/data``, a
    packed row of :func:`clln.schedule.row_fields`), initial gates (``init_we/addr/data``,
    restored on every clear) and the row count of a tick (``n_rows``, the drain and
    commit rows included; held by the handler, which no fabric clear resets).

    Parameters
    ----------
    depth : int
        Rows of the schedule RAM.
    row_bits : int
    n_gates : int
    g_bits : int
    """

    def __init__(self, depth, row_bits, n_gates, g_bits):
        self.depth, self.row_bits, self.n_gates, self.g_bits = depth, row_bits, n_gates, g_bits
        super().__init__({
            "row_we": Out(1), "row_addr": Out(range(depth)), "row_data": Out(row_bits),
            "init_we": Out(1), "init_addr": Out(range(max(n_gates, 2))),
            "init_data": Out(signed(g_bits)), "n_rows": Out(range(depth + 1)),
        })

    def __eq__(self, other):
        return (isinstance(other, GraphPortSignature) and
                self._key() == other._key())

    def _key(self):
        return (self.depth, self.row_bits, self.n_gates, self.g_bits)

    def __hash__(self):
        return hash((GraphPortSignature, self._key()))

    def __repr__(self):
        return f"GraphPortSignature{self._key()}"


class GatePortSignature(wiring.Signature):
    """Gate writes and a registered gate read (``rdata`` follows ``raddr`` by the
    fabric's ``gate_read_latency`` cycles).

    Parameters
    ----------
    n_gates : int
        Gates of all streams (addresses ``0 .. n_gates - 1``).
    g_bits : int
    """

    def __init__(self, n_gates, g_bits):
        self.n_gates, self.g_bits = n_gates, g_bits
        super().__init__({
            "we": Out(1),
            "addr": Out(range(max(n_gates, 2))),
            "data": Out(signed(g_bits)),
            "raddr": Out(range(max(n_gates, 2))),
            "rdata": In(signed(g_bits)),
        })

    def __eq__(self, other):
        return (isinstance(other, GatePortSignature) and
                (self.n_gates, self.g_bits) == (other.n_gates, other.g_bits))

    def __hash__(self):
        return hash((GatePortSignature, self.n_gates, self.g_bits))

    def __repr__(self):
        return f"GatePortSignature({self.n_gates}, {self.g_bits})"


class StatusSignature(wiring.Signature):
    """Committed ticks and sticky saturation flags from a fabric; ``clear_flags`` back."""

    def __init__(self):
        super().__init__({
            "ticks": Out(TICKS_BITS),
            "sat_flags": Out(SatFlags),
            "saturated": Out(1),
            "clear_flags": In(1),
        })

    def __eq__(self, other):
        return isinstance(other, StatusSignature)

    def __hash__(self):
        return hash(StatusSignature)
