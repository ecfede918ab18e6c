#!/usr/bin/env bash
# Install the system packages the tests and the demo use (prometheus, nginx) when missing.
# With --optional, a failure to install is reported but not fatal (the demo then falls back
# to the simulate source and the dry-run router).
set -u
optional=0
[ "${1:-}" = "--optional" ] && optional=1
missing=()
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]}; install them with your package manager" \
       "(Debian/Ubuntu: sudo apt-get install -y ${missing[*]})" >&2
  [ $optional -eq 1 ] && exit 0 || exit 1
fi
echo "installing ${missing[*]} with apt-get ..." >&2
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  # Debian starts the services on install; the tests and the demo run their own on free ports.
  for svc in prometheus nginx; do
    (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
  done
  exit 0
fi
echo "apt-get could not install ${missing[*]}" >&2
[ $optional -eq 1 ] && exit 0 || exit 1
