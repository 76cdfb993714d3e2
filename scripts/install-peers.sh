#!/usr/bin/env bash
# Installs the real NBD peers the tests run against, from Debian's packages, when any is missing.
#
# Two qemus: bookworm's qemu-utils (7.2, no extended headers) as the system one, and the qemu-utils of
# bookworm-backports (10.x, extended headers) unpacked beside it into $QEMU10_DIR, so that both can be run
# side by side (packages/node/test/util/peers.ts finds the second one there).
set -euo pipefail
packages=(nbdkit nbdkit-plugin-python libnbd-bin python3-libnbd qemu-utils nbd-server gnutls-bin time fio)
QEMU10_DIR="${QEMU10_DIR:-/opt/qemu10}"
backports_list=/etc/apt/sources.list.d/bookworm-backports.list

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# qemu 10 is there when its binaries run (their shared libraries resolve) and say they are 10 or newer.
qemu10_ok() {
  local b
  for b in qemu-img qemu-io qemu-nbd; do
    "$QEMU10_DIR/usr/bin/$b" --version 2>/dev/null | head -1 | grep -Eq ' (1[0-9]|[2-9][0-9])\.[0-9]+\.[0-9]+ ' || return 1
  done
}

[ ${#missing[@]} -eq 0 ] && qemu10_ok && exit 0

updated=0
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

qemu10_ok && exit 0

echo "unpacking qemu-utils from bookworm-backports into $QEMU10_DIR"
if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' | $sudo tee "$backports_list" >/dev/null
  updated=0
fi
[ "$updated" -eq 1 ] || $sudo apt-get update -qq

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 777 "$work" # apt-get download runs as _apt where it can
(cd "$work" && apt-get download -qq -t bookworm-backports qemu-utils 2>/dev/null)
deb="$(ls "$work"/qemu-utils_*.deb)"

# Its runtime libraries (Depends, without version bounds or alternatives) from bookworm, where their versions
# satisfy it; the ldd check below says so when they do not.
deps=()
IFS=',' read -ra fields <<<"$(dpkg-deb -f "$deb" Depends)"
for f in "${fields[@]}"; do
  name="$(echo "$f" | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g')"
  [ -n "$name" ] || continue
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed" || deps+=("$name")
done
if [ ${#deps[@]} -gt 0 ]; then
  echo "installing qemu 10's libraries ${deps[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${deps[@]}" >/dev/null
fi

$sudo rm -rf "$QEMU10_DIR"
$sudo mkdir -p "$QEMU10_DIR"
$sudo dpkg -x "$deb" "$QEMU10_DIR"
if ldd "$QEMU10_DIR/usr/bin/qemu-nbd" "$QEMU10_DIR/usr/bin/qemu-img" "$QEMU10_DIR/usr/bin/qemu-io" | grep 'not found'; then
  echo "qemu 10 in $QEMU10_DIR misses the libraries above" >&2
  exit 1
fi
qemu10_ok || {
  echo "qemu 10 in $QEMU10_DIR does not run" >&2
  exit 1
}
"$QEMU10_DIR/usr/bin/qemu-img" --version | head -1
