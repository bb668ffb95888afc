#!/bin/sh
# The entrypoint of FTGO's Postgres image (ftgo.local/postgres, built by testenv/src/images.rs from
# the host's Debian PostgreSQL; see docs/images.md). It follows the official postgres image's
# conventions, so the operator's Managed mode can run either:
#
#   POSTGRES_USER              the superuser (default postgres)
#   POSTGRES_PASSWORD          its password; required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_HOST_AUTH_METHOD  how TCP clients authenticate (default scram-sha-256)
#   PGDATA                     the cluster's directory (default /var/lib/postgresql/data)
#
# On the first start (no PG_VERSION in PGDATA) it runs initdb and lets every address in over TCP
# with that method; then it replaces itself with `postgres -c listen_addresses='*' ARGS...`, so
# arguments such as `-c port=5433` reach the server (a later -c wins). A first argument that is
# not an option runs that command instead (`postgres` itself is accepted and dropped).
#
# It runs as the image's unprivileged user (65532) and needs only the shell's builtins, the
# Postgres binaries and `rm`: the image has nothing else.
set -eu

if [ "$#" -gt 0 ] && [ "$1" = postgres ]; then
  shift
fi
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_HOST_AUTH_METHOD=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

say() { printf 'postgres-entrypoint: %s\n' "$*" >&2; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    say "POSTGRES_PASSWORD is not set: set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow every client in without a password"
    exit 1
  fi
  say "initialising a new cluster in $PGDATA (superuser $POSTGRES_USER, TCP clients: $POSTGRES_HOST_AUTH_METHOD)"
  pwfile=
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    # The password reaches initdb in a file only we can read, removed as soon as initdb is done
    # (or fails): never on a command line, where `ps` would show it.
    pwfile=${TMPDIR:-/tmp}/postgres-pwfile.$$
    trap 'rm -f "$pwfile"' EXIT
    (umask 077 && printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
  fi
  initdb --username="$POSTGRES_USER" ${pwfile:+--pwfile="$pwfile"} \
    --auth-host="$POSTGRES_HOST_AUTH_METHOD" --auth-local=trust --encoding=UTF8 --no-locale >&2
  if [ -n "$pwfile" ]; then
    rm -f "$pwfile"
    trap - EXIT
  fi
  printf '\n# Added by postgres-entrypoint.sh: clients from any address, over TCP.\nhost all all 0.0.0.0/0 %s\nhost all all ::/0 %s\n' \
    "$POSTGRES_HOST_AUTH_METHOD" "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
fi

exec postgres -c listen_addresses='*' "$@"
