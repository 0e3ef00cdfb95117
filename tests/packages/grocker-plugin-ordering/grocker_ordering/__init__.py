"""Written from docs/hooks.md: tryfirst implementations and a wrapper; records to $TESTKIT_LOG."""
import dataclasses
import json
import os

from setuptools_grocker.plugin import Stage, impl


def record(event, **data):
    path = os.environ.get("TESTKIT_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, **data}) + "\n")


@impl(tryfirst=True)
def grocker_configure(config):
    record("configure", plugin="ordering", labels=dict(config.labels))
    chain = config.labels.get("com.example.chain")
    return {"labels": {**config.labels, "com.example.chain": f"{chain},ordering" if chain else "ordering"}}


def _stage(ctx):
    record("stage", name="after-compile", plugin="ordering", project=ctx.config.project_dir.name)


@impl(tryfirst=True)
def grocker_stages(config):
    return [Stage("ordering after-compile", "after-compile", _stage)]


@impl(wrapper=True)
def grocker_runtime_image(config):
    contributions = yield  # every plugin's ImageContribution, in call order
    record("wrapped", labels=[dict(c.labels) for c in contributions])
    return [dataclasses.replace(c, labels={**c.labels, "com.example.testkit": c.labels["com.example.testkit"]
                                           + ", wrapped by ordering"})
            if "com.example.testkit" in c.labels else c for c in contributions]
