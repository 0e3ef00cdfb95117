"""A one-line change in a real application, rebuilt and smoke-tested: grocker against hand-written Dockerfiles.

    python benchmarks/bench_oneline.py [--runs 5] [--json F] [--baseline SRC]

Workload: the corpus's ``flask-app`` (benchmarks/realworld/projects/flask-app: Flask served by waitress,
9 wheels, pure Python). After one warm-up build each, every run appends a comment to
``flask_app/__init__.py`` of each tool's own copy and rebuilds, smoke test included; the tools take turns
within a run, so they share the machine's state. Medians of ``--runs``.

- ``grocker``: ``grocker build`` (its smoke test: ``check`` and the HTTP probe).
- ``baseline`` (with ``--baseline SRC``): the same, with the setuptools-grocker found in the source tree
  SRC (another version, e.g. ``git archive main | tar -x -C SRC``), on a copy of its own.
- ``plain``: a plain multi-stage Dockerfile: a builder stage ``pip install``s the project (so its whole
  closure, resolved again) into a venv, the runtime stage copies the venv.
- ``best``: the best hand-written one: the pinned closure (grocker's resolved versions, as a requirements
  file) installed into a venv in a stage and layer of their own, cached; the runtime stage copies that venv,
  then copies the project and installs it last with ``pip install --no-deps --no-build-isolation``.

Both Dockerfiles build FROM the compiler and root images grocker uses (the engine has no Docker Hub), run as
the root image's non-root user, and are built by the classic builder, like grocker's calls. Their smoke test
is the same HTTP probe (``/health`` answering 200) in a container of the new image.
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
import urllib.request
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from setuptools_grocker.pipeline.pipconf import forward  # noqa: E402
from setuptools_grocker.pipeline.warm import scope_label  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "benchmarks" / "realworld" / "projects" / "flask-app"
CHANGE = "flask_app/__init__.py"
CMD = '["/opt/venv/bin/waitress-serve", "--listen=0.0.0.0:8080", "--call", "flask_app:create_app"]'
TOOLS = ("grocker", "plain", "best")


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def plain_dockerfile(compiler: str, root: str, cert: bool) -> str:
    ca = "COPY ca.crt /etc/bench-ca.crt\nENV PIP_CERT=/etc/bench-ca.crt\n" if cert else ""
    return (f"FROM {compiler} AS builder\n{ca}ENV PIP_DISABLE_PIP_VERSION_CHECK=1\n"
            "COPY app /src\n"
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir /src\n"
            f"\nFROM {root}\nCOPY --from=builder /opt/venv /opt/venv\nUSER app\nCMD {CMD}\n")


def best_dockerfile(compiler: str, root: str, cert: bool) -> str:
    ca = "COPY ca.crt /etc/bench-ca.crt\nENV PIP_CERT=/etc/bench-ca.crt\n" if cert else ""
    return (f"FROM {compiler} AS deps\n{ca}ENV PIP_DISABLE_PIP_VERSION_CHECK=1\n"
            "COPY requirements.txt /requirements.txt\n"
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r /requirements.txt\n"
            f"\nFROM {root}\nENV PIP_DISABLE_PIP_VERSION_CHECK=1\n"
            "COPY --from=deps /opt/venv /opt/venv\n"
            "COPY app /src\n"
            "RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src\n"
            f"USER app\nCMD {CMD}\n")


def probe(image: str, timeout: float = 60) -> None:
    """The alternatives' smoke test: a container of the image answers 200 on /health."""
    cid = sh("docker", "run", "-d", "-p", "127.0.0.1::8080", image).stdout.strip()
    try:
        port = sh("docker", "port", cid, "8080/tcp").stdout.split(":")[-1].strip()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{image} did not answer on /health: {sh('docker', 'logs', cid).stderr[-2000:]}")
            time.sleep(0.05)
    finally:
        sh("docker", "rm", "-f", cid, check=False)


