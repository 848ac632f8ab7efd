"""No process outlives clln (``clln.processes``): every tool runs in a process group of its
own that clln ends on SIGINT, SIGTERM and SIGHUP, and that its watchdog ends when clln is
killed outright."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clln import processes
from clln.sim.benches.runner import controlled_runner

CLLN = [sys.executable, "-m", "clln.cli"]


def inside(folder):
    """(pid, command line) of every process whose working folder is ``folder`` or below
    (read from /proc/*/cwd)."""
    folder = str(Path(folder).resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue                        # gone, or not ours to read
        if (cwd == folder or cwd.startswith(folder + os.sep)) and cmd:
            found.append((int(proc.name), cmd))
    return found


def wait_for(predicate, timeout, poll=0.1):
    """Poll ``predicate`` until it is true or ``timeout`` s pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(poll)


def survivors(folder, after):
    """What still runs in ``folder`` ``after`` s from now (empty as soon as nothing does)."""
    wait_for(lambda: not inside(folder), after)
    return inside(folder)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def default_sigint():
    """SIGINT as a terminal gives it: a pytest-xdist worker or a non-interactive shell may
    run with SIGINT ignored, which children inherit (POSIX), and clln keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.build
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                 signal.SIGKILL], ids=lambda s: s.name)
def test_build_tools_end_with_clln(tmp_path, sig):
    """A real ``clln build`` (paper-xor's serial system on the iCEBreaker, the quickest to
    reach its tools) gets ``sig`` while Yosys runs: 5 s later no process runs in the build
    folder, no bitstream is there and the folder is marked incomplete."""
    build = tmp_path / "build"
    # stderr to a file: a pipe would wait for every tool that inherited it
    with open(tmp_path / "stderr", "w") as err, subprocess.Popen(
            CLLN + ["build", "paper-xor", "--board", "icebreaker", "--fabric", "serial",
                    "--build-dir", "build"], cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=err, preexec_fn=default_sigint) as clln:
        tools = wait_for(lambda: [c for _, c in inside(build) if "yosys" in c], 120)
        assert tools, (tmp_path / "stderr").read_text()
        time.sleep(0.5)
        clln.send_signal(sig)
        signalled = time.monotonic()
        code = clln.wait(timeout=30)
    time.sleep(max(0.0, 5 - (time.monotonic() - signalled)))
    assert inside(build) == []
    assert code == (-sig if sig == signal.SIGKILL else 128 + sig), \
        (tmp_path / "stderr").read_text()
    assert (build / "top.incomplete").exists() and not (build / "top.bin").exists()


@pytest.mark.sim
def test_simulator_ends_with_a_killed_clln(tmp_path):
    """``clln verify`` killed outright (SIGKILL) while Icarus' vvp runs under cocotb: 5 s
    later nothing runs in its build folder."""
    build = tmp_path / "verify"
    with open(tmp_path / "stderr", "w") as err, subprocess.Popen(
            CLLN + ["verify", "paper-xor", "--sim", "icarus", "--ticks", "1000000",
                    "--build-dir", str(build)], cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=err) as clln:
        sims = wait_for(lambda: [c for _, c in inside(build) if c.startswith("vvp")], 120)
        assert sims, (tmp_path / "stderr").read_text()
        clln.kill()
        killed = time.monotonic()
        assert clln.wait(timeout=30) == -signal.SIGKILL
    time.sleep(max(0.0, 5 - (time.monotonic() - killed)))
    assert inside(build) == []


def child(tmp_path, body):
    """A Python child that runs ``body`` (with ``processes`` imported) in ``tmp_path``,
    prints ``ready`` and waits."""
    program = ("import sys, time\nfrom clln import processes\n" + body +
               "\nprint('ready', flush=True)\ntime.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-c", program], cwd=tmp_path / "..",
                            stdout=subprocess.PIPE, text=True)


def test_watchdog_ends_groups_of_a_killed_parent(tmp_path):
    """SIGKILL to the parent: the watchdog ends the tool and the process the tool started
    (a grandchild, which the parent-death signal does not reach) within a second."""
    work = tmp_path / "work"
    work.mkdir()
    body = (f"tool = processes.started(['sh', '-c', 'sleep 60 & sleep 60'], "
            f"cwd={str(work)!r})\ntool.__enter__()")
    with child(tmp_path, body) as parent:
        try:
            assert parent.stdout.readline() == "ready\n"
            assert wait_for(lambda: len(inside(work)) == 3, 5), inside(work)  # sh, 2 sleeps
        finally:
            parent.kill()
    assert survivors(work, 5) == []


def test_stop_escalates_to_sigkill(tmp_path):
    """A tool that ignores SIGTERM is killed after the grace period."""
    with processes.started(["sh", "-c", "trap '' TERM; echo up; sleep 60"], cwd=tmp_path,
                           stdout=subprocess.PIPE, text=True, grace=0.3) as proc:
        assert proc.stdout.readline() == "up\n"
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3
    assert proc.returncode == -signal.SIGKILL and survivors(tmp_path, 2) == []
    assert proc not in processes.running()


def test_run_returns_and_times_out(tmp_path):
    """``run`` is ``subprocess.run`` in a group of its own: output, exit code, timeout."""
    done = processes.run(["sh", "-c", "cat; exit 3"], input="abc", capture_output=True,
                         text=True, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (3, "abc")
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3, cwd=tmp_path)
    assert survivors(tmp_path, 3) == []


def test_cocotb_commands_run_in_groups_of_their_own(tmp_path):
    """The simulators' commands (through cocotb's runner) each get a session of their own,
    so that they are ended with clln and not left running."""
    runner = controlled_runner("icarus")
    runner.env = dict(os.environ)
    probe = "import os; print(os.getsid(0), os.getpgid(0), os.getpid())"
    with open(tmp_path / "log", "w") as log:
        runner._execute_cmds([[sys.executable, "-c", probe]], tmp_path, log)
    sid, pgid, pid = map(int, (tmp_path / "log").read_text().split())
    assert sid == pgid == pid != os.getsid(0)
    with pytest.raises(RuntimeError, match="return code: 4"):
        runner._execute_cmds([["sh", "-c", "exit 4"]], tmp_path)
