"""The ``clln`` command line: ties config, golden models, gateware and boards together."""

import argparse
import json
import os
import re
import sys

import numpy as np

from . import config as config_mod
from .cli_common import (
    add_checkpoint_args,
    check_run_size,
    check_writable,
    compile_notice,
    exit_on_termination,
    plot_arg,
    progress_bar,
    report_failures,
    side_output,
    warn_learning,
    whole_number,
)
from .errors import CllnError
from .sim.training import MODELS


def _seed_range(text):
    m = re.fullmatch(r"([0-9]{1,20})-([0-9]{1,20})", text)
    if not m or int(m[1]) > int(m[2]):
        raise argparse.ArgumentTypeError(f"expected A-B with A <= B (e.g. 0-9), got "
                                         f"{text!r:.40}")
    lo, hi = int(m[1]), int(m[2])
    if hi > config_mod.MAX_SEED or hi - lo + 1 > config_mod.MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {config_mod.MAX_SEEDS} seeds, each at "
                                         f"most {config_mod.MAX_SEED}; got {text}")
    return list(range(lo, hi + 1))


def _seed_report(history, i, target, at_bounds, frozen):
    return {
        "seed": history.seeds[i],
        "mse_initial": float(history.mse_initial[i]),
        "mse_final": float(history.mse_final[i]),
        "reached_target": bool(history.mse_final[i] <= target),
        "outputs_final": history.outputs_final[i].tolist(),
        "gates_final": history.gates_final[i].tolist(),
        "mse_per_epoch": history.mse_curve[i].tolist(),
        "saturated": bool(history.saturated[i]),
        "gates_at_bounds": int(at_bounds[i]),
        "frozen": bool(frozen[i]),
        "ticks_per_example": (None if history.ticks_per_example is None
                              else float(history.ticks_per_example[i])),
        "ticks_per_example_max": (None if history.ticks_per_example_max is None
                                  else int(history.ticks_per_example_max[i])),
        "mse_test": _item(history.mse_test, i),
        "accuracy": _item(history.accuracy, i),
        "accuracy_train": _item(history.accuracy_train, i),
    }


def _item(values, i):
    """Seed ``i`` of a per-seed measure that may be None."""
    return None if values is None else float(values[i])


#: The text report lists each example's outputs up to this many training examples.
MAX_EXAMPLES_SHOWN = 16


def _print_split(task, reports):
    """Test-set error and accuracies of the text report (MSE columns are the training
    examples')."""
    if task.n_test:
        print(f"test set: {task.n_test} examples (test_fraction {task.test_fraction:g}, "
              f"split_seed {task.split_seed}); training set: {len(task.y)}")
    for r in reports:
        parts = [f"mse_test {r['mse_test']:.3e}"] if r["mse_test"] is not None else []
        if r["accuracy_train"] is not None:
            parts.append(f"accuracy_train {r['accuracy_train']:.3f}")
        if r["accuracy"] is not None:
            parts.append(f"accuracy (test) {r['accuracy']:.3f}")
        if parts:
            print(f"{r['seed']:>6} " + ", ".join(parts))


def _train_setup(args, cfg):
    """Model name, seeds, epochs of this run, the checkpoint read for ``--resume`` (or
    None) and the checkpoint file to write (or None)."""
    from . import cli_resume
    seeds = args.seeds if args.seeds is not None else (
        [args.seed] if args.seed is not None else None)
    saved = cli_resume.load_train(args.resume, cfg) if args.resume else None
    if saved is None:
        model = args.model or "quasistatic"
        seeds = seeds or [cfg.learning.seed]
        epochs = args.epochs if args.epochs is not None else cfg.learning.epochs
    else:
        model = cli_resume.agree(saved.path, "--model", args.model, saved.model)
        seeds = cli_resume.agree(saved.path, "--seed/--seeds", seeds, saved.seeds)
        epochs = (args.epochs if args.epochs is not None
                  else saved.epochs_target - saved.epoch)
    check_run_size(cfg, epochs, len(seeds), "--epochs" if args.epochs is not None
                   else f"{cfg.source}: learning.epochs")
    ckpt = args.checkpoint or args.resume
    for path, flag in ((args.plot, "--plot"), (ckpt, "--checkpoint")):
        if path:
            check_writable(path, flag)
    return model, seeds, epochs, saved, ckpt


