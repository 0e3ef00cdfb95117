"""Where the time of a one-line change goes, piece by piece (issue 17: hash, wheel, layer, load, smoke test).

    python benchmarks/oneline_pieces.py [--runs 7] [--json F]

Workload: a copy of the corpus's ``flask-app`` (as bench_oneline.py), built once, then ``--runs`` times: a
comment appended to ``flask_app/__init__.py`` and ``grocker build``, in this process, each piece timed by
wrapping the function that does it (wall-clock, from the start of the interpreter). Medians. The compile
container's own pieces (the wheel, the project's bytecode) are the lines its driver logs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "benchmarks" / "realworld" / "projects" / "flask-app"

#: (piece, module, attribute): the function whose duration is the piece's.
PIECES = [
    ("hash the source", "setuptools_grocker.pipeline.project", "Source.scan"),
    ("pip options' identity", "setuptools_grocker.pipeline.pipconf", "pip_identity"),
    ("compile stage", "setuptools_grocker.pipeline.build", "compile_wheels"),
    ("  of which the compile exec", "setuptools_grocker.engine.containers", "Container.exec_streamed"),
    ("image stage: assemble", "setuptools_grocker.pipeline.build", "build_runtime_image"),
    ("  of which the SBOM", "setuptools_grocker.image.runtime", "make_sbom"),
    ("  of which bytecode", "setuptools_grocker.image.runtime", "add_bytecode"),
    ("  of which layers and config", "setuptools_grocker.image.runtime", "image_config"),
    ("  of which docker load", "setuptools_grocker.engine.images", "Images.load"),
    ("smoke test", "setuptools_grocker.pipeline.build", "smoke_test"),
    ("  of which the server's container start", "setuptools_grocker.engine.containers", "Containers.start"),
    ("  of which check + HTTP probe (exec)", "setuptools_grocker.engine.containers", "Container.exec"),
    ("wait for the server's removal", "setuptools_grocker.engine.containers", "Containers.settle"),
]

#: The build, in a child interpreter: argv[1] is a JSON of the pieces, the project, the tag and the start-up time.
CHILD = r"""
import functools, importlib, json, sys, time
T0 = time.perf_counter()
args = json.loads(sys.argv[1])
spent = {}


def wrap(piece, module, attr):
    owner = importlib.import_module(module)
    path = attr.split(".")
    for part in path[:-1]:
        owner = getattr(owner, part)
    fn = getattr(owner, path[-1])

    @functools.wraps(fn)
    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[piece] = spent.get(piece, 0.0) + time.perf_counter() - start
    setattr(owner, path[-1], timed)
    for mod in list(sys.modules.values()):  # the copies of `from module import fn`
        if len(path) == 1 and mod is not None and getattr(mod, path[-1], None) is fn:
            setattr(mod, path[-1], timed)


import setuptools_grocker.cli as cli
import setuptools_grocker.pipeline.build  # noqa: F401 (what a build imports)
spent["interpreter start and imports"] = time.perf_counter() - T0 + args["startup"]
for piece, module, attr in args["pieces"]:
    wrap(piece, module, attr)
sys.argv = ["grocker", "-v", "build", args["project"], "--tag", args["tag"]]
try:
    cli.main()
except SystemExit:
    pass
spent["total"] = time.perf_counter() - T0 + args["startup"]
print("PIECES " + json.dumps(spent))
"""


def startup() -> float:
    """The interpreter's own start (``python -c pass``), before the first line of the child runs."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_once(project: Path, tag: str, boot: float) -> tuple[dict[str, float], str]:
    args = json.dumps({"pieces": PIECES, "project": str(project), "tag": tag, "startup": boot})
    proc = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, cwd=project.parent,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    found = re.search(r"^PIECES (.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"the build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(found.group(1)), proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    boot = startup()
    with tempfile.TemporaryDirectory(prefix="grocker-pieces-") as tmp:
        project = Path(tmp) / "flask-app"
        shutil.copytree(PROJECT, project)
        tag = f"bench-pieces/flask-app:{int(time.time())}"
        try:
            run_once(project, tag, boot)  # the first build, and the warm compile container
            runs: list[dict[str, float]] = []
            logs: list[dict[str, float]] = []
            for n in range(args.runs + 1):
                with (project / "flask_app" / "__init__.py").open("a") as fh:
                    fh.write(f"# one-line change {n} at {time.time()}\n")
                spent, output = run_once(project, tag, boot)
                if n == 0:
                    continue  # the first rebuild finds no build hook waiting yet
                runs.append(spent)
                inside = {}
                wheel = re.search(r"\[compile\]\s+([0-9.]+)s$", output, re.MULTILINE)
                bytecode = re.search(r"bytecode of the project wheel: \d+ modules\s+([0-9.]+)s", output)
                if wheel:
                    inside["  in the compile container: the wheel"] = float(wheel.group(1))
                if bytecode:
                    inside["  in the compile container: the project's bytecode"] = float(bytecode.group(1))
                logs.append(inside)
        finally:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
            listed = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.grocker.warm"],
                                    capture_output=True, text=True).stdout.split()
            mine = [c for c in listed if _scope_of(c) == _scope(project)]
            if mine:
                subprocess.run(["docker", "rm", "-f", *mine], capture_output=True)
    order = ["interpreter start and imports", *[p for p, _m, _a in PIECES], "total"]
    medians = {p: statistics.median(r.get(p, 0.0) for r in runs) for p in order}
    for piece in sorted({k for log in logs for k in log}):
        medians[piece] = statistics.median(log.get(piece, 0.0) for log in logs)
    out = {"runs": runs, "inside": logs, "medians": medians}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print("| piece | median s |\n|---|---|")
    for piece, seconds in medians.items():
        print(f"| {piece} | {seconds:.3f} |")
    return 0


def _scope(project: Path) -> str:
    sys.path.insert(0, str(REPO))
    from setuptools_grocker.pipeline.warm import scope_label

    return scope_label(project)


def _scope_of(container: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", '{{index .Config.Labels "io.grocker.warm-scope"}}', container],
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())

