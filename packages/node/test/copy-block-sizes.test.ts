// NbdCopy between exports of different minimum block sizes: a source that reports extents at 512-byte
// granularity (minimum 1) copied to a destination that advertises minimum 4096 and refuses anything else.
import { Nbd, NbdCopy, NbdPool } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { Backend, Filter, TestServer } from "@effect-nbd/test-server"
import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { sha256 } from "./util/bytes.js"
import { bin, buildCli, proc } from "./util/cli.js"
import { nbdkit } from "./util/peers.js"

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = MiB
const SECTOR = 512

const poolOf = (uri: string, settings: Nbd.Settings = { metaContexts: ["base:allocation"] }) =>
  NbdPool.make({ connections: 1, settings, connect: (h) => NodeNbd.connectUri(h, uri) }).pipe(Effect.orDie)

/**
 * 1 MiB of 512-byte sectors, about a quarter of them data: zero runs of every length from one sector up,
 * starting and ending anywhere inside 4K blocks, some covering whole 4K blocks.
 */
const sectors = (): Uint8Array => {
  const out = new Uint8Array(SIZE)
  let x = 12345
  for (let at = 0; at < SIZE; at += SECTOR) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    if ((x >>> 0) % 4 === 0) out.fill(1 + ((at / SECTOR) % 251), at, at + SECTOR)
  }
  return out
}

/** Writes the content to a source export whose pages (and so its extents) are 512 bytes. */
const sourceOf = (content: Uint8Array) =>
  Effect.gen(function* () {
    const s = yield* TestServer.make({
      exports: [{ name: "", backend: Backend.memory(SIZE, { pageSize: SECTOR }) }]
    }).pipe(Effect.orDie)
    const h = yield* Nbd.make({})
    yield* Effect.orDie(NodeNbd.connectUri(h, s.uri))
    // Only the data sectors are written: a page written with zeroes would be allocated, reported as data.
    for (let at = 0; at < SIZE; at += SECTOR)
      if (content[at] !== 0) yield* Effect.orDie(Nbd.pwrite(h, content.subarray(at, at + SECTOR), at))
    yield* Effect.orDie(Nbd.shutdown(h))
    return s.uri
  })

/** Fills a destination with 0xff (so zero runs must be written) and reads it back after the copy. */
const fill = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({})
    yield* Effect.orDie(NodeNbd.connectUri(h, uri))
    yield* Effect.orDie(Nbd.pwrite(h, new Uint8Array(SIZE).fill(0xff), 0))
    yield* Effect.orDie(Nbd.shutdown(h))
  })

const readBack = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({})
    yield* Effect.orDie(NodeNbd.connectUri(h, uri))
    const out = yield* Effect.orDie(Nbd.pread(h, SIZE, 0))
    yield* Effect.orDie(Nbd.shutdown(h))
    return out
  })

/** A test-server export of minimum block size 4096, filled with 0xff so a copy has to write its zeroes. */
const destinationOf4096 = Effect.gen(function* () {
  const d = yield* TestServer.make({
    exports: [
      {
        name: "",
        size: SIZE,
        filters: [Filter.blockSizePolicy({ minimum: 4096, preferred: 4096, maximum: 32 * MiB })]
      }
    ]
  }).pipe(Effect.orDie)
  yield* fill(d.uri)
  return d
})

/** nbdkit's memory export behind blocksize-policy minimum 4096, which refuses what is unaligned; filled. */
const nbdkitOf4096 = Effect.gen(function* () {
  const kit = yield* nbdkit([
    "--filter=blocksize-policy",
    "memory",
    String(SIZE),
    "blocksize-minimum=4096",
    "blocksize-error-policy=error"
  ])
  yield* fill(kit.uri)
  return kit
})

beforeAll(buildCli, 120_000)

describe("NbdCopy to a destination with a larger minimum block size", () => {
  it.live("test server minimum 4096: every request aligned, the content the source's", () =>
    Effect.gen(function* () {
      const content = sectors()
      const sourceUri = yield* sourceOf(content)
      const d = yield* destinationOf4096
      const source = yield* poolOf(sourceUri)
      const destination = yield* poolOf(d.uri, {})
      expect(yield* Effect.orDie(Nbd.getBlockSize(destination.handles[0]!, "minimum"))).toBe(4096)
      const result = yield* NbdCopy.copy(source, destination, { requestSize: 64 * KiB }).pipe(
        Effect.catch((e) => Effect.die(`copy failed: ${e.message}`))
      )
      expect(result.zeroBytes > 0n).toBe(true)
      expect(sha256(yield* readBack(d.uri))).toBe(sha256(content))
    })
  )

  it.live("sparseSize smaller than the destination's minimum: zero detection in its whole blocks", () =>
    Effect.gen(function* () {
      const content = sectors()
      const sourceUri = yield* sourceOf(content)
      const d = yield* destinationOf4096
      // Without block status every piece is read, then cut into zero runs of sparseSize (here 512 or 6000).
      for (const sparseSize of [512, 6000]) {
        const source = yield* poolOf(sourceUri, {})
        const destination = yield* poolOf(d.uri, {})
        const result = yield* NbdCopy.copy(source, destination, { requestSize: 64 * KiB, sparseSize }).pipe(
          Effect.catch((e) => Effect.die(`copy (sparseSize ${sparseSize}) failed: ${e.message}`))
        )
        expect(result.zeroBytes > 0n).toBe(true)
        expect(sha256(yield* readBack(d.uri))).toBe(sha256(content))
        yield* fill(d.uri)
      }
    })
  )

  it.live("nbdkit blocksize-policy minimum 4096 (errors on unaligned), client strict off: same content", () =>
    Effect.gen(function* () {
      const content = sectors()
      const sourceUri = yield* sourceOf(content)
      const kit = yield* nbdkitOf4096
      const source = yield* poolOf(sourceUri)
      // Strict alignment off: the server, not the client, is the one to refuse what is unaligned.
      const destination = yield* poolOf(kit.uri, { strictMode: 0 })
      const result = yield* NbdCopy.copy(source, destination, { requestSize: 64 * KiB }).pipe(
        Effect.catch((e) => Effect.die(`copy failed: ${e.message}`))
      )
      expect(result.zeroBytes > 0n).toBe(true)
      expect(sha256(yield* readBack(kit.uri))).toBe(sha256(content))
    })
  )

  it.live("effect-nbd copy and nbdcopy to nbdkit minimum 4096: both succeed with the source's content", () =>
    Effect.gen(function* () {
      const content = sectors()
      const sourceUri = yield* sourceOf(content)
      const kit = yield* nbdkitOf4096
      for (const [command, args] of [
        [process.execPath, [bin, "copy"]],
        ["nbdcopy", []]
      ] as const) {
        yield* fill(kit.uri)
        const r = yield* proc(command, [...args, sourceUri, kit.uri])
        expect(r.code, `${command} ${args.join(" ")}: ${r.stderr}`).toBe(0)
        expect(sha256(yield* readBack(kit.uri)), command).toBe(sha256(content))
      }
    })
  )
})
