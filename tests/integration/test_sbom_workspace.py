"""A workspace application's provenance names each internal library's commit and cache key; its SBOM marks
them internal; both are attached to the pushed image in the real registry."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import docker
import pytest

from tests.helpers import generate, grocker, remove_images

pytestmark = pytest.mark.integration


def test_workspace_application_names_its_libraries(tmp_path: Path, registry: str, run_id: str,
                                                   client: docker.DockerClient) -> None:
    root = tmp_path / "shop"
    graph = generate(root, libs=2, apps=1, levels=2, prefix=f"s{run_id[:5]}-")
    with (root / "pyproject.toml").open("a") as fh:
        fh.write(f'\n[tool.grocker]\nregistry = "{registry}"\n')
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                   check=True)
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    home = tmp_path / "cache"
    run = grocker("workspace", "build", str(root), "--push", report=tmp_path / "report.json",
                  env={"GROCKER_CACHE_HOME": str(home)})
    assert run.code == 0, run.err[-4000:]
    projects = {p["name"]: p for p in run.report["projects"]} if run.report else {}
    app = projects[next(iter(graph["applications"]))]
    pushed = str(app["image"])
    try:
        prov = grocker("provenance", pushed)  # from the registry (the reference names its host)
        assert prov.code == 0, prov.err
        statement = json.loads(prov.out)
        deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
        libraries = set(graph["libraries"])
        internal = {n[len("internal:"):]: d for n, d in deps.items() if n.startswith("internal:")}
        assert set(internal) <= libraries and internal, deps.keys()
        for name, dep in internal.items():
            assert dep["digest"] == {"gitCommit": commit}
            assert dep["annotations"]["cacheKey"] == projects[name]["key"]
        assert deps["source"]["digest"]["gitCommit"] == commit
        assert {"sha256": str(app["digest"]).split(":")[1]} in [s["digest"] for s in statement["subject"]]

        sbom = grocker("sbom", pushed)
        assert sbom.code == 0, sbom.err
        flags = {c["name"]: {p["name"]: p["value"] for p in c["properties"]}.get("grocker:internal")
                 for c in json.loads(sbom.out)["components"] if c.get("purl", "").startswith("pkg:pypi/")}
        assert {n for n, v in flags.items() if v == "true"} == {app["name"], *internal}
    finally:  # its name and the key tag it was pushed as
        remove_images(client, pushed, f"{pushed.rsplit(':', 1)[0]}:k{str(app['key'])[:16]}")
