import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

const MiB = 1024 * 1024

/** A handle on a test server that advertises a 512-byte minimum block and a 1 MiB maximum payload. */
const connect = (config: TestServer.Config = {}) =>
  Effect.gen(function* () {
    const server = yield* TestServer.make({
      blockSize: { minimum: 512, preferred: 4096, maximum: MiB },
      exports: [{ name: "", size: 4 * MiB }],
      ...config
    }).pipe(Effect.orDie)
    const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
    yield* NodeNbd.connectUri(h, server.uri)
    return h
  })

/** Runs `attempt` with one strict check on, then off: on, it fails client-side and sends nothing. */
const onAndOff = <A>(
  h: Nbd.Handle,
  check: number,
  attempt: Effect.Effect<A, import("@effect-nbd/core").NbdError.NbdError>
) =>
  Effect.gen(function* () {
    yield* Nbd.setStrictMode(h, Nbd.Strict.MASK)
    const before = yield* Nbd.stats(h)
    const refused = yield* Effect.flip(attempt)
    const after = yield* Nbd.stats(h)
    expect(refused._tag).not.toBe("CommandError")
    expect(after.bytesSent).toBe(before.bytesSent)
    expect(after.chunksSent).toBe(before.chunksSent)
    yield* Nbd.setStrictMode(h, Nbd.Strict.MASK & ~check)
    const served = yield* Effect.result(attempt)
    expect((yield* Nbd.stats(h)).bytesSent).toBeGreaterThan(after.bytesSent)
    // Still connected: Ready, or Processing while the rest of a refused payload is being sent.
    expect(HandleState.isConnected(yield* Nbd.state(h))).toBe(true)
    yield* Nbd.setStrictMode(h, Nbd.Strict.MASK)
    return { refused, served }
  })

describe("strict mode against the test server", () => {
  it.live("STRICT_BOUNDS: EINVAL for reads, ENOSPC for writes; off, the server says the same", () =>
    Effect.gen(function* () {
      const h = yield* connect()
      const read = yield* onAndOff(h, Nbd.Strict.BOUNDS, Nbd.pread(h, 1024, 4 * MiB - 512))
      expect(read.refused.errno).toBe("EINVAL")
      expect(
        read.served._tag === "Failure" && read.served.failure._tag === "CommandError" && read.served.failure.errno
      ).toBe("EINVAL")
      const write = yield* onAndOff(h, Nbd.Strict.BOUNDS, Nbd.pwrite(h, new Uint8Array(1024), 4 * MiB - 512))
      expect(write.refused.errno).toBe("ENOSPC")
      expect(write.served._tag === "Failure" && write.served.failure.errno).toBe("ENOSPC")
      const zero = yield* onAndOff(h, Nbd.Strict.BOUNDS, Nbd.zero(h, 1024, 4 * MiB))
      expect(zero.refused.errno).toBe("ENOSPC")
      expect(zero.served._tag === "Failure" && zero.served.failure.errno).toBe("ENOSPC")
    })
  )

  it.live("STRICT_ZERO_SIZE: a zero count is EINVAL; off, the server refuses it too", () =>
    Effect.gen(function* () {
      const h = yield* connect()
      const r = yield* onAndOff(h, Nbd.Strict.ZERO_SIZE, Nbd.trim(h, 0, 0))
      expect(r.refused.errno).toBe("EINVAL")
      expect(r.refused.message).toBe("count cannot be 0")
      expect(r.served._tag === "Failure" && r.served.failure._tag).toBe("CommandError")
    })
  )

  it.live("STRICT_ALIGN: requests off the advertised 512-byte minimum are EINVAL; off, the server refuses", () =>
    Effect.gen(function* () {
      const h = yield* connect()
      expect(yield* Nbd.getBlockSize(h, "minimum")).toBe(512)
      const r = yield* onAndOff(h, Nbd.Strict.ALIGN, Nbd.pread(h, 100, 512))
      expect(r.refused.errno).toBe("EINVAL")
      expect(r.refused.message).toBe("request is unaligned")
      expect(r.served._tag === "Failure" && r.served.failure._tag === "CommandError" && r.served.failure.errno).toBe(
        "EINVAL"
      )
    })
  )

  it.live("STRICT_PAYLOAD: a write over the 1 MiB payload maximum is ERANGE; off, the server refuses it", () =>
    Effect.gen(function* () {
      const h = yield* connect()
      expect(yield* Nbd.getBlockSize(h, "payload")).toBe(MiB)
      const r = yield* onAndOff(h, Nbd.Strict.PAYLOAD, Nbd.pwrite(h, new Uint8Array(2 * MiB), 0))
      expect(r.refused.errno).toBe("ERANGE")
      expect(r.served._tag === "Failure" && r.served.failure._tag).toBe("CommandError")
      // The server skipped the oversized payload and stayed in step.
      yield* Nbd.pwrite(h, new Uint8Array(512).fill(7), 0)
      expect((yield* Nbd.pread(h, 512, 0))[0]).toBe(7)
    })
  )

  it.live("STRICT_COMMANDS and STRICT_FLAGS: read-only writes are EPERM and a flag a read may not take is EINVAL", () =>
    Effect.gen(function* () {
      const h = yield* connect({ exports: [{ name: "", size: 4 * MiB, readOnly: true }] })
      const write = yield* onAndOff(h, Nbd.Strict.COMMANDS, Nbd.pwrite(h, new Uint8Array(512), 0))
      expect(write.refused.errno).toBe("EPERM")
      expect(
        write.served._tag === "Failure" && write.served.failure._tag === "CommandError" && write.served.failure.errno
      ).toBe("EPERM")
      const flag = yield* onAndOff(h, Nbd.Strict.FLAGS, Nbd.pread(h, 512, 0, { flags: Nbd.CmdFlag.NO_HOLE }))
      expect(flag.refused.errno).toBe("EINVAL")
      expect(
        flag.served._tag === "Failure" && flag.served.failure._tag === "CommandError" && flag.served.failure.errno
      ).toBe("EINVAL")
    })
  )

  it.live("the 64 MiB read cap is ERANGE whatever the strict mode, and nothing is sent", () =>
    Effect.gen(function* () {
      const h = yield* connect({ exports: [{ name: "", size: 256 * MiB }] })
      yield* Nbd.setStrictMode(h, 0)
      const before = (yield* Nbd.stats(h)).bytesSent
      expect((yield* Effect.flip(Nbd.pread(h, 64 * MiB + 512, 0))).errno).toBe("ERANGE")
      expect((yield* Nbd.stats(h)).bytesSent).toBe(before)
    })
  )
})
