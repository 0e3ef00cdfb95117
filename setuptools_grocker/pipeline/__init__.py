"""The builds: from a project (or a workspace of projects) on disk to a smoke-tested, tagged image.

    build.py      the single-project pipeline (``grocker build``, ``setup.py docker_image``): scan, cache key,
                  compile, runtime image, smoke test, tags, push; also the built-in ``grocker_stages`` plugin
    wsbuild.py    the workspace build: members in dependency order, up to ``jobs`` at once, incremental, release
    scheduler.py  the one DAG scheduler (skip the dependents of a failure), shared with Buildbot's graph step
    stages.py     the one declaration of the member stage names, their order and plugin slots
    project.py    one project on disk: is it a Python project, its source files, their hash, its metadata
    workspace.py  a workspace: members, their internal dependency graph, cache keys, the plan
    compile.py    the compile stage: wheels for a project and its closure, in the compiler image
    pipconf.py    the user's pip configuration, forwarded into the compiler container and only there
    smoke.py      the smoke test an image passes before it gets a tag; also the built-in ``grocker_smoke_tests``

The pipelines call down into ``image/``, ``registry/`` and ``engine/``; nothing below imports them.
"""
