"""The Python interface of clln: what every ``clln`` command does, as calls.

    import clln
    net = clln.load("paper-xor")                  # a built-in name, a TOML path or a dict
    result = net.train(model="fixed", epochs=20, seeds=range(4))
    result.mse_final                              # the fields of ``clln train --json``

Each method takes the options of its command as keywords (``--checkpoint-every`` is
``checkpoint_every``) and checks them as the command line does; a bad value raises
:class:`clln.errors.CllnError` with the command line's message. The command line parses
its flags into the same options and calls the same code (``clln.cli.train_run``,
``clln.cli_hdl.generate_run`` and ``verify_run``, ``clln.cli_board.build_run`` and
``device_run``), then prints.
"""

import argparse
from pathlib import Path

from . import config as config_mod
from .errors import ConfigError

__all__ = ["load", "Network", "Result", "sweep"]


def load(source, base_dir="."):
    """The network of a config: a built-in name, a TOML path, a
    :class:`~clln.config.Config` or a dict with the TOML file's tables (paths in it,
    such as a CSV dataset, relative to ``base_dir``)."""
    if isinstance(source, dict):
        return Network(config_mod.parse(source, "<dict>", Path(base_dir)))
    return Network(config_mod.load(source))


class Result(dict):
    """A command's JSON report, whose fields also read as attributes
    (``result.mse_final``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _options(command, config, values):
    """The argparse namespace of ``clln COMMAND`` with ``values`` (keywords) in place of
    flags: each value passes through its flag's own check (the same argparse ``type``),
    and an unknown keyword is refused."""
    from .cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices[command]._actions if a.dest != "help"}
    ns = argparse.Namespace(**{dest: a.default for dest, a in actions.items()})
    ns.config = config
    shown = sorted(set(actions) - {"config", "json"})   # the Network's config; reports returned
    for key, value in values.items():
        action = actions.get(key)
        if action is None or key == "config":
            raise ConfigError(command, key, f"not an option of clln {command}; options: "
                              f"{', '.join(shown)}")
        if value is not None and action.type is not None and not isinstance(value, Path):
            try:
                value = action.type(_flag_text(key, value))
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise ConfigError(command, key, str(e)) from None
        if action.choices is not None and value is not None and value not in action.choices:
            raise ConfigError(command, key, f"must be one of {', '.join(map(str, action.choices))}"
                              f", got {value!r}")
        setattr(ns, key, str(value) if isinstance(value, Path) else value)
    return ns


def _flag_text(key, value):
    """A keyword's value as its flag would be written (``seeds=range(0, 4)``: ``0-3``)."""
    if key == "seeds":
        seeds = list(value)
        if not seeds or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            raise argparse.ArgumentTypeError(f"consecutive seeds (range(A, B + 1)), got "
                                             f"{seeds!r:.60}")
        return f"{seeds[0]}-{seeds[-1]}"
    return str(value)


class Network:
    """A validated config and what can be done with it.

    Attributes
    ----------
    config : clln.config.Config
    """

    def __init__(self, config):
        self.config = config

    @property
    def name(self):
        return self.config.name

    def __repr__(self):
        net = self.config.network
        return f"<clln.Network {self.name}: {net.n_nodes} nodes, {net.n_edges} edges>"

    def train(self, **options):
        """Train with a golden model (``clln train``): ``model`` (``"quasistatic"``,
        ``"dynamic"``, ``"fixed"``), ``epochs``, ``seed`` or ``seeds``, ``checkpoint``,
        ``checkpoint_every``, ``resume``, ``plot``.

        Returns
        -------
        Result
            The fields of ``clln train --json``; ``history`` is the
            :class:`~clln.sim.training.History` of the run (curves and arrays).
        """
        from .cli import train_run
        args = _options("train", self.config, dict(options, json=True))
        run = train_run(args)
        _raise_failures(run.failures)
        result = Result(run.report)
        result.history = run.history
        return result

    def generate(self, directory, flat=False):
        """Write the fabric's Verilog and manifest into ``directory`` (``clln generate``);
        returns the paths and the manifest's ``info``."""
        from .cli_hdl import generate_run
        return Result(generate_run(_options("generate", self.config,
                                            {"output": directory, "flat": flat}))[1])

    def verify(self, sim="icarus", ticks=1000, build_dir=None, flat=True):
        """Compare the fabric in a Verilog simulator with the fixed-point model, tick by
        tick (``clln verify``); the report has ``mismatches`` (0 when bit-exact)."""
        from .cli_hdl import verify_run
        netlist = "flat" if flat else "hierarchical"
        return Result(verify_run(_options("verify", self.config, {
            "sim": sim, "ticks": ticks, "build_dir": build_dir, "netlist": netlist}))[1])

    def build(self, board, **options):
        """Build a bitstream of the training system (``clln build``): ``board`` and the
        options ``fabric``, ``clock``, ``pnr_clock``, ``pnr_seed``, ``baud``,
        ``max_examples``, ``build_dir``, ``program``, ``capacity`` (``"NODES:EDGES"``: a
        graph loaded at run time). Returns its report."""
        from .cli_board import build_run
        return Result(build_run(_options("build", self.config,
                                         dict(options, board=board, json=True))))

    def run(self, port=None, sim=False, **options):
        """Train on a board through ``port``, or on the simulated board with ``sim=True``
        (``clln run``): options ``epochs``, ``seed``, ``order``, ``baud``, ``timeout``,
        ``fabric`` (simulated board only), ``build_dir``, ``checkpoint``,
        ``checkpoint_every``, ``resume``, ``plot``, ``capacity`` (simulated board only)
        and ``base`` (the capacity bitstream's config). Returns its report."""
        from .cli_board import device_run
        if (port is None) == (not sim):
            raise ConfigError("run", "port", "give a port or sim=True (one of them)")
        args = _options("run", self.config, dict(options, port=port, sim=sim, json=True))
        out, failures, _ = device_run(args)
        _raise_failures(failures)
        return Result(out)


def _raise_failures(failures):
    """A side output (plot, checkpoint) that could not be written is an error here: the
    caller has the results in hand, so nothing is lost by raising."""
    if failures:
        from .errors import CllnError
        raise CllnError("; ".join(failures))


def sweep(path, out=None, workers=None, scheduler=None):
    """Run a sweep file (``clln sweep``, docs/sweep.md) and return its rows: a list of
    dicts, one per point (the columns of ``results.csv``)."""
    from . import sweeps as sweep_mod
    path = Path(path)
    out = Path(out) if out is not None else Path("sweeps") / path.stem
    return sweep_mod.run_sweep(path, out, workers=workers, scheduler=scheduler).rows
