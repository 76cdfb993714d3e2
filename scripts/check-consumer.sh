#!/usr/bin/env bash
# The packages share their consumer's Effect. Packs core, node and test-server as they would be published,
# installs the tarballs with npm into a scratch project outside the workspace that takes effect and
# @effect/platform-node as npm resolves them today (or the versions given), and checks there:
#   - npm accepts the peers (--strict-peer-deps), and node_modules holds one copy of effect and of each of our
#     packages, effect at the consumer's version;
#   - a program using Nbd.make, TestServer.layer and NodeNbd.connectUri typechecks (tsc, strict, NodeNext)
#     and runs: in-process server, connect, write, read back, exit 0;
#   - each tarball carries its README.md and LICENSE;
#   - the packages' exports block ./internal/* (for tsc and for node) and ./bin (node: importing a bin must not run
#     it), and export ./package.json;
#   - the bins (bin/NAME.cjs, loading the launcher dist/cli/NAME.cjs) run the esbuild bundles, which carry what
#     they need: effect-nbd runs its embedded server even with effect and @effect-nbd/test-server moved away;
#     effect-nbd-server --run works; a second run uses the V8 code cache the first wrote (in $NODE_COMPILE_CACHE).
# Environment: EFFECT_VERSION and PLATFORM_NODE_VERSION (default ^4.1: what npm resolves today); SKIP_BUILD=1 to
# reuse dist/; KEEP=1 to keep the scratch dir. (effect 4.1.0 cannot be installed beside @effect/platform-node
# with strict peers: every @effect/platform-node 4.1 takes @effect/platform-node-shared ^4.1.0, which resolves to
# 4.1.5, whose peer is effect ^4.1.5.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
effect_version="${EFFECT_VERSION:-^4.1}"
platform_node_version="${PLATFORM_NODE_VERSION:-^4.1}"

fail() {
  echo "check-consumer: FAIL: $*" >&2
  exit 1
}
step() { echo "check-consumer: $* ($((SECONDS - started))s)"; }

workspace_effect=$(node -p 'require("./packages/core/package.json").devDependencies.effect')
typescript_version=$(node -p 'require("./package.json").devDependencies.typescript')
types_node_version=$(node -p 'require("./package.json").devDependencies["@types/node"]')

