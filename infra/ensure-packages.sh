#!/usr/bin/env bash
# Install the Debian packages named on the command line that are not installed yet (idempotent, quiet when
# nothing is missing). Runs apt-get as root, or through sudo -n; refreshes the package index once when an
# install fails (a fresh machine may have an empty or stale index).
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "ensure-packages: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
echo "ensure-packages: installing ${missing[*]}"
install=("${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}")
if ! "${install[@]}"; then
  "${sudo[@]}" apt-get update -q
  "${install[@]}"
fi
