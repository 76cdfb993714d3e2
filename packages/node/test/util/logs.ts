/**
 * A logger for tests that keeps every line, at every level down to Debug, with its cause. Effect logs a fiber
 * that ends with an error nobody observed as "Fiber terminated with an unhandled error" at Debug, below the
 * default minimum, so only a logger like this one sees it.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"

export interface CapturedLogs {
  readonly lines: Array<string>
  /** Replaces the default logger and lowers the minimum level to Debug, for whatever it is provided to. */
  readonly layer: Layer.Layer<never>
  /** The lines that say a fiber ended with an unhandled error. */
  readonly unhandled: () => ReadonlyArray<string>
}

/** Effect's own words for a fiber that failed with nobody to observe it. */
export const UNHANDLED = /unhandled error/i

export const captureLogs = (): CapturedLogs => {
  const lines: Array<string> = []
  const logger = Logger.make<unknown, void>(({ cause, logLevel, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    lines.push(`${logLevel.label} ${text}${Cause.isEmpty(cause) ? "" : `\n${Cause.pretty(cause)}`}`)
  })
  return {
    lines,
    layer: Layer.merge(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.Debug)),
    unhandled: () => lines.filter((line) => UNHANDLED.test(line))
  }
}

/** Runs `effect`, and every fiber it starts, with the captured logger. */
export const withCapturedLogs =
  (logs: CapturedLogs) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.provide(effect, logs.layer)
