"""The user's pip configuration translated for uv, and the pinned uv wheel."""
from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image import uvtool
from setuptools_grocker.pipeline.pipconf import NO_INDEX_FLAG, UV_SECRET_ENV, forward, uv_env


def test_every_forwarded_option_has_its_uv_variable(tmp_path: Path) -> None:
    cert, client, constraints, more = (tmp_path / n for n in ("ca.pem", "client.pem", "c.txt", "d.txt"))
    links = tmp_path / "wheels"
    links.mkdir()
    other = tmp_path / "other" / "simple"
    other.mkdir(parents=True)
    for f in (cert, client, constraints, more):
        f.write_text("x")
    env = {
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_INDEX_URL": "https://user:token@mirror.example/simple",
        "PIP_EXTRA_INDEX_URL": f"https://private.example/simple  file://{other}",
        "PIP_FIND_LINKS": f"{links} https://links.example/",
        "PIP_CONSTRAINT": f"{constraints} {more}",
        "PIP_CERT": str(cert), "PIP_CLIENT_CERT": str(client),
        "PIP_TRUSTED_HOST": "mirror.example private.example",
        "PIP_PRE": "true", "PIP_DEFAULT_TIMEOUT": "12.5", "PIP_RETRIES": "7",
        "PIP_PROXY": "http://proxy.example:3128",
        "PIP_ONLY_BINARY": ":all:", "PIP_NO_BINARY": "psycopg2,lxml",
    }
    uv = uv_env(forward(env).env)
    assert uv == {
        "UV_INDEX_STRATEGY": "first-index",
        "UV_DEFAULT_INDEX": "https://user:token@mirror.example/simple",
        # uv asks these first, in this order.
        "UV_INDEX": f"https://private.example/simple file://{other}",
        "UV_FIND_LINKS": f"{links},https://links.example/",
        "UV_CONSTRAINT": f"{constraints} {more}",
        "UV_BUILD_CONSTRAINT": f"{constraints} {more}",
        "SSL_CERT_FILE": str(cert), "SSL_CLIENT_CERT": str(client),
        "UV_INSECURE_HOST": "mirror.example private.example",
        "UV_PRERELEASE": "allow", "UV_HTTP_TIMEOUT": "12", "UV_HTTP_RETRIES": "7",
        "HTTPS_PROXY": "http://proxy.example:3128", "HTTP_PROXY": "http://proxy.example:3128",
        "UV_NO_BUILD": "1", "UV_NO_BINARY_PACKAGE": "psycopg2 lxml",
    }
    # What may hold a token is masked in the container's command line and output.
    assert {"UV_DEFAULT_INDEX", "UV_INDEX", "HTTPS_PROXY", "HTTP_PROXY"} <= UV_SECRET_ENV


def test_switches_off_and_package_lists(tmp_path: Path) -> None:
    uv = uv_env({"PIP_PRE": "0", "PIP_NO_INDEX": "false", "PIP_ONLY_BINARY": "numpy, scipy",
                 "PIP_NO_BINARY": ":none:"}, "unsafe-best-match")
    assert uv == {"UV_INDEX_STRATEGY": "unsafe-best-match", "UV_NO_BUILD_PACKAGE": "numpy scipy"}
    assert uv_env({"PIP_NO_INDEX": "1", "PIP_NO_BINARY": ":all:"}) == {
        "UV_INDEX_STRATEGY": "first-index", NO_INDEX_FLAG: "1", "UV_NO_BINARY": "1"}


def test_constraints_of_the_project_reach_uv_builds(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("six==1.16.0\n")
    uv = uv_env(forward({"PIP_CONFIG_FILE": "/dev/null"}, constraints).env)
    assert uv["UV_CONSTRAINT"] == uv["UV_BUILD_CONSTRAINT"] == str(constraints)


def _wheel(path: Path, payload: bytes = b"\x7fELF") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"uv-{uvtool.UV_VERSION}.data/scripts/uv", payload)
        zf.writestr(f"uv-{uvtool.UV_VERSION}.dist-info/METADATA", "Name: uv\n")
    return path


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _wheel(tmp_path / f"uv-{uvtool.UV_VERSION}-py3-none-manylinux_2_17_x86_64.whl")
    with pytest.raises(ImageBuildError) as exc:
        uvtool.check_uv_wheel(wheel, "x86_64")
    assert "not the pinned" in exc.value.one_line() and "\n" not in exc.value.one_line()
    with pytest.raises(ImageBuildError, match="no pinned uv wheel for the architecture 'riscv64'"):
        uvtool.check_uv_wheel(wheel, "riscv64")
    # The pinned one passes, and only its uv executable is taken, executable.
    monkeypatch.setitem(uvtool.UV_WHEEL_SHA256, "x86_64", hashlib.sha256(wheel.read_bytes()).hexdigest())
    uvtool.check_uv_wheel(wheel, "x86_64")
    out = tmp_path / "ctx"
    out.mkdir()
    binary = uvtool.extract_uv(wheel, out)
    assert binary.read_bytes() == b"\x7fELF" and binary.stat().st_mode & 0o777 == 0o755


