#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root. Stops every server it started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
trap stop_started EXIT

cd "$REPO"
# Warm compile containers (a single project's consecutive builds) of the suite's builds end a minute after
# their last compile instead of ten: none outlives the run by long or keeps a test's compiler image in use.
export GROCKER_WARM_IDLE="${GROCKER_WARM_IDLE:-1}"
# Lint and type-check first: a tree that fails either fails the run before the long tests start.
echo "+ ruff check ." >&2
"$DEV_VENV/bin/ruff" check .
echo "+ mypy" >&2
"$DEV_VENV/bin/mypy"
set +e
"$DEV_VENV/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$code"
