"""Requests the edge answers 503 while it reloads, with and without the servers' state carried over.

    python benchmarks/bench_edge_reload.py [--reloads 15]

The ship tests' application (tests/integration/test_ship_release.py, on the base image) is built into an image
of this engine (removed at the end) and deployed with ``grocker deploy --publish`` as a service of its own;
four threads send requests through the edge (a new connection each, 5 ms apart) while the edge reloads
``--reloads`` times, 1.5 s apart:

* ``without``: the server-state file removed before each reload, then SIGUSR2 (the new worker starts with no
  server address and waits for its first DNS answer: what the edge did before the state file);
* ``with``: :meth:`Edge.reload` (the old worker's ``show servers state`` saved first, loaded by the new one).

Measured on the 2-core machine (2026-12-08, 15 reloads each, two runs): without, 29 of 14 039 and 22 of
11 863 requests answered 503; with, 0 of 12 893 and 0 of 12 248.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from setuptools_grocker.deploy.edge import SERVER_STATE, Edge  # noqa: E402
from setuptools_grocker.engine import Engine  # noqa: E402
from setuptools_grocker.progress import Progress  # noqa: E402
from tests.helpers import BASE_IMAGE, GROCKER, free_port  # noqa: E402
from tests.integration.test_ship_release import APP  # noqa: E402


def hammer(url: str, stop: threading.Event, codes: dict[int, int], lock: threading.Lock) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
                code = resp.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError:
            code = -1
        with lock:
            codes[code] = codes.get(code, 0) + 1
        time.sleep(0.005)


def run(engine: Engine, name: str, url: str, mode: str, reloads: int) -> dict[int, int]:
    codes: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(url, stop, codes, lock)) for _ in range(4)]
    for thread in threads:
        thread.start()
    edge = Edge(engine, name)
    try:
        for _ in range(reloads):
            if mode == "with":
                edge.reload()
            else:
                engine.exec_in(edge.container, ["rm", "-f", SERVER_STATE], echo=False)
                before = edge.pid()
                engine.signal_container(edge.container, "SIGUSR2")
                while edge.pid() == before:
                    time.sleep(0.1)
            time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return codes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=15)
    args = parser.parse_args()
    name = f"bench-reload-{uuid.uuid4().hex[:6]}"
    image = f"grocker-bench/{name}:1"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "app.py").write_text(APP.format(version="1"))
        (Path(tmp) / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY app.py /\nUSER 10001\n"
                                              'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/python3", "/app.py"]\n')
        subprocess.run(["docker", "build", "-q", "-t", image, tmp], check=True, capture_output=True)
    port = free_port()
    results = {}
    try:
        subprocess.run([*GROCKER, "deploy", image, "--name", name, "--publish", f"127.0.0.1:{port}:8000",
                        "--health-interval", "1", "--start-period", "3", "--monitor", "1", "--edge-base",
                        BASE_IMAGE], check=True)
        with Engine(Progress(quiet=True)) as engine:
            for mode in ("without", "with"):
                codes = run(engine, name, f"http://127.0.0.1:{port}/", mode, args.reloads)
                results[mode] = {"requests": sum(codes.values()), "503": codes.get(503, 0), "codes": codes}
    finally:
        subprocess.run([*GROCKER, "stop", name], capture_output=True)
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
