"""The baked-in entrypoint's pure logic, run in-process (it is a stdlib-only script)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from setuptools_grocker.image.recipes import RESOURCES


@pytest.fixture()
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("grocker_entrypoint", RESOURCES / "entrypoint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", str(tmp_path))
    (tmp_path / "app.json").write_text(json.dumps({
        "name": "demo", "version": "1.0", "commands": {"server": "srv --port ${PORT}"},
        "default_command": "server", "env": {"PORT": "8000", "MODE": "image"}, "modules": [], "scripts": [],
    }))
    return module


def test_env_file_syntax(entrypoint: ModuleType, tmp_path: Path) -> None:
    f = tmp_path / "x.env"
    f.write_text("# comment\n\nA=1\nexport B = two words \nC='quoted # not a comment'\nD=\"x\"\nbroken line\n")
    assert entrypoint.parse_env_file(str(f)) == {"A": "1", "B": "two words", "C": "quoted # not a comment",
                                                 "D": "x"}


def test_precedence_image_env_then_files_then_container(
        entrypoint: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10-a.env").write_text("MODE=file-a\nPORT=9000\nONLY_A=1\n")
    (conf / "20-b.env").write_text("MODE=file-b\n")
    (conf / "ignored.txt").write_text("MODE=ignored\n")
    monkeypatch.setattr(os, "environ", {"GROCKER_CONFIG_DIR": str(conf), "PORT": "7000"})
    env = entrypoint.build_environment(entrypoint.load_app())
    assert (env["MODE"], env["PORT"], env["ONLY_A"]) == ("file-b", "7000", "1")


def test_command_lines_expand_variables(entrypoint: ModuleType) -> None:
    assert entrypoint.expand(["srv", "--port", "${PORT}", "$MISSING"], {"PORT": "8000"}) == \
        ["srv", "--port", "8000", "$MISSING"]


def test_unknown_program_exits_127(entrypoint: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "environ", {"GROCKER_CONFIG_DIR": "/nonexistent", "PATH": "/nonexistent"})
    assert entrypoint.main(["no-such-program-xyz"]) == 127
    assert "command not found" in capsys.readouterr().err


def test_help_lists_commands(entrypoint: ModuleType, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "environ", {"GROCKER_CONFIG_DIR": "/nonexistent"})
    assert entrypoint.main(["help"]) == 0
    out = capsys.readouterr().out
    assert "server       srv --port ${PORT}" in out and "default command: server" in out


def test_run_needs_a_script(entrypoint: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {"GROCKER_CONFIG_DIR": "/nonexistent"})
    assert entrypoint.main(["run"]) == 2


def test_health_probes_the_server(entrypoint: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = str(server.server_address[1])
    try:
        assert entrypoint.main(["health", port, "/health"]) == 0
        assert entrypoint.main(["health", port, "/broken"]) == 1
        assert "unhealthy" in capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()
    assert entrypoint.main(["health", port, "/health"]) == 1  # nobody listens any more


def test_health_never_probes_another_host(entrypoint: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):  # "another host", answering every probe with 200
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Elsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = server.server_address[1]
    try:
        # http://127.0.0.1:8000@127.0.0.2:PORT/health is a URL of 127.0.0.2 (urllib happens to look up
        # "127.0.0.1:8000@127.0.0.2" instead, a name the image's DNS resolver is then asked for).
        assert entrypoint.main(["health", "8000", f"@127.0.0.2:{other}/health"]) == 1
        assert entrypoint.main(["health", f"{other}@127.0.0.2:{other}", "/health"]) == 1
        # Refused before any name is looked up or any connection made.
        out = capsys.readouterr().out
        assert out.count("are not a port number and a path starting with /") == 2, out
        assert asked == []
    finally:
        server.shutdown()
        server.server_close()


def _installed_tool(site: Path, bin_dir: Path) -> None:
    """An installed distribution shaped like black: `blackd` needs aiohttp from the `d` extra."""
    (site / "cx_tool").mkdir(parents=True)
    (site / "cx_tool" / "__init__.py").write_text("def main():\n    return 0\n")
    (site / "cx_tool_d.py").write_text("try:\n    import cx_absent_aiohttp\nexcept ImportError as exc:\n"
                                       "    raise ImportError('install cx-tool[d]') from exc\n"
                                       "def main():\n    return 0\n")
    (site / "cx_broken.py").write_text("import cx_absent_required\n")
    info = site / "cx_tool-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cx-tool\nVersion: 1.0\n"
                                   "Requires-Dist: cx-absent-required\n"
                                   "Requires-Dist: cx-absent-aiohttp>=3; extra == \"d\"\nProvides-Extra: d\n")
    (info / "entry_points.txt").write_text("[console_scripts]\ncx-tool = cx_tool:main\n"
                                           "cx-toold = cx_tool_d:main [d]\n")
    bin_dir.mkdir()
    for script in ("cx-tool", "cx-toold"):
        (bin_dir / script).write_text("#!/bin/sh\n")
        (bin_dir / script).chmod(0o755)


@pytest.mark.parametrize("extras", [[], ["d"]])
def test_check_skips_what_needs_an_extra_not_installed(
        entrypoint: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], extras: list[str]) -> None:
    _installed_tool(tmp_path / "site", tmp_path / "bin")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    app = {"name": "cx-tool", "modules": ["cx_broken", "cx_tool", "cx_tool_d"], "scripts": ["cx-tool", "cx-toold"],
           "commands": {}, "extras": extras}
    code = entrypoint.check(app)
    out = capsys.readouterr().out
    assert "ok   import cx_tool\n" in out
    # A real failure stays a failure: the required dependency is missing.
    assert "FAIL import cx_broken: ModuleNotFoundError" in out
    if extras:  # the extra is installed: its module must import
        assert "FAIL import cx_tool_d: ImportError: install cx-tool[d]" in out
        assert "FAIL console script cx-toold" in out
        assert out.endswith("check: FAILED (3)\n") and code == 1
    else:
        assert "skip import cx_tool_d: needs cx_absent_aiohttp from the extra [d], not installed" in out
        assert "skip script cx-toold: needs the extra [d], not installed" in out
        assert out.endswith("check: FAILED (1)\n") and code == 1
