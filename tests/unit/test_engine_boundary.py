"""The engine package is the one boundary to Docker, and the lowest layer: checked on the source."""
from __future__ import annotations

import ast
from pathlib import Path

import setuptools_grocker
from setuptools_grocker.engine import Engine

ROOT = Path(setuptools_grocker.__file__).parent
ENGINE = ROOT / "engine"
#: What the engine may use of grocker: leaves that know nothing of images, pipelines or deploys.
ENGINE_MAY_IMPORT = {"setuptools_grocker.errors", "setuptools_grocker.progress", "setuptools_grocker.config",
                     "setuptools_grocker.ref"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_engine_package_imports_the_docker_sdk() -> None:
    sources = [*ROOT.rglob("*.py"), *(ROOT.parent / "buildbot_grocker").rglob("*.py")]
    importers = {p.relative_to(ROOT.parent).as_posix() for p in sources
                 if any(m == "docker" or m.startswith("docker.") for m in _imports(p))}
    assert importers == {"setuptools_grocker/engine/connection.py"}


def test_the_engine_imports_no_module_above_it() -> None:
    for path in ENGINE.glob("*.py"):
        ours = {m for m in _imports(path) if m.startswith("setuptools_grocker")}
        above = {m for m in ours if not m.startswith("setuptools_grocker.engine")} - ENGINE_MAY_IMPORT
        assert not above, f"{path.name} imports {sorted(above)}"


def test_services_are_described_in_the_engine_own_type() -> None:
    # deploy builds an engine.ServiceSpec; the engine does not duck-type a deploy object.
    assert Engine.put_service.__annotations__["spec"] == "ServiceSpec"
