import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

const MiB = 1024 * 1024

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 13 + seed) & 0xff
  return out
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(b)

const server = (config: TestServer.Config) => TestServer.make(config).pipe(Effect.orDie)

describe("client against the test server", () => {
  it.live("memory: size, flags, extended headers, write then read back", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 4 * MiB }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(4 * MiB))
      expect(yield* Nbd.getProtocol(h)).toBe("newstyle-fixed")
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
      expect(yield* Nbd.isReadOnly(h)).toBe(false)
      expect(yield* Nbd.canFlush(h)).toBe(true)
      expect(yield* Nbd.getBlockSize(h, "preferred")).toBe(4096)
      const data = bytes(100_000, 3)
      yield* Nbd.pwrite(h, data, 12345)
      yield* Nbd.flush(h)
      expect(same(yield* Nbd.pread(h, data.length, 12345), data)).toBe(true)
      expect(same(yield* Nbd.pread(h, 100, 0), new Uint8Array(100))).toBe(true)
    })
  )

  it.live("without extended headers, and with simple replies only", () =>
    Effect.gen(function* () {
      const noEh = yield* server({ extendedHeaders: false })
      const h1 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h1, noEh.uri)
      expect(yield* Nbd.getExtendedHeadersNegotiated(h1)).toBe(false)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h1)).toBe(true)
      yield* Nbd.pwrite(h1, bytes(8192, 1), 0)
      expect(same(yield* Nbd.pread(h1, 8192, 0), bytes(8192, 1))).toBe(true)
      const simple = yield* server({ structuredReplies: false, extendedHeaders: false })
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h2, simple.uri)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h2)).toBe(false)
      yield* Nbd.pwrite(h2, bytes(8192, 2), 4096)
      expect(same(yield* Nbd.pread(h2, 8192, 4096), bytes(8192, 2))).toBe(true)
    })
  )

  it.live("a null export with an exact odd size reads zeroes", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 1234567, backend: "null" }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.getSize(h)).toBe(1234567n)
      expect(same(yield* Nbd.pread(h, 7, 1234560), new Uint8Array(7))).toBe(true)
      expect((yield* Effect.flip(Nbd.pread(h, 8, 1234560))).errno).toBe("EINVAL")
    })
  )

  it.live("read-only: refused client-side, and by the server with strict mode off", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: MiB, readOnly: true }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.isReadOnly(h)).toBe(true)
      const sent = (yield* Nbd.stats(h)).bytesSent
      expect((yield* Effect.flip(Nbd.pwrite(h, new Uint8Array(512), 0))).errno).toBe("EPERM")
      expect((yield* Nbd.stats(h)).bytesSent).toBe(sent)
      yield* Nbd.setStrictMode(h, 0)
      const served = yield* Effect.flip(Nbd.pwrite(h, new Uint8Array(512), 0))
      expect(served._tag).toBe("CommandError")
      expect(served.errno).toBe("EPERM")
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("several exports: optList with descriptions, optGo selects each, a missing name fails ENOENT", () =>
    Effect.gen(function* () {
      const s = yield* server({
        exports: [
          { name: "alpha", size: 8192, description: "the first" },
          { name: "beta", size: 12288, description: "the second" }
        ]
      })
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, s.uri)
      const list = yield* Nbd.optList(h)
      expect(list).toEqual([
        { name: "alpha", description: "the first" },
        { name: "beta", description: "the second" }
      ])
      yield* Nbd.setExportName(h, "gamma")
      expect((yield* Effect.flip(Nbd.optGo(h))).errno).toBe("ENOENT")
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      yield* Nbd.setExportName(h, "beta")
      // getUri follows the current export name, as libnbd's does.
      expect(yield* Nbd.getUri(h)).toBe(s.uriFor("beta"))
      yield* Nbd.optGo(h)
      expect(yield* Nbd.getSize(h)).toBe(12288n)
      const h2 = yield* Nbd.make()
      yield* NodeNbd.connectUri(h2, s.uriFor("alpha"))
      expect(yield* Nbd.getSize(h2)).toBe(8192n)
      const h3 = yield* Nbd.make()
      expect((yield* Effect.flip(NodeNbd.connectUri(h3, s.uriFor("gamma")))).errno).toBe("ENOENT")
      expect(HandleState.isDead(yield* Nbd.state(h3))).toBe(true)
    })
  )

  it.live("option mode end to end", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "disk", size: 2 * MiB, description: "a disk" }] })
      const h = yield* Nbd.make({ optMode: true, exportName: "disk" })
      yield* NodeNbd.aioConnectUri(h, s.uriFor("disk"))
      expect(HandleState.isConnecting(yield* Nbd.state(h))).toBe(true)
      yield* Nbd.awaitConnected(h)
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      // The automatic steps already negotiated extended headers; asking again changes nothing.
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
      expect(yield* Nbd.optListMetaContext(h, ["base:"])).toEqual(["base:allocation"])
      expect(yield* Nbd.optListMetaContext(h, [])).toContain("base:allocation")
      yield* Nbd.setFullInfo(h, true)
      yield* Nbd.optInfo(h)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(2 * MiB))
      expect(yield* Nbd.getExportDescription(h)).toBe("a disk")
      expect(yield* Nbd.getCanonicalExportName(h)).toBe("disk")
      expect(yield* Nbd.optSetMetaContext(h, ["base:allocation"])).toEqual(["base:allocation"])
      // As in libnbd, GO would otherwise renegotiate from the (empty) add_meta_context list and forget them.
      yield* Nbd.setRequestMetaContext(h, false)
      yield* Nbd.optGo(h)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      yield* Nbd.pwrite(h, bytes(65536, 4), 0)
      const status = yield* Nbd.blockStatus(h, 2 * MiB, 0)
      expect(status[0]!.context).toBe("base:allocation")
      expect(status[0]!.extents[0]).toEqual({ length: 65536n, flags: 0 })
      // optAbort ends a negotiation cleanly.
      const h2 = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h2, s.uriFor("disk"))
      yield* Nbd.optAbort(h2)
      expect(HandleState.isClosed(yield* Nbd.state(h2))).toBe(true)
      // Option calls outside option mode fail with the state named.
      const late = yield* Effect.flip(Nbd.optList(h))
      expect(late.errno).toBe("EINVAL")
      expect(late.message).toContain("negotiating")
    })
  )

  it.live("oldstyle: ready even in option mode, no structured replies", () =>
    Effect.gen(function* () {
      const s = yield* server({ protocol: "oldstyle", exports: [{ name: "", size: MiB }] })
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getProtocol(h)).toBe("oldstyle")
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(false)
      yield* Nbd.pwrite(h, bytes(1024, 5), 0)
      expect(same(yield* Nbd.pread(h, 1024, 0), bytes(1024, 5))).toBe(true)
    })
  )

  it.live("non-fixed newstyle: optList and optInfo fail ENOTSUP; optGo uses EXPORT_NAME", () =>
    Effect.gen(function* () {
      const s = yield* server({ protocol: "newstyle", exports: [{ name: "", size: MiB }] })
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.getProtocol(h)).toBe("newstyle")
      expect((yield* Effect.flip(Nbd.optList(h))).errno).toBe("ENOTSUP")
      expect((yield* Effect.flip(Nbd.optInfo(h))).errno).toBe("ENOTSUP")
      yield* Nbd.optGo(h)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      yield* Nbd.pwrite(h, bytes(512, 6), 512)
      expect(same(yield* Nbd.pread(h, 512, 512), bytes(512, 6))).toBe(true)
    })
  )

  it.live("64 commands in flight, answered out of order, all correct", () =>
    Effect.gen(function* () {
      const s = yield* server({ outOfOrder: true, exports: [{ name: "", size: 16 * MiB }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      const blocks = Array.from({ length: 64 }, (_, i) => bytes(1024 + i * 997, i))
      const writes = yield* Effect.forEach(blocks, (b, i) => Nbd.aioPwrite(h, b, i * 131072))
      yield* Effect.forEach(writes, (c) => c.await, { concurrency: "unbounded" })
      const reads = yield* Effect.forEach(blocks, (b, i) => Nbd.aioPread(h, b.length, i * 131072))
      const results = yield* Effect.forEach(reads, (c) => c.await, { concurrency: "unbounded" })
      results.forEach((r, i) => expect(same(r, blocks[i]!)).toBe(true))
    })
  )

  it.live("a large sparse export: 64-bit offsets with extended headers", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 1n << 40n }] })
      const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.getSize(h)).toBe(1n << 40n)
      // Page-aligned (the memory backend allocates 64 KiB pages) so the extents are exact.
      const offset = (1n << 39n) + 131072n
      yield* Nbd.pwrite(h, bytes(65536, 8), offset)
      expect(same(yield* Nbd.pread(h, 65536, offset), bytes(65536, 8))).toBe(true)
      // A 64-bit block-status request: the whole upper half in one go.
      const status = yield* Nbd.blockStatus(h, 1n << 39n, 1n << 39n)
      const extents = status[0]!.extents
      expect(extents[0]).toEqual({ length: 131072n, flags: 3 })
      expect(extents[1]).toEqual({ length: 65536n, flags: 0 })
    })
  )

  it.live("an injected server error fails only its command", () =>
    Effect.gen(function* () {
      const s = yield* server({ faults: [{ command: "read", errno: "EIO" }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      const error = yield* Effect.flip(Nbd.pread(h, 512, 0))
      expect(error._tag).toBe("CommandError")
      expect(error.errno).toBe("EIO")
      yield* Nbd.pwrite(h, bytes(512, 1), 0)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    })
  )
})
