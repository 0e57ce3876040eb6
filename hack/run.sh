#!/usr/bin/env bash
# `make run`: start troupe dev, publish an event, show it on the stream, and keep dev running.
# TROUPE_RUN_ONCE=1 stops dev after the demo instead (used by CI to check this script).
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=./bin/troupe
store=${TROUPE_STORE_DIR:-.troupe}
listen=${TROUPE_NATS_LISTEN:-127.0.0.1:4222}
export TROUPE_SERVER="nats://${listen}"

mkdir -p "$store"
"$troupe" dev --store-dir "$store" --nats-listen "$listen" >"$store/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  grep -q "ready" "$store/dev.log" 2>/dev/null && break
  kill -0 $dev 2>/dev/null || { cat "$store/dev.log"; exit 1; }
  sleep 0.1
done
grep "troupe dev:" "$store/dev.log"

echo
echo "\$ troupe publish release.requested --release dev/hello --data @examples/events/requested.json"
"$troupe" publish release.requested --release dev/hello --data @examples/events/requested.json
echo
echo "\$ troupe publish release.requested --release dev/hello --data '{\"source\":{}}'   # invalid: refused, nothing published"
"$troupe" publish release.requested --release dev/hello --data '{"source":{}}' 2>&1 || true
echo
for _ in $(seq 1 50); do # the renderer answers within a moment
  "$troupe" tail --release dev/hello --since 1m --follow=false 2>/dev/null | grep -qE "release\.(rendered|failed)" && break
  sleep 0.2
done
echo "\$ troupe tail --release dev/hello --since 1m --follow=false"
"$troupe" tail --release dev/hello --since 1m --follow=false
echo
echo "The renderer turned the request into a manifest bundle (release.rendered). The applier,"
echo "health and history services join 'troupe dev' as they are built."

if [[ "${TROUPE_RUN_ONCE:-}" == 1 ]]; then
  exit 0
fi
echo
echo "troupe dev keeps running (log: $store/dev.log). In another shell:"
echo "  export TROUPE_SERVER=$TROUPE_SERVER"
echo "  ./bin/troupe tail                        # follow every event"
echo "  ./bin/troupe tail --dead-letters --all   # what services gave up on, and why"
echo "Ctrl-C stops it."
wait $dev
