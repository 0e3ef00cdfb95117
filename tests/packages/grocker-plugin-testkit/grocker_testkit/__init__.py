"""Implements every grocker hook; writes what happened to $TESTKIT_LOG (one line per event)."""
import json
import os
from pathlib import Path

from setuptools_grocker.plugin import ImageContribution, Stage, impl

HERE = Path(__file__).parent


def record(event, **data):
    path = os.environ.get("TESTKIT_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, **data}) + "\n")


@impl
def grocker_configure(config):
    # Each implementation sees the changes of those called before it: com.example.chain is a
    # comma-separated list that every plugin appends its name to.
    record("configure", plugin="testkit", labels=dict(config.labels))
    chain = config.labels.get("com.example.chain")
    return {"labels": {**config.labels, "com.example.configured": "yes",
                       "com.example.chain": f"{chain},testkit" if chain else "testkit"}}


def _stage(name):
    def run(ctx):
        record("stage", name=name, plugin="testkit", project=ctx.config.project_dir.name, image_id=ctx.image_id)
        if name == "after-image":
            out = ctx.run_in_image(["run", "cat", "/opt/testkit/hello.txt"])
            record("in-image", exit_code=out.exit_code, output=out.output.strip())
        if os.environ.get("TESTKIT_FAIL_STAGE") == name:
            raise RuntimeError("the testkit was asked to fail")
    return run


@impl
def grocker_stages(config):
    # Given out of order on purpose: the pipeline sorts them by position.
    return [Stage(f"testkit {p}", p, _stage(p)) for p in ("after-image", "before-compile", "after-smoke",
                                                          "after-compile")]


@impl
def grocker_compile_environment(config):
    return {"env": {"TESTKIT_MARK": "42"}, "commands": ['test "$TESTKIT_MARK" = 42']}


@impl
def grocker_runtime_image(config):
    if os.environ.get("TESTKIT_GARBAGE") == "1":
        return "not a contribution"
    return ImageContribution(files={"/opt/testkit/hello.txt": HERE / "hello.txt"},
                             labels={"com.example.testkit": "1"},
                             commands={"hello": "cat /opt/testkit/hello.txt"})


@impl
def grocker_smoke_tests(config):
    return [["hello"]]


@impl
def grocker_after_publish(config, result):
    record("published", image=result.image, status=result.status)


@impl
def grocker_sign(config, request, environ):
    # Records what it was asked to sign; signs nothing (the signing example plugin has its own tests).
    record("sign", image=request.image, sbom=request.sbom, provenance=request.provenance)
    return None


@impl
def grocker_verify_signature(payload, signature, environ):
    record("verify", key_id=signature.key_id)
    return None


@impl
def grocker_incident(report, paths):
    # Records the incident it was sent (as a chat or ticket plugin would send it on); with
    # TESTKIT_FAIL_INCIDENT=1 it then fails, which must not stop the rollback.
    record("incident", service=report["service"], release=report["release"]["pinned"],
           went_back_to=(report["went_back_to"] or {}).get("pinned"), reason=report["reason"],
           paths={k: str(v) for k, v in paths.items()}, markdown_exists=Path(paths["markdown"]).is_file())
    if os.environ.get("TESTKIT_FAIL_INCIDENT") == "1":
        raise RuntimeError("the testkit was asked to fail")


@impl
def grocker_release_metrics(service, start, end):
    # With TESTKIT_METRICS (a JSON file: service -> {"requests", "errors", "times_ms"}), the team's monitoring.
    path = os.environ.get("TESTKIT_METRICS")
    if not path:
        return None
    figures = json.loads(Path(path).read_text()).get(service)
    record("metrics", service=service, answered=figures is not None)
    return figures
