"""PID 1 of a warm compile container, and the wrapper of every compile run in it (pipeline/warm.py).

``warm_init.py --idle SECONDS``: PID 1. Reaps the processes re-parented to it and exits (ending the
container) once no other process has run for SECONDS.

``warm_init.py --run COMMAND...``: one compile, through ``docker exec`` as the build user. First the
leftovers of earlier compiles go: every other process of the user is killed (``kill(-1, SIGKILL)``: all but
PID 1 and this one; the container runs with ``no-new-privileges``, so no process of it is anyone else) and
``/tmp`` is emptied; then COMMAND runs; then its own leftovers go the same way. Exit status: COMMAND's;
70 when the container cannot be made clean (the host then removes it and compiles in a fresh one). When
COMMAND asked for it (``/tmp/grocker-hook.json``: a prepared build environment's backend), a build hook is
started once the clean-up after COMMAND is done (``build_hook.py --serve``): the clean-up before the next
COMMAND spares it when it is the only other process and still waits (process name ``grocker-idle``).

``warm_init.py --exec COMMAND...``: one library's compile (wheel, tests) in the test container a workspace's
trusted libraries share (pipeline/warm.py's ``SharedContainers``), where other libraries' compiles may run
at the same moment, so nothing global is killed while they do. The wrapper makes itself the child
subreaper of what it starts (``PR_SET_CHILD_SUBREAPER``: a daemon that double-forks is re-parented to it,
not to PID 1), runs COMMAND, then kills every process below it and waits for them: nothing the library's
tests started outlives its exec. The host gives each exec its own HOME, TMPDIR and scratch directories.
``/tmp`` itself is shared while execs overlap; it is emptied, and processes left by execs that died (the
orphans of PID 1) are killed, whenever no exec runs: before a COMMAND that finds itself alone, and after
the last one (a lock, :data:`LEVEL_LOCK`, shared by running execs, exclusive while cleaning).
Standard library only.
"""
import ctypes
import fcntl
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # run with -I: the scripts beside this one are not on sys.path
import build_hook  # noqa: E402  (its request file and the process name of a hook that waits)

UNCLEAN = 70
BUILD_ENVS = ("/build-env/", "/build-envs/")
LEFTOVERS = 71  # --exec: processes the command started survived SIGKILL (its result is not to be trusted)
LEVEL_LOCK = "/tmp/.grocker-level.lock"
PR_SET_CHILD_SUBREAPER = 36


def others():
    """The PIDs of the processes other than PID 1 and this one that have not exited (zombies do not count)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                state = fh.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry))
    return found


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid, "rb") as fh:
            return fh.read().strip()
    except OSError:
        return b""


def waiting_hook():
    """The PID of a build hook waiting for the next compile (build_hook.py --serve) when it is the only other
    process: started after the previous compile's clean-up, it is no leftover of it."""
    found = others()
    return found[0] if len(found) == 1 and comm(found[0]) == build_hook.IDLE else None


def clean(spare=None):
    """Kill every other process of this user (but ``spare``), wait for them, empty /tmp; whether it worked."""
    if spare is None:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while [p for p in others() if p != spare] and time.monotonic() < deadline:
        time.sleep(0.01)
    for entry in os.listdir("/tmp"):
        path = os.path.join("/tmp", entry)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            pass
    # What another user left in /tmp (the image's own files) cannot be the build's.
    return not [p for p in others() if p != spare] and all(
        os.lstat(os.path.join("/tmp", e)).st_uid != os.getuid() for e in os.listdir("/tmp"))


def processes():
    """{pid: parent pid} of every live process (zombies excluded)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            found[int(entry)] = int(fields[1])
    return found


def descendants(root):
    """The live processes below ``root``."""
    parents = processes()
    below, changed = set(), True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in below and (ppid == root or ppid in below):
                below.add(pid)
                changed = True
    return below


def reap():
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_below():
    """Kill everything this exec started (re-parented to it as their subreaper) until none is left."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        below = descendants(os.getpid())
        if not below:
            return True
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
        reap()
    return not descendants(os.getpid())


def clean_shared():
    """With no exec running: kill what execs that died left (re-parented to PID 1) and empty /tmp (the lock
    file stays: execs about to run hold it open)."""
    for pid, ppid in processes().items():
        # ppid 0: the root of a `docker exec` (another wrapper, waiting for the lock); 1: a leftover.
        if ppid == 1 and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for entry in os.listdir("/tmp"):
        path = os.path.join("/tmp", entry)
        if path == LEVEL_LOCK:
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            pass


def shared_exec(command):
    """One library's COMMAND in the shared test container; its exit status."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("[level] cannot become a child subreaper", flush=True)
        return UNCLEAN
    lock = open(LEVEL_LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        clean_shared()  # alone: the leftovers of earlier execs go
    except OSError:
        pass
    fcntl.flock(lock, fcntl.LOCK_SH)  # waits while another exec cleans
    try:
        status = subprocess.run(command).returncode
    finally:
        killed = kill_below()
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            clean_shared()  # the last one out
            fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError:
            pass
    if not killed:
        print("[level] processes the command started could not be killed", flush=True)
        return LEFTOVERS
    return status


def idle(seconds):
    signal.signal(signal.SIGCHLD, lambda *_: reap())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last = time.monotonic()
    while True:
        time.sleep(min(5.0, seconds))
        reap()
        if [p for p in others() if comm(p) != build_hook.IDLE]:  # a waiting build hook is no work
            last = time.monotonic()
        elif time.monotonic() - last >= seconds:
            return 0


def main(argv):
    if argv[1] == "--idle":
        return idle(float(argv[2]))
    if argv[1] == "--exec":
        return shared_exec(argv[2:])
    if not clean(spare=waiting_hook()):
        print("[warm] the warm container could not be cleaned", flush=True)
        return UNCLEAN
    status = run_command(argv[2:])
    hook = hook_request()
    if clean() and hook is not None:
        start_hook(*hook)
    return status


def run_command(command):
    """COMMAND's exit status. A Python script for this interpreter (the compile driver) runs in a fork of this
    process, already started: one interpreter start less (about 25 ms of every compile)."""
    script = command[1] if len(command) > 1 else ""
    if not (os.path.realpath(command[0]) == os.path.realpath(sys.executable) and script.endswith(".py")
            and os.path.isfile(script)):
        return subprocess.run(command).returncode
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sys.argv = list(command[1:])
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                sys.stderr.write("%s\n" % (exc.code,))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def hook_request():
    """The build hook the compile asked for (build_hook.REQUEST, written by compile_driver.py): (backend, site),
    checked."""
    try:
        with open(build_hook.REQUEST) as fh:
            request = json.load(fh)
        backend, site = request["backend"], request["site"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # Only the read-only mount of a prepared build environment, and a backend as pyproject.toml names one.
    if not (isinstance(site, str) and site.startswith(BUILD_ENVS) and ".." not in site.split("/")
            and isinstance(backend, str) and re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$", backend)):
        return None
    return backend, site


def start_hook(backend, site):
    """build_hook.py --serve, for the next compile: it imports the backend now, once this compile is gone."""
    env = dict(os.environ, PYTHONPATH=site)
    subprocess.Popen([sys.executable, os.path.join(HERE, "build_hook.py"), "--serve", backend], env=env, cwd="/",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
