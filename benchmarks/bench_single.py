"""Single-project figures: cold build, no-change rebuild, one-line-change rebuild, sizes.

    python benchmarks/bench_single.py [--runs 3] [--json out.json]

Runs the real ``grocker build`` on a copy of ``examples/demo-app`` (and its library), on
the machine's Docker Engine. "cold" removes the root and compiler images and the
project's cache first; "cold project" keeps the root/compiler images (the usual case
on a developer machine or CI worker that built any project before).
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

REPO = Path(__file__).resolve().parent.parent


def grocker(project: Path, report: Path, *extra: str) -> dict[str, Any]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "setuptools_grocker", "-q", "build", str(project),
                           "--report", str(report), *extra], capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"grocker build failed:\n{proc.stderr[-3000:]}")
    data = json.loads(report.read_text())["projects"][0]
    data["wall"] = wall
    return data


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False).stdout.strip()


def image_size(ref: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref) or 0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"cold": [], "cold project": [], "no change": [], "one-line change": []}
    containers: dict[str, int] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="grocker-bench-") as tmp:
        for run in range(args.runs):
            work = Path(tmp) / f"run{run}"
            shutil.copytree(REPO / "examples", work, ignore=shutil.ignore_patterns(".grocker"))
            app = work / "demo-app"
            report = Path(tmp) / "r.json"
            tag = f"grocker-bench/demo-app:{run}"
            if run == 0:
                # A true cold build: every image grocker made is removed, and the layer cache with it.
                for ref in docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines():
                    if ref.startswith(("grocker/", "grocker-")):
                        docker("rmi", "-f", ref)
                docker("image", "prune", "-f")
                cold = grocker(app, report, "--tag", tag)
                results["cold"].append(cold["wall"])
                containers["cold"] = cold["containers_started"]
                shutil.rmtree(app / ".grocker")
            data = grocker(app, report, "--tag", tag)
            results["cold project"].append(data["wall"])
            containers["cold project"] = data["containers_started"]
            data = grocker(app, report, "--tag", tag)
            assert data["status"] == "cached", data
            results["no change"].append(data["wall"])
            containers["no change"] = data["containers_started"]
            server = app / "src" / "grocker_demo_app" / "server.py"
            server.write_text(server.read_text() + f"\n# one-line change {run} {time.time()}\n")
            data = grocker(app, report, "--tag", tag)
            assert data["status"] == "built", data
            results["one-line change"].append(data["wall"])
            containers["one-line change"] = data["containers_started"]
            sizes["runtime image"] = image_size(tag)
            docker("rmi", tag)
        for ref in docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines():
            if ref.startswith("grocker/root:"):
                sizes.setdefault("root image", image_size(ref))
        sizes["base image"] = image_size("debian:bookworm-slim")
    medians = {k: statistics.median(v) for k, v in results.items() if v}
    out = {"seconds_median": medians, "seconds_all": results, "containers_started": containers, "bytes": sizes,
           "machine": {"cpus": os.cpu_count(), "docker": docker("version", "--format", "{{.Server.Version}}")}}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print("\n| scenario | median s | runs | containers started |\n|---|---|---|---|")
    for k, v in medians.items():
        print(f"| {k} | {v:.2f} | {len(results[k])} | {containers.get(k, '-')} |")
    print("\n| image | MB |\n|---|---|")
    for k, v in sizes.items():
        print(f"| {k} | {v / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