work=$(mktemp -d "${TMPDIR:-/tmp}/effect-nbd-consumer.XXXXXX")
case "$work/" in "$root"/*) fail "scratch dir $work is inside the workspace" ;; esac
if [ "${KEEP:-}" = 1 ]; then echo "check-consumer: scratch dir $work"; else trap 'rm -rf "$work"' EXIT; fi
# npm's cache: the user's, or the scratch dir's when there is no usable HOME (some CI runners).
if [ -z "${npm_config_cache:-}" ] && { [ -z "${HOME:-}" ] || [ ! -w "${HOME}" ]; }; then
  export npm_config_cache="$work/npm-cache"
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
  step "building"
  pnpm build >/dev/null
fi

step "packing"
mkdir -p "$work/packs" "$work/app/src"
for p in core node test-server; do
  (cd "packages/$p" && pnpm pack --pack-destination "$work/packs" >/dev/null)
done
tgz() { ls "$work/packs"/effect-nbd-"$1"-*.tgz; }
core=$(tgz core) node=$(tgz node) server=$(tgz test-server)

# Published manifests: no workspace: protocol left, effect only as a peer. Each tarball has its README and LICENSE,
# and its bin is the bundle.
for t in "$core" "$node" "$server"; do
  listing=$(tar -tzf "$t")
  for f in README.md LICENSE; do
    grep -qx "package/$f" <<<"$listing" || fail "$(basename "$t") has no $f"
  done
  manifest=$(tar -xzOf "$t" package/package.json)
  ! grep -q '"workspace:' <<<"$manifest" || fail "$(basename "$t") still has a workspace: range"
  node -e '
    const p = JSON.parse(process.argv[1])
    if ((p.dependencies ?? {}).effect !== undefined) throw new Error(p.name + ": effect is a dependency")
    if (!/^\^4\./.test((p.peerDependencies ?? {}).effect ?? "")) throw new Error(p.name + ": no ^4 peer on effect")
    for (const dep of ["@effect/platform", "@effect/cli"])
      if ((p.peerDependencies ?? {})[dep] !== undefined || (p.dependencies ?? {})[dep] !== undefined)
        throw new Error(p.name + ": depends on " + dep + ", which has no Effect 4 version")
    if (p.exports["./package.json"] !== "./package.json") throw new Error(p.name + ": ./package.json is not exported")
    for (const bin of Object.values(p.bin ?? {}))
      if (!/^\.\/bin\/[^/]+\.cjs$/.test(bin)) throw new Error(p.name + ": bin " + bin + " is not a launcher in bin/")
  ' "$manifest"
  while read -r bin; do
    grep -qx "package/${bin#./}" <<<"$listing" || fail "$(basename "$t") lacks its bin $bin"
    # The bin loads the built launcher, which runs the bundle beside it.
    launcher="dist/cli/$(basename "$bin")"
    grep -qx "package/$launcher" <<<"$listing" || fail "$(basename "$t") lacks the launcher $launcher its bin loads"
  done < <(node -e 'for (const b of Object.values(JSON.parse(process.argv[1]).bin ?? {})) console.log(b)' "$manifest")
done

cd "$work/app"
cat >package.json <<EOF
{
  "name": "effect-nbd-consumer",
  "private": true,
  "type": "module",
  "dependencies": {
    "@effect-nbd/core": "file:$core",
    "@effect-nbd/node": "file:$node",
    "@effect-nbd/test-server": "file:$server",
    "@effect/platform-node": "$platform_node_version",
    "effect": "$effect_version"
  },
  "devDependencies": {
    "@types/node": "$types_node_version",
    "typescript": "$typescript_version"
  }
}
EOF
cat >tsconfig.json <<'EOF'
{
  "compilerOptions": {
    "target": "ES2022",
    "lib": ["ES2022"],
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "exactOptionalPropertyTypes": true,
    "noUncheckedIndexedAccess": true,
    "verbatimModuleSyntax": true,
    "skipLibCheck": true,
    "types": ["node"],
    "rootDir": "src",
    "outDir": "dist"
  },
  "include": ["src"]
}
EOF
cat >src/main.ts <<'EOF'
import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const text = "hello from a consumer of effect-nbd"

const program = Effect.gen(function* () {
  const server = yield* TestServer.TestServer
  const h = yield* Nbd.make({ handleName: "consumer" })
  yield* NodeNbd.connectUri(h, server.uri)
  const size = yield* Nbd.getSize(h)
  yield* Nbd.pwrite(h, new TextEncoder().encode(text), 4096)
  const back = new TextDecoder().decode(yield* Nbd.pread(h, text.length, 4096))
  if (back !== text) return yield* Effect.die(new Error(`read back ${JSON.stringify(back)}`))
  yield* Console.log(`size ${size}, read back: ${back}`)
})

// A Layer of the consumer's effect, built from ours: with two copies of effect this would not typecheck.
const ServerLive: Layer.Layer<TestServer.TestServer, TestServer.TestServerError> = TestServer.layer({
  exports: [{ name: "", size: 1024 * 1024 }]
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(ServerLive))).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  }
)
EOF

step "npm install (effect $effect_version)"
npm install --no-audit --no-fund --strict-peer-deps --loglevel=error >npm-install.log 2>&1 || {
  cat npm-install.log >&2
  fail "npm install"
}

step "checking node_modules"
copies() { find . -path "*/node_modules/$1/package.json"; }
for p in effect @effect/platform-node @effect-nbd/core @effect-nbd/node @effect-nbd/test-server; do
  n=$(copies "$p" | wc -l)
  [ "$n" -eq 1 ] || fail "$n copies of $p: $(copies "$p" | tr '\n' ' ')"
