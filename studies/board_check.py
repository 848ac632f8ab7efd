"""One simulated-board run per family of the robustness studies, against the model.

    python studies/board_check.py [--config paper-xor] [--epochs 20] [--fold 8]
                                  [--build-dir build/board_check]

For one chip of each family (threshold, gain and twin mismatch, read noise, rule bias,
gate leak, damage) this runs ``clln run CONFIG --sim --fabric FOLD`` (the Verilated
system: UART, controller, fabric) and ``clln train CONFIG --model fixed`` for ``--epochs``
epochs and prints a markdown table: whether the gates and the outputs are the same bits,
and the final errors.
"""

import argparse
import contextlib
import io
import json
import sys
import tomllib
from pathlib import Path

from clln import config
from clln.cli import main as clln

#: Family -> the [nonideal] keys of its chip.
CHIPS = {
    "threshold mismatch": {"vt_sigma": 0.02},
    "gain mismatch": {"k_sigma": 0.1},
    "twins drawn apart": {"vt_sigma": 0.01, "twin_mismatch": True},
    "read noise": {"read_noise": 0.002},
    "rule bias": {"update_offset": 1e-4},
    "gate leak": {"gate_leak": 0.001, "gate_rest": 1.5},
    "damage": {"dead_fraction": 0.125, "stuck_fraction": 0.0625},
}


def toml_value(v):
    return str(v).lower() if isinstance(v, bool) else repr(v)


def json_of(argv):
    """Run the CLI and parse its JSON output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = clln(argv)
    if code:
        raise SystemExit(f"clln {' '.join(argv)} exited with {code}")
    return json.loads(out.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="paper-xor")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--fold", default="8")
    ap.add_argument("--build-dir", default="build/board_check")
    args = ap.parse_args(argv)
    source = config.resolve(args.config)
    text = source.read_text()
    if "nonideal" in tomllib.loads(text):
        raise SystemExit(f"{source} has a [nonideal] section already")
    build = Path(args.build_dir)
    build.mkdir(parents=True, exist_ok=True)
    print(f"{args.config}, {args.epochs} epochs, simulated board with --fabric {args.fold} "
          "against the fixed-point model\n")
    print("| chip | [nonideal] | gates equal | outputs equal | MSE board | MSE model |")
    print("|---|---|---|---|---|---|")
    for i, (family, keys) in enumerate(CHIPS.items()):
        path = build / f"chip{i}.toml"
        path.write_text(text + "\n[nonideal]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in keys.items()))
        common = [str(path), "--epochs", str(args.epochs), "--json"]
        board = json_of(["run", *common, "--sim", "--fabric", args.fold, "--sim-opt=-O0",
                         "--build-dir", str(build / f"board{i}"),
                         "--checkpoint", str(build / f"gates{i}.json")])
        model = json_of(["train", *common, "--model", "fixed"])
        shown = ", ".join(f"{k} = {toml_value(v)}" for k, v in keys.items())
        print(f"| {family} | {shown} | {board['gates_final'] == model['gates_final']} | "
              f"{board['outputs_final'] == model['outputs_final']} | "
              f"{board['mse_final']:.3e} | {model['mse_final']:.3e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
