import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as NbdMetrics from "../../NbdMetrics.js"

// The metrics are defined (and documented) in NbdMetrics; this module keeps their tagged forms per call, so
// the hot path tags nothing.

interface Tagged {
  readonly success: Metric.Metric.Counter<number>
  readonly failure: Metric.Metric.Counter<number>
  readonly bytes: Metric.Metric.Counter<number>
  readonly duration: typeof NbdMetrics.duration
}

const byCall = new Map<string, Tagged>()

const tagged = (call: string): Tagged => {
  let metrics = byCall.get(call)
  if (metrics === undefined) {
    const calls = Metric.tagged(NbdMetrics.calls, "call", call)
    metrics = {
      success: Metric.tagged(calls, "outcome", "success"),
      failure: Metric.tagged(calls, "outcome", "failure"),
      bytes: Metric.tagged(NbdMetrics.bytes, "call", call),
      duration: Metric.tagged(NbdMetrics.duration, "call", call)
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
        Effect.zipRight(
          Metric.update(metrics.duration, Duration.nanos(end - start)),
          Exit.isSuccess(exit)
            ? Effect.zipRight(Metric.increment(metrics.success), Metric.incrementBy(metrics.bytes, bytes))
            : Metric.increment(metrics.failure)
        )
      )
    )
  )
}

/** Counts one call of `call` that took `millis`, as `observe` would have: its outcome, and `bytes` when it succeeded. */
export const record = (call: string, success: boolean, bytes: number, millis: number): Effect.Effect<void> => {
  const metrics = tagged(call)
  return Effect.zipRight(
    Metric.update(metrics.duration, Duration.millis(millis)),
    success
      ? Effect.zipRight(Metric.increment(metrics.success), Metric.incrementBy(metrics.bytes, bytes))
      : Metric.increment(metrics.failure)
  )
}
