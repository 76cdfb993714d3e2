#!/usr/bin/env bash
# Formatting, then the Effect language service's diagnostics (floating effects and the like) on every project.
set -euo pipefail
cd "$(dirname "$0")/.."
npx prettier --check .
for project in packages/*/tsconfig.src.json packages/*/tsconfig.test.json examples/tsconfig.json; do
  npx effect-language-service diagnostics --project "$project" --strict --format text
done
