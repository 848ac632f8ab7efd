"""What a ``clln train`` checkpoint costs: file size, write and read time of a run's
checkpoint after ``learning.epochs`` epochs, against the time of one training epoch;
prints a markdown table.

    python bench/checkpoint.py [--seeds 10] [--repeats 3]

The checkpoint of epoch E holds the model's state and the run's record (the outputs of
every example of every epoch, the ticks of every presentation), so it grows with E; this
measures it at the config's full ``learning.epochs`` (3000 for the shipped configs) by
continuing a record of nearly that length (``Training(model, before)``) by the epochs it
times: epochs after the first of a run, whose settling starts near its end. A write
is :func:`clln.cli_resume.train_doc` plus :func:`clln.checkpoint.save` (temporary file,
fsync, rename); a read is :func:`clln.cli_resume.load_train` (digest and config checks,
arrays decoded). "Write / epoch" is the write time over one epoch's: the epochs of
training a write costs (``--checkpoint-every`` is 60 s by default).
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from clln import checkpoint, cli_resume, config  # noqa: E402
from clln.sim.training import Training, make_model  # noqa: E402


def long_record(model, epochs):
    """A record of ``epochs`` epochs in the shapes a run of ``model`` makes."""
    p, n = model.problem, len(model.seeds)
    ticks = np.full((n, epochs * p.n_examples), 100, np.int64) \
        if hasattr(model, "example_ticks") else None
    return {"observed": np.zeros((n, epochs, p.n_examples, p.targets.shape[1])),
            "example_ticks": ticks, "gates_initial": model.gates_volts(),
            "outputs_initial": model.evaluate()}


def measure(name, model_name, seeds, repeats, folder):
    cfg = config.load(name)
    model = make_model(cfg, model_name, seeds)
    # the record ends at learning.epochs after the measured epochs
    run = Training(model, long_record(model, cfg.learning.epochs - 1 - repeats))
    run.epoch()                                       # compiles the kernels
    epoch = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run.epoch()
        epoch.append(time.perf_counter() - t0)
    path = Path(folder) / "c.json"
    write, read = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        checkpoint.save(path, cli_resume.train_doc(cfg, run, run.epochs))
        t1 = time.perf_counter()
        cli_resume.load_train(path, cfg)
        read.append(time.perf_counter() - t1)
        write.append(t1 - t0)
    return (path.stat().st_size, statistics.median(write), statistics.median(read),
            statistics.median(epoch), run.epochs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    print("| config | model | seeds | epochs | file | write | read | one epoch | "
          "write / epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("paper-xor", "paper-regression"):
            for model_name in ("quasistatic", "dynamic", "fixed"):
                size, write, read, epoch, epochs = measure(name, model_name, seeds,
                                                           args.repeats, folder)
                print(f"| {name} | {model_name} | {len(seeds)} | {epochs} | "
                      f"{size / 1e6:.2f} MB | {write * 1e3:.0f} ms | {read * 1e3:.0f} ms | "
                      f"{epoch * 1e3:.1f} ms | {write / epoch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
