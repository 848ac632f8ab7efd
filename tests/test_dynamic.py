"""The float tick model's node step."""

import math

import numpy as np

from clln.sim.dynamic import power_of_two_at_or_above


def test_power_of_two_at_or_above_is_exact():
    rng = np.random.default_rng(2)
    powers = 2.0 ** np.arange(-40, 40)
    xs = np.concatenate([powers, np.nextafter(powers, np.inf), np.nextafter(powers, 0),
                         np.exp(rng.uniform(-25, 25, 2000))])
    for x in xs:
        mantissa, exponent = math.frexp(x)   # x = mantissa 2**exponent, 0.5 <= mantissa < 1
        expected = math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)
        assert power_of_two_at_or_above(x) == expected, x
