/**
 * A logger for tests that keeps every line, at every level down to Debug, with its cause, and a record of
 * every fiber that ended with a failure other than an interruption.
 *
 * Effect logs no line of its own when a forked fiber fails: the failure goes to whoever joins the fiber, or
 * nowhere. So the capture also watches fibers end, through Effect's fiber runtime metrics hook
 * (`Metric.FiberRuntimeMetrics`), and writes a "Fiber terminated with an unhandled error" line with the cause
 * for each that failed. It also keeps Effect's own "Unhandled error in ..." lines, which it logs at
 * `References.UnhandledLogLevel` when a finalizer of a pool, an RcMap or an RcRef fails with no caller.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as References from "effect/References"

export interface CapturedLogs {
  readonly lines: Array<string>
  /**
   * Replaces the loggers, lowers the minimum level to Debug and watches every fiber started under it, for
   * whatever it is provided to.
   */
  readonly layer: Layer.Layer<never>
  /** The lines that say a fiber ended with an unhandled error. */
  readonly unhandled: () => ReadonlyArray<string>
}

/** The words of an unhandled failure: Effect's ("Unhandled error in RcMap finalizer") and the fiber watch's. */
export const UNHANDLED = /unhandled error/i

const text = (message: unknown): string => (Array.isArray(message) ? message.map(String).join(" ") : String(message))

const withCause = (line: string, cause: Cause.Cause<unknown>): string =>
  cause.reasons.length === 0 ? line : `${line}\n${Cause.pretty(cause)}`

export const captureLogs = (): CapturedLogs => {
  const lines: Array<string> = []
  const logger = Logger.make<unknown, void>(({ cause, logLevel, message }) => {
    lines.push(withCause(`${logLevel} ${text(message)}`, cause))
  })
  // A fiber that ends failed (not merely interrupted) is what Effect used to log at Debug as unhandled.
  const fibers: Metric.FiberRuntimeMetricsService = {
    recordFiberStart: () => {},
    recordFiberEnd: (_context, exit) => {
      if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause))
        lines.push(withCause("Debug Fiber terminated with an unhandled error", exit.cause))
    }
  }
  return {
    lines,
    layer: Layer.mergeAll(
      Logger.layer([logger]),
      Layer.succeed(References.MinimumLogLevel, "Debug"),
      Layer.succeed(Metric.FiberRuntimeMetrics, fibers)
    ),
    unhandled: () => lines.filter((line) => UNHANDLED.test(line))
  }
}

/** Runs `effect`, and every fiber it starts, with the captured logger. */
export const withCapturedLogs =
  (logs: CapturedLogs) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.provide(effect, logs.layer)
