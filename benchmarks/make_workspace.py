"""Generate a realistic workspace: interdependent libraries and the applications built on them.

    python benchmarks/make_workspace.py DIR [--libs 40] [--apps 8] [--levels 6] [--prefix acme-] [--seed 1]

* libraries in ``levels`` levels; each library past the first level depends on one
  library of the level just below (so the graph is ``levels`` deep) and on up to four
  more from any lower level (fan-in up to 5);
* every other library has real tests (pytest) that check values computed across its
  dependencies; one library has a C extension linking libyaml (``libyaml-dev`` to build,
  ``libyaml-0-2`` to run); a few depend on small third-party packages from PyPI;
* most libraries are static PEP 621 setuptools projects; every fifth is a setup.py-only
  project (metadata from PEP 517 preparation); one uses hatchling;
* applications depend on different subsets, each with an HTTP ``server`` command and a
  smoke test on ``/health``.

The workspace root is a plain directory with a pyproject.toml declaring the members.
"""
from __future__ import annotations

import argparse
import json
import random
import textwrap
from pathlib import Path

THIRD_PARTY = ["six>=1.16", "idna>=3", "packaging>=21"]


def mod(name: str) -> str:
    return name.replace("-", "_")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def generate(root: Path, libs: int = 40, apps: int = 8, levels: int = 6, prefix: str = "ws-", seed: int = 1) -> dict:
    rng = random.Random(seed)
    levels = max(1, min(levels, libs))
    names = [f"{prefix}lib-{i:02d}" for i in range(libs)]
    level_of = {n: i * levels // libs for i, n in enumerate(names)}
    by_level: dict[int, list[str]] = {}
    for n in names:
        by_level.setdefault(level_of[n], []).append(n)
    deps: dict[str, list[str]] = {}
    for n in names:
        lvl = level_of[n]
        if lvl == 0:
            deps[n] = []
            continue
        chosen = {rng.choice(by_level[lvl - 1])}
        lower = [m for m in names if level_of[m] < lvl and m not in chosen]
        chosen.update(rng.sample(lower, k=min(len(lower), rng.randint(0, 4))))
        deps[n] = sorted(chosen)
    own = {n: i + 1 for i, n in enumerate(names)}
    value: dict[str, int] = {}
    for n in names:
        value[n] = own[n] + sum(value[d] for d in deps[n])
    c_ext = names[0]
    for i, n in enumerate(names):
        _library(root / "libs" / n, n, i, deps[n], own[n], value, c_ext=(n == c_ext),
                 third_party=THIRD_PARTY[i % len(THIRD_PARTY)] if i % 7 == 3 else None,
                 style="setup.py" if i % 5 == 4 else ("hatchling" if i == 2 else "pep621"),
                 tests=(i % 2 == 0))
    app_names = [f"{prefix}app-{i:02d}" for i in range(apps)]
    app_deps: dict[str, list[str]] = {}
    top = [n for n in names if level_of[n] >= levels - 2] or names
    for i, a in enumerate(app_names):
        picks = {top[i % len(top)]}
        picks.update(rng.sample(names, k=min(len(names), rng.randint(1, 3))))
        app_deps[a] = sorted(picks)
        _application(root / "apps" / a, a, app_deps[a], value)
    write(root / "pyproject.toml", """
        # A generated setuptools-grocker workspace.
        [tool.grocker.workspace]
        members = ["libs/*", "apps/*"]
    """)
    graph = {"libraries": {n: deps[n] for n in names}, "applications": app_deps, "levels": levels,
             "values": value, "c_extension": c_ext}
    (root / "workspace.json").write_text(json.dumps(graph, indent=2) + "\n")
    return graph


def _library(path: Path, name: str, index: int, deps: list[str], own: int, value: dict[str, int], *,
             c_ext: bool, third_party: str | None, style: str, tests: bool) -> None:
    package = mod(name)
    requires = deps + ([third_party] if third_party else [])
    imports = "".join(f"import {mod(d)}\n" for d in deps)
    total = " + ".join([str(own)] + [f"{mod(d)}.value()" for d in deps])
    body = (f'"""Generated library {name}."""\n' + imports + f'\n__version__ = "1.{index}.0"\n\n\n'
            f'def value() -> int:\n    """{own} plus the values of the dependencies."""\n    return {total}\n')
    if c_ext:
        body += "\n\ndef libyaml() -> str:\n    from ._yaml import libyaml_version\n\n    return libyaml_version()\n"
        write(path / "src" / package / "_yaml.c", """
            #define PY_SSIZE_T_CLEAN
            #include <Python.h>
            #include <yaml.h>
            static PyObject *v(PyObject *s, PyObject *a) { return PyUnicode_FromString(yaml_get_version_string()); }
            static PyMethodDef m[] = {{"libyaml_version", v, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
            static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "_yaml", NULL, -1, m};
            PyMODINIT_FUNC PyInit__yaml(void) { return PyModule_Create(&d); }
        """)
    (path / "src" / package).mkdir(parents=True, exist_ok=True)
    (path / "src" / package / "__init__.py").write_text(body)
    if tests:
        write(path / "tests" / f"test_{package}.py", f"""
            import {package}


            def test_value_across_dependencies():
                assert {package}.value() == {value[name]}
        """ + ("""

            def test_c_extension_links_libyaml():
                assert {pkg}.libyaml().startswith("0.")
        """.replace("{pkg}", package) if c_ext else ""))
    grocker = ""
    if c_ext:
        grocker = """
            [tool.grocker.system-packages]
            build = ["libyaml-dev"]
            run = ["libyaml-0-2"]
        """
    if style == "setup.py":
        write(path / "setup.py", f"""
            from setuptools import find_packages, setup

            setup(
                name="{name}",
                version="1.{index}.0",
                package_dir={{"": "src"}},
                packages=find_packages("src"),
                install_requires={json.dumps(requires)},
            )
        """)
        if grocker:
            write(path / "grocker.toml", grocker)
        return
    if style == "hatchling":
        write(path / "pyproject.toml", f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{name}"
            version = "1.{index}.0"
            dependencies = {json.dumps(requires)}

            [tool.hatch.build.targets.wheel]
            packages = ["src/{package}"]
        """ + grocker)
        return
    if c_ext:
        write(path / "setup.py", f"""
            from setuptools import Extension, setup

            setup(ext_modules=[Extension("{package}._yaml", ["src/{package}/_yaml.c"], libraries=["yaml"])])
        """)
    write(path / "pyproject.toml", f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "1.{index}.0"
        dependencies = {json.dumps(requires)}

    """ + grocker)


SERVER = '''"""HTTP server of {name} (stdlib only)."""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

{imports}

def total() -> int:
    return {total}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/health" else json.dumps({{"app": "{name}", "total": total()}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    assert total() == {expected}
    ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()
'''


def _application(path: Path, name: str, deps: list[str], value: dict[str, int]) -> None:
    package = mod(name)
    expected = sum(value[d] for d in deps)
    write(path / "src" / package / "__init__.py", f'''
        """Generated application {name}."""
        __version__ = "2.0.0"
    ''')
    imports = "".join(f"import {mod(d)}\n" for d in deps)
    total = " + ".join(f"{mod(d)}.value()" for d in deps)
    server = SERVER.format(name=name, imports=imports, total=total, expected=expected)
    (path / "src" / package / "server.py").write_text(server)
    write(path / "pyproject.toml", f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "2.0.0"
        dependencies = {json.dumps(deps)}

        [project.scripts]
        {name}-server = "{package}.server:main"

        [tool.grocker]
        ports = [8000]

        [tool.grocker.commands]
        server = "{name}-server --port 8000"

        [tool.grocker.smoke-test]
        port = 8000
        path = "/health"
    """)


def dependents(graph: dict, name: str) -> set[str]:
    """Every member of a generated workspace that depends on ``name``, directly or not."""
    edges = {**graph["libraries"], **graph["applications"]}
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for member, deps in edges.items():
            if member not in out and (name in deps or out & set(deps)):
                out.add(member)
                changed = True
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--libs", type=int, default=40)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--levels", type=int, default=6)
    parser.add_argument("--prefix", default="ws-")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    graph = generate(args.dir, args.libs, args.apps, args.levels, args.prefix, args.seed)
    print(f"{args.dir}: {len(graph['libraries'])} libraries in {graph['levels']} levels, "
          f"{len(graph['applications'])} applications")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
