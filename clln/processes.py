"""External tools as child processes that never outlive clln.

Every tool clln starts (the YoWASP Yosys, nextpnr and packers of a board build, Yosys
flattening a netlist, Icarus and Verilator with ``make`` and the simulation binaries
under cocotb, openFPGALoader) is started by :func:`started` or :func:`run`. Each runs in
a process group (a session) of its own, so that a signal to clln alone does not reach it
and one ``killpg`` reaches the tool and everything it started. Three things end the
groups:

- :func:`stop` and :func:`stop_all`: SIGTERM to the group, SIGKILL after a grace period.
  The CLI calls :func:`stop_all` on every way out, SIGINT, SIGTERM and SIGHUP included
  (``cli_common.exit_on_termination``), and so does ``atexit``.
- A watchdog process, started with the first tool: clln tells it each group it starts
  and ends through a pipe; when the pipe closes without a word, clln has died (even of
  SIGKILL), and the watchdog ends every group still open, grandchildren included.
- ``PR_SET_PDEATHSIG`` (Linux): the kernel sends SIGKILL to a tool the moment the
  thread that started it dies, even before the watchdog has read the end of its pipe.

The core module imports nothing of clln.
"""

import atexit
import contextlib
import ctypes
import inspect
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["started", "run", "stop", "stop_all", "running"]

#: Signals that end clln; they are held back while a group is started or stopped, so
#: that no group is left unregistered or half-stopped.
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds between SIGTERM and SIGKILL.
GRACE_SECONDS = 2.0
_POSIX = os.name == "posix"
_PR_SET_PDEATHSIG = 1


def _group_alive(pgid):
    """Whether a process of group ``pgid`` still runs. Zombies do not count: an orphan
    waits as one until init reaps it, which some inits do only now and then. (Its source
    is also the watchdog's.)"""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    if not os.path.isdir("/proc/self"):
        return True
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except (OSError, ValueError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


#: The watchdog: reads ``+PGID`` / ``-PGID`` lines; at the end of its input (clln has
#: exited, whatever the way) it ends the groups still listed: SIGTERM, then SIGKILL.
#: Self-contained (``python -I -c``): it imports nothing that could fail to load.
WATCHDOG = r"""
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    try:
        pgid = int(line[1:])
    except ValueError:
        continue
    if line[0] == "+":
        groups.add(pgid)
    else:
        groups.discard(pgid)

ALIVE
for sig, grace in ((signal.SIGTERM, GRACE), (signal.SIGKILL, GRACE)):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except OSError:
            groups.discard(g)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)
        groups = {g for g in groups if _group_alive(g)}
""".replace("GRACE", repr(GRACE_SECONDS)).replace("ALIVE", inspect.getsource(_group_alive))

_lock = threading.RLock()
_live = {}            # group id (the leader's pid) -> Popen
_watchdog = None


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl      # libc, linked into Python
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    return prctl


# resolved once, in the parent: the child between fork and exec only calls it
_prctl = _load_prctl()


def _child_setup(parent):
    """Run in the child between fork and exec (``preexec_fn``): die with the parent's
    thread, and take back the signals the parent held while starting it."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:          # the parent died before prctl took effect
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATING)


@contextlib.contextmanager
def _signals_held():
    """Hold back SIGINT, SIGTERM and SIGHUP in this thread (POSIX); they arrive after."""
    if not _POSIX:
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _tell_watchdog(line):
    """Send a line to the watchdog, starting it (again) if it is not there."""
    global _watchdog
    for _ in range(2):
        if _watchdog is None or _watchdog.poll() is not None:
            _watchdog = subprocess.Popen(
                [sys.executable, "-I", "-c", WATCHDOG], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                start_new_session=True, text=True)
            line = "".join(f"+{g}\n" for g in _live)   # the new one learns every group
        try:
            _watchdog.stdin.write(line)
            _watchdog.stdin.flush()
            return
        except (BrokenPipeError, OSError, ValueError):
            _watchdog = None


def _spawn(args, kwargs):
    for key in ("start_new_session", "process_group", "preexec_fn"):
        if key in kwargs:
            raise TypeError(f"clln.processes sets {key} itself")
    with _lock, _signals_held():
        if _POSIX:
            parent = os.getpid()
            proc = subprocess.Popen(args, start_new_session=True, **kwargs,
                                    preexec_fn=lambda: _child_setup(parent))
            _live[proc.pid] = proc
            _tell_watchdog(f"+{proc.pid}\n")
        else:
            flags = kwargs.pop("creationflags", 0) | subprocess.CREATE_NEW_PROCESS_GROUP
            proc = subprocess.Popen(args, creationflags=flags, **kwargs)
            _live[proc.pid] = proc
    return proc


def _end_group(proc, grace):
    """SIGTERM to the group, SIGKILL after ``grace`` s; reap the leader."""
    if not _POSIX:
        if proc.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                           capture_output=True)
        proc.wait()
        return
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (proc.poll() is None or _group_alive(pgid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None or _group_alive(pgid):
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)     # tools that ignore SIGTERM
    proc.wait()


def stop(proc, grace=GRACE_SECONDS):
    """End ``proc``'s process group (if anything of it still runs) and forget it.

    Leftovers of a tool that exited (a process it put in the background) are ended too.
    """
    with _lock, _signals_held():
        try:
            _end_group(proc, grace)
        finally:
            if _live.pop(proc.pid, None) is not None and _POSIX:
                _tell_watchdog(f"-{proc.pid}\n")


def stop_all(grace=GRACE_SECONDS):
    """End every process group started here that still runs (on any way out of clln)."""
    with _lock:
        procs = list(_live.values())
    for proc in procs:
        stop(proc, grace)


def running():
    """The processes started here and not yet stopped (group leaders), oldest first."""
    with _lock:
        return list(_live.values())


@contextlib.contextmanager
def started(args, grace=GRACE_SECONDS, **popen_kwargs):
    """Start ``args`` (as :class:`subprocess.Popen` takes them) in a process group of its
    own; on leaving the block the group is ended if it still runs.

    Yields
    ------
    subprocess.Popen
    """
    proc = _spawn(args, popen_kwargs)
    try:
        yield proc
    finally:
        try:
            stop(proc, grace)
        finally:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def run(args, *, input=None, timeout=None, check=False, **popen_kwargs):
    """:func:`subprocess.run` in a process group of its own, ended on any way out.

    ``capture_output=True`` captures stdout and stderr; ``timeout`` ends the group and
    raises :class:`subprocess.TimeoutExpired`; ``check`` raises
    :class:`subprocess.CalledProcessError` on a non-zero exit code.
    """
    if popen_kwargs.pop("capture_output", False):
        popen_kwargs["stdout"] = popen_kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        popen_kwargs["stdin"] = subprocess.PIPE
    with started(args, **popen_kwargs) as proc:
        out, err = proc.communicate(input, timeout=timeout)
    result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _at_exit():
    """End what still runs, then let the watchdog go (it exits at the end of its input)."""
    stop_all()
    if _watchdog is not None:
        with contextlib.suppress(OSError):
            _watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            _watchdog.wait(timeout=1)


atexit.register(_at_exit)
