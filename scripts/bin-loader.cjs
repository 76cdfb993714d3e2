#!/usr/bin/env node
// The __NAME__ command: runs __NAME__.bundle.cjs beside this file through V8's code cache, which Node keeps
// itself (module.enableCompileCache), so a run after the first compiles next to nothing (about a third of
// the start-up). NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// Written from scripts/bin-loader.cjs by scripts/bundle-bins.mjs.
"use strict"
const Module = require("node:module")
const Path = require("node:path")

const name = "__NAME__"
const bundle = Path.join(__dirname, `${name}.bundle.cjs`)

// Effect 4's Node platform needs Node 22.19 or later: say so in one line rather than fail somewhere inside.
const [major, minor] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(`${name}: needs Node 22.19 or later (this is ${process.version})\n`)
  process.exit(1)
}
if (!process.env.NODE_DISABLE_COMPILE_CACHE) Module.enableCompileCache()
require(bundle)
