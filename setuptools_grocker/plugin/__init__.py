"""setuptools-grocker plugins: custom stages for every team, through pluggy hooks.

Author guide
------------
A plugin is a module (or object) with functions marked ``@impl`` whose names are hooks of
:mod:`setuptools_grocker.plugin.spec`::

    # my_grocker_plugin.py
    from setuptools_grocker.plugin import ImageContribution, Stage, impl

    @impl
    def grocker_stages(config):
        return [Stage("lint", "before-compile", lambda ctx: ...)]

    @impl
    def grocker_runtime_image(config):
        return ImageContribution(labels={"com.example.team": "payments"})

Make it found by either

* an entry point in the plugin's distribution: ``[project.entry-points.grocker]
  my-plugin = "my_grocker_plugin"``; or
* the project's configuration: ``plugins = ["my_grocker_plugin"]`` (importable module).

``grocker plugins`` lists what is loaded and from where; ``GROCKER_DISABLE_PLUGINS=name``
blocks a plugin; ``GROCKER_TRACE_PLUGINS=1`` prints every hook call. Plugins are registered
in this order: built-ins, entry points (by name), then the ``plugins`` key; pluggy calls
them ``tryfirst`` first, then the most recently registered first, ``trylast`` last, and runs
wrappers around them all::

    @impl(tryfirst=True)
    def grocker_configure(config):  # sees what implementations called earlier changed
        return {"labels": {**config.labels, "com.example.team": "payments"}}

    @impl(wrapper=True)
    def grocker_runtime_image(config):
        contributions = yield  # every plugin's ImageContribution
        return [c for c in contributions if "com.example.unwanted" not in c.labels]

Signing plugins implement ``grocker_sign`` (return a :class:`Signature` of
``request.payload``, a :class:`SigningRequest`, after each push) and
``grocker_verify_signature`` (``grocker verify``); see examples/grocker-plugin-sign-ed25519.

A plugin that raises or returns the wrong type fails the build naming the plugin and the
hook. The built-in stages and checks are themselves plugins: the modules that implement
them, :mod:`setuptools_grocker.pipeline.build` and :mod:`setuptools_grocker.pipeline.smoke`.
"""
from __future__ import annotations

import pluggy

from setuptools_grocker.plugin.signing import Signature, SigningRequest
from setuptools_grocker.plugin.spec import NAME
from setuptools_grocker.plugin.stages import POSITIONS, BuildState, ImageContribution, Stage, StageContext

#: Marks a hook implementation: ``@impl def grocker_stages(config): ...``
impl = pluggy.HookimplMarker(NAME)

__all__ = ["POSITIONS", "BuildState", "ImageContribution", "Signature", "SigningRequest", "Stage", "StageContext",
           "impl"]