done
installed=$(node -p 'require("effect/package.json").version')
case "$installed" in 4.*) ;; *) fail "effect is $installed, not a 4.x" ;; esac
case "$effect_version" in [0-9]*) [ "$installed" = "$effect_version" ] || fail "effect is $installed, not $effect_version" ;; esac
npm ls effect --all >npm-ls.txt 2>&1 || {
  cat npm-ls.txt >&2
  fail "npm ls effect"
}
# Every package that needs effect sees the same one ("deduped" below the first).
versions=$(grep -oE 'effect@[0-9][^ ]*' npm-ls.txt | sort -u)
[ "$versions" = "effect@$installed" ] || fail "npm ls effect shows $(tr '\n' ' ' <<<"$versions")"
sed 's/^/  /' npm-ls.txt

# The packages' internals are not importable, by tsc or by node.
# One internal module, by its path under internal/ (the modules sit in folders by layer).
internal_file=$(find node_modules/@effect-nbd/core/dist/internal -name '*.js' | sort | head -1)
[ -n "$internal_file" ] || fail "no internal module in the packed @effect-nbd/core"
internal=${internal_file#node_modules/@effect-nbd/core/dist/internal/}
internal=${internal%.js}
cat >src/internal.ts <<EOF
// @ts-expect-error ./internal/* is not exported
export type Internal = typeof import("@effect-nbd/core/internal/$internal")
// @ts-expect-error ./bin is not exported
export type Bin = typeof import("@effect-nbd/node/bin")
EOF

step "tsc"
npx tsc -p tsconfig.json || fail "tsc"

step "running the program"
out=$(node dist/main.js) || fail "the program exited $?"
echo "$out"
grep -q "read back: hello from a consumer of effect-nbd" <<<"$out" || fail "unexpected output"

code=$(node --input-type=module -e "import('@effect-nbd/core/internal/$internal').then(() => console.log('loaded'), (e) => console.log(e.code))")
[ "$code" = ERR_PACKAGE_PATH_NOT_EXPORTED ] || fail "node imported @effect-nbd/core/internal/$internal: $code"
# Importing a bin must not run it.
for p in node test-server; do
  code=$(node --input-type=module -e "import('@effect-nbd/$p/bin').then(() => console.log('loaded'), (e) => console.log(e.code))")
  [ "$code" = ERR_PACKAGE_PATH_NOT_EXPORTED ] || fail "node imported @effect-nbd/$p/bin: $code"
done
for p in core node test-server; do
  resolved=$(node --input-type=module -e "console.log(import.meta.resolve('@effect-nbd/$p/package.json'))") ||
    fail "@effect-nbd/$p/package.json does not resolve"
  case "$resolved" in */node_modules/@effect-nbd/$p/package.json) ;; *) fail "@effect-nbd/$p/package.json: $resolved" ;; esac
done

step "the bins"
out=$(node_modules/.bin/effect-nbd info) || fail "effect-nbd info (embedded server) exited $?"
grep -q "export-size" <<<"$out" || fail "effect-nbd info printed: $out"
# The bundle carries effect and the embedded server: it runs with neither installed.
mkdir "$work/aside"
mv node_modules/effect node_modules/@effect-nbd/test-server "$work/aside/"
status=0
out=$(node_modules/.bin/effect-nbd info --size 2>&1) || status=$?
mv "$work/aside/effect" node_modules/effect
mv "$work/aside/test-server" node_modules/@effect-nbd/test-server
[ "$status" -eq 0 ] && [ "$out" = 1048576 ] || fail "effect-nbd info --size without effect installed: $status: $out"
out=$(node_modules/.bin/effect-nbd-server -U - --run 'echo "served $uri"') || fail "effect-nbd-server --run exited $?"
grep -q "^served nbd" <<<"$out" || fail "effect-nbd-server --run printed: $out"
# The bins keep V8's code cache in $NODE_COMPILE_CACHE when it is set: a second run starts from it.
export NODE_COMPILE_CACHE="$work/compile-cache"
[ "$(node_modules/.bin/effect-nbd info --size)" = 1048576 ] || fail "effect-nbd info --size"
compgen -G "$NODE_COMPILE_CACHE/effect-nbd-[0-9a-f]*" >/dev/null || fail "effect-nbd wrote no code cache in $NODE_COMPILE_CACHE"
[ "$(node_modules/.bin/effect-nbd info --size)" = 1048576 ] || fail "effect-nbd info --size from its code cache"

step "OK: one copy of effect $installed (asked for $effect_version; workspace: $workspace_effect)"
