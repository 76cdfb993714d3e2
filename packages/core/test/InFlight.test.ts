import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { abandonAll, InFlight, type Started, uncancellable } from "../src/internal/transfer/sides.js"

// Started I/O as the ordered transfers await it: what an interrupted wait, and a transfer that ends with
// I/O it never awaited, do to I/O that can be stopped and to I/O that cannot.

/** An I/O that ends after `ms` and cannot be stopped (positional file I/O), counted while it runs. */
const fileLike = (running: { count: number }, ms: number) => (done: (failure: undefined, value: number) => void) => {
  running.count++
  setTimeout(() => {
    running.count--
    done(undefined, ms)
  }, ms)
  return uncancellable
}

/** An I/O that never ends by itself and can be stopped (an NBD command whose reply never comes). */
const commandLike = (stopped: { count: number }) => (): Started => ({
  cancel: () => {
    stopped.count++
    return true
  }
})

describe("InFlight", () => {
  it.live("waits for its outcome, started before the wait", () =>
    Effect.gen(function* () {
      const running = { count: 0 }
      const io = new InFlight<never, number>(new Set()).begin(fileLike(running, 20))
      expect(running.count).toBe(1)
      expect(yield* io.wait).toBe(20)
      expect(running.count).toBe(0)
    })
  )

  it.live("an interrupted wait stops what can be stopped at once, and waits for what cannot", () =>
    Effect.gen(function* () {
      const running = { count: 0 }
      const file = new InFlight<never, number>(new Set()).begin(fileLike(running, 50))
      const fiber = yield* Effect.forkChild(file.wait)
      yield* Effect.sleep("5 millis")
      expect(Exit.hasInterrupts(yield* Effect.andThen(Fiber.interrupt(fiber), Fiber.await(fiber)))).toBe(true)
      expect(running.count).toBe(0)
      const stopped = { count: 0 }
      const command = new InFlight<never, number>(new Set()).begin(commandLike(stopped))
      const waiting = yield* Effect.forkChild(command.wait)
      yield* Effect.sleep("5 millis")
      expect(Exit.hasInterrupts(yield* Effect.andThen(Fiber.interrupt(waiting), Fiber.await(waiting)))).toBe(true)
      expect(stopped.count).toBe(1)
    })
  )

  it.live("abandonAll stops or waits for every I/O never awaited, and forgets those that ended", () =>
    Effect.gen(function* () {
      const inFlight = new Set<InFlight<never, number>>()
      const running = { count: 0 }
      const stopped = { count: 0 }
      const done = new InFlight(inFlight).begin(fileLike(running, 1))
      yield* done.wait
      for (let i = 0; i < 3; i++) new InFlight(inFlight).begin(fileLike(running, 30))
      for (let i = 0; i < 2; i++) new InFlight(inFlight).begin(commandLike(stopped))
      expect(inFlight.size).toBe(5)
      yield* abandonAll(inFlight)
      expect(running.count).toBe(0)
      expect(stopped.count).toBe(2)
      expect(inFlight.size).toBe(0)
    })
  )
})
