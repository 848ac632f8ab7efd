"""Restoring a golden model's state (a checkpoint's) into its arrays, checked."""

import numpy as np


def restore(arrays, state):
    """Copy ``state[name]`` into ``arrays[name]`` (in place) for every name.

    Raises
    ------
    ValueError
        A name is missing, or an array's shape or kind of number differs from the
        model's: a state of another network, model or set of seeds.
    """
    for name, target in arrays.items():
        if name not in state:
            raise ValueError(f"{name}: missing")
        value = np.asarray(state[name])
        if value.shape != target.shape or value.dtype.kind != target.dtype.kind:
            raise ValueError(f"{name}: {value.dtype.kind}{list(value.shape)} where the model "
                             f"has {target.dtype.kind}{list(target.shape)}")
        np.copyto(target, value)
