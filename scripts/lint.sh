#!/usr/bin/env bash
# Formatting, then the Effect language service's diagnostics (floating effects and the like) on every project.
set -euo pipefail
cd "$(dirname "$0")/.."
# The workspace's own tools, run directly (npx would repeat npm's warnings about pnpm's settings).
export PATH="$PWD/node_modules/.bin:$PATH"
prettier --check .
for project in packages/*/tsconfig.src.json packages/*/tsconfig.test.json examples/tsconfig.json; do
  effect-language-service diagnostics --project "$project" --strict --format text
done