def test_the_compiler_key_holds_the_uv_version_and_hashes() -> None:
    identity = uvtool.uv_identity()
    assert identity[0] == uvtool.UV_VERSION == "0.13.10"
    assert {i.split("=")[0] for i in identity[1:]} == {"x86_64", "aarch64"}


# What uv 0.13 prints (NO_COLOR) when it fails, as the compile container shows it.
UV_NOT_FOUND = """[compile] + uv pip compile --quiet --generate-hashes closure.in
error: No solution found when resolving dependencies
  cause: Because grocker-nonexistent-pkg was not found in the package registry and you require \
grocker-nonexistent-pkg, we can conclude that your requirements are unsatisfiable.
[compile] uv failed with exit code 1
"""
UV_NO_VERSION = """error: No solution found when resolving dependencies
  cause: Because there is no version of six==99.0 and you require six==99.0, we can conclude that your \
requirements are unsatisfiable.
"""
UV_HEADER = """[compile] + uv build --wheel --out-dir /tmp/grocker-build/project-wheel /tmp/grocker-build/src
Building wheel...
running build_ext
x86_64-linux-gnu-gcc -fPIC -I/usr/include/python3.11 -c badc.c -o build/temp/badc.o
badc.c:1:10: fatal error: yaml.h: No such file or directory
compilation terminated.
error: Command '['x86_64-linux-gnu-gcc', '-c', 'badc.c']' returned non-zero exit status 1.
error: Failed to build `/tmp/grocker-build/src`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.build_wheel` failed (exit status: 1)

hint: This error likely indicates that you need to install a library that provides `yaml.h`
[compile] uv failed with exit code 1
"""

UV_SYSTEM_EXIT = """[compile] project wheel (prepared build environment, setuptools.build_meta:__legacy__)
an earlier attempt's line
[compile] the prepared build environment failed; building in an isolated one
[compile] + uv build --wheel --out-dir /tmp/grocker-build/project-wheel /tmp/grocker-build/src
Building wheel...
this setup.py is broken on purpose
error: Failed to build `/tmp/grocker-build/src`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_wheel` failed (exit status: 1)
[compile] uv failed with exit code 2
"""


def test_uv_failures_give_one_telling_line_and_the_hint() -> None:
    from setuptools_grocker.pipeline.compile import compile_failure_hint, pip_failure_cause

    cause = pip_failure_cause(UV_NOT_FOUND)
    assert cause is not None and cause.startswith("Because grocker-nonexistent-pkg was not found")
    assert "grocker-nonexistent-pkg and that the index" in (compile_failure_hint(UV_NOT_FOUND) or "")
    assert (pip_failure_cause(UV_NO_VERSION) or "").startswith("Because there is no version of six==99.0")
    assert "check the name and version of six==99.0" in (compile_failure_hint(UV_NO_VERSION) or "")
    assert pip_failure_cause(UV_HEADER) == "badc.c:1:10: fatal error: yaml.h: No such file or directory"
    # A backend that says why without the word "error", after a prepared build environment failed first.
    assert pip_failure_cause(UV_SYSTEM_EXIT) == "this setup.py is broken on purpose"
    assert "system-packages.build" in (compile_failure_hint(UV_HEADER) or "")
    other = "error: Failed to fetch: `https://mirror.example/simple/six/`\n  cause: HTTP status server error (503)\n"
    assert pip_failure_cause(other) == ("Failed to fetch: `https://mirror.example/simple/six/`: "
                                        "HTTP status server error (503)")


def test_a_version_missing_from_the_first_index_names_the_index_strategy() -> None:
    from setuptools_grocker.pipeline.compile import compile_failure_hint

    output = ("error: No solution found when resolving dependencies\n  cause: Because there is no version of "
              "packaging==24.0 and app==1.0 depends on packaging==24.0, we can conclude that app==1.0 cannot be "
              "used.\n\nhint: `packaging` was found on ***, but not at the requested version (packaging==24.0). A "
              "compatible version may be available on a subsequent index (e.g., ***).\n")
    hint = compile_failure_hint(output) or ""
    assert "has no packaging==24.0" in hint and 'index-strategy = "unsafe-best-match"' in hint


