"""``python -m benchmarks.realworld``: build and run the corpus, print the table."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.realworld.harness import run_all, table, to_json
from benchmarks.realworld.projects import PROJECTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realworld", description=__doc__)
    parser.add_argument("--only", metavar="NAME,...", help="these projects only (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="the small part CI runs: " +
                        ", ".join(p.name for p in PROJECTS if p.quick))
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the images, containers' data and scratch trees")
    parser.add_argument("--list", action="store_true", help="list the projects and exit")
    args = parser.parse_args(argv)
    projects = [p for p in PROJECTS if p.quick] if args.quick else list(PROJECTS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {p.name for p in PROJECTS}]
        if unknown:
            parser.error(f"unknown project {', '.join(unknown)}; --list shows them")
        projects = [p for p in PROJECTS if p.name in wanted]
    if args.list:
        for p in projects:
            print(f"{p.name:14} {p.kind}")
        return 0
    results = run_all(projects, keep=args.keep)
    print()
    print(table(results))
    for r in results:
        if r.tests:
            print(f"\n{r.name}: test suites run by the workspace build: "
                  + "; ".join(f"{n} {s}" for n, s in r.tests.items()))
        if not r.ok:
            print(f"\n{r.name}: {r.result}\n  logs: {r.log_dir}")
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
