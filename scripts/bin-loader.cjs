#!/usr/bin/env node
// The __NAME__ command: runs __NAME__.bundle.cjs beside this file through V8's code cache, so a run after the
// first compiles next to nothing. The cache is made when the first run exits, so it also holds every function
// that run compiled (Node's own compile cache is made before the code runs and holds little more than the top
// level: about a fifth more start-up). A subcommand runs other functions than its siblings, so each has its
// own: one file per build, subcommand, Node version and architecture, in $NODE_COMPILE_CACHE when set, else
// $XDG_CACHE_HOME/effect-nbd (default ~/.cache/effect-nbd). NODE_DISABLE_COMPILE_CACHE=1 turns it off.
// Written from scripts/bin-loader.cjs by scripts/bundle-bins.mjs.
"use strict"
const Fs = require("node:fs")
const Module = require("node:module")
const Os = require("node:os")
const Path = require("node:path")
const Vm = require("node:vm")

const name = "__NAME__"
// The bundle's content hash: V8 checks a cache's version and flags, not that it was made from this source.
const build = "__BUILD__"
const bundle = Path.join(__dirname, `${name}.bundle.cjs`)

// Effect 4's Node platform needs Node 22.19 or later: say so in one line rather than fail somewhere inside.
const [major, minor] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(`${name}: needs Node 22.19 or later (this is ${process.version})\n`)
  process.exit(1)
}

const cacheDir = () => {
  try {
    if (process.env.NODE_COMPILE_CACHE) return Path.resolve(process.env.NODE_COMPILE_CACHE)
    return Path.join(process.env.XDG_CACHE_HOME || Path.join(Os.homedir(), ".cache"), "effect-nbd")
  } catch {
    return undefined
  }
}

// The subcommands, each with a cache of its own; any other command line (an option first, --help, a typo)
// shares one.
const subcommands = __SUBCOMMANDS__

const cacheKey = () => (subcommands.includes(process.argv[2]) ? process.argv[2] : "main")

/** Writes the cache atomically, dropping this command's caches of other builds. */
const save = (dir, file, script) => {
  try {
    Fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const mine = new RegExp(`^${name}-[0-9a-f]{16}-`)
    for (const old of Fs.readdirSync(dir))
      if (mine.test(old) && !old.startsWith(`${name}-${build}-`)) Fs.rmSync(Path.join(dir, old), { force: true })
    const temporary = `${file}.${process.pid}`
    Fs.writeFileSync(temporary, script.createCachedData(), { mode: 0o600 })
    Fs.renameSync(temporary, file)
  } catch {
    // No cache this time: the next run compiles again.
  }
}

const run = () => {
  if (process.env.NODE_DISABLE_COMPILE_CACHE) return require(bundle)
  const dir = cacheDir()
  const file =
    dir === undefined ? undefined : Path.join(dir, `${name}-${build}-${cacheKey()}-${process.version}-${process.arch}`)
  let cachedData
  try {
    if (file !== undefined) cachedData = Fs.readFileSync(file)
  } catch {
    // Not cached yet.
  }
  const script = new Vm.Script(Module.wrap(Fs.readFileSync(bundle, "utf8")), { filename: bundle, cachedData })
  // Made at exit, the cache also holds the functions this run compiled.
  if (file !== undefined && (cachedData === undefined || script.cachedDataRejected))
    process.once("exit", () => save(dir, file, script))
  const module = { exports: {} }
  script.runInThisContext()(module.exports, Module.createRequire(bundle), module, bundle, __dirname)
}

run()