def _train_epochs(args, cfg, model_name, seeds, epochs, saved, ckpt):
    """Train (continuing ``saved``), checkpointing as asked; the History and the
    checkpoint writer."""
    from . import cli_resume
    from .sim.training import Training, make_model
    model = make_model(cfg, model_name, seeds)
    before = cli_resume.restore_training(saved, model) if saved else None
    run = Training(model, before)
    target = run.epochs + epochs
    writer = cli_resume.CheckpointWriter(ckpt, args.checkpoint_every)
    bar = progress_bar(epochs, not args.json, f"{cfg.name} ({model_name})")
    try:
        with compile_notice(bar, f"the {model_name} model's"):
            for _ in range(epochs):
                run.epoch()
                if bar is not None:
                    bar.update(1)
                if writer.due(run.epochs):
                    writer.write(cli_resume.train_doc(cfg, run, target))
    finally:
        if bar is not None:
            bar.close()
    if writer.epoch != run.epochs:
        writer.write(cli_resume.train_doc(cfg, run, target))   # before the evaluation
    return run.finish(), writer


class TrainRun:
    """What ``clln train`` did, before it is printed: ``report`` (the ``--json`` object),
    ``history`` (:class:`~clln.sim.training.History`), ``failures`` (why side outputs
    could not be written) and what the text report needs."""

    def __init__(self, report, history, failures, text):
        self.report, self.history, self.failures, self._text = report, history, failures, text


def train_run(args):
    """``clln train``'s work for parsed (or :mod:`clln.api`-made) ``args``: a
    :class:`TrainRun`."""
    cfg = config_mod.load(args.config)
    model_name, seeds, epochs, saved, ckpt = _train_setup(args, cfg)
    history, writer = _train_epochs(args, cfg, model_name, seeds, epochs, saved, ckpt)
    target = cfg.task.mse_target
    lrn = cfg.learning
    at_bounds = history.gates_at_bounds(lrn.gate_min, lrn.gate_max, 2.0 ** -(cfg.fixed.g_frac + 1))
    frozen = history.frozen(2.0 ** -cfg.fixed.v_frac)
    reports = [_seed_report(history, i, target, at_bounds, frozen) for i in range(len(seeds))]
    warn_learning(cfg, seeds, at_bounds, frozen,
                  f"in {epochs} epochs no output moved by more than 2**-{cfg.fixed.v_frac} V "
                  "(fixed.v_frac)", ticks=model_name != "quasistatic")
    reached = sum(r["reached_target"] for r in reports)
    plot_failed = args.plot and side_output(lambda: _plot_training(cfg, history, args.plot),
                                             args.plot)
    start = saved.epoch if saved else 0
    out = {"config": cfg.name, "model": model_name, "epochs": history.epochs,
           "epochs_run": epochs, "resumed_from": saved.path if saved else None,
           "resumed_at_epoch": start, "checkpoint": str(ckpt) if ckpt else None,
           "mse_target": target, "seconds": history.seconds, "targets": cfg.task.y.tolist()}
    if len(seeds) == 1:
        out.update(reports[0])
    else:
        out.update({k: [r[k] for r in reports] for k in reports[0]})
        out["reached"] = reached
    failures = ([writer.error] if writer.error else []) + (plot_failed or [])
    text = dict(cfg=cfg, model_name=model_name, reports=reports, reached=reached,
                start=start, saved=saved, plotted=bool(args.plot and not plot_failed),
                ckpt=ckpt if ckpt and not writer.error else None)
    return TrainRun(out, history, failures, text)


