#!/usr/bin/env bash
# The local Kafka broker's jars, pinned: deploy/local/kafka/jars.sha256 holds the sha256 of every
# jar deploy/local/kafka/pom.xml resolves, and scripts/infra.sh runs no jar the lock does not name
# with that hash. Maven alone checked each download against the .sha1 served by the same server
# (a mirror in ~/.m2/settings.xml supplies both), and copied jars already in ~/.m2 unchecked.
#
#   scripts/kafka-jars.sh lock             fetch the pom's jars from Maven Central and write the lock
#   scripts/kafka-jars.sh lock <folder>    write the lock from jars you have already verified
#
# Run `lock` after changing pom.xml (the lock records the pom's hash: infra.sh refuses a stale one)
# and review the diff. Sourced (by infra.sh), this file only defines the functions.

KAFKA_DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/local/kafka"
KAFKA_LOCK="$KAFKA_DEPLOY/jars.sha256"
KAFKA_LOCK_POM_LINE="# pom.xml sha256 "

kafka_pom_sha256() { sha256sum <"$KAFKA_DEPLOY/pom.xml" | cut -d' ' -f1; }

# True when the lock was made from the pom as it is now.
kafka_lock_current() {
  [ -f "$KAFKA_LOCK" ] && grep -qxF "$KAFKA_LOCK_POM_LINE$(kafka_pom_sha256)" "$KAFKA_LOCK"
}

# Prints one line per jar in folder $1 that the lock does not pin (not in it, or another hash) and
# per locked jar missing there; prints nothing when the folder holds exactly the locked jars.
# java's "lib/*" takes *.jar and *.JAR alike, so the glob ignores case.
kafka_jars_unlocked() (
  shopt -s nullglob nocaseglob
  local -A pinned=()
  local hash name jar actual
  while read -r hash name; do
    [ -n "$hash" ] && [ "${hash:0:1}" != "#" ] && pinned["$name"]=$hash
  done <"$KAFKA_LOCK"
  for jar in "$1"/*.jar; do
    name="${jar##*/}"
    actual="$(sha256sum <"$jar" | cut -d' ' -f1)"
    if [ -z "${pinned[$name]+set}" ]; then
      echo "$name is not in the lock (sha256 $actual)"
    elif [ "$actual" != "${pinned[$name]}" ]; then
      echo "$name has sha256 $actual, the lock pins ${pinned[$name]}"
    fi
    unset "pinned[$name]"
  done
  for name in "${!pinned[@]}"; do echo "$name is missing"; done
)

# Like kafka_jars_unlocked, but on stderr (jar by jar, with the folder), and fails if anything is.
kafka_jars_verify() {
  local unlocked line
  unlocked="$(kafka_jars_unlocked "$1")"
  [ -z "$unlocked" ] && return 0
  while read -r line; do echo "kafka-jars: $1/$line" >&2; done <<<"$unlocked"
  return 1
}

# Writes the lock from the jars in folder $1.
kafka_write_lock() (
  cd "$1"
  shopt -s nullglob nocaseglob
  local jars=(*.jar)
  [ "${#jars[@]}" -gt 0 ] || { echo "kafka-jars: no jars in $1" >&2; exit 1; }
  {
    echo "# sha256 of every jar of the local Kafka broker (deploy/local/kafka/pom.xml, runtime scope)."
    echo "# scripts/infra.sh runs no other jar. After changing pom.xml: scripts/kafka-jars.sh lock"
    echo "$KAFKA_LOCK_POM_LINE$(kafka_pom_sha256)"
    LC_ALL=C sha256sum -- "${jars[@]}" | LC_ALL=C sort -k2
  } >"$KAFKA_LOCK.tmp"
  mv "$KAFKA_LOCK.tmp" "$KAFKA_LOCK"
)

# Fetches the pom's jars into folder $1 straight from Maven Central: a fresh local repository (not
# ~/.m2's jars) and empty settings (no mirror), each download checked against Central's checksum.
kafka_fetch_from_central() {
  local out=$1 scratch
  scratch="$(mktemp -d)"
  printf '<settings/>\n' >"$scratch/settings.xml"
  local rc=0
  mvn -q -B --strict-checksums -s "$scratch/settings.xml" -gs "$scratch/settings.xml" \
    -Dmaven.repo.local="$scratch/repository" -f "$KAFKA_DEPLOY/pom.xml" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out" >&2 || rc=$?
  rm -rf "$scratch"
  return "$rc"
}

kafka_jars_main() {
  set -euo pipefail
  [ "${1:-}" = lock ] || { echo "usage: $0 lock [<folder of verified jars>]" >&2; exit 2; }
  if [ -n "${2:-}" ]; then
    kafka_write_lock "$(realpath "$2")"
  else
    local fetched
    fetched="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$fetched'" EXIT
    kafka_fetch_from_central "$fetched/lib"
    kafka_write_lock "$fetched/lib"
  fi
  echo "kafka-jars: wrote $KAFKA_LOCK ($(grep -vc '^#' "$KAFKA_LOCK") jars); review the diff" >&2
}

[[ "${BASH_SOURCE[0]}" != "$0" ]] || kafka_jars_main "$@"
