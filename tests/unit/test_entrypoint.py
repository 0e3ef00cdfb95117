"""The baked-in entrypoint's pure logic, run in-process (it is a stdlib-only script)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

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


def _serve(address: tuple[str, int], status: int = 200, delay: float = 0.0) -> Any:
    """A server answering ``status`` on ``address`` (started after ``delay`` seconds, in a thread)."""
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET

    server = Server(address, Handler, bind_and_activate=False)
    server.allow_reuse_address = True
    server.server_bind()

    def run() -> None:
        time.sleep(delay)
        server.server_activate()
        server.serve_forever()

    threading.Thread(target=run, daemon=True).start()
    return server


def _with_health(entrypoint: ModuleType, tmp_path: Path, port: int) -> None:
    app = json.loads((tmp_path / "app.json").read_text())
    app["health"] = {"port": port, "path": "/health"}
    app["commands"] = {}  # `check` has nothing to fail on: what is tested is the wait for the server
    (tmp_path / "app.json").write_text(json.dumps(app))


def test_check_health_waits_for_the_server_then_checks_where_it_listens(
        entrypoint: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The smoke test's probe from inside the container: it waits for a server that starts late, and refuses
    one that answers from 127.0.0.1 alone (nothing outside its container could reach it)."""
    monkeypatch.setattr(entrypoint.os, "environ", dict(os.environ))  # `check` replaces the environment
    late = _serve(("0.0.0.0", 0), delay=0.5)
    _with_health(entrypoint, tmp_path, late.server_address[1])
    try:
        assert entrypoint.main(["check", "--health", "10"]) == 0
        assert "healthy: GET /health on port %d answered 200" % late.server_address[1] in capsys.readouterr().out
    finally:
        late.shutdown()
        late.server_close()

    local = _serve(("127.0.0.1", 0))
    port = local.server_address[1]
    _with_health(entrypoint, tmp_path, port)
    try:
        assert entrypoint.main(["check", "--health", "10"]) == entrypoint.LOOPBACK_ONLY
        assert f"unhealthy: the server listens on 127.0.0.1:{port} only" in capsys.readouterr().out
    finally:
        local.shutdown()
        local.server_close()

    failing = _serve(("0.0.0.0", 0), status=503)
    _with_health(entrypoint, tmp_path, failing.server_address[1])
    try:
        assert entrypoint.main(["check", "--health", "0.5"]) == entrypoint.UNHEALTHY
        assert "got no good answer within 0.5s (last: HTTP 503)" in capsys.readouterr().out
    finally:
        failing.shutdown()
        failing.server_close()
    assert entrypoint.main(["check", "--health", "soon"]) == 2


def test_loopback_only_reads_the_kernels_tables(entrypoint: ModuleType, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """IPv6 and IPv4-mapped addresses, as the kernel prints them (32-bit words in host byte order)."""
    header = "  sl  local_address                         remote_address                        st\n"

    def table(*addresses: str) -> Path:
        path = tmp_path / f"tcp6-{len(list(tmp_path.iterdir()))}"
        path.write_text(header + "".join(f"   {i}: {a}:1F90 00000000000000000000000000000000:0000 0A 0\n"
                                         for i, a in enumerate(addresses)))
        return path

    v6_loopback = "00000000000000000000000001000000"  # ::1
    mapped_loopback = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1
    v6_any = "00000000000000000000000000000000"  # ::
    monkeypatch.setattr(entrypoint, "PROC_TABLES", ((str(table(v6_loopback)), 32),))
    assert entrypoint.loopback_only(8080) == "::1:8080"
    monkeypatch.setattr(entrypoint, "PROC_TABLES", ((str(table(mapped_loopback, v6_loopback)), 32),))
    assert entrypoint.loopback_only(8080) == "::ffff:7f00:1:8080"
    monkeypatch.setattr(entrypoint, "PROC_TABLES", ((str(table(v6_loopback, v6_any)), 32),))
    assert entrypoint.loopback_only(8080) is None
    assert entrypoint.loopback_only(8081) is None  # nothing listens there: cannot tell, not refused
    monkeypatch.setattr(entrypoint, "PROC_TABLES", ((str(tmp_path / "absent"), 32),))
    assert entrypoint.loopback_only(8080) is None
