#!/usr/bin/env bash
# Installs the real programs the tests (and, with `bench`, the benchmark) drive, from Debian's
# packages, when they are missing and we may: as root with apt-get. Otherwise says what is
# missing; the tests then skip those cases, or fail when CI=true.
#   scripts/install-test-tools.sh          skopeo, umoci, podman, buildah, PostgreSQL 15, nginx
#   scripts/install-test-tools.sh bench    also the reference registry (docker-registry)
set -euo pipefail
tools=(skopeo:skopeo umoci:umoci podman:podman buildah:buildah
       /usr/lib/postgresql/15/bin/initdb:postgresql-15 nginx:nginx)
if [ "${1:-}" = bench ]; then
  tools+=(docker-registry:docker-registry)
fi
packages=()
for tool in "${tools[@]}"; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || packages+=("${tool##*:}")
done
[ ${#packages[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${packages[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
  apt-get install -y -q -o DPkg::Lock::Timeout=600 "${packages[@]}" >/dev/null
else
  echo "not installing ${packages[*]}: needs root and apt-get" >&2
fi
