import { Nbd } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync, spawn } from "node:child_process"
import * as Path from "node:path"
import { type MapExtent, mergeExtents, qemuNbd, run, tempDir } from "./util/peers.js"

// qemu-nbd with -A (qemu:allocation-depth) and -B NAME (qemu:dirty-bitmap:NAME) offers three meta contexts,
// and answers NBD_OPT_LIST_META_CONTEXT with every one of them carrying context id 0.

const root = Path.resolve(__dirname, "../../..")
const bin = Path.join(root, "packages/node/dist/bin.js")

vi.setConfig({ testTimeout: 90_000 })

// The CLI test runs the built CLI as a real process: build it (incrementally) first.
beforeAll(() => {
  execFileSync(
    process.execPath,
    [Path.join(root, "node_modules/typescript/bin/tsc"), "-b", "packages/node/tsconfig.src.json"],
    { cwd: root, stdio: "inherit" }
  )
}, 120_000)

const MiB = 1024 * 1024
const SIZE = 64 * MiB
const CONTEXTS = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:bitmap"]

/**
 * A 64 MiB qcow2 image with a persistent dirty bitmap "bitmap" added before the writes, so the writes (64 KiB
 * at 1 MiB, 4 KiB at 3 MiB) are dirty in it and allocated in the image; the rest is unallocated and clean.
 */
const bitmapImage = Effect.gen(function* () {
  const dir = yield* tempDir
  const image = Path.join(dir, "x.qcow2")
  yield* run("qemu-img", ["create", "-q", "-f", "qcow2", image, "64M"])
  yield* run("qemu-img", ["bitmap", "--add", image, "bitmap"])
  yield* run("qemu-io", ["-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 3M 4k", image])
  return image
})

// --shared=2: nbdinfo connects beside our handle (qemu-nbd serves one client at a time by default).
const serve = Effect.flatMap(bitmapImage, (image) =>
  qemuNbd(image, ["--format=qcow2", "--shared=2", "-A", "-B", "bitmap"])
)

/**
 * Each context's map over the whole export, from block status across all contexts at once. A reply may
 * cover more of one context than of another: the next request starts where the shortest answer ended, and
 * what a context already covered is not counted twice.
 */
const contextMaps = (h: Nbd.Handle): Effect.Effect<Record<string, Array<MapExtent>>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const maps = new Map(CONTEXTS.map((c) => [c, [] as Array<MapExtent>]))
    const covered = new Map(CONTEXTS.map((c) => [c, 0]))
    let offset = 0
    while (offset < SIZE) {
      const entries = yield* Nbd.blockStatus(h, SIZE - offset, offset)
      // Every reply covers every negotiated context, each once.
      expect(entries.map((e) => e.context).sort()).toEqual(CONTEXTS)
      for (const entry of entries) {
        let at = Number(entry.offset)
        for (const extent of entry.extents) {
          const end = Math.min(at + Number(extent.length), SIZE)
          const from = Math.max(at, covered.get(entry.context)!)
          if (from < end) maps.get(entry.context)!.push({ offset: from, length: end - from, flags: extent.flags })
          covered.set(entry.context, Math.max(covered.get(entry.context)!, end))
          at = end
          if (at >= SIZE) break
        }
      }
      offset = Math.min(...covered.values())
    }
    return Object.fromEntries(CONTEXTS.map((c) => [c, mergeExtents(maps.get(c)!)]))
  })

/** `nbdinfo --map=CONTEXT --json`: libnbd's view of one context, merged the same way. */
const nbdinfoContextMap = (uri: string, context: string): Effect.Effect<Array<MapExtent>> =>
  Effect.map(run("nbdinfo", [`--map=${context}`, "--json", uri]), (out) =>
    mergeExtents(
      (JSON.parse(out) as Array<{ offset: number; length: number; type: number }>).map((e) => ({
        offset: e.offset,
        length: e.length,
        flags: e.type
      }))
    )
  )

/** Runs `effect-nbd ARGS` and gives its stdout; any stderr or a non-zero exit fails the test. */
const cli = (args: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.callback<string>((resume) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (b: Buffer) => (out += b.toString()))
    child.stderr.on("data", (b: Buffer) => (err += b.toString()))
    child.on("close", (code) => {
      expect(err).toBe("")
      expect(code).toBe(0)
      resume(Effect.succeed(out))
    })
  })

describe("several meta contexts (qemu-nbd -A -B bitmap)", () => {
  it.live("optListMetaContext lists every context, as nbdinfo --list does", () =>
    Effect.gen(function* () {
      const server = yield* serve
      const listed = JSON.parse(yield* run("nbdinfo", ["--json", "--list", server.uri])) as {
        readonly exports: ReadonlyArray<{ readonly contexts: ReadonlyArray<string> }>
      }
      expect(listed.exports[0]!.contexts).toEqual(CONTEXTS)
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.optListMetaContext(h, [])).toEqual(CONTEXTS)
      expect(yield* Nbd.optListMetaContext(h, ["qemu:"])).toEqual(CONTEXTS.slice(1))
      // SET agrees on the three, each with its own id.
      expect(yield* Nbd.optSetMetaContext(h, CONTEXTS)).toEqual(CONTEXTS)
      for (const context of CONTEXTS) expect(yield* Nbd.canMetaContext(h, context)).toBe(true)
    })
  )

  it.live("block status across the three contexts at once matches nbdinfo --map for each", () =>
    Effect.gen(function* () {
      const server = yield* serve
      const h = yield* Nbd.make({ metaContexts: CONTEXTS })
      yield* NodeNbd.connectUri(h, server.uri)
      for (const context of CONTEXTS) expect(yield* Nbd.canMetaContext(h, context)).toBe(true)
      const maps = yield* contextMaps(h)
      for (const context of CONTEXTS)
        expect(maps[context], context).toEqual(yield* nbdinfoContextMap(server.uri, context))
      // What the image holds: the writes are dirty, allocated locally (depth 1) and data; the rest is clean,
      // absent (depth 0) and a hole that reads as zero.
      const at = (context: string, offset: number) =>
        maps[context]!.find((e) => e.offset <= offset && offset < e.offset + e.length)!.flags
      expect(at("qemu:dirty-bitmap:bitmap", MiB)).toBe(1)
      expect(at("qemu:dirty-bitmap:bitmap", 2 * MiB)).toBe(0)
      expect(at("qemu:allocation-depth", MiB)).toBe(1)
      expect(at("qemu:allocation-depth", 2 * MiB)).toBe(0)
      expect(at("base:allocation", 3 * MiB)).toBe(0)
      expect(at("base:allocation", 2 * MiB)).toBe(3)
    })
  )

  it.live("effect-nbd info --json lists the three contexts, its output the same as nbdinfo's", () =>
    Effect.gen(function* () {
      const server = yield* serve
      const ours = yield* cli(["info", "--json", server.uri])
      const theirs = yield* run("nbdinfo", ["--json", server.uri])
      const parsed = JSON.parse(ours) as {
        readonly exports: ReadonlyArray<{ readonly contexts: ReadonlyArray<string> }>
      }
      expect(parsed.exports[0]!.contexts).toEqual(CONTEXTS)
      expect(ours).toBe(theirs)
      expect(yield* cli(["info", "--json", "--list", server.uri])).toBe(
        yield* run("nbdinfo", ["--json", "--list", server.uri])
      )
    })
  )
})
