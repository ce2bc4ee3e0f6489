#!/bin/bash
# Installs the Debian packages of tools/packages.txt (needs root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t pkgs < <(grep -v '^#' "$here/packages.txt" | grep -v '^$')
missing=()
for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
        echo "All ${#pkgs[@]} packages are installed."
        exit 0
fi
if [ "$(id -u)" != 0 ]; then
        echo "Missing packages: ${missing[*]}; run as root (sudo $0)." >&2
        exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