def _driver() -> Any:
    import importlib.util

    from setuptools_grocker.image.recipes import RESOURCES

    # The driver ranks wheel tags with pip's packaging, as in the build venv; here importing pip may warn
    # about setuptools' distutils shim (a test process concern, not the container's).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pip._vendor.packaging.tags  # noqa: F401
    spec = importlib.util.spec_from_file_location("compile_driver", RESOURCES / "compile_driver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_locked_closure_leaves_out_the_wheels_of_this_run() -> None:
    locked = ("attrs==26.1.0 \\\n    --hash=sha256:aaa \\\n    --hash=sha256:bbb\n"
              "/tmp/grocker-build/project-wheel/app-1.0-py3-none-any.whl \\\n    --hash=sha256:ccc\n"
              "lib @ file:///internal/0/lib-2.0-py3-none-any.whl \\\n    --hash=sha256:ddd\n"
              "six==1.17.0 \\\n    --hash=sha256:eee\n")
    own = {"/tmp/grocker-build/project-wheel/app-1.0-py3-none-any.whl", "/internal/0/lib-2.0-py3-none-any.whl"}
    entries = _driver().locked_entries(locked, own)
    # pip's "lib @ file://..." form: the name comes first; the path is what counts.
    assert entries[0] == "attrs==26.1.0 --hash=sha256:aaa --hash=sha256:bbb"
    assert entries[-1] == "six==1.17.0 --hash=sha256:eee"
    assert not any("project-wheel" in e for e in entries)


def test_wheels_fetched_or_built_are_kept_and_taken_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = _driver()
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    out, again = tmp_path / "out", tmp_path / "again"
    out.mkdir()
    again.mkdir()
    fetched = out / "six-1.17.0-py3-none-any.whl"
    fetched.write_bytes(b"from the index")
    built = out / "grocker_nc_yaml-1.0-cp311-cp311-linux_x86_64.whl"
    built.write_bytes(b"built here")
    index_hash = hashlib.sha256(b"from the index").hexdigest()
    entries = [f"six==1.17.0 --hash=sha256:{index_hash}", "grocker-nc-yaml==1.0 --hash=sha256:0123"]
    driver.keep_wheels(entries, [str(fetched), str(built)])
    # The wheel pip built (no hash of the index matches it) is kept by its sdist's entry...
    assert not driver.take_built(entries[0], str(again))
    assert driver.take_built(entries[1], str(again))
    # ... the one it fetched by its hash, taken again only while its bytes have that hash.
    assert driver.take_fetched(entries[0], str(again))
    assert (again / fetched.name).read_bytes() == b"from the index"
    stored = tmp_path / "pip-cache" / "grocker-wheels" / index_hash / fetched.name
    stored.write_bytes(b"tampered")
    assert not driver.take_fetched(entries[0], str(again)) and not stored.exists()
    assert (again / built.name).read_bytes() == b"built here"
    # Another sdist (other hashes) does not get it.
    assert not driver.take_built("grocker-nc-yaml==1.0 --hash=sha256:4567", str(again))


def test_installer_and_index_strategy_keys(tmp_path: Path) -> None:
    from setuptools_grocker.config import load_config
    from setuptools_grocker.errors import ConfigError

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n\n'
                                             '[tool.grocker]\ninstaller = "poetry"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, environ={})
    assert "installer 'poetry'" in exc.value.one_line() and 'installer = "uv"' in exc.value.one_line()
    default = load_config(tmp_path, environ={"GROCKER_INSTALLER": "uv"})
    assert (default.installer, default.index_strategy) == ("uv", "first-index")
    # The defaults add nothing to the cache key's inputs; a changed value does.
    assert "installer" not in default.image_inputs() and "index-strategy" not in default.image_inputs()
    other = load_config(tmp_path, environ={"GROCKER_INSTALLER": "pip", "GROCKER_INDEX_STRATEGY": "unsafe-best-match"})
    assert other.image_inputs()["installer"] == "pip"
    assert other.image_inputs()["index-strategy"] == "unsafe-best-match"
    with pytest.raises(ConfigError, match="index-strategy 'best'"):
        load_config(tmp_path, environ={"GROCKER_INSTALLER": "uv", "GROCKER_INDEX_STRATEGY": "best"})
