#!/usr/bin/env bash
# Install and start what the tests (and, with --demo, the demo) need on a fresh Debian machine.
#
#   scripts/sysdeps.sh          everything `make test` needs; any failure is fatal
#   scripts/sysdeps.sh --demo   what `make demo` uses (prometheus, nginx); a failure is reported
#                               and the demo falls back to its simulated stack
#
# For the tests, as root with apt-get: Debian's packages postgresql, prometheus (with promtool),
# nginx, etcd-server and chromium; a PostgreSQL cluster answering on 127.0.0.1:5432 with a
# `test` database (loopback connections trusted: a test machine's setting); kube-apiserver and
# kubectl built from Go modules into ~/.cache/canary-analyzer (scripts/kube-build.sh). Says what
# it installed or started; prints nothing when everything is already there.
set -u
mode=test
[ "${1:-}" = "--demo" ] && mode=demo
[ "${1:-}" = "--optional" ] && mode=demo   # the old spelling

say() { echo "sysdeps: $*" >&2; }
fail() {
  say "$*"
  [ "$mode" = demo ] && exit 0
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ]; }

packages=()
have prometheus || packages+=(prometheus)
have promtool || packages+=(prometheus)
have nginx || packages+=(nginx)
if [ "$mode" = test ]; then
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || packages+=(postgresql)
  have etcd || packages+=(etcd-server)
  have chromium || packages+=(chromium)
fi
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | awk 'NF && !seen[$0]++')

if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    fail "missing system packages: ${packages[*]}; install them with your package manager" \
         "(Debian/Ubuntu: sudo apt-get install -y ${packages[*]})"
  fi
  say "installing ${packages[*]} with apt-get (a minute or two) ..."
  export DEBIAN_FRONTEND=noninteractive
  # Debian starts services on install; policy-rc.d 101 stops that (the tests start their own).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; trying the install anyway"
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  [ $rc -eq 0 ] || fail "apt-get could not install ${packages[*]}"
  say "installed ${packages[*]}"
fi

[ "$mode" = demo ] && exit 0

# ---------------------------------------------------------------- PostgreSQL on 127.0.0.1:5432
pg_answers() {
  PGCONNECT_TIMEOUT=3 psql "postgresql://postgres@127.0.0.1:5432/$1" -Atqc 'select 1' \
    >/dev/null 2>&1
}
if ! pg_answers test; then
  if ! pg_answers postgres; then
    if [ "$(id -u)" -ne 0 ]; then
      fail "nothing answers as user postgres on 127.0.0.1:5432; start PostgreSQL with" \
           "loopback trust (or set CANARY_TEST_DATABASE_URL) and create a database 'test'"
    fi
    version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
    cluster=main
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" -v c="$cluster" \
         '$1 == v && $2 == c {found=1} END {exit !found}'; then
      say "creating PostgreSQL $version cluster '$cluster' on port 5432 ..."
      pg_createcluster "$version" "$cluster" --port 5432 >/dev/null || fail "pg_createcluster failed"
    fi
    hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
    marker="# canary-analyzer tests: trust loopback"
    if ! grep -qF "$marker" "$hba"; then
      # First match wins in pg_hba.conf: put the loopback trust lines at the top.
      { echo "$marker"
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        cat "$hba"; } >"$hba.new" && mv "$hba.new" "$hba"
      chown postgres:postgres "$hba"
    fi
    conf="/etc/postgresql/$version/$cluster/postgresql.conf"
    grep -q "^listen_addresses = '127.0.0.1'" "$conf" ||
      echo "listen_addresses = '127.0.0.1'" >>"$conf"
    grep -q '^max_connections = 300' "$conf" || echo 'max_connections = 300' >>"$conf"
    say "starting PostgreSQL $version/$cluster ..."
    pg_ctlcluster "$version" "$cluster" restart >/dev/null 2>&1 ||
      pg_ctlcluster "$version" "$cluster" start || fail "could not start PostgreSQL $version/$cluster"
    for _ in $(seq 1 30); do pg_answers postgres && break; sleep 1; done
    pg_answers postgres || fail "PostgreSQL $version/$cluster started but does not answer on 127.0.0.1:5432"
  fi
  # The cluster may have been stopped with the database already in it (a second run on the
  # same machine): create it only when it is missing.
  exists="$(psql "postgresql://postgres@127.0.0.1:5432/postgres" -Atqc \
    "select 1 from pg_database where datname = 'test'")" ||
    fail "could not list the databases of PostgreSQL on 127.0.0.1:5432"
  if [ "$exists" != 1 ]; then
    psql "postgresql://postgres@127.0.0.1:5432/postgres" -Atqc 'create database test' >/dev/null ||
      fail "could not create the database 'test'"
  fi
  pg_answers test || fail "PostgreSQL answers but not for the database 'test' on 127.0.0.1:5432"
  say "PostgreSQL answers on 127.0.0.1:5432 with database 'test'"
fi

# ---------------------------------------------------------------- kube-apiserver and kubectl
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/kube-build.sh" >/dev/null || fail "could not build kube-apiserver and kubectl (above)"
exit 0
