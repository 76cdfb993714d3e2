import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Context from "effect/Context"
import { BufferPool } from "../src/internal/transfer/bufferPool.js"
import { copyRandom } from "../src/internal/transfer/copyLoop.js"
import { Planner } from "../src/internal/transfer/planner.js"
import {
  endNow,
  forkIo,
  type Reader,
  type Started,
  uncancellable,
  type Writer
} from "../src/internal/transfer/sides.js"
import { Tracker } from "../src/internal/transfer/tracker.js"

// copyRandom's request slots, over sides made here: what they see, in what order, and how the copy ends.

const SIZE = 64 * 1024
const PIECE = 4096

type Timing = "at once" | "later" | "effect"

/** Fills `into` as the reader's bytes at `offset`: the byte at offset o is o & 0xff. */
const fill = (offset: number, into: Uint8Array): void => {
  for (let i = 0; i < into.length; i++) into[i] = (offset + i) & 0xff
}

/**
 * A reader of `SIZE` bytes whose byte at offset o is o & 0xff, ending its reads before `read` returns, later
 * (a callback that cannot be stopped, as positional file I/O), or as an effect in a fiber of its own.
 */
const reader = (timing: Timing, runtime: Context.Context<never>): Reader<string> => ({
  size: SIZE,
  lanes: 1,
  maxRequest: PIECE,
  extents: undefined,
  drops: false,
  read: (_lane, offset, length, into, done) => {
    const buffer = typeof into === "string" ? new Uint8Array(length) : into
    switch (timing) {
      case "at once":
        fill(offset, buffer)
        return endNow(done, undefined)
      case "later":
        setImmediate(() => {
          fill(offset, buffer)
          done(undefined, buffer)
        })
        return uncancellable
      case "effect":
        return forkIo(
          runtime,
          Effect.sync(() => {
            fill(offset, buffer)
            return buffer
          }),
          done
        )
    }
  }
})

/** A writer that records what it is given, its writes run as effects; `write` may be replaced to fail or die. */
const recorder = (runtime: Context.Context<never>, write?: (offset: number) => Effect.Effect<void, string>) => {
  const seen = new Map<number, Uint8Array>()
  const writer: Writer<string> = {
    lanes: 1,
    maxRequest: PIECE,
    discards: false,
    write: (_lane, offset, data, done) =>
      forkIo(
        runtime,
        write?.(offset) ??
          Effect.sync(() => {
            seen.set(offset, data.slice())
          }),
        done
      ),
    zero: (_lane, _offset, _length, done) => endNow(done, undefined),
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
  it.live("moves every piece once, with the right bytes, whether I/O ends at once, later or as an effect", () =>
    Effect.gen(function* () {
      const runtime = yield* Effect.context<never>()
      for (const timing of ["at once", "later", "effect"] as const) {
        const { seen, writer } = recorder(runtime)
        yield* run(reader(timing, runtime), writer)
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
      const runtime = yield* Effect.context<never>()
      const { writer } = recorder(runtime, (offset) =>
        Effect.suspend(() => {
          inFlight++
          most = Math.max(most, inFlight)
          return Effect.ensuring(
            offset === 3 * PIECE ? Effect.fail("ENOSPC") : Effect.sleep("5 millis"),
            Effect.sync(() => inFlight--)
          )
        })
      )
      const exit = yield* Effect.exit(run(reader("later", runtime), writer))
      expect(exit).toEqual(Exit.fail("ENOSPC"))
      expect(inFlight).toBe(0)
      expect(most).toBeGreaterThan(1)
    })
  )

  it.live("a side whose effect dies ends the copy with that defect, after what is in flight", () =>
    Effect.gen(function* () {
      let pending = 0
      const runtime = yield* Effect.context<never>()
      const { writer } = recorder(runtime, (offset) =>
        offset === 2 * PIECE
          ? Effect.die(new Error("boom"))
          : Effect.suspend(() => {
              pending++
              return Effect.ensuring(
                Effect.sleep("10 millis"),
                Effect.sync(() => pending--)
              )
            })
      )
      const exit = yield* Effect.exit(run(reader("later", runtime), writer))
      expect(Exit.isFailure(exit) && Cause.hasDies(exit.cause)).toBe(true)
      expect(pending).toBe(0)
    })
  )

  it.live("an interrupted copy waits for the I/O that cannot be stopped", () =>
    Effect.gen(function* () {
      let running = 0
      const runtime = yield* Effect.context<never>()
      const slow: Reader<string> = {
        ...reader("later", runtime),
        read: (_lane, _offset, _length, into, done) => {
          running++
          setTimeout(() => {
            running--
            done(undefined, into as Uint8Array)
          }, 50)
          return uncancellable
        }
      }
      const fiber = yield* Effect.forkChild(run(slow, recorder(runtime).writer))
      yield* Effect.sleep("10 millis")
      expect(running).toBe(4)
      yield* Fiber.interrupt(fiber)
      expect(running).toBe(0)
    })
  )

  it.live("an interrupted copy returns when an I/O it stops ends while it is being stopped", () =>
    Effect.gen(function* () {
      const runtime = yield* Effect.context<never>()
      let ended = 0
      // An effect waiting on something (a block-status reply, a socket): interrupting its fiber ends it there
      // and then, so its `done` comes inside `cancel`, which answers false.
      const waiting: Reader<string> = {
        ...reader("later", runtime),
        read: (_lane, _offset, _length, _into, done) =>
          forkIo(runtime, Effect.never, (failure, value) => {
            ended++
            done(failure, value)
          })
      }
      const fiber = yield* Effect.forkDetach(run(waiting, recorder(runtime).writer))
      yield* Effect.sleep("10 millis")
      // Interrupted without waiting here, so a copy that never returns fails the test rather than hangs it.
      fiber.interruptUnsafe()
      const exit = yield* Effect.timeoutOption(Fiber.await(fiber), "1 second")
      expect(exit._tag).toBe("Some")
      expect(ended).toBe(4)
    })
  )

  it.live("an interrupted copy stops the I/O that can be stopped, at once, and never hears from it again", () =>
    Effect.gen(function* () {
      const runtime = yield* Effect.context<never>()
      const started: Array<() => void> = []
      let cancelled = 0
      const stoppable: Reader<string> = {
        ...reader("later", runtime),
        // An NBD read's shape: it ends when its reply comes, and stopping it drops the reply.
        read: (_lane, _offset, _length, into, done): Started => {
          let stopped = false
          started.push(() => {
            if (!stopped) done(undefined, into as Uint8Array)
          })
          return {
            cancel: () => {
              stopped = true
              cancelled++
              return true
            }
          }
        }
      }
      const { seen, writer } = recorder(runtime)
      const fiber = yield* Effect.forkChild(run(stoppable, writer))
      yield* Effect.sleep("10 millis")
      expect(started.length).toBe(4)
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.hasInterrupts(exit)).toBe(true)
      expect(cancelled).toBe(4)
      // Replies that come after the interruption go nowhere: nothing is written, nothing more is read.
      for (const reply of started) reply()
      yield* Effect.sleep("10 millis")
      expect(seen.size).toBe(0)
      expect(started.length).toBe(4)
    })
  )
})
