#!/usr/bin/env bash
# A PostgreSQL server for the search's Optuna storage (and a shared MLflow store), from
# Debian's `postgresql` package, with its data in the repository (.pg/, git-ignored).
#
#   tools/postgres.sh start         install the package if missing, initialise .pg/ (first
#                                   time), start the server, create the databases `dpap`
#                                   (Optuna) and `mlflow` (tools/mlflow_server.sh); print
#                                   the URL of `dpap`
#   tools/postgres.sh url [DB]      print the URL of database DB (default dpap), e.g.
#                                   dpap search --storage "$(tools/postgres.sh url)"
#   tools/postgres.sh createdb DB   create database DB unless it exists; print its URL
#   tools/postgres.sh status        say whether the server runs (exit 0) or not (exit 3)
#   tools/postgres.sh stop          stop the server (the data stay in .pg/)
#
# Settings (environment):
#   DPAP_PG_DIR     the server's folder (default: <repo>/.pg): data/, run/ (socket),
#                   log/postgres.log, password, port
#   DPAP_PG_PORT    TCP port (default: the one of the last start, else 55432)
#   DPAP_PG_LISTEN  addresses to listen on (default 127.0.0.1: this machine only). For
#                   workers on other machines: DPAP_PG_LISTEN='*' (or this machine's
#                   address); password authentication (scram) is then allowed from any
#                   host, so keep the port behind the cluster's firewall
#   DPAP_PG_HOST    host name the printed URL uses (default 127.0.0.1; with DPAP_PG_LISTEN
#                   set to another address, e.g. $(hostname -f))
#
# PostgreSQL refuses to run as root: as root, the server's binaries run as the `postgres`
# user (made by the Debian package), which owns data/ and run/. The superuser is `dpap`
# with a random password (in .pg/password, mode 600), used over TCP; the Unix socket in
# run/ (mode 700) lets only the server's user, and root, in without one.
set -euo pipefail

die() { echo "error: tools/postgres.sh: $*" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${DPAP_PG_DIR:-$ROOT/.pg}
DATA=$DIR/data
RUN=$DIR/run
LOG=$DIR/log/postgres.log
LISTEN=${DPAP_PG_LISTEN:-127.0.0.1}
HOST=${DPAP_PG_HOST:-127.0.0.1}
SUPERUSER=dpap

port() {
    if [[ -n ${DPAP_PG_PORT:-} ]]; then echo "$DPAP_PG_PORT"
    elif [[ -f $DIR/port ]]; then cat "$DIR/port"
    else echo 55432; fi
}

find_bin() {  # the folder of Debian's PostgreSQL binaries (newest version), or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/pg_ctl && -x $d/initdb ]] && { echo "$d"; return; }
    done
}

install_postgres() {
    [[ -n $(find_bin) ]] && return
    [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed and installing it needs root; run: sudo apt-get install -y postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get here; install PostgreSQL (initdb, pg_ctl) another way"
    echo "installing Debian's postgresql package (apt-get) ..." >&2
    # the package's own cluster, if it starts one, is not ours: it is left alone; one
    # apt-get at a time (the test suite runs on several pytest-xdist workers, and
    # tools/install_browser.sh may be installing too), waiting up to 15 minutes for the
    # lock; whoever waited checks again before installing; DPkg::Lock::Timeout waits for
    # another apt's dpkg lock during the install
    if ! DEBIAN_FRONTEND=noninteractive flock -w 900 /tmp/dpap-apt.lock sh -c '
        ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && exit 0
        apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql' >"$DIR/apt.log" 2>&1; then
        die "apt-get could not install postgresql (see $DIR/apt.log); install it by hand: apt-get install -y postgresql"
    fi
    [[ -n $(find_bin) ]] || die "apt-get installed postgresql but no pg_ctl under /usr/lib/postgresql/*/bin"
}

# Run a server binary as the server's user: `postgres` when we are root, else ourselves.
as_server() {
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no user 'postgres' to run the server as (PostgreSQL refuses root); create one: useradd --system postgres"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

server_owner() { if [[ $(id -u) -eq 0 ]]; then echo postgres; else id -un; fi; }

running() { [[ -n $(find_bin) && -f $DATA/PG_VERSION ]] && as_server "$(find_bin)/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

url() {
    local db=${1:-dpap}
    [[ -f $DIR/password ]] || die "no server in $DIR yet; run: tools/postgres.sh start"
    echo "postgresql+psycopg://$SUPERUSER:$(cat "$DIR/password")@$HOST:$(port)/$db"
}

psql_admin() {  # psql as the superuser over the Unix socket (no password)
    "$(find_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$(port)" -U "$SUPERUSER" -d postgres "$@"
}

createdb() {
    local db=$1
    [[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "database name '$db': use letters, digits and _ only"
    running || die "the server in $DIR is not running; run: tools/postgres.sh start"
    if [[ -z $(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
        psql_admin -c "CREATE DATABASE $db" >/dev/null
    fi
}

init() {
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if [[ -f $DATA/PG_VERSION ]]; then return; fi
    local owner; owner=$(server_owner)
    as_server test -x "$DIR" || die "user '$owner' cannot enter $DIR (a parent folder is closed to it); set DPAP_PG_DIR to a folder it can reach"
    rm -rf "$DATA"
    mkdir -p "$DATA" "$RUN"
    [[ -f $DIR/password ]] || (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/password")
    local pwfile=$RUN/pw
    cp "$DIR/password" "$pwfile"
    chown -R "$owner" "$DATA" "$RUN"
    chmod 700 "$DATA" "$RUN"
    if ! as_server "$(find_bin)/initdb" -D "$DATA" -U "$SUPERUSER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$DIR/initdb.log" 2>&1; then
        rm -f "$pwfile"
        die "initdb failed (see $DIR/initdb.log)"
    fi
    rm -f "$pwfile"
}

start() {
    mkdir -p "$DIR"
    install_postgres
    init
    local p; p=$(port)
    if [[ $LISTEN != 127.0.0.1 && $LISTEN != localhost ]] && ! grep -q "^host all all all scram-sha-256" "$DATA/pg_hba.conf"; then
        echo "host all all all scram-sha-256  # tools/postgres.sh: DPAP_PG_LISTEN=$LISTEN" | as_server tee -a "$DATA/pg_hba.conf" >/dev/null
    fi
    if ! running; then
        mkdir -p "$DIR/log"
        chown "$(server_owner)" "$DIR/log"
        as_server "$(find_bin)/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
            -o "-c listen_addresses='$LISTEN' -p $p -c unix_socket_directories='$RUN' -c max_connections=200" start >/dev/null \
            || die "the server did not start (port $p taken? see $LOG); another port: DPAP_PG_PORT=PORT tools/postgres.sh start"
        echo "$p" >"$DIR/port"
    fi
    createdb dpap
    createdb mlflow
    url dpap
}

stop() {
    if running; then
        as_server "$(find_bin)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    url) running || die "the server in $DIR is not running; run: tools/postgres.sh start"; url "${2:-dpap}" ;;
    createdb) [[ -n ${2:-} ]] || die "usage: tools/postgres.sh createdb NAME"; createdb "$2"; url "$2" ;;
    status) if running; then echo "running on port $(port) ($DIR)"; else echo "not running ($DIR)"; exit 3; fi ;;
    *) echo "usage: tools/postgres.sh start|stop|status|url [DB]|createdb DB" >&2; exit 2 ;;
esac
