"""The PEP 517 ``build_wheel`` hook of a prepared build environment, called as a frontend does without isolation.

``build_hook.py BACKEND OUT``: import BACKEND (``module:object``, found on PYTHONPATH: the prepared build
environment), build the wheel of the working directory into OUT. Run as a script of its own directory, so the
source tree (the working directory) is not put on ``sys.path`` (the backend adds what it needs).

``build_hook.py --serve BACKEND``: the same hook, started *before* its build: in a warm compile container,
``warm_init.py`` starts it after a compile's clean-up, once every process of that compile is gone. It imports
BACKEND (setuptools: about 0.1 s of a one-line change), then waits on the abstract socket :data:`ADDRESS` for
one build: the next compile's driver sends the working directory, the output directory, its environment and
its standard output and error (file descriptors); the hook checks that it holds the backend and environment
asked for, builds, answers the exit status and exits. Its process name says whether it still waits
(:data:`IDLE`: the only process the next compile's clean-up spares) or has taken a build (:data:`BUSY`).
Standard library only.
"""
import ctypes
import importlib
import json
import os
import socket
import struct
import sys
import traceback

ADDRESS = "\0grocker-build-hook"
#: Where a compile asks warm_init.py for a hook for the next compile: {"backend": ..., "site": ...}.
REQUEST = "/tmp/grocker-hook.json"
IDLE = b"grocker-idle"
BUSY = b"grocker-busy"
PR_SET_NAME = 15


def backend_of(spec):
    module, _, obj = spec.partition(":")
    backend = importlib.import_module(module)
    for attr in filter(None, obj.split(".")):
        backend = getattr(backend, attr)
    return backend


def name_process(name):
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def same_container(conn):
    """Whether the process at the other end of ``conn`` is in this process's PID namespace (this container): the
    kernel gives PID 0 for a peer outside it (an abstract socket belongs to a network namespace, which another
    container could share)."""
    pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid > 0


def receive(conn):
    """The request and the file descriptors sent with it."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 2)
    return json.loads(data.decode()), fds


def serve(spec):
    site = os.environ.get("PYTHONPATH", "")
    backend = backend_of(spec)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(ADDRESS)
    listener.listen(1)
    name_process(IDLE)
    conn, _ = listener.accept()
    name_process(BUSY)
    listener.close()  # one build: nobody else connects
    if not same_container(conn):
        return 0
    request, fds = receive(conn)
    if request.get("backend") != spec or request.get("site") != site or len(fds) != 2:
        conn.sendall(json.dumps({"code": None}).encode())  # not the hook asked for: the driver starts one
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        backend.build_wheel(request["out"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(json.dumps({"code": code}).encode())
    return 0


def build_with_served(spec, site, cwd, out, env):
    """Build through the waiting hook (``--serve``); its exit status, or None when there is none to use."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(2)
        conn.connect(ADDRESS)
        if not same_container(conn):
            return None
        request = {"backend": spec, "site": site, "cwd": cwd, "out": out, "env": env}
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(conn, [json.dumps(request).encode()], [1, 2])
        conn.settimeout(None)  # the build takes what it takes
        answer = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        return json.loads(answer.decode()).get("code")
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] == here:
        del sys.path[0]  # the other resources (entrypoint.py...) are not the project's modules
    if argv[1] == "--serve":
        return serve(argv[2])
    backend_of(argv[1]).build_wheel(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
