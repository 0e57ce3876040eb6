#!/usr/bin/env bash
# `make cluster-up`: run the local cluster in the background; its kubeconfig is .troupe/kubeconfig.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .troupe
pidfile=.troupe/cluster.pid log=.troupe/cluster.log
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "cluster already running (pid $(cat "$pidfile")): kubectl --kubeconfig .troupe/kubeconfig get nodes"
  exit 0
fi
rm -f .troupe/kubeconfig
setsid nohup ./bin/troupe-cluster --dir .troupe/cluster --kubeconfig .troupe/kubeconfig >"$log" 2>&1 < /dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 1200); do
  if grep -q "cluster ready" "$log"; then
    grep "cluster ready" "$log"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "cluster failed to start:" >&2
    tail -30 "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.1
done
echo "cluster not ready after 120s; see $log" >&2
exit 1
