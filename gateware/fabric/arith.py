"""Fixed-point arithmetic of the fabric: rounding, saturation, selection, adder trees,
constant and split products (``docs/semantics.md``)."""


from amaranth.hdl import Cat, Const, Mux, Signal, Value, signed


def round_shift(x, s):
    """``x * 2**-s`` rounded to nearest, halves toward +infinity (an expression)."""
    if s == 0:
        return x
    return (x + round_half(s)) >> s


def round_half(s):
    """The rounding constant of a shift by ``s`` (see :func:`round_shift`)."""
    return 1 << (s - 1) if s else 0


def saturate(m, x, bits, name):
    """Clip expression ``x`` to ``signed(bits)``.

    Returns
    -------
    value : Signal
        The clipped value, ``signed(bits)``.
    clipped : Signal
        High when ``x`` was out of range.
    """
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    exact = wire(m, x, f"{name}_exact")
    value = Signal(signed(bits), name=name)
    clipped = Signal(name=f"{name}_sat")
    if len(exact) <= bits or not exact.shape().signed:
        over, under = exact > hi, exact < lo
    else:
        # out of range <=> the bits from bits - 1 up are not all copies of the sign: a
        # few LUTs instead of two comparators as wide as ``exact``
        top, sign = exact[bits - 1:], exact[-1]
        over, under = ~sign & top.any(), sign & ~top.all()
    m.d.comb += [value.eq(Mux(over, hi, Mux(under, lo, exact))), clipped.eq(over | under)]
    return value, clipped


def wire(m, x, name, shape=None):
    """A signal driven by ``x``, of ``x``'s own (exact) shape unless ``shape`` is given:
    computes ``x`` once."""
    x = Value.cast(x)
    w = Signal(x.shape() if shape is None else shape, name=name)
    m.d.comb += w.eq(x)
    return w


def select(sel, cases):
    """``cases[sel]`` as a chain of ``Mux`` (0 for a missing case; no ``sel``: the only case)."""
    if sel is None:
        (value,) = cases.values()
        return value
    out = 0
    for c, value in cases.items():
        out = Mux(sel == c, value, out)
    return out


def mux_tree(sel, values):
    """``values[sel]`` as a balanced tree of ``Mux`` on the bits of ``sel``."""
    values, bit = list(values), 0
    while len(values) > 1:
        values = [Mux(sel[bit], values[i + 1], values[i]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
        bit += 1
    return values[0]


def tree_sum(terms):
    """Balanced adder tree of expressions (exact: Amaranth widens every sum)."""
    terms = list(terms)
    if not terms:
        return 0
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def const_mul(x, k, plus=0):
    """``x * k + plus`` for constants ``k, plus >= 0`` as shifts and adds (keeps DSP blocks
    free); ``plus`` is one more term of the adder tree, which makes a rounding constant
    cost no adder in a row."""
    x = Value.cast(x)
    terms = [x << i for i in range(int(k).bit_length()) if (int(k) >> i) & 1]
    if plus:
        terms.append(Const(plus))
    return tree_sum(terms) if terms else Const(0, 1)


def split_mul(a, b, mult_bits):
    """``a * b`` exactly, with one ``mult_bits x mult_bits`` signed multiplication.

    The low bits of an operand wider than ``mult_bits`` become shift-and-add rows in logic:
    with ``a = a_hi 2**ka + a_lo`` and ``b = b_hi 2**kb + b_lo`` (``a_lo``, ``b_lo``
    unsigned), ``a b = a_hi b_hi 2**(ka+kb) + a_hi b_lo 2**ka + a_lo b``. So each product
    takes one multiplier block, whatever its operands' widths. ``mult_bits=None``: a plain
    ``a * b`` (synthesis splits it over as many blocks as it needs).
    """
    a, b = Value.cast(a), Value.cast(b)
    if mult_bits is None:
        return a * b
    # an unsigned operand gains a 0 sign bit, so that its top bit is not read as a sign
    a, b = (x if x.shape().signed else Cat(x, Const(0, 1)).as_signed() for x in (a, b))
    ka, kb = max(0, len(a) - mult_bits), max(0, len(b) - mult_bits)
    a_hi, b_hi = a[ka:].as_signed(), b[kb:].as_signed()
    rows = [Mux(b[i], a_hi << (ka + i), 0) for i in range(kb)]
    rows += [Mux(a[i], b << i, 0) for i in range(ka)]
    # the block's product last: the rows add up while the block multiplies
    return tree_sum(rows + [(a_hi * b_hi) << (ka + kb)])


def above(x, c):
    """``x > c`` for a value ``x`` and an integer ``c``, as gates rather than a
    comparator: on iCE40 a comparator is a carry chain, a logic cell per bit with its
    LUT unused; these gates pack about two bits to a LUT.

    Signed ``x`` is compared as unsigned with its sign bit flipped (order-preserving
    offset by ``2**(n - 1)``); then a balanced tree (depth log2 n, not n) of (greater,
    equal) pairs of bit ranges: ``gt = gt_hi | (eq_hi & gt_lo)``, ``eq = eq_hi & eq_lo``.
    """
    x = Value.cast(x)
    n = len(x)
    if x.shape().signed:
        x, c = Cat(x[:-1], ~x[-1]), c + (1 << (n - 1))
    if c < 0:
        return Const(1, 1)
    if c >= (1 << n) - 1:
        return Const(0, 1)

    def gt_eq(lo, hi):
        if hi - lo == 1:
            bit = x[lo]
            return (Const(0, 1), bit) if (c >> lo) & 1 else (bit, ~bit)
        mid = (lo + hi + 1) // 2
        (g_lo, e_lo), (g_hi, e_hi) = gt_eq(lo, mid), gt_eq(mid, hi)
        return g_hi | (e_hi & g_lo), e_hi & e_lo

    return gt_eq(0, n)[0]


def below(x, c):
    """``x < c`` for a value ``x`` and an integer ``c`` (gates: see :func:`above`)."""
    return ~above(x, c - 1)


def any_of(values):
    """OR of a list of 1-bit or 5-bit values (0 when empty)."""
    out = 0
    for v in values:
        out = out | v
    return out



def as_bit(value):
    """A 1-bit value (``0`` becomes ``Const(0, 1)``)."""
    return Const(0, 1) if isinstance(value, int) else value[0]


def replicas(m, x, name, count, init=0):
    """``count`` registers of ``x``, each kept as a flip-flop of its own (``keep``: the
    board build tells Yosys not to merge them), so that each can sit near its loads."""
    x = Value.cast(x)
    copies = [Signal(x.shape(), name=f"{name}{i}", init=init, reset_less=True,
                     attrs={"keep": 1}) for i in range(count)]
    m.d.sync += [c.eq(x) for c in copies]
    return copies


def register(m, x, name, init=0, reset_less=True):
    """A register of ``x``'s shape that takes ``x`` every cycle (a pipeline stage)."""
    x = Value.cast(x)
    r = Signal(x.shape(), name=name, init=init, reset_less=reset_less)
    m.d.sync += r.eq(x)
    return r
