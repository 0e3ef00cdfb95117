"""Workspace figures on the generated 40-library, 8-application workspace.

    python benchmarks/bench_workspace.py [--libs 40] [--apps 8] [--runs 3] [--json out.json]

Scenarios: cold build with ``--jobs 1`` and ``--jobs 2`` (no member built before; the
root and compiler images present), no-op rebuild, one-line change in a leaf library
(one nothing depends on), one-line change in the root library (the one with the most
dependents). Each reports wall time, members built, and containers started.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.make_workspace import dependents, generate  # noqa: E402


def build(root: Path, report: Path, *extra: str) -> dict[str, Any]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "setuptools_grocker", "-q", "workspace", "build", str(root),
                           "--report", str(report), *extra], capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"workspace build failed:\n{proc.stderr[-4000:]}")
    data = json.loads(report.read_text())
    built = [p for p in data["projects"] if p["status"] == "built"]
    stages: dict[str, float] = {}
    for p in data["projects"]:
        for k, v in p["stages"].items():
            stages[k] = stages.get(k, 0.0) + v
    return {"wall": wall, "built": len(built), "containers": data["containers_started"], "stages": stages}


def edit(root: Path, name: str, n: int) -> None:
    init = root / "libs" / name / "src" / name.replace("-", "_") / "__init__.py"
    init.write_text(init.read_text() + f"\n# change {n} {time.time()}\n")


def clean(root: Path, graph: dict[str, Any]) -> None:
    shutil.rmtree(root / ".grocker", ignore_errors=True)
    for app in graph["applications"]:
        subprocess.run(["docker", "rmi", "-f", f"{app}:2.0.0"], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--libs", type=int, default=40)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="grocker-wsbench-") as tmp:
        root = Path(tmp) / "ws"
        graph = generate(root, libs=args.libs, apps=args.apps, levels=6, prefix="bench-")
        report = Path(tmp) / "r.json"
        libs = list(graph["libraries"])
        leaf = min(libs, key=lambda n: (len(dependents(graph, n)), n))
        base = max(libs, key=lambda n: (len(dependents(graph, n)), n))
        for jobs in (1, 2):
            clean(root, graph)
            figures.setdefault(f"cold --jobs {jobs}", []).append(build(root, report, "--jobs", str(jobs)))
            print(f"cold --jobs {jobs}: {figures[f'cold --jobs {jobs}'][-1]}", flush=True)
        for run in range(args.runs):
            figures.setdefault("no-op", []).append(build(root, report, "--jobs", "2"))
            edit(root, leaf, run)
            figures.setdefault(f"leaf change ({leaf}, {len(dependents(graph, leaf))} dependents)", []).append(
                build(root, report, "--jobs", "2"))
            edit(root, base, run)
            figures.setdefault(f"root change ({base}, {len(dependents(graph, base))} dependents)", []).append(
                build(root, report, "--jobs", "2"))
            print(f"run {run} done", flush=True)
        clean(root, graph)
    out = {
        "workspace": {"libraries": args.libs, "applications": args.apps, "levels": graph["levels"]},
        "machine": {"cpus": os.cpu_count()},
        "scenarios": {k: {"median_s": statistics.median(r["wall"] for r in v), "runs": len(v),
                          "built": v[-1]["built"], "containers": v[-1]["containers"],
                          "stages_s": {s: round(t, 1) for s, t in v[-1]["stages"].items()}}
                      for k, v in figures.items()},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print("\n| scenario | median s | runs | members built | containers started |\n|---|---|---|---|---|")
    for k, v in out["scenarios"].items():
        print(f"| {k} | {v['median_s']:.1f} | {v['runs']} | {v['built']} | {v['containers']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
