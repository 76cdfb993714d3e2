import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Path from "node:path"
import { tempDir } from "./util/peers.js"

// A scripted server with structured replies and base:allocation (context id 1) whose block-status answers
// a test writes by hand, to check what one command may accumulate from a hostile server.

const EXPORT_SIZE = 1n << 30n
const CONTEXT_ID = 1

const optionReply = (option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer => {
  const b = Buffer.alloc(20 + data.length)
  b.writeBigUInt64BE(0x3e889045565a9n, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(data.length, 16)
  data.copy(b, 20)
  return b
}

const answerOption = (option: number): Buffer => {
  switch (option) {
    case 8: // STRUCTURED_REPLY
      return optionReply(option, 1)
    case 10: {
      // SET_META_CONTEXT
      const data = Buffer.alloc(4 + 15)
      data.writeUInt32BE(CONTEXT_ID, 0)
      data.write("base:allocation", 4)
      return Buffer.concat([optionReply(option, 4, data), optionReply(option, 1)])
    }
    case 7: {
      // GO: NBD_INFO_EXPORT, then ACK
      const info = Buffer.alloc(12)
      info.writeBigUInt64BE(EXPORT_SIZE, 2)
      info.writeUInt16BE(0x0001, 10)
      return Buffer.concat([optionReply(option, 3, info), optionReply(option, 1)])
    }
    default:
      return optionReply(option, 0x80000001) // ERR_UNSUP
  }
}

/** A structured reply chunk header (16 bytes) and its payload. */
const chunk = (cookie: Buffer, type: number, flags: number, payload: Buffer): Buffer => {
  const b = Buffer.alloc(20)
  b.writeUInt32BE(0x668e33ef, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  cookie.copy(b, 8)
  b.writeUInt32BE(payload.length, 16)
  return Buffer.concat([b, payload])
}

/** A BLOCK_STATUS chunk payload: the context id, then (length, flags) per extent. */
const descriptors = (extents: ReadonlyArray<readonly [number, number]>, contextId = CONTEXT_ID): Buffer => {
  const b = Buffer.alloc(4 + 8 * extents.length)
  b.writeUInt32BE(contextId, 0)
  extents.forEach(([length, flags], i) => {
    b.writeUInt32BE(length, 4 + 8 * i)
    b.writeUInt32BE(flags, 8 + 8 * i)
  })
  return b
}

const DONE = 1
const BLOCK_STATUS = 5
const NONE = 0

type Answer = (request: { readonly cookie: Buffer; readonly offset: bigint; readonly length: number }) => Buffer

const server = (answer: Answer): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "bs.sock")
    const sockets = new Set<Net.Socket>()
    yield* Effect.acquireRelease(
      Effect.async<Net.Server>((resume) => {
        const s = Net.createServer((socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          const greeting = Buffer.alloc(18)
          greeting.write("NBDMAGICIHAVEOPT")
          greeting.writeUInt16BE(3, 16)
          socket.write(greeting)
          let buffered = Buffer.alloc(0)
          let phase: "flags" | "options" | "transmission" = "flags"
          socket.on("data", (data: Buffer) => {
            buffered = Buffer.concat([buffered, data])
            while (true) {
              if (phase === "flags") {
                if (buffered.length < 4) return
                buffered = buffered.subarray(4)
                phase = "options"
              } else if (phase === "options") {
                if (buffered.length < 16) return
                const length = buffered.readUInt32BE(12)
                if (buffered.length < 16 + length) return
                const option = buffered.readUInt32BE(8)
                buffered = buffered.subarray(16 + length)
                socket.write(answerOption(option))
                if (option === 7) phase = "transmission"
              } else {
                if (buffered.length < 28) return
                const type = buffered.readUInt16BE(6)
                const request = {
                  cookie: Buffer.from(buffered.subarray(8, 16)),
                  offset: buffered.readBigUInt64BE(16),
                  length: buffered.readUInt32BE(24)
                }
                buffered = buffered.subarray(28)
                if (type === 2) return void socket.end() // DISC
                socket.write(answer(request))
              }
            }
          })
        })
        s.listen(path, () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          s.close(() => resume(Effect.void))
        })
    )
    return path
  })

const withHandle = <A, E>(path: string, f: (h: Nbd.Handle) => Effect.Effect<A, E>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
      yield* NodeNbd.connectUnix(h, path)
      return yield* f(h)
    })
  )

/** Fails the test rather than hanging: every outcome here must arrive within a few seconds. */
const settle = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.either(Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => "hung" as const }))

