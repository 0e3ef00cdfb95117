#!/usr/bin/env bash
# The main job on the built-in defaults: build the example application's image and run it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

"$DEV_VENV/bin/grocker" build "$REPO/examples/demo-app" --report "$STATE_DIR/demo-report.json"
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["projects"][0]["image"])' \
        "$STATE_DIR/demo-report.json")
docker rm -f grocker-demo >/dev/null 2>&1 || true
docker run -d --name grocker-demo -p 127.0.0.1::8000 "$image" >/dev/null
port=$(docker port grocker-demo 8000/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 30); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.5
done
echo
echo "$image is running as container grocker-demo:"
curl -fsS "http://127.0.0.1:$port/"
echo "  try:   curl http://127.0.0.1:$port/"
echo "         docker run --rm $image check"
echo "         docker run --rm $image help"
echo "  stop:  docker rm -f grocker-demo"
