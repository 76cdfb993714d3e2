import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as HandleState from "../src/HandleState.js"
import * as NbdError from "../src/NbdError.js"
import { StateCell } from "../src/internal/session/stateCell.js"

// The handle's state is held once: what a synchronous check reads, what `get` answers and what `changes`
// streams are the same state, and every change is one step.

const deadWith = (n: number): HandleState.HandleState =>
  HandleState.Dead(new NbdError.ConnectionError({ errno: "ENOTCONN", operation: `change ${n}`, message: "" }))

/** Collects `count` states from `changes`, subscribed before this returns (as the debug log's watcher is). */
const collect = (cell: StateCell, count: number) =>
  Effect.gen(function* () {
    const subscribed = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkChild(
      cell.changes.pipe(
        Stream.tap(() => Deferred.succeed(subscribed, undefined)),
        Stream.take(count),
        Stream.runCollect
      )
    )
    yield* Deferred.await(subscribed)
    return Fiber.join(fiber)
  })

describe("the handle's state cell", () => {
  it.effect("reads the state it was last moved to, at once and as an effect", () =>
    Effect.gen(function* () {
      const cell = yield* StateCell.make
      expect(cell.now).toBe(HandleState.Created)
      const answer = yield* cell.modify((s) => [s._tag, HandleState.Connecting] as const)
      expect(answer).toBe("Created")
      expect(cell.now).toBe(HandleState.Connecting)
      expect(yield* cell.get).toBe(HandleState.Connecting)
    })
  )

  it.effect("streams the state it has, then every change once, in the order the changes were made", () =>
    Effect.gen(function* () {
      const cell = yield* StateCell.make
      const made: Array<HandleState.HandleState> = []
      const changes = yield* collect(cell, 41)
      // Forty fibers, each moving the state to its own Dead: the stream sees them as they were made.
      yield* Effect.forEach(
        Array.from({ length: 40 }, (_, n) => n),
        (n) =>
          Effect.andThen(
            Effect.yieldNow,
            cell.modify((): readonly [void, HandleState.HandleState] => {
              const next = deadWith(n)
              made.push(next)
              return [undefined, next]
            })
          ),
        { concurrency: "unbounded", discard: true }
      )
      expect(yield* changes).toEqual([HandleState.Created, ...made])
    })
  )

  it.effect("publishes nothing when a step leaves the state as it was", () =>
    Effect.gen(function* () {
      const cell = yield* StateCell.make
      const changes = yield* collect(cell, 2)
      yield* cell.modify((s) => [undefined, s] as const)
      yield* cell.modify(() => [undefined, HandleState.Connecting] as const)
      expect(yield* changes).toEqual([HandleState.Created, HandleState.Connecting])
    })
  )

  it.effect("lets one of many racing claims win: the read and the write are one step", () =>
    Effect.gen(function* () {
      const cell = yield* StateCell.make
      const claim = cell.modify((s) =>
        HandleState.isCreated(s) ? ([true, HandleState.Connecting] as const) : ([false, s] as const)
      )
      const won = yield* Effect.all(
        Array.from({ length: 20 }, () => claim),
        { concurrency: "unbounded" }
      )
      expect(won.filter((w) => w)).toHaveLength(1)
      expect(cell.now).toBe(HandleState.Connecting)
    })
  )
})
