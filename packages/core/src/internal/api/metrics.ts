import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as NbdMetrics from "../../NbdMetrics.js"

// The metrics are defined (and documented) in NbdMetrics; this module keeps their tagged forms per call, so
// the hot path adds no attributes.

interface Tagged {
  readonly success: Metric.Counter<number>
  readonly failure: Metric.Counter<number>
  readonly bytes: Metric.Counter<number>
  readonly duration: typeof NbdMetrics.duration
}

const byCall = new Map<string, Tagged>()

const tagged = (call: string): Tagged => {
  let metrics = byCall.get(call)
  if (metrics === undefined) {
    metrics = {
      success: Metric.withAttributes(NbdMetrics.calls, { call, outcome: "success" }),
      failure: Metric.withAttributes(NbdMetrics.calls, { call, outcome: "failure" }),
      bytes: Metric.withAttributes(NbdMetrics.bytes, { call }),
      duration: Metric.withAttributes(NbdMetrics.duration, { call })
    }
    byCall.set(call, metrics)
  }
  return metrics
}

/** Counts and times `effect` as one call of `call`, whatever its outcome; a successful read or write adds `bytes`. */
export const observe = <A, E, R>(call: string, effect: Effect.Effect<A, E, R>, bytes = 0): Effect.Effect<A, E, R> => {
  const metrics = tagged(call)
  return Effect.flatMap(Clock.currentTimeNanos, (start) =>
    Effect.onExit(effect, (exit) =>
      Effect.flatMap(Clock.currentTimeNanos, (end) =>
        Effect.andThen(
          Metric.update(metrics.duration, Duration.nanos(end - start)),
          Exit.isSuccess(exit)
            ? Effect.andThen(Metric.update(metrics.success, 1), Metric.update(metrics.bytes, bytes))
            : Metric.update(metrics.failure, 1)
        )
      )
    )
  )
}

/** Counts one call of `call` that took `millis`, as `observe` would have: its outcome, and `bytes` when it succeeded. */
export const record = (call: string, success: boolean, bytes: number, millis: number): Effect.Effect<void> => {
  const metrics = tagged(call)
  return Effect.andThen(
    Metric.update(metrics.duration, Duration.millis(millis)),
    success
      ? Effect.andThen(Metric.update(metrics.success, 1), Metric.update(metrics.bytes, bytes))
      : Metric.update(metrics.failure, 1)
  )
}
