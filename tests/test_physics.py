"""Properties of the square-law edge current."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clln.sim.physics import edge_current, edge_term

volts = st.floats(-1.0, 1.0, allow_nan=False)
gates = st.floats(0.0, 6.0, allow_nan=False)
K, VT = 8.5e-4, 0.62


@given(gates, volts, volts)
def test_antisymmetric(g, va, vb):
    assert edge_current(g, va, vb, VT, K) == -edge_current(g, vb, va, VT, K)


@given(gates, volts, volts)
def test_regions_match_textbook_formulas(g, va, vb):
    ov = g - VT
    lo, hi = min(va, vb), max(va, vb)
    sign = 1.0 if va >= vb else -1.0
    i = edge_current(g, va, vb, VT, K)
    if ov >= hi:          # ohmic
        expected = K * (ov - (va + vb) / 2) * (va - vb)
    elif ov > lo:         # saturation: current set by the low terminal only
        expected = sign * K / 2 * (ov - lo) ** 2
    else:                 # cut-off
        expected = 0.0
    assert np.isclose(i, expected, rtol=1e-9, atol=1e-18)


@settings(max_examples=200)
@given(gates, volts, volts)
def test_continuous_across_region_boundaries(g, va, vb):
    # Moving a terminal through the overdrive (ohmic <-> saturation <-> cut-off)
    # changes the current by at most O(step): no jump at the boundaries.
    step = 1e-7
    ov = g - VT
    for v_edge in (ov - step, ov, ov + step):
        d = abs(edge_current(g, v_edge, vb, VT, K) - edge_current(g, v_edge + step, vb, VT, K))
        assert d <= K * (abs(ov - vb) + 2 * abs(ov) + 1) * step * 4


def test_current_rises_with_own_terminal():
    # The maximum principle used by the solver and the config check rests on this.
    v = np.linspace(-0.5, 1.5, 401)
    for g in (0.7, 1.0, 2.0, 5.0):
        i = edge_current(g, v, 0.2, VT, K)
        assert (np.diff(i) >= -1e-18).all()


def test_edge_term_units():
    # I = (K/2) * term
    assert np.isclose(edge_current(2.0, 0.3, 0.1, VT, K), K / 2 * edge_term(2.0 - VT, 0.3, 0.1))
