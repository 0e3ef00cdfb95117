"""setuptools-grocker against hand-written multi-stage Dockerfiles, side by side, same run, same machine.

    python benchmarks/bench_compare.py [--libs 40] [--apps 8] [--runs 3] [--cold-runs 1] [--json F] [--write-docs]
    python benchmarks/bench_compare.py --render F.json

Workload: the generated workspace (``make_workspace.py``: 40 libraries in 6 levels, 8 apps).

The alternative is what a competent team writes by hand (see ``alternative_dockerfile``): per
application, a builder stage that runs ``pip wheel`` for the application and its internal
libraries (only those it needs are copied in, so unrelated changes hit the layer cache), and a
slim runtime stage that installs those wheels into a venv, with a non-root user; shared
toolchain images (compilers, runtime packages) built once; ``docker build`` (classic builder,
like grocker's SDK calls) for one application after another.

Scenarios, both tools: cold (no project built; grocker's root/compiler images and the
alternative's toolchain images present), no change, one-line change in a leaf library (the
library used by an application that fewest members depend on), one-line change in the root
library (most dependents); image sizes (each, and the unique bytes of all application images
together, from ``docker save``); bytes uploaded to a fresh registry by the push after the leaf
change (growth of the registry's storage). grocker also: containers started, time per stage,
cold ``--jobs 1`` against ``--jobs 2``. Medians of ``--runs`` runs (cold: ``--cold-runs``).
``--write-docs`` replaces the comparison section of docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.make_workspace import dependents, generate, mod  # noqa: E402
from setuptools_grocker.pipeline.pipconf import forward  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BASE = "debian:bookworm-slim"
ALT_BUILD = "bench-alt-toolchain:build"
ALT_RUN = "bench-alt-toolchain:run"
DOCS = REPO / "docs" / "performance.md"
START, END = "<!-- compare:start -->", "<!-- compare:end -->"


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# -- the alternative ----------------------------------------------------------------------------

def toolchain_dockerfiles(ca: str | None) -> tuple[str, str]:
    cert = ("COPY ca.crt /etc/pip-ca.crt\nENV PIP_CERT=/etc/pip-ca.crt\n" if ca else "")
    build = (f"FROM {BASE}\n"
             "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv python3-dev gcc "
             "libc6-dev libyaml-dev && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
             f"{cert}ENV PIP_DISABLE_PIP_VERSION_CHECK=1\n"
             "RUN python3 -m venv /build\n")
    run = (f"FROM {BASE}\n"
           "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv libyaml-0-2 "
           "&& apt-get clean && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --create-home app\n")
    return build, run


def alternative_dockerfile(app: str, libs: list[str]) -> str:
    """What a competent team writes for one application (context: the workspace root)."""
    copies = "".join(f"COPY libs/{lib} /src/libs/{lib}\n" for lib in libs)
    paths = " ".join(f"/src/libs/{lib}" for lib in libs)
    return (f"FROM {ALT_BUILD} AS builder\n"
            "LABEL bench.alt=1\n"
            f"{copies}COPY apps/{app} /src/apps/{app}\n"
            f"RUN /build/bin/pip wheel --use-pep517 --wheel-dir /wheels {paths} /src/apps/{app}\n"
            f"\nFROM {ALT_RUN}\n"
            "COPY --from=builder /wheels /tmp/wheels\n"
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --no-index "
            f"--find-links /tmp/wheels {app} && rm -rf /tmp/wheels\n"
            "USER app\n"
            f'CMD ["/opt/venv/bin/{app}-server", "--port", "8000"]\n')


class Alternative:
    def __init__(self, root: Path, graph: dict[str, Any], tmp: Path) -> None:
        self.root, self.graph, self.tmp = root, graph, tmp
        self.closure = {a: sorted(self._closure(a)) for a in graph["applications"]}
        (root / ".dockerignore").write_text(".grocker\n**/__pycache__\n**/*.egg-info\n**/build\n")
        self.dockerfiles = tmp / "dockerfiles"
        self.dockerfiles.mkdir(exist_ok=True)
        for app, libs in self.closure.items():
            (self.dockerfiles / f"{app}.Dockerfile").write_text(alternative_dockerfile(app, libs))

    def _closure(self, app: str) -> set[str]:
        out: set[str] = set()
        todo = list(self.graph["applications"][app])
        while todo:
            lib = todo.pop()
            if lib not in out:
                out.add(lib)
                todo += self.graph["libraries"][lib]
        return out

    def toolchain(self) -> None:
        ca = forward(os.environ).env.get("PIP_CERT")
        build, run = toolchain_dockerfiles(ca)
        for tag, text in ((ALT_BUILD, build), (ALT_RUN, run)):
            ctx = self.tmp / tag.replace(":", "-")
            ctx.mkdir(exist_ok=True)
            (ctx / "Dockerfile").write_text(text)
            if ca:
                shutil.copy(ca, ctx / "ca.crt")
            sh("docker", "build", "-q", "-t", tag, str(ctx), env={"DOCKER_BUILDKIT": "0"})

    def build_all(self) -> dict[str, Any]:
        start = time.monotonic()
        for app in self.graph["applications"]:
            sh("docker", "build", "-q", "-t", f"alt/{app}:2.0.0", "-f", str(self.dockerfiles / f"{app}.Dockerfile"),
               str(self.root), env={"DOCKER_BUILDKIT": "0"})
        return {"wall": time.monotonic() - start}

    def images(self) -> list[str]:
        return [f"alt/{a}:2.0.0" for a in self.graph["applications"]]

    def clean(self) -> None:
        """Cold: the application images and the builder stages' cached layers go."""
        sh("docker", "rmi", "-f", *self.images(), check=False)
        sh("docker", "image", "prune", "-f", "--filter", "label=bench.alt=1", check=False)


