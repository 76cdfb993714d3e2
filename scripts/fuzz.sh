#!/usr/bin/env bash
# The long fuzz runs (pnpm fuzz): every fuzzer present, one after the other, sharing the duration.
#
#   pnpm fuzz [--duration SECONDS] [--seed N]      (default: 600 s in all, a seed from the clock)
#
# A fuzzer is a directory packages/<pkg>/test/fuzz with a run.ts taking `--seed N --duration SECONDS` and a
# tsconfig.fuzz.json that compiles it (and the test helpers it imports) into packages/<pkg>/build/fuzz. Today:
# packages/node (hostile servers against the client); packages/test-server (hostile clients against the test
# server) joins when its fuzz directory has those two files.
#
# The file is not named tsconfig.json: a project file inside the test project's folders stops the Effect
# language service (the lint's diagnostics) from loading that project.
#
# How the TypeScript runs: no loader (tsx, ts-node) is installed, so tsc compiles each fuzzer after
# `pnpm build` has built the packages it imports, and node runs the JavaScript (the packages resolve to their
# dist through the default export condition). Each fuzzer prints its report as JSON; the script exits non-zero
# when any of them found a case that broke a rule (saved under its test/fuzz/regressions/).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=600
seed=$(($(date +%s) % 2147483647))
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: pnpm fuzz [--duration SECONDS] [--seed N]" >&2; exit 2 ;;
  esac
done

fuzzers=()
for pkg in node test-server; do
  dir="packages/$pkg/test/fuzz"
  if [ -f "$dir/run.ts" ] && [ -f "$dir/tsconfig.fuzz.json" ]; then fuzzers+=("$pkg"); fi
done
if [ ${#fuzzers[@]} -eq 0 ]; then echo "no fuzzers found" >&2; exit 2; fi
share=$((duration / ${#fuzzers[@]}))

node_modules/.bin/tsc -b tsconfig.build.json
status=0
for pkg in "${fuzzers[@]}"; do
  node_modules/.bin/tsc -b "packages/$pkg/test/fuzz/tsconfig.fuzz.json"
  # The entry point's place under build/fuzz follows the tsconfig's rootDir (test/ or test/fuzz/).
  entry="packages/$pkg/build/fuzz/fuzz/run.js"
  [ -f "$entry" ] || entry="packages/$pkg/build/fuzz/run.js"
  echo "fuzz: $pkg for ${share}s, seed $seed" >&2
  node "$entry" --seed "$seed" --duration "$share" || status=1
done
exit $status
