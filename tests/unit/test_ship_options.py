"""`grocker ship`'s bad input: one line naming the problem and the fix, exit code 15, before any engine call."""
from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.config import load_config
from setuptools_grocker.deploy.companions import Companion
from setuptools_grocker.deploy.deployer import DeployOptions, env_file_values
from setuptools_grocker.errors import ConfigError


@pytest.mark.parametrize(("args", "message"), [
    (["--canary-steps", "5,25,50"], "canary.steps [5, 25, 50] in --canary-steps is not a rising list"),
    (["--canary-steps", "50,25,100"], "is not a rising list of percents ending at 100"),
    (["--canary-steps", "five"], "is not a rising list"),
    (["--canary-window", "0"], "--canary-window 0.0 is not positive"),
    (["--min-requests", "-3"], "--min-requests -3 is not positive"),
    (["--staging-env", "NOPE"], "--staging-env 'NOPE' is not KEY=VALUE"),
    (["--service", "worker"], "--service 'worker' is not SUFFIX=COMMAND[:REPLICAS]"),
    (["--service", "worker=worker:0"], "replicas 0 is not a positive integer"),
    (["--service", "canary=worker"], "service name 'canary' in --service is not valid"),
    (["--service", "worker=celery worker"], "is not the name of one of the image's commands"),
    (["--services-watch", "0"], "--services-watch 0.0 is not positive"),
])
def test_bad_ship_options(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ship", "img:1", "--name", "web", "--project", str(tmp_path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 15
    assert len(err) == 1 and err[0].startswith("grocker: error: ") and message in err[0], err


def test_canary_keys_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\nfunctional-tests = "pytest tests/functional"\n\n'
        "[tool.grocker.canary]\nsteps = [10, 100]\nwindow = 5\nmin-requests = 20\n")
    config = load_config(tmp_path, environ={"GROCKER_CANARY_ALPHA": "0.05"})
    assert config.functional_tests == "pytest tests/functional"
    assert (config.canary.steps, config.canary.window, config.canary.min_requests) == ((10, 100), 5.0, 20)
    assert config.canary.alpha == 0.05 and config.canary.max_inconclusive == 3
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.canary]\nsteps = [10, 50]\n")
    with pytest.raises(ConfigError, match="ending at 100"):
        load_config(tmp_path, environ={})
    (tmp_path / "pyproject.toml").write_text("[tool.grocker.canary]\nalpha = 2\n")
    with pytest.raises(ConfigError, match="not between 0 and 1"):
        load_config(tmp_path, environ={})


def test_pre_deploy_and_services_keys(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\npre-deploy = "flask db upgrade"\nservices-watch = 30\n\n'
        '[tool.grocker.services]\nworker = { command = "worker", replicas = 2, env = { QUEUES = "high" } }\n'
        'scheduler = "beat"\n')
    config = load_config(tmp_path, environ={})
    assert config.pre_deploy == "flask db upgrade" and config.services_watch == 30.0
    worker, scheduler = Companion.from_config(config.services)
    assert worker == Companion("worker", "worker", 2, {"QUEUES": "high"})
    assert scheduler == Companion("scheduler", "beat", 1, {})
    assert Companion.parse("worker=worker:3") == Companion("worker", "worker", 3)
    # A companion runs production's configuration with its own command, replicas and variables, and no route.
    production = DeployOptions(name="shop", image="img:2", env={"A": "1", "QUEUES": "all"}, replicas=4,
                               env_files=(tmp_path / "prod.env",))
    opts = worker.options(production, "reg/shop@sha256:ab")
    assert (opts.name, opts.image, opts.command, opts.replicas, opts.publish) == (
        "shop-worker", "reg/shop@sha256:ab", "worker", 2, ())
    assert opts.env == {"A": "1", "QUEUES": "high"} and opts.env_files == production.env_files
    env = load_config(tmp_path, environ={"GROCKER_SERVICES": '{"w": {"command": "work"}}'})
    assert env.services == {"w": {"command": "work"}}
    for table, message in [('worker = { comand = "worker" }', "did you mean 'command'?"),
                           ('edge = "worker"', "service name 'edge'"),
                           ('worker = { command = "worker", replicas = true }', "replicas True is not a positive"),
                           ("worker = 3", "must be a table of services")]:
        (tmp_path / "pyproject.toml").write_text(f"[tool.grocker.services]\n{table}\n")
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path, environ={})
        assert message in f"{info.value.message} {info.value.hint}", table


def test_env_file_values_read_as_the_entrypoint_reads_them() -> None:
    data = b"# production\nexport DATABASE_URL='postgres://db/shop'\n\nDEBUG = 0\nQUOTED=\"a b\"\nEMPTY=\n"
    assert env_file_values(data) == {"DATABASE_URL": "postgres://db/shop", "DEBUG": "0", "QUOTED": "a b",
                                     "EMPTY": ""}
