"""The builds: from a project (or a workspace of projects) on disk to a smoke-tested, tagged image.

    build.py      the single-project pipeline (``grocker build``, ``setup.py docker_image``): scan, cache key,
                  compile, runtime image, smoke test, tags, push; also the built-in ``grocker_stages`` plugin
    wsbuild.py    the workspace build's orchestration: plan, schedule (up to ``jobs`` members at once), results
    wsplan.py     what a workspace run is asked (options) and plans (one entry per member), a member's image names
    wsmember.py   one workspace member's stages (wheel, test, image, smoke, push) and its plugin stages
    wsstore.py    a workspace's wheels: the local store, fetched from and uploaded to the wheel index
    wsrelease.py  a workspace's release after ``--push`` (or ``grocker workspace release``)
    scheduler.py  the one DAG scheduler (skip the dependents of a failure), shared with Buildbot's graph step
    stages.py     the one declaration of the member stage names, their order and plugin slots
    project.py    one project on disk: is it a Python project, its source files, their hash, its metadata
    workspace.py  a workspace: members, their internal dependency graph, cache keys, member state
    compile.py    the compile stage: wheels for a project and its closure, in the compiler image
    pipconf.py    the user's pip configuration, forwarded into the compiler container and only there
    smoke.py      the smoke test an image passes before it gets a tag; also the built-in ``grocker_smoke_tests``

The pipelines call down into ``image/``, ``registry/`` and ``engine/``; nothing below imports them.
"""
