#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root. Stops every server it started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
trap stop_started EXIT

cd "$REPO"
set +e
"$DEV_VENV/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$code"
