#!/usr/bin/env bash
# `make cluster-down`: stop the cluster `make cluster-up` started, and every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=.troupe/cluster.pid
if [[ ! -f $pidfile ]]; then
  echo "no cluster running"
  exit 0
fi
pid=$(cat "$pidfile")
if kill -TERM "$pid" 2>/dev/null; then
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "cluster did not stop in 30s; killing it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  fi
fi
rm -f "$pidfile"
echo "cluster stopped"