# -- setuptools-grocker ------------------------------------------------------------------------

class Grocker:
    def __init__(self, root: Path, graph: dict[str, Any], tmp: Path) -> None:
        self.root, self.graph, self.report = root, graph, tmp / "grocker-report.json"

    def build_all(self, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        start = time.monotonic()
        # grocker as installed, with its bytecode (a shell's PYTHONDONTWRITEBYTECODE would time its compilation).
        sh(sys.executable, "-m", "setuptools_grocker", "-q", "workspace", "build", str(self.root),
           "--report", str(self.report), *extra, env={"PYTHONDONTWRITEBYTECODE": "", **(env or {})})
        wall = time.monotonic() - start
        data = json.loads(self.report.read_text())
        stages: dict[str, float] = {}
        for p in data["projects"]:
            for k, v in p["stages"].items():
                stages[k] = stages.get(k, 0.0) + v
        # The libraries' tests (environment and command), part of "wheel + test" and "test": what the
        # hand-written Dockerfiles do not do.
        stages["of which tests"] = sum(p.get("test_seconds") or 0.0 for p in data["projects"])
        return {"wall": wall, "built": sum(p["status"] == "built" for p in data["projects"]),
                "containers": data["containers_started"], "stages": stages}

    def images(self) -> list[str]:
        return [f"{a}:2.0.0" for a in self.graph["applications"]]

    def clean(self) -> None:
        """Cold: no member state, no application image (the cold build also passes --no-cache)."""
        shutil.rmtree(self.root / ".grocker", ignore_errors=True)
        sh("docker", "rmi", "-f", *self.images(), check=False)


# -- measurements -------------------------------------------------------------------------------

def sizes(images: list[str]) -> dict[str, Any]:
    each = {}
    for ref in images:
        each[ref.split("/")[-1].split(":")[0]] = json.loads(sh("docker", "image", "inspect", ref).stdout)[0]["Size"]
    unique = subprocess.run(f"docker save {' '.join(images)} | wc -c", shell=True, capture_output=True, text=True)
    return {"each": each, "unique": int(unique.stdout.strip() or 0)}


class Registry:
    def __init__(self, tmp: Path, name: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tmp / f"registry-{name}"
        self.dir.mkdir()
        cfg = self.dir / "config.yml"
        cfg.write_text(f"version: 0.1\nlog:\n  level: error\n"
                       f"storage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
                       f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        self.host = f"127.0.0.1:{self.port}"

    def stored(self) -> int:
        return du(self.dir / "data" / "docker" / "registry" / "v2" / "blobs")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def push_alt(alt: Alternative, registry: Registry) -> None:
    for ref in alt.images():
        target = f"{registry.host}/{ref}"
        sh("docker", "tag", ref, target)
        sh("docker", "push", "-q", target)


def edit(root: Path, lib: str, n: int) -> None:
    init = root / "libs" / lib / "src" / mod(lib) / "__init__.py"
    init.write_text(init.read_text() + f"\n# change {n} {time.time()}\n")


def median(runs: list[dict[str, Any]], key: str = "wall") -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libs", type=int, default=40)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of an earlier --json")
    parser.add_argument("--alternative-from", type=Path, metavar="JSON",
                        help="take the alternative's figures from an earlier --json (same machine) instead of "
                             "measuring them again")
    args = parser.parse_args()
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    engine = sh("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "engine": engine}}
    with tempfile.TemporaryDirectory(prefix="grocker-compare-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "ws"
        graph = generate(root, libs=args.libs, apps=args.apps, levels=6, prefix="bench-")
        libs = list(graph["libraries"])
        used = {lib for a in graph["applications"] for lib in Alternative(root, graph, tmp).closure[a]}
        leaf = min((n for n in libs if n in used and any(n in d for d in graph["applications"].values())),
                   key=lambda n: (len(dependents(graph, n)), n))
        top = max(libs, key=lambda n: (len(dependents(graph, n)), n))
        out["workspace"] = {"libraries": args.libs, "applications": args.apps, "leaf": leaf,
                            "leaf_dependents": len(dependents(graph, leaf)), "root": top,
                            "root_dependents": len(dependents(graph, top))}
        alt, gro = Alternative(root, graph, tmp), Grocker(root, graph, tmp)
        log("toolchains: grocker's root/compiler images, the alternative's two images")
        prev = json.loads(args.alternative_from.read_text()) if args.alternative_from else None
        if prev is None:
            alt.toolchain()
        sh(sys.executable, "-m", "setuptools_grocker", "-q", "workspace", "build", str(root), "--only",
           libs[0])  # makes grocker's root and compiler images
        g: dict[str, list[dict[str, Any]]] = {}
        a: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.cold_runs):
            for jobs in ("1", "2"):
                gro.clean()
                g.setdefault(f"cold --jobs {jobs}", []).append(gro.build_all("--jobs", jobs, "--no-cache"))
                log(f"grocker cold --jobs {jobs}: {g[f'cold --jobs {jobs}'][-1]['wall']:.1f}s")
            if prev is None:
                alt.clean()
                a.setdefault("cold", []).append(alt.build_all())
                log(f"alternative cold: {a['cold'][-1]['wall']:.1f}s")
        out["sizes"] = {"grocker": sizes(gro.images()),
                        "alternative": sizes(alt.images()) if prev is None else prev["sizes"]["alternative"]}
        reg_g, reg_a = Registry(tmp, "grocker"), Registry(tmp, "alternative")
        try:
            env = {"GROCKER_REGISTRY": reg_g.host}
            gro.build_all("--jobs", "2", "--push", env=env)
            if prev is None:
                push_alt(alt, reg_a)
            before = (reg_g.stored(), reg_a.stored())
            for run in range(args.runs):
                g.setdefault("no change", []).append(gro.build_all("--jobs", "2"))
                if prev is None:
                    a.setdefault("no change", []).append(alt.build_all())
                edit(root, leaf, run)
                g.setdefault("leaf change", []).append(gro.build_all("--jobs", "2"))
                if prev is None:
                    a.setdefault("leaf change", []).append(alt.build_all())
                if run == 0:
                    gro.build_all("--jobs", "2", "--push", env=env)
                    if prev is None:
                        push_alt(alt, reg_a)
                    out["pushed_after_leaf_change"] = {"grocker": reg_g.stored() - before[0],
                                                       "alternative": reg_a.stored() - before[1]}
                edit(root, top, run)
                g.setdefault("root change", []).append(gro.build_all("--jobs", "2"))
                if prev is None:
                    a.setdefault("root change", []).append(alt.build_all())
                log(f"run {run}: " + ", ".join(f"{k} {g[k][-1]['wall']:.1f}s" for k in
                                              ("no change", "leaf change", "root change")))
        finally:
            reg_g.stop()
            reg_a.stop()
            gro.clean()
            alt.clean()
            for ref in (*(f"{reg_g.host}/{i}" for i in gro.images()), *(f"{reg_a.host}/{i}" for i in alt.images())):
                sh("docker", "rmi", "-f", ref, check=False)
    out["grocker"] = {k: {"median_s": round(median(v), 2), "runs": len(v), "built": v[-1]["built"],
                          "containers": v[-1]["containers"],
                          "stages_s": {s: round(t, 1) for s, t in sorted(v[-1]["stages"].items())}}
                      for k, v in g.items()}
    out["alternative"] = {k: {"median_s": round(median(v), 2), "runs": len(v)} for k, v in a.items()}
    if prev is not None:
        out["alternative"] = prev["alternative"]
        out["pushed_after_leaf_change"]["alternative"] = prev["pushed_after_leaf_change"]["alternative"]
        out["alternative_from"] = str(args.alternative_from)
    table = markdown(out)
    print(json.dumps(out, indent=2))
    print(table)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.write_docs:
        text = DOCS.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOCS.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    return 0


def markdown(out: dict[str, Any]) -> str:
    g, a, ws = out["grocker"], out["alternative"], out["workspace"]
    mb = 1_000_000
    rows = [("cold", g["cold --jobs 2"], a["cold"]), ("no change", g["no change"], a["no change"]),
            (f"one-line change, leaf library ({ws['leaf_dependents']} dependents)", g["leaf change"],
             a["leaf change"]),
            (f"one-line change, root library ({ws['root_dependents']} dependents)", g["root change"],
             a["root change"])]
    lines = [f"Machine: {out['machine']['cpus']} cores, Docker Engine {out['machine']['engine']}, kernel "
             f"{out['machine']['kernel']}. Workspace: {ws['libraries']} libraries, {ws['applications']} applications.",
             "",
             "| scenario | grocker s (--jobs 2) | hand-written Dockerfiles s | ratio | grocker members built | "
             "grocker containers |", "|---|---|---|---|---|---|"]
    for name, gv, av in rows:
        ratio = av["median_s"] / gv["median_s"] if gv["median_s"] else float("inf")
        lines.append(f"| {name} | {gv['median_s']:.1f} | {av['median_s']:.1f} | {ratio:.1f}x faster | "
                     f"{gv['built']} | {gv['containers']} |")
    c1, c2 = g["cold --jobs 1"], g["cold --jobs 2"]
    lines += ["", f"grocker cold `--jobs 1`: {c1['median_s']:.1f} s, `--jobs 2`: {c2['median_s']:.1f} s "
                  f"({c1['median_s'] / c2['median_s']:.2f}x). Runs: cold {a['cold']['runs']}, others "
                  f"{a['no change']['runs']} (medians).", ""]
    sg, sa = out["sizes"]["grocker"], out["sizes"]["alternative"]
    lines += ["| images | grocker MB | hand-written MB |", "|---|---|---|"]
    for app in sorted(sg["each"]):
        lines.append(f"| {app} | {sg['each'][app] / mb:.1f} | {sa['each'].get(app, 0) / mb:.1f} |")
    lines.append(f"| all applications, unique bytes (`docker save`) | {sg['unique'] / mb:.1f} "
                 f"| {sa['unique'] / mb:.1f} |")
    p = out["pushed_after_leaf_change"]
    lines += ["", f"Uploaded to a registry by the push after the leaf change: grocker {p['grocker'] / mb:.2f} MB, "
                  f"hand-written {p['alternative'] / mb:.2f} MB.", "",
              "grocker time per stage (sum over members, last run):", "",
              "| scenario | " + " | ".join(sorted({s for v in g.values() for s in v['stages_s']})) + " |",
              "|---|" + "---|" * len({s for v in g.values() for s in v['stages_s']})]
    stages = sorted({s for v in g.values() for s in v["stages_s"]})
    for name, v in g.items():
        lines.append(f"| {name} | " + " | ".join(f"{v['stages_s'].get(s, 0):.1f}" for s in stages) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
