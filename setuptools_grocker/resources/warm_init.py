"""PID 1 of a warm compile container, and the wrapper of every compile run in it (pipeline/warm.py).

``warm_init.py --idle SECONDS``: PID 1. Reaps the processes re-parented to it and exits (ending the
container) once no other process has run for SECONDS.

``warm_init.py --run COMMAND...``: one compile, through ``docker exec`` as the build user. First the
leftovers of earlier compiles go: every other process of the user is killed (``kill(-1, SIGKILL)``: all but
PID 1 and this one; the container runs with ``no-new-privileges``, so no process of it is anyone else) and
``/tmp`` is emptied; then COMMAND runs; then its own leftovers go the same way. Exit status: COMMAND's;
70 when the container cannot be made clean (the host then removes it and compiles in a fresh one).
Standard library only.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

UNCLEAN = 70


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


def clean():
    """Kill every other process of this user, wait for them, empty /tmp; whether it worked."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while others() and time.monotonic() < deadline:
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
    return not others() and all(os.lstat(os.path.join("/tmp", e)).st_uid != os.getuid() for e in os.listdir("/tmp"))


def idle(seconds):
    def reap(*_):
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last = time.monotonic()
    while True:
        time.sleep(min(5.0, seconds))
        reap()
        if others():
            last = time.monotonic()
        elif time.monotonic() - last >= seconds:
            return 0


def main(argv):
    if argv[1] == "--idle":
        return idle(float(argv[2]))
    if not clean():
        print("[warm] the warm container could not be cleaned", flush=True)
        return UNCLEAN
    status = subprocess.run(argv[2:]).returncode
    clean()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
