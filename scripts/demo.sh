#!/usr/bin/env bash
# The main job on the built-in defaults: build the example application's image and run it.
# The build works on a copy under $STATE_DIR/$DEMO_PREFIX (never in the checkout: its .grocker/ state
# would be copied along by the tutorial's `cp -r`), and every name carries DEMO_PREFIX (default
# demo-$USER), so two people on one engine do not retag each other's images.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

PREFIX="${DEMO_PREFIX:-demo-$(id -un)}"
WORK="$STATE_DIR/$PREFIX"
mkdir -p "$WORK"
# The sources again, over the copy of the last run: its .grocker/ state stays, so an unchanged demo is cached.
tar -C "$REPO/examples" --exclude=.grocker --exclude=build --exclude='*.egg-info' --exclude=__pycache__ \
    -cf - demo-app demo-lib | tar -C "$WORK" -xf -
image="$PREFIX-demo-app:0.3.0"
"$DEV_VENV/bin/grocker" build "$WORK/demo-app" --tag "$image" --report "$WORK/demo-report.json"
docker rm -f "$PREFIX" >/dev/null 2>&1 || true
docker run -d --name "$PREFIX" -p 127.0.0.1::8000 "$image" >/dev/null
port=$(docker port "$PREFIX" 8000/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 30); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.5
done
echo
echo "$image is running as container $PREFIX:"
curl -fsS "http://127.0.0.1:$port/"
echo "  try:   curl http://127.0.0.1:$port/"
echo "         docker run --rm $image check"
echo "         docker run --rm $image help"
echo "  stop:  docker rm -f $PREFIX"
echo "  the build's copy, state and report: $WORK"
