import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { captureLogs, withCapturedLogs } from "./util/logs.js"

// The tests that prove no fiber ended with an unhandled error are only as good as the capture: it must see a
// fiber that failed, joined or not, and no other.

describe("captured logs", () => {
  it.live("see a forked fiber that failed or died, and each line at Debug", () =>
    Effect.gen(function* () {
      const logs = captureLogs()
      yield* Effect.gen(function* () {
        const failed = yield* Effect.forkChild(Effect.fail("refused"))
        yield* Fiber.await(failed)
        const died = yield* Effect.forkDetach(Effect.die(new Error("broken")))
        yield* Fiber.await(died)
        yield* Effect.logDebug("a debug line")
      }).pipe(withCapturedLogs(logs))
      const unhandled = logs.unhandled()
      expect(unhandled).toHaveLength(2)
      expect(unhandled[0]).toMatch(/refused/)
      expect(unhandled[1]).toMatch(/broken/)
      expect(logs.lines).toContain("Debug a debug line")
    })
  )

  it.live("see nothing unhandled of fibers that succeeded or were interrupted", () =>
    Effect.gen(function* () {
      const logs = captureLogs()
      yield* Effect.gen(function* () {
        yield* Fiber.join(yield* Effect.forkChild(Effect.succeed(1)))
        const waiting = yield* Effect.forkChild(Effect.never)
        yield* Fiber.interrupt(waiting)
        yield* Effect.result(Effect.fail("handled where it happened"))
      }).pipe(withCapturedLogs(logs))
      expect(logs.unhandled()).toEqual([])
    })
  )
})
