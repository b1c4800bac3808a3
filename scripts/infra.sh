#!/usr/bin/env bash
# Native Apache Kafka (KRaft, single node) and PostgreSQL for local development, tests and CI.
# No Docker needed: Kafka jars come from Maven Central, PostgreSQL from Debian's package.
#
#   scripts/infra.sh install|start|stop|status|env|reset
#
# All state lives under $LOTLENS_STATE_DIR (default <repo>/.state); see deploy/local/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Absolute: PostgreSQL tools run from / (see as_pg) and Kafka's config holds the data path.
STATE="$(realpath -m "${LOTLENS_STATE_DIR:-$ROOT/.state}")"
KAFKA_PORT="${LOTLENS_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${LOTLENS_KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${LOTLENS_PG_PORT:-55432}"
# How often autovacuum visits each database. `make pytest` sets 10s: the harness test that drops a
# database with autovacuum in it waited up to 70 s for the worker at PostgreSQL's default. Everything
# else keeps the default: at 10s the bench's 50,000-lot job cost PostgreSQL 18-21 CPU-s instead of
# about 12 (its database holds hundreds of thousands of rows to vacuum again and again).
PG_AUTOVACUUM_NAPTIME="${LOTLENS_PG_AUTOVACUUM_NAPTIME:-1min}"

DEPLOY="$ROOT/deploy/local/kafka"
KAFKA_DIR="$STATE/kafka"
KAFKA_LIB="$KAFKA_DIR/lib"
KAFKA_CONF="$KAFKA_DIR/config/server.properties"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/logs/server.log"
KAFKA_OUT="$KAFKA_DIR/logs/kafka.out"
PY="$ROOT/.venv/bin/python"
IS_ROOT=$([ "$(id -u)" = 0 ] && echo 1 || echo 0)

log() { echo "infra: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp; no curl/nc).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_tail() {
  if [ -f "$1" ]; then log "last lines of $1:"; tail -n "${2:-40}" "$1" >&2; fi
}

