import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Window } from "../src/internal/transfer/window.js"

describe("the ordered window of started I/O", () => {
  it.effect("topped up after every element, it holds what is in flight and lets go of what was taken", () =>
    Effect.gen(function* () {
      const window = new Window<never, number>()
      const held = (): number =>
        (window as unknown as { waits: Array<unknown> }).waits.filter((w) => w !== undefined).length
      const slots = (): number => (window as unknown as { waits: Array<unknown> }).waits.length
      let next = 0
      for (; next < 64; next++) window.push(Effect.succeed(next), 1, false)
      let most = 0
      for (let taken = 0; taken < 30_000; taken++) {
        expect(yield* window.shift(undefined)).toBe(taken)
        window.push(Effect.succeed(next++), 1, false)
        most = Math.max(most, slots())
        if (taken % 997 === 0) expect(held()).toBe(64)
      }
      // The front is cut off as it grows: never the 30,000 it started.
      expect(most).toBeLessThanOrEqual(2 * 1024 + 64)
    })
  )
})
