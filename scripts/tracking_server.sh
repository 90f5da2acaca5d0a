#!/usr/bin/env bash
# The team tracking stack on loopback: a real PostgreSQL server and MLflow's own `mlflow server` backed
# by it, with proxied artifacts (--serve-artifacts). Used by `make tracking-server` (and -stop, -clean)
# and by the tests that run against a real server.
#
#   scripts/tracking_server.sh start|stop|clean|status
#
# Settings (environment):
#   TAGGER_SERVER_DIR   state folder (default .tracking-server/ in the project, git-ignored):
#                       pgdata/, artifacts/, run/ (socket), postgres.log, mlflow.log, mlflow.pid
#   TAGGER_SERVER_HOST  address both bind (default 127.0.0.1)
#   TAGGER_PG_PORT      PostgreSQL port (default 5433)
#   TAGGER_MLFLOW_PORT  MLflow server port (default 5001)
#   TAGGER_PG_OS_USER   OS user that runs PostgreSQL when this runs as root (default postgres;
#                       PostgreSQL refuses to run as root)
set -euo pipefail

command=${1:-start}
root=$(cd "$(dirname "$0")/.." && pwd)
state=${TAGGER_SERVER_DIR:-$root/.tracking-server}
host=${TAGGER_SERVER_HOST:-127.0.0.1}
pg_port=${TAGGER_PG_PORT:-5433}
mlflow_port=${TAGGER_MLFLOW_PORT:-5001}
os_user=${TAGGER_PG_OS_USER:-postgres}
mlflow=${TAGGER_MLFLOW:-$root/.venv/bin/mlflow}
uri="postgresql://mlflow@$host:$pg_port/mlflow"

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg_user() {  # run a PostgreSQL command as a non-root user
    if [ "$(id -u)" = 0 ]; then runuser -u "$os_user" -- "$@"; else "$@"; fi
}

ensure_postgres() {
    if [ -z "$(pg_bin)" ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "error: PostgreSQL is not installed; install the Debian package 'postgresql' (as root)" >&2
            exit 2
        fi
        echo "installing PostgreSQL (apt-get install postgresql) ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    if [ "$(id -u)" = 0 ] && ! id "$os_user" >/dev/null 2>&1; then
        useradd --system --no-create-home "$os_user"
    fi
}

pg_running() {
    [ -f "$state/pgdata/postmaster.pid" ] && as_pg_user "$(pg_bin)/pg_ctl" -D "$state/pgdata" status >/dev/null 2>&1
}

mlflow_running() {
    [ -f "$state/mlflow.pid" ] && kill -0 "$(cat "$state/mlflow.pid")" 2>/dev/null
}

start() {
    ensure_postgres
    local bin
    bin=$(pg_bin)
    mkdir -p "$state/run" "$state/artifacts"
    if [ "$(id -u)" = 0 ]; then
        chmod 755 "$state"
        chown "$os_user" "$state/run"
    fi
    if [ "$(id -u)" = 0 ] && ! runuser -u "$os_user" -- test -x "$state"; then
        echo "error: $state cannot be reached by user $os_user (a parent folder is private); set TAGGER_SERVER_DIR" >&2
        exit 2
    fi
    if [ ! -f "$state/pgdata/PG_VERSION" ]; then
        mkdir -p "$state/pgdata"
        [ "$(id -u)" = 0 ] && chown "$os_user" "$state/pgdata"
        chmod 700 "$state/pgdata"
        # trust on loopback only: the server listens on $host alone (see the README for a team set-up)
        as_pg_user "$bin/initdb" -D "$state/pgdata" -U mlflow --auth=trust -E UTF8 >"$state/initdb.log"
    fi
    if ! pg_running; then
        touch "$state/postgres.log" && { [ "$(id -u)" != 0 ] || chown "$os_user" "$state/postgres.log"; }
        as_pg_user "$bin/pg_ctl" -D "$state/pgdata" -l "$state/postgres.log" -w -t 60 \
            -o "-p $pg_port -k $state/run -c listen_addresses=$host" start >/dev/null
    fi
    for database in mlflow optuna; do  # MLflow's store; Optuna's studies for sweeps shared across machines
        if ! "$bin/psql" -h "$host" -p "$pg_port" -U mlflow -d postgres -tAc \
            "select 1 from pg_database where datname = '$database'" | grep -q 1; then
            "$bin/createdb" -h "$host" -p "$pg_port" -U mlflow "$database"
        fi
    done
    if ! mlflow_running; then
        # its own session, so stopping it stops its workers too
        setsid "$mlflow" server --backend-store-uri "$uri" --artifacts-destination "$state/artifacts" \
            --serve-artifacts --host "$host" --port "$mlflow_port" --workers 2 \
            >"$state/mlflow.log" 2>&1 </dev/null &
        echo $! >"$state/mlflow.pid"
        for _ in $(seq 1 120); do
            if curl -fs "http://$host:$mlflow_port/health" >/dev/null 2>&1; then break; fi
            if ! mlflow_running; then
                echo "error: mlflow server exited; see $state/mlflow.log" >&2
                tail -n 5 "$state/mlflow.log" >&2
                exit 1
            fi
            sleep 0.5
        done
        curl -fs "http://$host:$mlflow_port/health" >/dev/null || { echo "error: mlflow server did not answer" >&2; exit 1; }
    fi
    echo "PostgreSQL on $host:$pg_port (database mlflow), MLflow server on http://$host:$mlflow_port"
    echo "Optuna storage for sweeps shared across machines: --storage postgresql://mlflow@$host:$pg_port/optuna"
    echo "export MLFLOW_TRACKING_URI=http://$host:$mlflow_port"
}

stop() {
    if mlflow_running; then
        local pid
        pid=$(cat "$state/mlflow.pid")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$state/mlflow.pid"
    if [ -n "$(pg_bin)" ] && pg_running; then
        as_pg_user "$(pg_bin)/pg_ctl" -D "$state/pgdata" -m fast -w stop >/dev/null
    fi
    echo "stopped"
}

case "$command" in
    start) start ;;
    stop) stop ;;
    clean) stop; rm -rf "$state"; echo "removed $state" ;;
    status)
        pg_running && echo "PostgreSQL: running on $host:$pg_port" || echo "PostgreSQL: stopped"
        mlflow_running && echo "MLflow server: running on http://$host:$mlflow_port" || echo "MLflow server: stopped"
        ;;
    *) echo "usage: $0 start|stop|clean|status" >&2; exit 2 ;;
esac
