# Puts a Node of at least 22.19 first on this shell's PATH, for the commands that follow (source it:
# `. scripts/use-node.sh`). The `node` already on PATH is kept when it is recent enough. Otherwise Node 24
# comes from the npm registry's `node` package (which ships the binary) into `.tools/` in this repository,
# once; the system's node is never replaced, and nothing outside the repository is written.
#
# Why 22.19: @effect/platform-node 4 requires it, and Node 24 is the current LTS.

effect_nbd_node_ok() {
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)' 2>/dev/null
}

if ! effect_nbd_node_ok; then
  effect_nbd_root=$(cd "$(dirname "${BASH_SOURCE:-$0}")/.." 2>/dev/null && pwd)
  # Sourced from a shell that does not say where the script is (dash): the repository is where we stand.
  [ -f "$effect_nbd_root/scripts/use-node.sh" ] || effect_nbd_root=$(pwd)
  effect_nbd_tools="$effect_nbd_root/.tools"
  if [ ! -x "$effect_nbd_tools/node_modules/node/bin/node" ]; then
    echo "use-node: $(node --version 2>/dev/null || echo 'no node') is older than 22.19; installing Node 24 into .tools/" >&2
    npm install --prefix "$effect_nbd_tools" --no-audit --no-fund --loglevel=error node@24 >&2 || return 1 2>/dev/null || exit 1
  fi
  PATH="$effect_nbd_tools/node_modules/node/bin:$PATH"
  export PATH
  hash -r 2>/dev/null || true
  effect_nbd_node_ok || { echo "use-node: could not bring Node 24" >&2; return 1 2>/dev/null || exit 1; }
fi
unset -f effect_nbd_node_ok
