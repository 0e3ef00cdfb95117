"""The one declaration of the member stages: their names, their order, the plugin slot of each.

The names are public: ``grocker workspace build --stage NAME``, the Buildbot member steps (one per stage,
named after it), the member state and the report. Everything else derives from :data:`DECLARED`:
the CLI's ``--stage`` values, the plugin positions (``before-SLOT``, ``SLOT``, ``after-SLOT``, in
pipeline order), where the Buildbot steps go, and which stages a library or an application has.

No imports from the rest of the package: the CLI parser and the Buildbot master read it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemberStage:
    name: str
    #: The plugin positions around it are ``before-SLOT``, ``SLOT``, ``after-SLOT``.
    slot: str
    kinds: tuple[str, ...]


#: In pipeline order. A library's ``test`` runs only when it has tests, an application's ``push`` only when asked.
DECLARED = (
    MemberStage("wheel", "compile", ("library", "application")),
    MemberStage("test", "test", ("library",)),
    MemberStage("image", "image", ("application",)),
    MemberStage("smoke", "smoke", ("application",)),
    MemberStage("push", "push", ("application",)),
)
STAGES = tuple(s.name for s in DECLARED)
SLOT = {s.name: s.slot for s in DECLARED}
SLOTS = tuple(s.slot for s in DECLARED)
POSITIONS = tuple(p for slot in SLOTS for p in (f"before-{slot}", slot, f"after-{slot}"))
#: ``--stage plugin:NAME`` runs the plugin stage NAME (one Buildbot step per plugin stage).
PLUGIN_PREFIX = "plugin:"


def member_stages(kind: str, *, has_tests: bool, push: bool) -> list[str]:
    """The stages of a member of this kind, in order."""
    return [s.name for s in DECLARED if kind in s.kinds
            and (s.name != "test" or has_tests) and (s.name != "push" or push)]


def is_stage_name(text: str) -> bool:
    """A value ``--stage`` accepts: a member stage or ``plugin:NAME``."""
    return text in STAGES or (text.startswith(PLUGIN_PREFIX) and len(text) > len(PLUGIN_PREFIX))


def position_order(position: str) -> int:
    """Where a plugin position comes in the pipeline (a member stage runs at ``SLOT[stage]``); ``ValueError``
    if unknown."""
    return POSITIONS.index(position)


__all__ = ["DECLARED", "PLUGIN_PREFIX", "POSITIONS", "SLOT", "SLOTS", "STAGES", "MemberStage", "is_stage_name",
           "member_stages", "position_order"]
