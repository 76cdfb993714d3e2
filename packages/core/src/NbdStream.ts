/**
 * Whole-export work as Effect streams: `readStream` reads a range in order with many requests in flight,
 * `writeSink` writes what a stream gives at an offset. Both take a handle or an `NbdPool` (commands spread
 * over its connections).
 *
 * @example
 * import { Nbd, NbdStream } from "@effect-nbd/core"
 * import * as Effect from "effect/Effect"
 * import * as Stream from "effect/Stream"
 *
 * // Copies one export into another, 256 KiB at a time, 64 requests in flight on each side.
 * const mirror = (from: Nbd.Handle, to: Nbd.Handle) =>
 *   Stream.run(NbdStream.readStream(from), NbdStream.writeSink(to, { flush: true }))
 *
 * @since 0.2.0
 */
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/transfer/nbdStream.js"
import type * as NbdError from "./NbdError.js"
import type * as NbdPool from "./NbdPool.js"

/**
 * The options of `readStream`.
 * @since 0.2.0
 * @category models
 */
export interface ReadOptions {
  /** Where the range starts (default 0). */
  readonly offset?: number | bigint | undefined
  /** How many bytes to read (default: to the end of the export). */
  readonly length?: number | bigint | undefined
  /** Bytes per request and per element (default 256 KiB; at most the server's maximum block size). */
  readonly requestSize?: number | undefined
  /** Requests in flight per connection (default 64). */
  readonly requests?: number | undefined
  /**
   * Skip reading what block status (base:allocation, when the handle negotiated it) reports as zeroes:
   * those elements are zeroed buffers made without a request (default false).
   */
  readonly sparse?: boolean | undefined
}

/**
 * The bytes of a range, in order: one fresh `Uint8Array` per request (the last may be shorter), which the
 * consumer may keep. Up to `requests` reads per connection are in flight ahead of the consumer; with a pool
 * they go round robin over its connections. Nothing is read until the stream runs, and every run reads
 * anew. A failed read fails the stream with its `NbdError`; a range past the end fails with EINVAL.
 * @since 0.2.0
 * @category streams
 */
export const readStream: (
  target: NbdPool.Target,
  options?: ReadOptions
) => Stream.Stream<Uint8Array, NbdError.NbdError> = internal.readStream

/**
 * The options of `writeSink`.
 * @since 0.2.0
 * @category models
 */
export interface WriteOptions {
  /** Where the first chunk goes (default 0). */
  readonly offset?: number | bigint | undefined
  /** Writes in flight per connection (default 64). */
  readonly requests?: number | undefined
  /** Chunks larger than this are split (default: the server's maximum request). */
  readonly requestSize?: number | undefined
  /** NBD_CMD_FLUSH on every connection once the last write completed (default false). */
  readonly flush?: boolean | undefined
  /** Send all-zero chunks as NBD_CMD_WRITE_ZEROES (default false). */
  readonly detectZeroes?: boolean | undefined
}

/**
 * Writes incoming chunks one after another from `offset`, up to `requests` per connection in flight
 * (round robin over a pool), then waits for all of them, flushes when asked, and gives the number of bytes
 * written. A chunk must not change until the sink has finished with it (the sink sends it as it is). A
 * read-only export fails with EPERM, data past the end of the export with ENOSPC, a failed write with
 * its `NbdError`.
 * @since 0.2.0
 * @category sinks
 */
export const writeSink: (
  target: NbdPool.Target,
  options?: WriteOptions
) => Sink.Sink<bigint, Uint8Array, never, NbdError.NbdError> = internal.writeSink
