#!/usr/bin/env bash
# Installs the real NBD peers the tests run against, from Debian's packages, when any is missing.
set -euo pipefail
packages=(nbdkit nbdkit-plugin-python libnbd-bin python3-libnbd qemu-utils nbd-server gnutls-bin time fio)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
