#!/usr/bin/env node
// The effect-nbd command. It loads the launcher that `pnpm build` writes (dist/cli/effect-nbd.cjs), so the bin a
// package manager links exists in a checkout before the build.
"use strict"
require("../dist/cli/effect-nbd.cjs")
