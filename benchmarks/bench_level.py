"""The libraries' shared test container against a container per library, interleaved in one run.

    python benchmarks/bench_level.py [--libs 40] [--apps 8] [--runs 1] [--json F] [--reports DIR]

Workload: the generated workspace (``make_workspace.py``). For each run, both settings one after the other
(``GROCKER_LEVEL_TESTS=1``, the default: every trusted library compiles and tests by ``docker exec`` in one
shared container; ``=0``: a container per library, as before), so that a busy machine slows both alike:
cold (``--jobs 2 --no-cache``, no member built), then a one-line change in the root library (the one most
members depend on). Each: wall time, members built, containers started, the sum of the ``wheel + test``
stage and of the libraries' ``test_seconds`` (their test environment and command). Medians of ``--runs``; odd
runs take the settings in the other order.
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
from benchmarks.make_workspace import dependents, generate, mod  # noqa: E402
from setuptools_grocker.pipeline.warm import scope_label  # noqa: E402

SETTINGS = {"shared": "1", "per library": "0"}


def build(root: Path, report: Path, level: str, *extra: str) -> dict[str, Any]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "setuptools_grocker", "-q", "workspace", "build", str(root),
                           "--jobs", "2", "--report", str(report), *extra], capture_output=True, text=True,
                          env={**os.environ, "GROCKER_LEVEL_TESTS": level})
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"workspace build failed:\n{proc.stderr[-4000:]}")
    data = json.loads(report.read_text())
    projects = data["projects"]
    return {"wall": wall, "built": sum(p["status"] == "built" for p in projects),
            "containers": data["containers_started"],
            "wheel_test": sum(p["stages"].get("wheel + test", 0.0) for p in projects),
            "test_seconds": sum(p.get("test_seconds") or 0.0 for p in projects)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libs", type=int, default=40)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reports", type=Path, help="keep each build's --report JSON in this directory")
    args = parser.parse_args()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="grocker-level-") as tmp_name:
        tmp = Path(tmp_name)
        graph = generate(tmp / "ws", libs=args.libs, apps=args.apps, levels=6, prefix="lvl-")
        top = max(graph["libraries"], key=lambda n: (len(dependents(graph, n)), n))
        for run in range(args.runs):
            # Alternate which setting goes first: a machine that gets busier or quieter favours neither.
            for name, level in list(SETTINGS.items())[::1 if run % 2 == 0 else -1]:
                root = tmp / f"ws-{run}-{level}"
                shutil.copytree(tmp / "ws", root)
                reports = args.reports or tmp
                reports.mkdir(parents=True, exist_ok=True)
                cold = build(root, reports / f"cold-{run}-{level}.json", level, "--no-cache")
                init = root / "libs" / top / "src" / mod(top) / "__init__.py"
                init.write_text(init.read_text() + f"\n# change {time.time()}\n")
                change = build(root, reports / f"change-{run}-{level}.json", level)
                results.setdefault(name, {}).setdefault("cold", []).append(cold)
                results[name].setdefault("root change", []).append(change)
                print(f"run {run} {name}: cold {cold['wall']:.1f}s ({cold['containers']} containers), "
                      f"root change {change['wall']:.1f}s ({change['containers']} containers)", file=sys.stderr)
                # This copy's shared test container (by its own scope label) and application images go.
                ids = subprocess.run(["docker", "ps", "-aq", "--filter",
                                      f"label=io.grocker.warm-scope={scope_label(root)}"],
                                     capture_output=True, text=True).stdout.split()
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True) if ids else None
                subprocess.run(["docker", "rmi", "-f", *(f"{a}:2.0.0" for a in graph["applications"])],
                               capture_output=True)
                shutil.rmtree(root, ignore_errors=True)
    out = {"workspace": {"libraries": args.libs, "applications": args.apps, "root": top,
                         "root_dependents": len(dependents(graph, top))},
           "results": {name: {scenario: {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
                              for scenario, runs in by.items()} for name, by in results.items()}}
    print(json.dumps(out, indent=2))
    print("| scenario | setting | wall s | built | containers | wheel + test s | of which tests s |")
    print("|---|---|---|---|---|---|---|")
    for scenario in ("cold", "root change"):
        for name in SETTINGS:
            r = out["results"][name][scenario]
            print(f"| {scenario} | {name} | {r['wall']} | {r['built']:.0f} | {r['containers']:.0f} | "
                  f"{r['wheel_test']} | {r['test_seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
