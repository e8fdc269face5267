#!/bin/sh
# Entry point of the zhiku image. `migrate` brings the database schema up to date (the
# one-shot compose service runs it before any api or worker); anything else is run as given,
# e.g. `zhiku serve --host 0.0.0.0`, `zhiku worker`, `zhiku admin create-user NAME --admin`.
set -eu

data_dir="${ZHIKU_DATA_DIR:-/data}"
mkdir -p "$data_dir" 2>/dev/null || true
if [ ! -w "$data_dir" ]; then
    echo "zhiku: the data dir $data_dir is not writable by uid $(id -u);" \
         "give it to uid $(id -u) (e.g. chown -R $(id -u):$(id -g) on the volume)" >&2
    exit 1
fi

if [ "${1:-}" = "migrate" ]; then
    exec python -c 'from core import db; db.migrate(); print("zhiku: database schema is up to date")'
fi
exec "$@"
