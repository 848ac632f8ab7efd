"""First run: the kernels are compiled by ``make setup`` (``python -m clln.sim.kernels``),
and a compile that does happen at run time is announced and kept out of the ETA."""

import io
import os
import subprocess
import sys

import numba
import numpy as np
from tqdm import tqdm

from clln.cli_common import compile_notice


def fresh_kernel():
    """A kernel numba has never seen (no cache): calling it compiles."""
    @numba.njit(cache=False)
    def sums(a):
        total = np.zeros(a.shape[1])
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                total[j] += np.sin(a[i, j]) * np.cos(a[i, j]) + np.sqrt(abs(a[i, j]))
        return total
    return sums


def test_a_compile_is_announced_and_kept_out_of_the_eta(capsys):
    """The compile is said on stderr (through the bar) and the bar's clock is moved past
    it, so the rate and ETA of the next update see none of it."""
    out = io.StringIO()
    bar = tqdm(total=100, file=out, mininterval=0)
    bar.update(1)
    before = bar.start_t
    with compile_notice(bar, "the test's"):
        fresh_kernel()(np.ones((3, 2)))
    err = capsys.readouterr().err
    assert "clln: compiling the test's kernels (once; numba caches them" in err
    compiled = float(err.split("clln: compiled in ")[1].split(" s")[0])
    assert compiled > 0.02
    assert bar.start_t - before >= compiled - 0.05        # the compile is not elapsed time
    assert bar.format_dict["elapsed"] < compiled
    bar.close()


def test_cached_kernels_compile_nothing_and_are_not_announced(capsys):
    kernel = fresh_kernel()
    kernel(np.ones((2, 2)))                        # compiled here, before the notice
    with compile_notice(None, "the test's"):
        kernel(np.ones((4, 3)))
    assert capsys.readouterr().err == ""


def test_after_the_warm_up_a_first_run_compiles_nothing(tmp_path):
    """What ``make setup`` runs leaves every kernel of ``clln train`` cached: in an empty
    numba cache (``NUMBA_CACHE_DIR``), after the warm-up, a new process training each model
    on both built-in configs (and the joint settle of ``clln build``'s estimate) compiles
    none. (About 15 s: the warm-up compiles everything.)"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    warm = subprocess.run([sys.executable, "-m", "clln.sim.kernels"], capture_output=True,
                          text=True, env=env)
    assert warm.returncode == 0 and " compiled" in warm.stdout, warm.stderr
    assert int(warm.stdout.split("kernels: ")[1].split()[0]) > 0      # the cache was empty
    program = (
        "from clln.sim import kernels\n"
        "from clln.sim.training import MODELS, make_model, train\n"
        "from clln.sim.fixed import FixedPointModel\n"
        "from clln import config\n"
        "seen = []\n"
        "with kernels.compiling(lambda: seen.append(1), lambda s: None):\n"
        "    for name in ('paper-xor', 'paper-regression'):\n"
        "        cfg = config.load(name)\n"
        "        for model in MODELS:\n"
        "            train(make_model(cfg, model, [3]), 2)\n"
        "    train(FixedPointModel(config.load('paper-xor'), [0, 1, 2], joint=True, lag=1), 1)\n"
        "print(len(seen))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
