/**
 * The client's block-status filter (NBD_CMD_FLAG_PAYLOAD_LEN on NBD_CMD_BLOCK_STATUS) and fault injection,
 * against the test server.
 */
import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

const MiB = 1024 * 1024

const server = (config: TestServer.Config) => TestServer.make(config).pipe(Effect.orDie)

const connect = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
    yield* NodeNbd.connectUri(h, uri)
    return h
  })

describe("block-status filter", () => {
  it.live("with extended headers: advertised, and the same extents as block status", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 4 * MiB }] })
      const h = yield* connect(s.uri)
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      expect(yield* Nbd.canBlockStatusPayload(h)).toBe(true)
      yield* Nbd.pwrite(h, new Uint8Array(65536).fill(1), MiB)
      const all = yield* Nbd.blockStatus(h, 3 * MiB, 0)
      const filtered = yield* Nbd.blockStatusFilter(h, 3 * MiB, 0, ["base:allocation"])
      expect(filtered).toEqual(all)
      expect(filtered).toHaveLength(1)
      expect(filtered[0]!.context).toBe("base:allocation")
      expect(filtered[0]!.extents.map((e) => [e.length, e.flags])).toEqual([
        [BigInt(MiB), 3],
        [65536n, 0],
        [BigInt(2 * MiB - 65536), 3]
      ])
      // REQ_ONE with the filter
      const one = yield* Nbd.blockStatusFilter(h, 3 * MiB, MiB, ["base:allocation"], { flags: Nbd.CmdFlag.REQ_ONE })
      expect(one[0]!.extents.map((e) => [e.length, e.flags])).toEqual([[65536n, 0]])
    })
  )

  it.live("a context that was not negotiated fails EINVAL in the client", () =>
    Effect.gen(function* () {
      const s = yield* server({})
      const h = yield* connect(s.uri)
      const error = yield* Effect.flip(Nbd.blockStatusFilter(h, 4096, 0, ["qemu:allocation-depth"]))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("not negotiated")
      // the handle is still usable
      expect(yield* Nbd.blockStatusFilter(h, 4096, 0, ["base:allocation"])).toHaveLength(1)
    })
  )

  it.live("without extended headers the filter fails ENOTSUP", () =>
    Effect.gen(function* () {
      const s = yield* server({ extendedHeaders: false })
      const h = yield* connect(s.uri)
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(false)
      expect(yield* Nbd.canBlockStatusPayload(h)).toBe(false)
      const error = yield* Effect.flip(Nbd.blockStatusFilter(h, 4096, 0, ["base:allocation"]))
      expect(error.errno).toBe("ENOTSUP")
      expect((yield* Nbd.blockStatus(h, 4096, 0))[0]!.context).toBe("base:allocation")
    })
  )
})

describe("fault injection seen by the client", () => {
  it.live("per export errors fail that command only, with the server's errno", () =>
    Effect.gen(function* () {
      const s = yield* server({
        exports: [
          { name: "bad", size: MiB, faults: [{ command: "read", errno: "EIO" }] },
          { name: "good", size: MiB }
        ]
      })
      const bad = yield* connect(s.uriFor("bad"))
      yield* Nbd.pwrite(bad, new Uint8Array([1, 2, 3]), 0)
      expect((yield* Effect.flip(Nbd.pread(bad, 3, 0))).errno).toBe("EIO")
      yield* Nbd.flush(bad)
      const good = yield* connect(s.uriFor("good"))
      expect(yield* Nbd.pread(good, 3, 0)).toEqual(new Uint8Array(3))
    })
  )

  it.live("a delayed read does not hold up the commands behind it", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: MiB, faults: [{ command: "read", delayMs: 300 }] }] })
      const h = yield* connect(s.uri)
      const start = Date.now()
      const read = yield* Nbd.aioPread(h, 512, 0)
      yield* Nbd.pwrite(h, new Uint8Array(512).fill(9), 65536)
      yield* Nbd.flush(h)
      expect(Date.now() - start).toBeLessThan(250)
      yield* read.await
      expect(Date.now() - start).toBeGreaterThanOrEqual(290)
    })
  )
})