describe("block status from a hostile server is bounded by the request", () => {
  it.scopedLive("a context repeated in many large chunks fails EPROTO instead of growing the command", () =>
    Effect.gen(function* () {
      const big = descriptors(Array.from({ length: 1 << 20 }, () => [512, 0] as const))
      const path = yield* server(({ cookie }) =>
        Buffer.concat([
          ...Array.from({ length: 8 }, () => chunk(cookie, BLOCK_STATUS, 0, big)),
          chunk(cookie, NONE, DONE, Buffer.alloc(0))
        ])
      )
      const before = process.memoryUsage().heapUsed
      const result = yield* withHandle(path, (h) => settle(Nbd.blockStatus(h, EXPORT_SIZE, 0)))
      const grown = process.memoryUsage().heapUsed - before
      expect(result._tag).toBe("Left")
      if (result._tag === "Left" && result.left !== "hung") {
        expect(result.left.errno).toBe("EPROTO")
        expect(result.left.message).toContain("more than once")
      } else expect(result).toBe("settled")
      // One chunk's 2^20 extents are kept at most (the first chunk): far below the unbounded 600 MiB.
      expect(grown).toBeLessThan(300 * 1024 * 1024)
    })
  )

  it.scopedLive("extents after the requested range is covered fail EPROTO", () =>
    Effect.gen(function* () {
      const path = yield* server(({ cookie }) =>
        chunk(cookie, BLOCK_STATUS, DONE, descriptors(Array.from({ length: 100_000 }, () => [1, 0] as const)))
      )
      const result = yield* withHandle(path, (h) => settle(Nbd.blockStatus(h, 4096, 0)))
      expect(result._tag).toBe("Left")
      if (result._tag === "Left" && result.left !== "hung") {
        expect(result.left.errno).toBe("EPROTO")
        expect(result.left.message).toContain("more extents than the requested range")
      }
    })
  )

  it.scopedLive("the last extent may run past the request, as the protocol allows", () =>
    Effect.gen(function* () {
      const path = yield* server(({ cookie }) =>
        chunk(
          cookie,
          BLOCK_STATUS,
          DONE,
          descriptors([
            [4096, 0],
            [1 << 20, 3]
          ])
        )
      )
      const entries = yield* withHandle(path, (h) => Nbd.blockStatus(h, 8192, 0))
      expect(entries).toEqual([
        {
          context: "base:allocation",
          offset: 0n,
          extents: [
            { length: 4096n, flags: 0 },
            { length: 1048576n, flags: 3 }
          ]
        }
      ])
    })
  )

  it.scopedLive("an extent past the end of the export fails EPROTO, and the handle stays usable", () =>
    Effect.gen(function* () {
      let calls = 0
      const path = yield* server(({ cookie }) => {
        calls += 1
        return calls === 1
          ? chunk(cookie, BLOCK_STATUS, DONE, descriptors([[0xffffffff, 0]]))
          : chunk(cookie, BLOCK_STATUS, DONE, descriptors([[4096, 0]]))
      })
      yield* withHandle(path, (h) =>
        Effect.gen(function* () {
          const offset = EXPORT_SIZE - 4096n
          const first = yield* Effect.either(Nbd.blockStatus(h, 4096, offset))
          expect(first._tag).toBe("Left")
          if (first._tag === "Left") {
            expect(first.left.errno).toBe("EPROTO")
            expect(first.left.message).toContain("beyond the end of the export")
          }
          const second = yield* Nbd.blockStatus(h, 4096, offset)
          expect(second[0]?.extents).toEqual([{ length: 4096n, flags: 0 }])
        })
      )
    })
  )

  it.scopedLive("a zero-length first extent fails EPROTO; a later one ends the list", () =>
    Effect.gen(function* () {
      let calls = 0
      const path = yield* server(({ cookie }) => {
        calls += 1
        return calls === 1
          ? chunk(cookie, BLOCK_STATUS, DONE, descriptors([[0, 0]]))
          : chunk(
              cookie,
              BLOCK_STATUS,
              DONE,
              descriptors([
                [512, 1],
                [0, 0],
                [512, 2]
              ])
            )
      })
      yield* withHandle(path, (h) =>
        Effect.gen(function* () {
          const first = yield* Effect.either(Nbd.blockStatus(h, 4096, 0))
          expect(first._tag).toBe("Left")
          if (first._tag === "Left") expect(first.left.errno).toBe("EPROTO")
          const second = yield* Nbd.blockStatus(h, 4096, 0)
          expect(second[0]?.extents).toEqual([{ length: 512n, flags: 1 }])
        })
      )
    })
  )
})
