import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { Lock } from "../src/internal/transfer/lock.js"

describe("the copy's lock", () => {
  it.effect("lets one holder in at a time, in the order they came", () =>
    Effect.gen(function* () {
      const lock = new Lock()
      const order: Array<number> = []
      let inside = 0
      let most = 0
      yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i) =>
          lock.with(
            Effect.gen(function* () {
              inside++
              most = Math.max(most, inside)
              order.push(i)
              yield* Effect.yieldNow
              inside--
            })
          ),
        { concurrency: "unbounded", discard: true }
      )
      expect(most).toBe(1)
      expect(order).toEqual(Array.from({ length: 64 }, (_, i) => i))
    })
  )

  it.effect("is given back when the holder fails, and a waiter interrupted while waiting takes nothing", () =>
    Effect.gen(function* () {
      const lock = new Lock()
      expect((yield* Effect.result(lock.with(Effect.fail("boom"))))._tag).toBe("Failure")
      const holder = yield* Effect.forkChild(lock.with(Effect.never))
      yield* Effect.yieldNow
      const waiter = yield* Effect.forkChild(lock.with(Effect.succeed("never ran")))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(waiter)
      yield* Fiber.interrupt(holder)
      expect(yield* lock.with(Effect.succeed("free again"))).toBe("free again")
    })
  )
})
