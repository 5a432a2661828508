#!/usr/bin/env bash
# `make run`: ingest, worker and the sandbox (playing HighHelp, so the poller has a gateway to
# ask) on a generated local config with test keys. Services must be up (the Makefile starts
# them). Ctrl-C stops all three.
#   HH_RUN_DIR (default .run), HH_INGEST_PORT, HH_WORKER_PORT, HH_MONGO_DB as for the services;
#   HH_SANDBOX_PORT (default 8090) is written into a new config's api_base_url.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
RUN_DIR=${HH_RUN_DIR:-.run}
$BIN/python deploy/devkit.py init "$RUN_DIR" --sandbox-port "${HH_SANDBOX_PORT:-8090}"
export HH_CONFIG=$(cd "$RUN_DIR" && pwd)/config.toml
$BIN/python deploy/devkit.py sandbox "$RUN_DIR" & sandbox=$!
$BIN/hh-worker & worker=$!
$BIN/hh-ingest & ingest=$!
# Background jobs of a script ignore SIGINT: on Ctrl-C (or TERM) they are sent TERM, and
# drain as they do in production.
trap 'trap - EXIT; kill $worker $ingest $sandbox 2>/dev/null; wait' INT TERM EXIT
cat <<MSG

  ingest   http://127.0.0.1:${HH_INGEST_PORT:-8080}  (POST /callbacks/highhelp[/success|/decline], /readyz, /metrics)
  worker   http://127.0.0.1:${HH_WORKER_PORT:-8081}  (/healthz, /readyz, /metrics)
  sandbox  plays HighHelp at the config's api_base_url ($HH_CONFIG)
  Send a signed sample alert from another shell:
      make sample-alert ARGS="--route success --status success --sub-status null"
  Or let the sandbox create payments and send their alerts:
      HH_CONFIG=$HH_CONFIG .venv/bin/hh-sandbox traffic --count 20
  hh-admin is .venv/bin/hh-admin (HH_CONFIG=$HH_CONFIG).

MSG
wait -n $worker $ingest $sandbox