def cmd_train(args):
    """Train a config with a golden model and report the result."""
    run = train_run(args)
    if args.json:
        json.dump(run.report, sys.stdout)
        sys.stdout.write("\n")
    else:
        t = run._text
        _print_training(t["cfg"], t["model_name"], run.history, t["reports"], t["reached"],
                        t["start"], t["saved"])
        if t["plotted"]:
            print(f"plot written to {args.plot}")
        if t["ckpt"]:
            print(f"checkpoint (epoch {run.history.epochs}) written to {t['ckpt']}")
    return report_failures(run.failures)


def _plot_training(cfg, history, path):
    from .plot import plot_training
    plot_training(cfg, history, path)


def _print_training(cfg, model_name, history, reports, reached, start, saved):
    """The text report of ``clln train``."""
    seeds = history.seeds
    run = (f"{history.epochs} epochs" if not saved else
           f"epochs {start + 1}-{history.epochs} (resumed from {saved.path} at epoch {start})")
    print(f"{cfg.name}: {model_name} model, {run}, {len(seeds)} seed(s), "
          f"{history.seconds:.2f} s")
    target = cfg.task.mse_target
    print(f"{'seed':>6} {'mse_initial':>12} {'mse_final':>12}  target {target:g} V^2")
    for r in reports:
        mark = "reached" if r["reached_target"] else "missed"
        sat = "  (saturated)" if r["saturated"] else ""
        print(f"{r['seed']:>6} {r['mse_initial']:>12.3e} {r['mse_final']:>12.3e}  {mark}{sat}")
    print(f"{reached} of {len(seeds)} seed(s) reached the error target")
    _print_split(cfg.task, reports)
    if history.example_ticks is not None:
        print(f"ticks per example: mean {history.example_ticks.mean():.1f}, "
              f"max {history.example_ticks.max()}")
    if len(seeds) == 1 and len(cfg.task.y) <= MAX_EXAMPLES_SHOWN:
        outs = np.array(reports[0]["outputs_final"])
        for i, (o, y) in enumerate(zip(outs, cfg.task.y, strict=True)):
            print(f"  example {i}: output {np.array2string(o, precision=4)} V, "
                  f"target {np.array2string(y, precision=4)} V")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="clln", description="FPGA digital twins of self-learning analog networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a network with a golden model",
                       description="Train CONFIG (a TOML path or a built-in name: "
                       f"{', '.join(config_mod.builtin_names())}) with a golden model.")
    p.add_argument("config")
    p.add_argument("--model", choices=MODELS, help="default quasistatic (with --resume: "
                   "the checkpoint's)")
    p.add_argument("--epochs", type=whole_number(0, config_mod.MAX_EPOCHS),
                   help="override learning.epochs (with --resume: epochs of this run, "
                   "default those the checkpointed run had left)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=whole_number(0, config_mod.MAX_SEED),
                       help="override learning.seed")
    seeds.add_argument("--seeds", type=_seed_range, metavar="A-B",
                       help="train seeds A to B at once")
    p.add_argument("--plot", metavar="FILE", type=plot_arg,
                   help="write a plot of the run (PNG unless FILE names another format)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_checkpoint_args(p, "none; with --resume: the resumed file")
    p.set_defaults(func=cmd_train)

    from . import cli_board, cli_hdl, cli_sweep
    cli_hdl.add_parsers(sub)
    cli_board.add_parsers(sub)
    cli_sweep.add_parsers(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if sys.stdout is None:                  # started with its standard output closed
        print("clln: error: standard output is closed: nothing could be reported",
              file=sys.stderr)
        return 2
    try:
        with exit_on_termination():
            return args.func(args)
    except CllnError as e:
        print(f"clln: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clln: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away; point stdout at nothing so that the flush at
        # exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("clln: error: standard output was closed before everything was written",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
