"""Read noise: the per-edge xorshift32 generators every model and fabric step alike.

Each learning tick, every edge advances its generator twice and turns each 32-bit word
into one sample: the sum of its four bytes minus their mean (``docs/semantics.md``,
"Read noise"). The first sample is the noise on the edge's free drop, the second on its
clamped drop. States start from :func:`clln.nonideal.noise_states`.
"""

from numba import njit

from clln.nonideal import NOISE_MEAN

_MASK = 0xFFFFFFFF


@njit(cache=True, inline="always")
def xorshift32(x):
    """Marsaglia's xorshift32 (shifts 13, 17, 5) on a state held in an int64."""
    x ^= (x << 13) & _MASK
    x ^= x >> 17
    x ^= (x << 5) & _MASK
    return x


@njit(cache=True, inline="always")
def byte_sum_sample(word):
    """A centred sample of one 32-bit word: its four bytes summed, minus their mean."""
    return ((word & 255) + ((word >> 8) & 255) + ((word >> 16) & 255) + (word >> 24)
            - NOISE_MEAN)


@njit(cache=True)
def next_samples(states, free, clamped):
    """Advance every edge's generator by one learning tick, in place: ``free[e]`` and
    ``clamped[e]`` receive its two samples (integers in ``[-510, 510]``)."""
    for e in range(len(states)):
        x = xorshift32(states[e])
        free[e] = byte_sum_sample(x)
        x = xorshift32(x)
        clamped[e] = byte_sum_sample(x)
        states[e] = x
