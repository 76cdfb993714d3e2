import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { BufferPool } from "../src/internal/transfer/bufferPool.js"
import { copyRandom } from "../src/internal/transfer/copyLoop.js"
import { Planner } from "../src/internal/transfer/planner.js"
import { mustFinish, type Reader, type Writer } from "../src/internal/transfer/sides.js"
import { Tracker } from "../src/internal/transfer/tracker.js"

// copyRandom's request slots, over sides made here: what they see, in what order, and how the copy ends.

const SIZE = 64 * 1024
const PIECE = 4096

/** A reader of `SIZE` bytes whose byte at offset o is o & 0xff, read at once or through a direct start. */
const reader = (direct: boolean): Reader<string> => ({
  size: SIZE,
  lanes: 1,
  maxRequest: PIECE,
  extents: undefined,
  read: (_lane, offset, into) =>
    Effect.sync(() => {
      for (let i = 0; i < into.length; i++) into[i] = (offset + i) & 0xff
      return Effect.void
    }),
  ...(direct
    ? {
        readDirect:
          (_lane: number, offset: number, _length: number, into: Uint8Array | undefined) =>
          (done: (e: string | undefined) => void) => {
            setImmediate(() => {
              if (into !== undefined) for (let i = 0; i < into.length; i++) into[i] = (offset + i) & 0xff
              done(undefined)
            })
            return mustFinish
          }
      }
    : {})
})

/** A writer that records what it is given; `write` may be replaced to fail or die. */
const recorder = (write?: Writer<string>["write"]) => {
  const seen = new Map<number, Uint8Array>()
  const writer: Writer<string> = {
    lanes: 1,
    maxRequest: PIECE,
    discards: false,
    write:
      write ??
      ((_lane, offset, data) =>
        Effect.sync(() => {
          seen.set(offset, data.slice())
          return Effect.void
        })),
    zero: () => Effect.succeed(Effect.void),
    finish: () => Effect.void
  }
  return { seen, writer }
}

const run = (r: Reader<string>, w: Writer<string>, requests = 4) =>
  copyRandom(r, w, new Planner(undefined, 0, SIZE, PIECE, PIECE), {
    lanes: 1,
    requests,
    buffers: new BufferPool(PIECE),
    detectZeroes: false,
    tracker: new Tracker()
  })

describe("copyRandom", () => {
  it.effect("moves every piece once, with the right bytes, over direct and effect starts alike", () =>
    Effect.gen(function* () {
      for (const direct of [true, false]) {
        const { seen, writer } = recorder()
        yield* run(reader(direct), writer)
        expect([...seen.keys()].sort((a, b) => a - b)).toEqual(
          Array.from({ length: SIZE / PIECE }, (_, i) => i * PIECE)
        )
        for (const [offset, data] of seen) expect(data.every((b, i) => b === ((offset + i) & 0xff))).toBe(true)
      }
    })
  )

  it.live("a typed error fails the copy with it, once the I/O in flight has finished", () =>
    Effect.gen(function* () {
      let inFlight = 0
      let most = 0
      const { writer } = recorder((_lane, offset) =>
        Effect.suspend(() => {
          inFlight++
          most = Math.max(most, inFlight)
          return Effect.as(
            Effect.ensuring(
              offset === 3 * PIECE ? Effect.fail("ENOSPC") : Effect.sleep("5 millis"),
              Effect.sync(() => inFlight--)
            ),
            Effect.void
          )
        })
      )
      const exit = yield* Effect.exit(run(reader(true), writer))
      expect(exit).toEqual(Exit.fail("ENOSPC"))
      expect(inFlight).toBe(0)
      expect(most).toBeGreaterThan(1)
    })
  )

  it.live("a side whose effect dies ends the copy with that defect, after what is in flight", () =>
    Effect.gen(function* () {
      let pending = 0
      const { writer } = recorder((_lane, offset) =>
        offset === 2 * PIECE
          ? Effect.die(new Error("boom"))
          : Effect.suspend(() => {
              pending++
              return Effect.as(
                Effect.ensuring(
                  Effect.sleep("10 millis"),
                  Effect.sync(() => pending--)
                ),
                Effect.void
              )
            })
      )
      const exit = yield* Effect.exit(run(reader(true), writer))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(pending).toBe(0)
    })
  )

  it.live("an interrupted copy waits for the direct I/O that cannot be called back", () =>
    Effect.gen(function* () {
      let running = 0
      const slow: Reader<string> = {
        ...reader(true),
        readDirect: (_lane, _offset, _length, _into) => (done) => {
          running++
          setTimeout(() => {
            running--
            done(undefined)
          }, 50)
          return mustFinish
        }
      }
      const fiber = yield* Effect.fork(run(slow, recorder().writer))
      yield* Effect.sleep("10 millis")
      expect(running).toBe(4)
      yield* Fiber.interrupt(fiber)
      expect(running).toBe(0)
    })
  )
})
