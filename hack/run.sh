#!/usr/bin/env bash
# `make run`: start troupe dev (embedded NATS JetStream, the local Kubernetes cluster, every
# service), take the example chart through install, trace, history, upgrade, diff and rollback,
# and leave dev running. TROUPE_RUN_ONCE=1 (make run ONCE=1) stops dev after the demo instead.
set -euo pipefail
cd "$(dirname "$0")/.."
troupe=./bin/troupe
store=${TROUPE_STORE_DIR:-.troupe}
listen=${TROUPE_NATS_LISTEN:-127.0.0.1:4222}
export TROUPE_SERVER="nats://${listen}"
export TROUPE_NAMESPACE=demo

mkdir -p "$store"
echo "Starting troupe dev: NATS JetStream, a local Kubernetes cluster and the four services (log: $store/dev.log)"
"$troupe" dev --store-dir "$store" --nats-listen "$listen" >"$store/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT

for _ in $(seq 1 1800); do
  grep -q "troupe dev: ready" "$store/dev.log" 2>/dev/null && break
  kill -0 $dev 2>/dev/null || { cat "$store/dev.log"; exit 1; }
  sleep 0.1
done
grep -q "troupe dev: ready" "$store/dev.log" || { echo "troupe dev did not start in 3 minutes:"; tail -30 "$store/dev.log"; exit 1; }
grep "^troupe dev:" "$store/dev.log" | grep -v "^troupe dev:   "

step() { echo; echo "\$ troupe $*"; "$troupe" "$@"; }

step release hello examples/charts/hello --create-namespace --wait
step trace hello
step history hello
step release hello examples/charts/hello --set replicaCount=2 --set message="hello again" --wait
step diff hello --from 1 --to 2
step rollback hello 1 --wait
step history hello
step graph

if [[ "${TROUPE_RUN_ONCE:-}" == 1 ]]; then
  exit 0
fi
echo
ui=$(grep -o "web UI at http://[^ ]*" "$store/dev.log" | head -1 | cut -d' ' -f4)
echo "troupe dev keeps running (log: $store/dev.log). Open $ui in a browser: the releases, each"
echo "revision's timeline, the choreography and the dead letters, live. In another shell:"
echo "  export TROUPE_SERVER=$TROUPE_SERVER TROUPE_NAMESPACE=demo"
echo "  ./bin/troupe list                                   # every release"
echo "  ./bin/troupe release hello examples/charts/hello --set replicaCount=3 --wait"
echo "  ./bin/troupe trace hello                            # the last revision, stage by stage"
echo "  ./bin/troupe tail                                   # follow every event"
echo "  ./bin/kubectl --kubeconfig $store/kubeconfig get all -n demo"
echo "Ctrl-C stops it."
wait $dev
