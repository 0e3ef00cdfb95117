"""Credentials never reach the output, the report or an error line: every pattern redact() knows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.errors import CompileError, WheelIndexError
from setuptools_grocker.frontend import print_error
from setuptools_grocker.progress import Progress, add_secret, redact
from setuptools_grocker.report import ProjectResult, Report

TOKEN = "glpat-Zq9vX3c8Ww1tK7mN"


@pytest.mark.parametrize("text, shown", [
    (f"https://ci:{TOKEN}@index.example/simple", "https://***@index.example/simple"),
    (f"https://:{TOKEN}@index.example/simple", "https://***@index.example/simple"),
    (f"https://{TOKEN}@index.example/simple", "https://***@index.example/simple"),
    (f"pip -i https://ci:{TOKEN}@h/x --pre", "pip -i https://***@h/x --pre"),
    (f"https://u:p@{TOKEN}@h/x", "https://***@h/x"),  # an unencoded @ in the password
    (f"https://h/simple/?private_token={TOKEN}", "https://h/simple/?private_token=***"),
    (f"https://h/x?a=1&access_token={TOKEN}&b=2", "https://h/x?a=1&access_token=***&b=2"),
    (f"https://h/x.whl?X-Amz-Credential=AK/1&X-Amz-Signature={TOKEN}",
     "https://h/x.whl?X-Amz-Credential=***&X-Amz-Signature=***"),
    (f"https://h/x?api_key={TOKEN}#frag", "https://h/x?api_key=***#frag"),
    (f"https://h/x?job_token={TOKEN}", "https://h/x?job_token=***"),
    (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***"),
    (f"Authorization: Basic {TOKEN}", "Authorization: Basic ***"),
    (f"curl -H 'Authorization: token {TOKEN}'", "curl -H 'Authorization: token ***'"),
    (f"sent Bearer {TOKEN} to h", "sent Bearer *** to h"),
])
def test_redact_hides_every_kind_of_credential(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert TOKEN not in redact(text)


@pytest.mark.parametrize("text", [
    "https://index.example/simple/core/", "mail ci@example.com", "the registry wants a bearer token",
    'WWW-Authenticate: Bearer realm="https://r.example/token",service="r"', "key tag k1a2b3c", "?page=2&sort=name",
])
def test_redact_leaves_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_registered_secrets_are_masked_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    value = "plugin-npm-token-4f1c2e"
    add_secret(value)
    add_secret("1")  # too short to be masked: it would mask ordinary text
    assert redact(f"npm ERR! 401 for {value}/x at 1") == "npm ERR! 401 for ***/x at 1"
    progress = Progress(stream=sys.stderr, color=False)
    progress.child("[core]").output(f"echo {value}")
    assert value not in capsys.readouterr().err


def test_errors_reports_and_details_are_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exc = CompileError(f"pip could not reach https://ci:{TOKEN}@h/simple/", "check the index",
                       details=f"Looking in indexes: https://h/simple?private_token={TOKEN}\n"
                               f"Authorization: Bearer {TOKEN}")
    assert TOKEN not in exc.one_line() and TOKEN not in str(exc) and TOKEN not in (exc.shown_details() or "")
    assert print_error(exc) == CompileError.exit_code
    err = capsys.readouterr().err
    assert TOKEN not in err and err.endswith("grocker: error: pip could not reach https://***@h/simple/; "
                                             "check the index\n")
    result = ProjectResult(name="core")
    result.fail(exc)
    report = Report([result], error=WheelIndexError(f"release failed at https://h/?token={TOKEN}"),
                    extra={"release": {"reason": f"https://x:{TOKEN}@h"}})
    report.write(tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert TOKEN not in text and json.loads(text)["projects"][0]["error"].startswith("pip could not reach https://***@")


def test_a_wheel_index_url_with_credentials_on_the_command_line_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ws"
    (root / "libs" / "core").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    (root / "libs" / "core" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "core"\nversion = "1.0"\n')
    code = main(["workspace", "plan", str(root), "--json", "--wheel-index", f"https://ci:{TOKEN}@127.0.0.1:1/"])
    captured = capsys.readouterr()
    assert code == WheelIndexError.exit_code
    assert TOKEN not in captured.out + captured.err
    assert captured.err.count("\n") == 1 and "GROCKER_WORKSPACE_INDEX_URL" in captured.err


def test_the_plugin_trace_hides_compile_environment_values(capsys: pytest.CaptureFixture[str]) -> None:
    from setuptools_grocker.plugin import impl
    from setuptools_grocker.plugin.manager import PluginManager

    class Plugin:
        @impl
        def grocker_compile_environment(self, config: object) -> dict[str, object]:
            return {"env": {"NPM_TOKEN": TOKEN}, "commands": ["npm ci"]}

    manager = PluginManager(environ={"GROCKER_TRACE_PLUGINS": "1"})
    manager._register(Plugin(), "leaky", "test")
    assert manager.grocker_compile_environment(config=None) == ({"NPM_TOKEN": TOKEN}, ["npm ci"])  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert TOKEN not in err and "'NPM_TOKEN': '***'" in err and "npm ci" in err
