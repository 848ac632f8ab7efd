"""The ``clln`` command line: ties config, golden models, gateware and boards together."""

import argparse
import json
import os
import re
import sys

import numpy as np

from . import config as config_mod
from .cli_common import (
    check_run_size,
    compile_notice,
    exit_on_termination,
    plot_arg,
    progress_bar,
    warn_learning,
    whole_number,
)
from .errors import CllnError, ConfigError
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


def _check_writable(path, flag):
    from pathlib import Path
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(flag, "", f"cannot write {path}: folder {parent} does not exist")


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
    }


def cmd_train(args):
    """Train a config with a golden model and report the result."""
    from .sim.training import make_model, train
    cfg = config_mod.load(args.config)
    seeds = args.seeds if args.seeds is not None else [
        args.seed if args.seed is not None else cfg.learning.seed]
    epochs = args.epochs if args.epochs is not None else cfg.learning.epochs
    check_run_size(cfg, epochs, len(seeds), "--epochs" if args.epochs is not None
                   else f"{cfg.source}: learning.epochs")
    if args.plot:
        _check_writable(args.plot, "--plot")
    model = make_model(cfg, args.model, seeds)
    bar = progress_bar(epochs, not args.json, f"{cfg.name} ({args.model})")
    try:
        with compile_notice(bar, f"the {args.model} model's"):
            history = train(model, epochs, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    target = cfg.task.mse_target
    lrn = cfg.learning
    at_bounds = history.gates_at_bounds(lrn.gate_min, lrn.gate_max, 2.0 ** -(cfg.fixed.g_frac + 1))
    frozen = history.frozen(2.0 ** -cfg.fixed.v_frac)
    reports = [_seed_report(history, i, target, at_bounds, frozen) for i in range(len(seeds))]
    warn_learning(cfg, seeds, at_bounds, frozen,
                  f"in {epochs} epochs no output moved by more than 2**-{cfg.fixed.v_frac} V "
                  "(fixed.v_frac)", ticks=args.model != "quasistatic")
    reached = sum(r["reached_target"] for r in reports)
    if args.plot:
        from .plot import plot_training
        plot_training(cfg, history, args.plot)
    if args.json:
        out = {"config": cfg.name, "model": args.model, "epochs": epochs,
               "mse_target": target, "seconds": history.seconds, "targets": cfg.task.y.tolist()}
        if len(seeds) == 1:
            out.update(reports[0])
        else:
            out.update({k: [r[k] for r in reports] for k in reports[0]})
            out["reached"] = reached
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"{cfg.name}: {args.model} model, {epochs} epochs, {len(seeds)} seed(s), "
              f"{history.seconds:.2f} s")
        print(f"{'seed':>6} {'mse_initial':>12} {'mse_final':>12}  target {target:g} V^2")
        for r in reports:
            mark = "reached" if r["reached_target"] else "missed"
            sat = "  (saturated)" if r["saturated"] else ""
            print(f"{r['seed']:>6} {r['mse_initial']:>12.3e} {r['mse_final']:>12.3e}  {mark}{sat}")
        print(f"{reached} of {len(seeds)} seed(s) reached the error target")
        if history.example_ticks is not None:
            print(f"ticks per example: mean {history.example_ticks.mean():.1f}, "
                  f"max {history.example_ticks.max()}")
        if len(seeds) == 1:
            outs = np.array(reports[0]["outputs_final"])
            for i, (o, y) in enumerate(zip(outs, cfg.task.y, strict=True)):
                print(f"  example {i}: output {np.array2string(o, precision=4)} V, "
                      f"target {np.array2string(y, precision=4)} V")
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="clln", description="FPGA digital twins of self-learning analog networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a network with a golden model",
                       description="Train CONFIG (a TOML path or a built-in name: "
                       f"{', '.join(config_mod.builtin_names())}) with a golden model.")
    p.add_argument("config")
    p.add_argument("--model", choices=MODELS, default="quasistatic")
    p.add_argument("--epochs", type=whole_number(0, config_mod.MAX_EPOCHS),
                   help="override learning.epochs")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=whole_number(0, config_mod.MAX_SEED),
                       help="override learning.seed")
    seeds.add_argument("--seeds", type=_seed_range, metavar="A-B",
                       help="train seeds A to B at once")
    p.add_argument("--plot", metavar="FILE", type=plot_arg,
                   help="write a plot of the run (PNG unless FILE names another format)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
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