# Debian packages for what is missing (CI starts from a fresh machine, as root).
APT_UPDATED=0
apt_install() {
  [ "$IS_ROOT" = 1 ] || die "missing: $*; install with 'sudo apt-get install -y $*'"
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  [ "$APT_UPDATED" = 1 ] || { apt-get update -qq; APT_UPDATED=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Serialise install/start/stop/reset: pytest workers may call `start` at the same time.
# Daemons are launched with 9>&- so they do not inherit (and hold) the lock.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.infra.lock"
  flock -w 900 9 || die "another infra.sh holds $STATE/.infra.lock"
}

# ---------------------------------------------------------------- PostgreSQL

# Binaries matching an existing cluster's major version, else the highest installed one.
find_pg_bin() {
  local ver
  ver="$(cat "$PG_DIR/data/PG_VERSION" 2>/dev/null || true)"
  if [ -n "$ver" ] && [ -x "/usr/lib/postgresql/$ver/bin/postgres" ]; then
    PG_BIN="/usr/lib/postgresql/$ver/bin"
  else
    PG_BIN="$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 || true)"
    PG_BIN="${PG_BIN%/postgres}"
  fi
}

# postgres refuses to run as root: as root, run PG tools as the `postgres` system user.
as_pg() {
  if [ "$IS_ROOT" = 1 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Cluster folder. As root it must be reachable by the postgres user, and the socket path must fit
# in 107 bytes; otherwise use /var/tmp/lotlens-pg-<hash of the state dir> (stable per state dir).
resolve_pg() {
  mkdir -p "$STATE"
  PG_DIR="$STATE/pg"
  if { [ "$IS_ROOT" = 1 ] && ! (cd / && runuser -u postgres -- test -x "$STATE"); } \
    || [ "${#PG_DIR}" -gt 80 ]; then
    PG_DIR="/var/tmp/lotlens-pg-$(printf %s "$STATE" | sha256sum | cut -c1-12)"
    private_pg_dir
  fi
  find_pg_bin
}

# The /var/tmp name is predictable: a folder someone else made there first (0777, logs/initdb.log
# a link to a file of root's) had the script write through it as root. Ours is made 0700; one
# found must be a folder (no link) owned by us or, under root, by postgres, that no one else
# can write to.
private_pg_dir() {
  local owner mode
  if [ ! -e "$PG_DIR" ] && [ ! -L "$PG_DIR" ]; then
    mkdir -m 700 "$PG_DIR"
    [ "$IS_ROOT" = 1 ] && chown postgres:postgres "$PG_DIR"
  fi
  owner="$(stat -c %U "$PG_DIR")" mode="$(stat -c %a "$PG_DIR")"
  [ -d "$PG_DIR" ] && [ ! -L "$PG_DIR" ] && [ $((8#$mode & 8#022)) = 0 ] \
    && { [ "$owner" = "$(id -un)" ] || { [ "$IS_ROOT" = 1 ] && [ "$owner" = postgres ]; }; } \
    || die "$PG_DIR is not a private folder of yours (owner $owner, mode $mode): remove it, or set LOTLENS_STATE_DIR to a short path the postgres user can reach"
}

pg_pid() { head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true; }
# postmaster.pid is trusted only if its process runs in the data folder, as a postmaster does (pids
# get reused: one left by a crash naming another process made `start` skip PostgreSQL for good and
# `stop` send that process SIGINT).
pg_postmaster() {
  local pid
  pid="$(pg_pid)"
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$PG_DIR/data" ]
}
pg_running() {
  [ -n "$PG_BIN" ] && pg_postmaster && as_pg "$PG_BIN/pg_ctl" status -D "$PG_DIR/data" >/dev/null 2>&1
}

install_pg() {
  [ -n "$PG_BIN" ] && return 0
  # We run our own cluster: don't let the package create and start the default one on 5432.
  apt_install postgresql-common
  sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  apt_install postgresql
  find_pg_bin
  [ -n "$PG_BIN" ] || die "apt-get installed no /usr/lib/postgresql/*/bin/postgres"
}

INCLUDE_LOTLENS_CONF="include_if_exists = 'lotlens.conf'"

# initdb once; local socket trusted (admin tasks; only the cluster's user may open it, see
# write_pg_conf), TCP needs the password (like production). The cluster is made in data.new and
# renamed to data once complete, our settings' include line too: initdb writes PG_VERSION first,
# and a folder a kill left half-made was taken for a cluster (pg_ctl then failed on every start),
# or, killed before the include line, started on PostgreSQL's default port 5432.
init_pg() {
  local dir="$PG_DIR"
  if [ -e "$dir/data" ]; then
    [ -f "$dir/data/global/pg_control" ] && grep -qxF "$INCLUDE_LOTLENS_CONF" "$dir/data/postgresql.conf" \
      || die "$dir/data is not a complete cluster (an initdb cut short?): 'scripts/infra.sh reset' deletes it, and all local data with it"
    return 0
  fi
  log "initdb in $dir/data"
  mkdir -p "$dir/run" "$dir/logs"
  [ "$IS_ROOT" = 1 ] && chown -R postgres:postgres "$dir"
  as_pg rm -rf "$dir/data.new"
  as_pg "$PG_BIN/initdb" -D "$dir/data.new" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$dir/logs/initdb.log" 2>&1 \
    || { show_tail "$dir/logs/initdb.log"; die "initdb failed"; }
  echo "$INCLUDE_LOTLENS_CONF" | as_pg tee -a "$dir/data.new/postgresql.conf" >/dev/null
  as_pg mv -T "$dir/data.new" "$dir/data"
}

# Settings rewritten on every start so a changed LOTLENS_PG_PORT takes effect.
write_pg_conf() {
  local dir="$PG_DIR"
  as_pg tee "$dir/data/lotlens.conf" >/dev/null <<EOF
# Written by scripts/infra.sh on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir/run'
# The socket trusts whoever opens it as the superuser: the cluster's own user alone may (0777 let
# any local user in, and COPY ... TO PROGRAM run commands as that account).
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 256MB
# Crash tests rely on durability: keep fsync and synchronous commit on.
fsync = on
synchronous_commit = on
EOF
}

pg_psql() { as_pg "$PG_BIN/psql" -h "$PG_DIR/run" -p "$PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

ensure_pg_role() {
  pg_psql -d postgres >/dev/null <<'EOF'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lotlens') THEN
    CREATE ROLE lotlens LOGIN CREATEDB PASSWORD 'lotlens';
  END IF;
  -- The bench checkpoints before each measurement (PostgreSQL 15+ has the role).
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_checkpoint')
     AND NOT pg_has_role('lotlens', 'pg_checkpoint', 'MEMBER') THEN
    GRANT pg_checkpoint TO lotlens;
  END IF;
END $$;
SELECT 'CREATE DATABASE lotlens OWNER lotlens'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lotlens') \gexec
EOF
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" \
    && PGPASSWORD=lotlens "$PG_BIN/psql" -X -qtA -h 127.0.0.1 -p "$PG_PORT" -U lotlens -d lotlens \
      -c 'SELECT 1' >/dev/null 2>&1
}

start_pg() {
  local dir="$PG_DIR"
  init_pg
  if ! pg_running; then
    port_open "$PG_PORT" && die "port $PG_PORT is taken by another process (set LOTLENS_PG_PORT)"
    # Not our postmaster's (pg_running): PostgreSQL would refuse to start over it.
    if ! pg_postmaster && [ -f "$dir/data/postmaster.pid" ]; then
      log "removing a postmaster.pid left by a crash (pid $(pg_pid) is not this cluster's server)"
      rm -f "$dir/data/postmaster.pid"
    fi
    write_pg_conf
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT ($dir)"
    as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/logs/postgres.log" -w -t 60 \
      >/dev/null 9>&- || { show_tail "$dir/logs/postgres.log"; die "PostgreSQL did not start"; }
  fi
  ensure_pg_role || { show_tail "$dir/logs/postgres.log"; die "could not create role/database"; }
  # Applied to a server already running too (the setting needs only a reload).
  pg_psql -d postgres -c "ALTER SYSTEM SET autovacuum_naptime = '$PG_AUTOVACUUM_NAPTIME'" \
    -c 'SELECT pg_reload_conf()' >/dev/null || die "could not set autovacuum_naptime"
  pg_ready || { show_tail "$dir/logs/postgres.log"; die "PostgreSQL is not answering as lotlens"; }
}

stop_pg() {
  pg_running || return 0
  log "stopping PostgreSQL"
  as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DIR/data" -m fast -w -t 60 >/dev/null
}

# --------------------------------------------------------------------- Kafka

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$DEPLOY/pom.xml"; }
# Every jar the broker runs is pinned in $DEPLOY/jars.sha256 (scripts/kafka-jars.sh): Maven's
# --strict-checksums compares with the same server's .sha1, and copies jars in ~/.m2 unchecked.
source "$ROOT/scripts/kafka-jars.sh"
KAFKA_JARS_CHECKED=0

install_kafka() {
  command -v java >/dev/null || apt_install default-jre-headless
  kafka_lock_current \
    || die "$DEPLOY/pom.xml changed since $KAFKA_LOCK was made: regenerate it with scripts/kafka-jars.sh lock"
  local unlocked
  unlocked="$(kafka_jars_unlocked "$KAFKA_LIB")"
  if [ -z "$unlocked" ]; then KAFKA_JARS_CHECKED=1; return 0; fi
  # A jar changed or cut short since (or an older version's) is fetched again, not run.
  [ -d "$KAFKA_LIB" ] && while read -r line; do log "$KAFKA_LIB/$line: fetching again"; done <<<"$unlocked"
  command -v mvn >/dev/null || apt_install maven
  log "fetching Kafka $(kafka_version) jars with Maven into $KAFKA_LIB"
  mkdir -p "$KAFKA_DIR/logs"
  # Copy into a fresh folder and swap it in, so an interrupted download never looks complete.
  rm -rf "$KAFKA_LIB.tmp"
  mvn -q -B --strict-checksums -f "$DEPLOY/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIB.tmp" >"$KAFKA_DIR/logs/mvn.log" 2>&1 \
    || { show_tail "$KAFKA_DIR/logs/mvn.log"; die "Maven could not fetch the Kafka jars"; }
  kafka_jars_verify "$KAFKA_LIB.tmp" || die "Maven's Kafka jars do not match $KAFKA_LOCK, none is run: a jar Maven took from ~/.m2 (or a mirror) can be deleted there and fetched again; after a Kafka version change, regenerate the lock: scripts/kafka-jars.sh lock"
  rm -rf "$KAFKA_LIB" && mv "$KAFKA_LIB.tmp" "$KAFKA_LIB"
  KAFKA_JARS_CHECKED=1
}

# The pid file is trusted only if that process is really our broker (pids get reused).
kafka_pid() {
  local pid cmd
  pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
  [ -n "$pid" ] || return 1
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  [[ "$cmd" == *"kafka.Kafka $KAFKA_CONF"* ]] && echo "$pid"
}

# The glob stays quoted: java expands "lib/*" itself.
KAFKA_JVM=(java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$DEPLOY/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs"
  -cp "$KAFKA_LIB/*")
kafka_java() { "${KAFKA_JVM[@]}" "$@"; }

# Render the config and format the storage once (static voters: no --standalone, see template).
prepare_kafka() {
  mkdir -p "$KAFKA_DIR/config" "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
    -e "s|@DATA_DIR@|$KAFKA_DIR/data|g" "$DEPLOY/server.properties.template" >"$KAFKA_CONF"
  [ -f "$KAFKA_DIR/data/meta.properties" ] && return 0
  [ -s "$KAFKA_DIR/cluster.id" ] || kafka_java kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster.id"
  kafka_java kafka.tools.StorageTool format -t "$(cat "$KAFKA_DIR/cluster.id")" -c "$KAFKA_CONF" \
    --ignore-formatted >"$KAFKA_DIR/logs/format.log" 2>&1 \
    || { show_tail "$KAFKA_DIR/logs/format.log"; die "Kafka storage format failed"; }
}

# Ready = the broker answers a metadata request. Without the project's venv (confluent_kafka),
# fall back to the "Kafka Server started" line logged after byte offset $1 of server.log.
kafka_ready() {
  port_open "$KAFKA_PORT" || return 1
  local rc=2
  if [ -x "$PY" ]; then
    "$PY" - "127.0.0.1:$KAFKA_PORT" <<'EOF' >/dev/null 2>&1 && rc=0 || rc=$?
import sys
try:
    from confluent_kafka.admin import AdminClient
except ImportError:
    sys.exit(2)
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=5)
sys.exit(0 if md.brokers else 1)
EOF
  fi
  # (grep without -q: an early exit would SIGPIPE tail and fail the pipeline under pipefail)
  [ "$rc" = 2 ] && tail -c +"$((${1:-0} + 1))" "$KAFKA_LOG" 2>/dev/null \
    | grep "Kafka Server started" >/dev/null && rc=0
  [ "$rc" = 0 ]
}

start_kafka() {
  local pid offset deadline
  if pid="$(kafka_pid)"; then
    kafka_ready 0 && return 0
    offset=0
  else
    # restart-kafka comes here without install_kafka.
    [ "$KAFKA_JARS_CHECKED" = 1 ] || kafka_jars_verify "$KAFKA_LIB" \
      || die "the jars in $KAFKA_LIB do not match $KAFKA_LOCK: broker not started ('scripts/infra.sh install' fetches them again)"
    for p in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
      port_open "$p" && die "port $p is taken by another process (set LOTLENS_KAFKA_PORT / _CONTROLLER_PORT)"
    done
    prepare_kafka
    offset="$(stat -c %s "$KAFKA_LOG" 2>/dev/null || echo 0)"
    log "starting Kafka $(kafka_version) on 127.0.0.1:$KAFKA_PORT"
    # setsid+nohup: the broker outlives this shell and ignores its terminal's SIGINT/SIGHUP.
    # The inner bash writes its own pid, which `exec` hands on to java.
    rm -f "$KAFKA_PID"
    # shellcheck disable=SC2016
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" "${KAFKA_JVM[@]}" \
      kafka.Kafka "$KAFKA_CONF" >>"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  fi
  deadline=$((SECONDS + 90))
  until kafka_ready "$offset"; do
    # kill -0, not kafka_pid: /proc/<pid>/cmdline reads empty while bash execs java.
    pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      show_tail "$KAFKA_OUT" 20; show_tail "$KAFKA_LOG"; die "Kafka exited during start"
    fi
    [ "$SECONDS" -lt "$deadline" ] || { show_tail "$KAFKA_LOG"; die "Kafka not ready after 90 s"; }
    sleep 0.5
  done
}

stop_kafka() {
  local pid i
  pid="$(kafka_pid)" || { rm -f "$KAFKA_PID"; return 0; }
  log "stopping Kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "Kafka ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid" || true; fi
  rm -f "$KAFKA_PID"
}

# ------------------------------------------------------------------ commands

cmd_install() { install_pg; install_kafka; }

# `start` installs first (a no-op when installed) so `pytest` works on a fresh machine too.
cmd_start() {
  cmd_install; start_pg; start_kafka
  log "ready: Kafka 127.0.0.1:$KAFKA_PORT, PostgreSQL 127.0.0.1:$PG_PORT (state $STATE)"
}

cmd_stop() { stop_kafka; stop_pg; }

cmd_status() {
  local ok=0 pid
  if pid="$(kafka_pid)"; then echo "kafka: running pid $pid port $KAFKA_PORT"
  else echo "kafka: stopped port $KAFKA_PORT"; ok=3; fi
  if pg_running; then echo "postgres: running pid $(pg_pid) port $PG_PORT data $PG_DIR/data"
  else echo "postgres: stopped port $PG_PORT data $PG_DIR/data"; ok=3; fi
  return "$ok"
}

# No quotes: tests/conftest.py splits these lines on the first '='.
cmd_env() {
  echo "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT"
  echo "export DATABASE_URL=postgresql+psycopg2://lotlens:lotlens@127.0.0.1:$PG_PORT/lotlens"
}

# Keeps the downloaded jars; deletes topics, offsets, cluster id and the whole database.
cmd_reset() {
  cmd_stop
  rm -rf "$KAFKA_DIR/data" "$KAFKA_DIR/config" "$KAFKA_DIR/logs" "$KAFKA_DIR/cluster.id" "$PG_DIR"
  log "state removed (jars kept in $KAFKA_LIB)"
}

main() {
  case "${1:-}" in
    install | start | stop | reset) take_lock; resolve_pg; "cmd_$1" ;;
    # Fault injection (`make chaos`): one of the two restarted, the other left running.
    restart-kafka) take_lock; resolve_pg; stop_kafka; start_kafka ;;
    restart-pg) take_lock; resolve_pg; stop_pg; start_pg ;;
    status) resolve_pg; cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 install|start|stop|status|env|reset|restart-kafka|restart-pg" >&2; exit 2 ;;
  esac
}

# Sourced (tests/unit/test_infra_pg.py runs its functions on a state folder of its own), it only
# defines them.
[[ "${BASH_SOURCE[0]}" != "$0" ]] || main "$@"