def root_of(image: str) -> str | None:
    """The grocker root image that ``image`` was assembled on: the one whose layers start its layers."""
    def layers(ref: str) -> list[str]:
        return json.loads(sh("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref).stdout)

    mine = layers(image)
    for ref in sh("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "grocker/root").stdout.split():
        theirs = layers(ref)
        if mine[:len(theirs)] == theirs:
            return ref
    return None


class Bench:
    def __init__(self, tmp: Path, run_id: str, baseline: Path | None) -> None:
        self.tmp, self.run_id, self.baseline = tmp, run_id, baseline
        self.tools = (*TOOLS, "baseline") if baseline else TOOLS
        self.apps = {tool: tmp / tool / "flask-app" for tool in ("grocker", "baseline")}
        self.grocker_app = self.apps["grocker"]
        self.alt = {tool: tmp / tool for tool in ("plain", "best")}
        for app in self.apps.values():
            shutil.copytree(PROJECT, app)
        for ctx in self.alt.values():
            shutil.copytree(PROJECT, ctx / "app")
        self.report = tmp / "report.json"
        self.tags = {tool: f"bench-oneline/{tool}:{run_id}" for tool in (*TOOLS, "baseline")}

    def grocker(self, *extra: str, level: str = "-q", tool: str = "grocker") -> dict[str, Any]:
        start = time.monotonic()
        # Each version runs as installed, with its bytecode (written by the warm-up run): a shell that sets
        # PYTHONDONTWRITEBYTECODE would otherwise time the compilation of grocker's own modules at every run.
        env = {"PYTHONDONTWRITEBYTECODE": ""}
        if tool == "baseline":
            env["PYTHONPATH"] = str(self.baseline)
        proc = sh(sys.executable, "-m", "setuptools_grocker", level, "build", str(self.apps[tool]),
                  "--tag", self.tags[tool], "--report", str(self.report), *extra, env=env,
                  cwd=self.tmp)  # not the repository: `-m` would import the package from the working directory
        wall = time.monotonic() - start
        project = json.loads(self.report.read_text())["projects"][0]
        return {"wall": wall, "stages": project["stages"], "closure": project.get("closure"),
                "containers": project["containers_started"], "status": project["status"],
                "distributions": project["distributions"], "output": proc.stdout + proc.stderr}

    def alternative(self, tool: str) -> dict[str, Any]:
        start = time.monotonic()
        sh("docker", "build", "-q", "-t", self.tags[tool], str(self.alt[tool]), env={"DOCKER_BUILDKIT": "0"})
        built = time.monotonic()
        probe(self.tags[tool])
        end = time.monotonic()
        return {"wall": end - start, "stages": {"build": built - start, "smoke test": end - built}}

    def prepare(self, log: Callable[[str], None]) -> None:
        log("warm-up: grocker")
        first = self.grocker(level="-v")
        logfile = re.search(r"full log: (\S+)", first["output"])
        text = Path(logfile.group(1)).read_text() if logfile else first["output"]
        compiler = re.search(r"grocker/compiler:[0-9a-f]+", text)
        root = root_of(self.tags["grocker"])
        if not (compiler and root):
            raise SystemExit("could not tell grocker's compiler and root images from its output")
        ca = forward(os.environ).env.get("PIP_CERT")
        pins = [d for d in first["distributions"] if not d.startswith("corpus-flask-app==")]
        for tool, make in (("plain", plain_dockerfile), ("best", best_dockerfile)):
            ctx = self.alt[tool]
            (ctx / "Dockerfile").write_text(make(compiler.group(0), root, bool(ca)))
            (ctx / "requirements.txt").write_text("\n".join([*pins, "setuptools>=68"]) + "\n")
            (ctx / ".dockerignore").write_text("app/build\napp/*.egg-info\n**/__pycache__\n")
            if ca:
                shutil.copy(ca, ctx / "ca.crt")
            log(f"warm-up: {tool}")
            self.alternative(tool)
        if self.baseline:
            log("warm-up: baseline")
            self.grocker(tool="baseline")

    def edit(self, tool: str, n: int) -> None:
        root = self.apps[tool] if tool in self.apps else self.alt[tool] / "app"
        with (root / CHANGE).open("a") as fh:
            # Unique to this invocation: an earlier one's layer cache (or bytecode cache) must not match.
            fh.write(f"# one-line change {n} of {self.run_id} at {time.time()}\n")

    def clean(self) -> None:
        sh("docker", "rmi", "-f", *self.tags.values(), check=False)
        # The warm compile containers of this run's copies (they would end themselves after 10 idle minutes).
        for app in self.apps.values():
            listed = sh("docker", "ps", "-aq", "--filter", f"label=io.grocker.warm-scope={scope_label(app)}",
                        check=False).stdout.split()
            if listed:
                sh("docker", "rm", "-f", *listed, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, metavar="SRC",
                        help="also time the setuptools-grocker of this source tree (another version)")
    args = parser.parse_args()

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="grocker-oneline-") as tmp:
        bench = Bench(Path(tmp), f"r{os.getpid()}-{int(time.time())}", args.baseline)
        runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in bench.tools}
        try:
            bench.prepare(log)
            for n in range(args.runs):
                for tool in bench.tools:
                    bench.edit(tool, n)
                    result = bench.grocker(tool=tool) if tool in bench.apps else bench.alternative(tool)
                    result.pop("output", None)
                    result.pop("distributions", None)
                    if tool in bench.apps and result["status"] != "built":
                        raise SystemExit(f"grocker did not rebuild after the change: {result}")
                    runs[tool].append(result)
                    log(f"run {n + 1}/{args.runs} {tool}: {result['wall']:.2f} s")
        finally:
            bench.clean()
    out = summarize(runs)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {tool: statistics.median(r["wall"] for r in rs) for tool, rs in runs.items()}
    stages: dict[str, dict[str, float]] = {}
    for tool, rs in runs.items():
        names = sorted({k for r in rs for k in r["stages"]}, key=list(rs[0]["stages"]).index)
        stages[tool] = {k: statistics.median(r["stages"].get(k, 0.0) for r in rs) for k in names}
    return {"project": "flask-app", "runs": runs, "median": medians, "stages_median": stages,
            "closure": [r.get("closure") for r in runs["grocker"]],
            "containers_started": [r.get("containers") for r in runs["grocker"]],
            "speedup_vs_best": medians["best"] / medians["grocker"],
            "speedup_vs_plain": medians["plain"] / medians["grocker"],
            "speedup_vs_baseline": medians["baseline"] / medians["grocker"] if "baseline" in medians else None,
            "machine": {"cpus": os.cpu_count(),
                        "docker": sh("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()}}


def markdown(out: dict[str, Any]) -> str:
    lines = ["| tool | median s | all runs s | stages (median s) |", "|---|---|---|---|"]
    for tool in out["runs"]:
        walls = ", ".join(f"{r['wall']:.2f}" for r in out["runs"][tool])
        stages = ", ".join(f"{k} {v:.2f}" for k, v in out["stages_median"][tool].items() if v >= 0.005)
        lines.append(f"| {tool} | {out['median'][tool]:.2f} | {walls} | {stages} |")
    lines.append("")
    lines.append(f"grocker: {out['speedup_vs_best']:.2f}x the speed of the best hand-written Dockerfile, "
                 f"{out['speedup_vs_plain']:.2f}x the plain one"
                 + (f", {out['speedup_vs_baseline']:.2f}x the baseline" if out.get("speedup_vs_baseline") else "")
                 + f"; closure {', '.join(map(str, out['closure']))}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
