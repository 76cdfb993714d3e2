import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Chunk, chunk, CONTEXT_ID, type Request, scriptedServer } from "./util/scripted.js"

// Block-status answers written by hand, from a scripted server with base:allocation, to check what one
// command may accumulate from a hostile server.

const EXPORT_SIZE = 1n << 30n
const { BLOCK_STATUS, DONE, NONE } = Chunk

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

const server = (onRequest: (request: Request) => Buffer) =>
  Effect.map(scriptedServer({ exportSize: EXPORT_SIZE, onRequest }), (s) => s.path)

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
  Effect.result(Effect.timeoutOrElse(effect, { duration: "10 seconds", orElse: () => Effect.fail("hung" as const) }))

describe("block status from a hostile server is bounded by the request", () => {
  it.live("a context repeated in many large chunks fails EPROTO instead of growing the command", () =>
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
      expect(result._tag).toBe("Failure")
      if (result._tag === "Failure" && result.failure !== "hung") {
        expect(result.failure.errno).toBe("EPROTO")
        expect(result.failure.message).toContain("more than once")
      } else expect(result).toBe("settled")
      // One chunk's 2^20 extents are kept at most (the first chunk): far below the unbounded 600 MiB.
      expect(grown).toBeLessThan(300 * 1024 * 1024)
    })
  )

  it.live("extents after the requested range is covered fail EPROTO", () =>
    Effect.gen(function* () {
      const path = yield* server(({ cookie }) =>
        chunk(cookie, BLOCK_STATUS, DONE, descriptors(Array.from({ length: 100_000 }, () => [1, 0] as const)))
      )
      const result = yield* withHandle(path, (h) => settle(Nbd.blockStatus(h, 4096, 0)))
      expect(result._tag).toBe("Failure")
      if (result._tag === "Failure" && result.failure !== "hung") {
        expect(result.failure.errno).toBe("EPROTO")
        expect(result.failure.message).toContain("more extents than the requested range")
      }
    })
  )

  it.live("the last extent may run past the request, as the protocol allows", () =>
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

  it.live("an extent past the end of the export fails EPROTO, and the handle stays usable", () =>
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
          const first = yield* Effect.result(Nbd.blockStatus(h, 4096, offset))
          expect(first._tag).toBe("Failure")
          if (first._tag === "Failure") {
            expect(first.failure.errno).toBe("EPROTO")
            expect(first.failure.message).toContain("beyond the end of the export")
          }
          const second = yield* Nbd.blockStatus(h, 4096, offset)
          expect(second[0]?.extents).toEqual([{ length: 4096n, flags: 0 }])
        })
      )
    })
  )

  it.live("a zero-length first extent fails EPROTO; a later one ends the list", () =>
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
          const first = yield* Effect.result(Nbd.blockStatus(h, 4096, 0))
          expect(first._tag).toBe("Failure")
          if (first._tag === "Failure") expect(first.failure.errno).toBe("EPROTO")
          const second = yield* Nbd.blockStatus(h, 4096, 0)
          expect(second[0]?.extents).toEqual([{ length: 512n, flags: 1 }])
        })
      )
    })
  )
})
