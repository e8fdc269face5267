#!/usr/bin/env bash
# Start what exists so far: the model server (vLLM, prepared on first run), a Celery worker and
# the api (Redis is started by `make run`). Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${ZHIKU_HOST:-127.0.0.1}
PORT=${ZHIKU_PORT:-8000}

pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT

$BIN/zhiku models serve &
pids+=($!)
$BIN/zhiku worker &
pids+=($!)
$BIN/zhiku serve --host "$HOST" --port "$PORT" &
pids+=($!)

for _ in $(seq 60); do
  curl -fsS "http://$HOST:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 1
done
echo "waiting for the model server (first start: a few minutes)..."
until $BIN/zhiku models status >/dev/null 2>&1; do
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the model server failed; see data/logs/"; exit 1; }
  sleep 3
done
cat <<EOT

Zhiku is running: open http://$HOST:$PORT/ in a browser
  (API: http://$HOST:$PORT/api/v1, schema: http://$HOST:$PORT/openapi.json)
No default account exists. Create the first administrator with:
  .venv/bin/zhiku admin create-user admin --admin
Ingest a folder:  .venv/bin/zhiku ingest ./my-docs --library handbook --create
Ask:              .venv/bin/zhiku ask "How do I apply for annual leave?"
Press Ctrl-C to stop.
EOT
wait -n "${pids[@]}"
