#!/usr/bin/env bash
# `make run` after the install: prepare the model (idempotent), create the first administrator
# when there is none, then hand over to honcho, which runs the Procfile's processes — the model
# server, a Celery worker, the api with the web UI, and a notice that says where to sign in once
# the api and the model server answer. Ctrl-C stops them all (ADR 0009).
#
# Settings come from the environment or .env: ZHIKU_HOST (127.0.0.1), ZHIKU_PORT (8000),
# ZHIKU_DATA_DIR (./data), and ZHIKU_MAIN_BASE_URLS (set: use that model server, start none).
#
# `scripts/run.sh --notice` is the Procfile's `ready` process.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# setting NAME DEFAULT: the environment first, then .env (as the zhiku commands read them).
setting() {
  local name=$1 default=$2 line
  if [[ -n ${!name+set} ]]; then
    printf '%s' "${!name}"
  elif [[ -f .env ]] && line=$(grep -E "^[[:space:]]*${name}=" .env | tail -n 1) && [[ -n $line ]]; then
    line=${line#*=}
    line=${line%\"}; line=${line#\"}; line=${line%\'}; line=${line#\'}
    printf '%s' "$line"
  else
    printf '%s' "$default"
  fi
}

ZHIKU_HOST=$(setting ZHIKU_HOST 127.0.0.1)
ZHIKU_PORT=$(setting ZHIKU_PORT 8000)
DATA_DIR=$(setting ZHIKU_DATA_DIR ./data)
MAIN_URLS=$(setting ZHIKU_MAIN_BASE_URLS "")
export ZHIKU_HOST ZHIKU_PORT
# On a console people read the logs: text unless asked for JSON (servers and compose use JSON).
ZHIKU_LOG_FORMAT=$(setting ZHIKU_LOG_FORMAT text)
export ZHIKU_LOG_FORMAT
case $ZHIKU_HOST in
  0.0.0.0 | "::" | "") PROBE_HOST=127.0.0.1 ;;
  *) PROBE_HOST=$ZHIKU_HOST ;;
esac
[[ $PROBE_HOST == *:* ]] && PROBE_HOST="[$PROBE_HOST]"
URL="http://$PROBE_HOST:$ZHIKU_PORT/"

answers() { # URL: true when it answers 200
  "$BIN/python" -c 'import sys, httpx
try:
    sys.exit(httpx.get(sys.argv[1], timeout=5).status_code != 200)
except httpx.HTTPError:
    sys.exit(1)' "$1"
}

model_answers() { # the main model server answers (what `zhiku models status` checks, lighter)
  "$BIN/python" -c 'import sys
from core.settings import get_settings
from serving.endpoints import endpoint
from serving.model_server import answers
config = endpoint(get_settings(), "main").config
sys.exit(not (config and all(answers(u, config.api_key) for u in config.base_urls)))'
}

notice() {
  local started=$SECONDS
  until answers "${URL}healthz"; do sleep 1; done
  if ! model_answers; then
    echo "the api answers; waiting for the model server (first start: a few minutes)..."
    until model_answers; do sleep 2; done
  fi
  local how
  if [[ ${ZHIKU_RUN_NEW_ADMIN:-} == 1 ]]; then
    how="as admin with the password printed above (also in $DATA_DIR/initial-admin.txt)"
  elif [[ -f $DATA_DIR/initial-admin.txt ]]; then
    how="as admin with the initial password in $DATA_DIR/initial-admin.txt"
  else
    how="with your account (forgot the password? $BIN/zhiku admin reset-password NAME)"
  fi
  cat <<EOT

========================================================================================
 Zhiku is ready: open $URL in a browser
 Sign in $how.
 API: ${URL}api/v1 (schema ${URL}openapi.json), OpenAI-compatible: ${URL}v1
 Demo library, Zhiku's own guide in 中文/English:  $BIN/zhiku demo load
 Ask from here:  $BIN/zhiku ask "知库支持哪些文件格式？"
 Ready after $((SECONDS - started)) s. Press Ctrl-C to stop everything.
========================================================================================
EOT
  exec sleep infinity # honcho stops every process when one exits
}

if [[ ${1:-} == --notice ]]; then
  notice
fi

if answers "${URL}healthz" 2>/dev/null; then
  echo "something already answers at $URL (is Zhiku running?); stop it or set ZHIKU_PORT" >&2
  exit 1
fi

processes=(worker api ready)
if [[ -z $MAIN_URLS ]]; then
  # The bundled model, where `zhiku models prepare` and `serve` put it by default; prepared
  # once (a prepared model is reused), then served from there without a second check.
  export ZHIKU_RUN_MODEL_DIR=$DATA_DIR/models/smollm2-135m-w4a16
  "$BIN/zhiku" models prepare --out "$ZHIKU_RUN_MODEL_DIR"
  processes=(llm "${processes[@]}")
else
  echo "using the model server at $MAIN_URLS (ZHIKU_MAIN_BASE_URLS); not starting one"
fi

out=$("$BIN/zhiku" admin bootstrap --url "$URL")
printf '%s\n' "$out"
export ZHIKU_RUN_NEW_ADMIN=0
[[ $out == *"password:"* ]] && ZHIKU_RUN_NEW_ADMIN=1

# honcho sends SIGKILL 5 s after SIGTERM, a constant it does not let us set (honcho issue 189).
# That is too short here: `zhiku models serve` waits up to 20 s for vLLM to exit (in its own
# process group, so honcho's SIGKILL would leave it running), and an idle Celery worker's warm
# shutdown took 7 s on a loaded 2-core box. So honcho runs with a longer grace.
STOP_GRACE=${ZHIKU_STOP_GRACE:-30}
# The environment goes to every process as it is (the zhiku commands read .env themselves):
# honcho's own .env loading would let .env override the environment.
colour=()
[[ -t 1 ]] || colour=(--no-colour)
exec "$BIN/python" -c 'import sys
import honcho.manager
from honcho.command import main
assert hasattr(honcho.manager, "KILL_WAIT"), "honcho changed: see scripts/run.sh"
honcho.manager.KILL_WAIT = int(sys.argv.pop(1))
main()' "$STOP_GRACE" start "${colour[@]}" -f Procfile -e /dev/null "${processes[@]}"
