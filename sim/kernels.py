"""The golden models' numba kernels: compiled once, cached on disk, and said so when not.

Every kernel is ``njit(cache=True)``: numba keeps the machine code beside the source (in
``__pycache__``, or its user cache folder when that is not writable) and loads it in
milliseconds. ``make setup`` runs :func:`warm_up` (``python -m clln.sim.kernels``), so a
first ``clln train`` compiles nothing; a kernel whose source changed is compiled again at
its first call, which :func:`compiling` reports.
"""

import contextlib
import threading
import time

from numba.core import event


class _CompileListener(event.Listener):
    """Calls ``on_start()`` when the outermost compile begins (numba's ``numba:compile``
    event fires only when no cached code was found) and ``on_end(seconds)`` when it ends;
    the compiles of the kernels it calls are part of it."""

    def __init__(self, on_start, on_end):
        self.on_start_cb, self.on_end_cb = on_start, on_end
        self.depth, self.t0 = 0, 0.0
        self.thread = threading.get_ident()

    def on_start(self, ev):
        if threading.get_ident() != self.thread:
            return
        if self.depth == 0:
            self.t0 = time.perf_counter()
            self.on_start_cb()
        self.depth += 1

    def on_end(self, ev):
        if threading.get_ident() != self.thread or self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            self.on_end_cb(time.perf_counter() - self.t0)


@contextlib.contextmanager
def compiling(on_start, on_end):
    """Within this block, call ``on_start()`` when a kernel starts to compile in this
    thread and ``on_end(seconds)`` when it is done (kernels loaded from the cache call
    neither)."""
    listener = _CompileListener(on_start, on_end)
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)


def warm_up():
    """Compile (or load) every kernel of every golden model, with the argument types of
    every run: the three models on both built-in configs, the three node steps, a non-ideal
    chip (noise, mismatch, damage, leak) and several seeds settling jointly (the
    pipelined fabric's rule).

    Returns
    -------
    (int, float)
        Compiles now (0 when every kernel came from the cache), and the seconds taken.
    """
    import dataclasses

    from clln import config

    from .fixed import FixedPointModel
    from .training import MODELS, make_model, train

    xor = config.load("paper-xor")
    data = config.read_toml(config.resolve("paper-xor"))
    data["nonideal"] = {"vt_sigma": 0.01, "k_sigma": 0.02, "twin_mismatch": True,
                        "update_offset": 1e-4, "read_noise": 1e-4, "gate_leak": 1e-4,
                        "dead_edges": [1], "stuck_edges": [2]}
    chip = config.parse(data, "<warm-up>")
    euler = dataclasses.replace(xor, schedule=dataclasses.replace(
        xor.schedule, relax="euler", settle="fixed", settle_ticks=50))
    momentum = dataclasses.replace(xor, schedule=dataclasses.replace(
        xor.schedule, relax="momentum", settle_ticks=50))
    configs = [xor, config.load("paper-regression"), chip, euler, momentum]
    compiled, start = [], time.perf_counter()
    with compiling(lambda: compiled.append(1), lambda seconds: None):
        for cfg in configs:
            for model in MODELS:
                train(make_model(cfg, model, [0, 1]), 1)
        train(FixedPointModel(xor, [0, 1], joint=True, lag=1), 1)
    return len(compiled), time.perf_counter() - start


def main():
    count, seconds = warm_up()
    print(f"golden-model kernels: {count} compiled, the rest loaded from the cache "
          f"({seconds:.1f} s)")


if __name__ == "__main__":
    main()
