#!/usr/bin/env bash
# `make run`: ingest and worker on defaults with a generated local config and test keys.
# Services must be up (the Makefile starts them). Ctrl-C stops both processes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
$BIN/python deploy/devkit.py init .run
export HH_CONFIG=$PWD/.run/config.toml
$BIN/hh-worker & worker=$!
$BIN/hh-ingest & ingest=$!
trap 'kill $worker $ingest 2>/dev/null; wait' INT TERM EXIT
cat <<MSG

  ingest  http://127.0.0.1:8080  (POST /callbacks/highhelp[/success|/decline], /readyz, /metrics)
  worker  http://127.0.0.1:8081  (/healthz, /readyz, /metrics)
  Send a signed sample alert from another shell:
      make sample-alert ARGS="--route success --status success --sub-status null"

MSG
wait -n $worker $ingest
