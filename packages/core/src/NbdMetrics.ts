/**
 * The metrics a handle made with `metrics: true` keeps, through Effect's `Metric`, so any metrics layer
 * (Prometheus, OpenTelemetry) exports them. Read them with `Metric.value`, with the attributes below. Handles made
 * without `metrics` keep none, and their calls pay nothing for it.
 *
 * @since 0.2.0
 */
import type * as Duration from "effect/Duration"
import * as Metric from "effect/Metric"

/**
 * Calls made, with the attributes `call` (libnbd's name, e.g. "nbd_pread") and `outcome` ("success" or "failure").
 * @since 0.2.0
 * @category metrics
 */
export const calls: Metric.Counter<number> = Metric.counter("nbd_calls_total", {
  description: "NBD calls made",
  incremental: true
})

/**
 * Bytes moved by successful reads and writes, tagged `call`.
 * @since 0.2.0
 * @category metrics
 */
export const bytes: Metric.Counter<number> = Metric.counter("nbd_bytes_total", {
  description: "bytes read or written by NBD commands",
  incremental: true
})

/**
 * How long each call took, in milliseconds, tagged `call`.
 * @since 0.2.0
 * @category metrics
 */
export const duration: Metric.Histogram<Duration.Duration> = Metric.timer("nbd_call_duration", {
  description: "how long NBD calls take"
})
