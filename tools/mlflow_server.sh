#!/usr/bin/env bash
# A shared MLflow tracking server: PostgreSQL as its backend store (the database `mlflow`
# of tools/postgres.sh's server) and a folder for the artifacts, which the server stores
# itself (clients upload them over HTTP, so workers on other machines need no shared disk).
#
#   tools/mlflow_server.sh start   start PostgreSQL if needed (tools/postgres.sh start), then
#                                  the MLflow server; print its tracking URI, e.g.
#                                  export MLFLOW_TRACKING_URI=$(tools/mlflow_server.sh start)
#   tools/mlflow_server.sh url     print the tracking URI
#   tools/mlflow_server.sh status  say whether the server runs (exit 0) or not (exit 3)
#   tools/mlflow_server.sh stop    stop the MLflow server (PostgreSQL keeps running:
#                                  tools/postgres.sh stop)
#
# Settings (environment):
#   DPAP_MLFLOW_DIR   the server's folder (default: <repo>/.mlflow-server): artifacts/,
#                     server.log, pid, port
#   DPAP_MLFLOW_PORT  TCP port (default: the one of the last start, else 5055)
#   DPAP_MLFLOW_HOST  address to listen on (default 127.0.0.1: this machine only; for
#                     workers on other machines this machine's address, or 0.0.0.0, and
#                     then also --allowed-hosts: DPAP_MLFLOW_OPTS="--allowed-hosts HOST:PORT")
#   DPAP_MLFLOW_OPTS  more options for `mlflow server`
#   PYTHON            the Python with MLflow and psycopg (default: <repo>/.venv/bin/python,
#                     else python3)
#   and tools/postgres.sh's DPAP_PG_* settings.
set -euo pipefail

die() { echo "error: tools/mlflow_server.sh: $*" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${DPAP_MLFLOW_DIR:-$ROOT/.mlflow-server}
HOST=${DPAP_MLFLOW_HOST:-127.0.0.1}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

port() {
    if [[ -n ${DPAP_MLFLOW_PORT:-} ]]; then echo "$DPAP_MLFLOW_PORT"
    elif [[ -f $DIR/port ]]; then cat "$DIR/port"
    else echo 5055; fi
}

url() { echo "http://$HOST:$(port)"; }

running() { [[ -f $DIR/pid ]] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; }

healthy() { "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$(url)" >/dev/null 2>&1; }

start() {
    mkdir -p "$DIR/artifacts"
    "$ROOT/tools/postgres.sh" start >/dev/null  # also creates the database `mlflow`
    local backend; backend=$("$ROOT/tools/postgres.sh" url mlflow)
    if running && healthy; then url; return; fi
    local p; p=$(port)
    echo "$p" >"$DIR/port"
    # its own session (setsid), so `stop` ends the server and the workers it forks
    # shellcheck disable=SC2086
    setsid "$PYTHON" -m mlflow server --backend-store-uri "$backend" --artifacts-destination "$DIR/artifacts" \
        --host "$HOST" --port "$p" --workers 1 ${DPAP_MLFLOW_OPTS:-} >"$DIR/server.log" 2>&1 </dev/null &
    echo $! >"$DIR/pid"
    local i
    for i in $(seq 1 240); do
        if healthy; then url; return; fi
        running || die "the MLflow server stopped at start (port $p taken? see $DIR/server.log); another port: DPAP_MLFLOW_PORT=PORT"
        sleep 0.5
    done
    stop
    die "the MLflow server did not answer within 120 s (see $DIR/server.log)"
}

stop() {
    if running; then
        local pid; pid=$(cat "$DIR/pid")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/pid"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    url) url ;;
    status) if running && healthy; then echo "running at $(url) ($DIR)"; else echo "not running ($DIR)"; exit 3; fi ;;
    *) echo "usage: tools/mlflow_server.sh start|stop|status|url" >&2; exit 2 ;;
esac
