"""The member stage names are declared once (pipeline/stages.py); the CLI, Buildbot and plugins derive them."""
from __future__ import annotations

import pytest

from setuptools_grocker.cli import make_parser
from setuptools_grocker.pipeline import stages

# The public names, written out: changing them breaks CLI users, master.cfg files and report readers.
PUBLIC_STAGES = ("wheel", "test", "image", "smoke", "push")
PUBLIC_POSITIONS = (
    "before-compile", "compile", "after-compile", "before-test", "test", "after-test",
    "before-image", "image", "after-image", "before-smoke", "smoke", "after-smoke",
    "before-push", "push", "after-push",
)


def test_public_names_unchanged() -> None:
    from setuptools_grocker.plugin import POSITIONS

    assert stages.STAGES == PUBLIC_STAGES
    assert stages.POSITIONS == POSITIONS == PUBLIC_POSITIONS
    assert [stages.SLOT[s] for s in stages.STAGES] == ["compile", "test", "image", "smoke", "push"]


@pytest.mark.parametrize(("kind", "has_tests", "push", "expected"), [
    ("library", True, True, ["wheel", "test"]),
    ("library", False, True, ["wheel"]),
    ("application", True, False, ["wheel", "image", "smoke"]),
    ("application", False, True, ["wheel", "image", "smoke", "push"]),
])
def test_member_stages(kind: str, has_tests: bool, push: bool, expected: list[str]) -> None:
    assert stages.member_stages(kind, has_tests=has_tests, push=push) == expected


def test_cli_stage_values_come_from_the_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser()
    for value in [*stages.STAGES, "plugin:lint"]:
        assert parser.parse_args(["workspace", "build", "--stage", value]).stage == [value]
    for bad in ("compile", "plugin:", "smoke-test"):
        with pytest.raises(SystemExit):
            parser.parse_args(["workspace", "build", "--stage", bad])
        err = capsys.readouterr().err
        assert f"unknown stage '{bad}': use wheel, test, image, smoke, push or plugin:NAME" in err


def test_every_stage_has_its_buildbot_step_named_after_it() -> None:
    from buildbot_grocker import member_steps
    from buildbot_grocker.steps import _STEP_OF

    assert tuple(_STEP_OF) == stages.STAGES
    assert [s.name for s in member_steps(root=".")] == list(stages.STAGES)


def test_buildbot_places_a_plugin_stage_at_every_position_in_pipeline_order() -> None:
    from buildbot_grocker import member_steps

    # The order the earlier hand-written float table (_ORDER in steps.py) gave; a member stage comes before
    # a plugin stage at its own slot.
    expected = ["before-compile", "wheel", "compile", "after-compile", "before-test", "test", "test@", "after-test",
                "before-image", "image", "image@", "after-image", "before-smoke", "smoke", "smoke@", "after-smoke",
                "before-push", "push", "push@", "after-push"]
    # Plugin stage names may not clash with member steps: the ones at a member stage's own slot get an '@'.
    plugin = [(p + "@" if p in stages.STAGES else p, p, ("application",)) for p in reversed(stages.POSITIONS)]
    steps = member_steps(plugin_stages=plugin, root=".")
    assert [s.name for s in steps] == expected
