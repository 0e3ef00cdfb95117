#!/bin/sh
# "Builds" the static site into $1 (a real project would run npm, sass, a bundler...).
set -eu
out="$1"
mkdir -p "$out/assets"
cat frontend/index.html.in | sed "s/@BUILD@/$(date -u -d @${SOURCE_DATE_EPOCH:-0} +%Y-%m-%d)/" > "$out/index.html"
printf 'body { font-family: sans-serif; }\n' > "$out/assets/site.css"
