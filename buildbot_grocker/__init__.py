"""Buildbot 4.x integration of setuptools-grocker: steps, the graph step and ``configure()``.

Install with ``pip install setuptools-grocker[buildbot]``; see docs/buildbot.md.
"""
from __future__ import annotations

from buildbot_grocker.config import configure
from buildbot_grocker.graph import GrockerGraph
from buildbot_grocker.steps import (
    GrockerImage,
    GrockerMemberStep,
    GrockerPlan,
    GrockerPluginStage,
    GrockerPush,
    GrockerRebase,
    GrockerRefreshReport,
    GrockerRefreshRoot,
    GrockerRelease,
    GrockerShip,
    GrockerSmokeTest,
    GrockerStep,
    GrockerTest,
    GrockerWheel,
    member_steps,
)

__all__ = [
    "GrockerGraph", "GrockerImage", "GrockerMemberStep", "GrockerPlan", "GrockerPluginStage", "GrockerPush",
    "GrockerRebase", "GrockerRefreshReport", "GrockerRefreshRoot", "GrockerRelease", "GrockerShip",
    "GrockerSmokeTest", "GrockerStep", "GrockerTest", "GrockerWheel", "configure", "member_steps",
]
