"""Root and compiler images: built here (and pushed to the shared cache) against pulled from it.

    python benchmarks/bench_shared_cache.py [--json out.json]

A private docker-registry on 127.0.0.1 is the shared cache (``build-cache``). The root and compiler
images (with uv, the default installer) are made unique to this run by a runtime user named after
it (``user`` is part of the root key), so that nothing another build uses is removed. Timed:

* ``built``: ``ensure_base_images`` with an engine lacking both images and writing on: apt in the
  root and compiler recipes, uv fetched from the index, then both pushed (push time included);
* ``pulled``: the same call after the two images were removed from the engine, writing off: both
  looked up by key, fetched through the registry API, checked and ``docker load``ed.

Printed: seconds of each, bytes pulled, and whether the image IDs are the same.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from setuptools_grocker.config import load_config  # noqa: E402
from setuptools_grocker.engine import Engine  # noqa: E402
from setuptools_grocker.image.recipes import compiler_key, ensure_base_images  # noqa: E402
from setuptools_grocker.pipeline.pipconf import forward  # noqa: E402
from setuptools_grocker.progress import Progress  # noqa: E402
from setuptools_grocker.registry.sharedcache import SharedCache  # noqa: E402
from tests.helpers import free_port, start_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        root = Path(tmp)
        port = free_port()
        (root / "registry").mkdir()
        registry = start_registry(root / "registry", port)
        repo = f"127.0.0.1:{port}/grocker-cache"
        project = root / "app"
        project.mkdir()
        config = load_config(project, environ={**os.environ, "GROCKER_USER": f"b{uuid.uuid4().hex[:8]}"})
        pip = forward(os.environ)
        figures: dict[str, object] = {}
        ids: dict[str, dict[str, str]] = {}
        try:
            with Engine(Progress(io.StringIO())) as engine:
                for run, write in (("built", True), ("pulled", False)):
                    out = io.StringIO()
                    progress = Progress(out)
                    engine.progress = progress
                    shared = SharedCache(repo, write=write, cache=root / f"cache-{run}")
                    start = time.monotonic()
                    images = ensure_base_images(engine, config, progress, pip=pip, work=root / "work", shared=shared)
                    figures[f"{run}_seconds"] = round(time.monotonic() - start, 1)
                    figures[f"{run}_origins"] = dict(images.origins)
                    pulled = [int(m) for m in re.findall(r"^pulled \S+: (\d+) bytes", out.getvalue(), re.M)]
                    if pulled:
                        figures["pulled_bytes"] = sum(pulled)
                    ids[run] = {"root": engine.image_id(images.root) or "",
                                "compiler": engine.image_id(images.compiler) or ""}
                    # The next run starts from an engine without them (children before parents).
                    pip_compiler = f"grocker/compiler:{compiler_key(images.root_key, config.build_packages, 'pip')[0]}"
                    for ref in (images.compiler, pip_compiler, images.root):
                        engine.remove_image(ref)
        finally:
            registry.terminate()
            registry.wait(timeout=20)
        figures["same_image_ids"] = ids.get("built") == ids.get("pulled")
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
