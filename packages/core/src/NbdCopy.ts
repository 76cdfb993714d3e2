/**
 * `copy(source, destination, options)`: nbdcopy as a library call. Either side is an NBD handle, an
 * `NbdPool` (multi-conn), a file (through Effect's `FileSystem`) or an Effect stream; a
 * destination may also be a sink or `discard` (nbdcopy's `null:`).
 *
 * Between random-access sides it works as nbdcopy does: connections × requests workers, each reading the
 * next piece into a buffer from a pool and writing it, the buffer reused once the write completed, so
 * memory stays within connections × requests × request size. It is sparse-aware: what block status
 * (base:allocation) reports as zeroes is never read, and data that reads as all zeroes is not written as
 * data; both become NBD_CMD_WRITE_ZEROES where the destination has it, holes in a file, or nothing at all
 * when the destination is known to be zero.
 *
 * @example
 * import { NbdCopy, NbdPool } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const source = yield* NbdPool.make({
 *       settings: { metaContexts: ["base:allocation"] },
 *       connect: (h) => NodeNbd.connectUri(h, "nbd+unix:///?socket=/tmp/src.sock")
 *     })
 *     const destination = yield* NbdPool.make({
 *       connect: (h) => NodeNbd.connectUri(h, "nbd+unix:///?socket=/tmp/dst.sock")
 *     })
 *     return yield* NbdCopy.copy(source, destination, { flush: true })
 *   })
 * )
 *
 * @since 0.2.0
 */
import type * as PlatformError from "effect/PlatformError"
import type * as FileSystem from "effect/FileSystem"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/transfer/nbdCopy.js"
import type * as NbdError from "./NbdError.js"
import type * as NbdPool from "./NbdPool.js"

/**
 * A file, opened through `FileSystem`. As a source it is read where it stands. As a destination it is
 * created or truncated, then sized to the source so zero ranges stay holes and are never written (a
 * device or `/dev/null` that cannot hold holes gets every byte).
 * @since 0.2.0
 * @category models
 */
export interface File {
  readonly _tag: "File"
  readonly path: string
}

/**
 * A stream of bytes as a source, read in order; `size` (when known) sizes the destination up front and
 * is checked against what the stream gives.
 * @since 0.2.0
 * @category models
 */
export interface FromStream<E, R> {
  readonly _tag: "FromStream"
  readonly stream: Stream.Stream<Uint8Array, E, R>
  readonly size: bigint | undefined
}

/**
 * A sink as a destination: it gets every byte in order, zero ranges as fresh zeroed buffers.
 * @since 0.2.0
 * @category models
 */
export interface ToSink<E, R> {
  readonly _tag: "ToSink"
  readonly sink: Sink.Sink<unknown, Uint8Array, unknown, E, R>
}

/**
 * A destination that drops every byte (nbdcopy's `null:`): the source is still read, except what block
 * status says is zero.
 * @since 0.2.0
 * @category models
 */
export interface Discard {
  readonly _tag: "Discard"
}

/**
 * What a copy reads from.
 * @since 0.2.0
 * @category models
 */
export type Source = NbdPool.Target | File | FromStream<any, any>

/**
 * What a copy writes to.
 * @since 0.2.0
 * @category models
 */
export type Destination = NbdPool.Target | File | ToSink<any, any> | Discard

/**
 * The errors a side adds to a copy's `NbdError`: `PlatformError` for a file, the stream's or sink's own.
 * @since 0.2.0
 * @category models
 */
export type ErrorOf<X> = X extends File
  ? PlatformError.PlatformError
  : X extends FromStream<infer E, infer _R>
    ? E
    : X extends ToSink<infer E, infer _R>
      ? E
      : never

/**
 * The services a side needs: `FileSystem` for a file, the stream's or sink's own.
 * @since 0.2.0
 * @category models
 */
export type ContextOf<X> = X extends File
  ? FileSystem.FileSystem
  : X extends FromStream<infer _E, infer R>
    ? R
    : X extends ToSink<infer _E, infer R>
      ? R
      : never

/**
 * A file at `path`, as a source or a destination.
 * @since 0.2.0
 * @category constructors
 */
export const file = (path: string): File => ({ _tag: "File", path })

/**
 * A stream of bytes as a source.
 * @since 0.2.0
 * @category constructors
 */
export const fromStream = <E, R>(
  stream: Stream.Stream<Uint8Array, E, R>,
  options: { readonly size?: number | bigint | undefined } = {}
): FromStream<E, R> => ({
  _tag: "FromStream",
  stream,
  size: options.size === undefined ? undefined : BigInt(options.size)
})

/**
 * A sink as a destination.
 * @since 0.2.0
 * @category constructors
 */
export const toSink = <E, R>(sink: Sink.Sink<unknown, Uint8Array, unknown, E, R>): ToSink<E, R> => ({
  _tag: "ToSink",
  sink
})

/**
 * The destination that drops everything.
 * @since 0.2.0
 * @category constructors
 */
export const discard: Discard = { _tag: "Discard" }

/**
 * The options of a copy; every one has nbdcopy's default.
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** Bytes per request (default 256 KiB, at most 64 MiB and the servers' maximum block size). */
  readonly requestSize?: number | undefined
  /**
   * Requests in flight per connection (default 64). With a file on either side this is the total, shared by
   * the connections: the file's I/O runs a few at a time, so more would only hold more buffers.
   */
  readonly requests?: number | undefined
  /**
   * At most this many connections of each pool (default: all of them); a copy uses as many as the side
   * with fewer has. Files get as many handles (default 4 when neither side is NBD).
   */
  readonly connections?: number | undefined
  /**
   * Keep sparseness (default true): skip what block status reports as zeroes, and turn data that reads
   * as all zeroes into NBD_CMD_WRITE_ZEROES or holes. False copies every byte as data.
   */
  readonly sparse?: boolean | undefined
  /**
   * The granularity of zero detection in bytes (nbdcopy's `-S N`): data is checked in blocks of this size,
   * aligned to the export, and each run of all-zero blocks becomes NBD_CMD_WRITE_ZEROES or a hole while the
   * rest is written; a partial block at either end of a request is written as data. Default: the whole
   * request, zeroed only when all of it reads as zeroes. Used only while `sparse` is on.
   * @since 0.2.0
   */
  readonly sparseSize?: number | undefined
  /**
   * The destination ends fully allocated (nbdcopy's `--allocated`; default false): what was read is
   * written as it is, zeroes or not, and zero extents of the source become NBD_CMD_WRITE_ZEROES with
   * NBD_CMD_FLAG_NO_HOLE, or zero bytes written into a file, instead of holes.
   * @since 0.2.0
   */
  readonly allocated?: boolean | undefined
  /** The destination already reads as zeroes everywhere: zero ranges are skipped (default false). */
  readonly destinationIsZero?: boolean | undefined
  /** Flush the destination (NBD_CMD_FLUSH on every connection, fsync for a file) at the end (default false). */
  readonly flush?: boolean | undefined
  /**
   * Sees the source's bytes as the copy moves them, whatever the destination is: for a checksum or a
   * block hash of what was copied.
   * @since 0.2.0
   */
  readonly observer?: Observer | undefined
}

/**
 * Sees every byte of a copy's source exactly once: `data` with what was read, at its offset (the bytes are
 * the copy's reused buffer, valid only during the call), and `zero` with a range block status reported as
 * zeroes, which is never read. Calls come in no particular order when several requests are in flight, and
 * run on the copy's fiber, so they should be quick.
 * @since 0.2.0
 * @category models
 */
export interface Observer {
  readonly data: (offset: number, bytes: Uint8Array) => void
  readonly zero: (offset: number, length: number) => void
}

/**
 * How far a copy has come: bytes done (data and zero ranges), the total when known, and the average rate
 * since the start in bytes per second.
 * @since 0.2.0
 * @category models
 */
export interface Progress {
  readonly bytes: bigint
  readonly total: bigint | undefined
  readonly rate: number
}

/**
 * What a finished copy did.
 * @since 0.2.0
 * @category models
 */
export interface Result {
  /** Every byte of the source: `dataBytes + zeroBytes`. */
  readonly bytes: bigint
  /** Bytes read and written as data. */
  readonly dataBytes: bigint
  /** Bytes that read as zeroes, zeroed or skipped. */
  readonly zeroBytes: bigint
  /** Connections (or file handles) used on each side. */
  readonly connections: number
  /** Request buffers the copy allocated: at most connections × requests. */
  readonly buffers: number
}

/**
 * Copies every byte of `source` to `destination`. It fails with the first error of either side (an
 * `NbdError`, a file's `PlatformError`, a stream's or sink's own) and then claims nothing: the other
 * requests are interrupted and no flush or final truncate runs. A destination export smaller than the
 * source fails with ENOSPC before anything is written, a read-only one with EPERM. Interrupting the copy
 * stops it.
 * @since 0.2.0
 * @category copying
 */
export const copy = <S extends Source, D extends Destination>(
  source: S,
  destination: D,
  options?: Options
): Effect.Effect<Result, NbdError.NbdError | ErrorOf<S> | ErrorOf<D>, ContextOf<S> | ContextOf<D>> =>
  // The body is written once for every kind of side; what a given pair can fail with and needs is the
  // narrowing of its union that ErrorOf and ContextOf compute.
  internal.copy(source, destination, options) as Effect.Effect<
    Result,
    NbdError.NbdError | ErrorOf<S> | ErrorOf<D>,
    ContextOf<S> | ContextOf<D>
  >

/**
 * The options of `copyWithProgress`.
 * @since 0.2.0
 * @category models
 */
export interface ProgressOptions extends Options {
  /** How often to report (default 1 second). */
  readonly interval?: Duration.Input | undefined
}

/**
 * The copy as a stream of its progress: the copy starts when the stream runs, an event comes at once and
 * then every `interval`, and the last one, once the copy has finished, has `bytes` equal to `total`. The
 * stream fails with the copy's error; ending it early interrupts the copy.
 * @since 0.2.0
 * @category copying
 */
export const copyWithProgress = <S extends Source, D extends Destination>(
  source: S,
  destination: D,
  options?: ProgressOptions
): Stream.Stream<Progress, NbdError.NbdError | ErrorOf<S> | ErrorOf<D>, ContextOf<S> | ContextOf<D>> =>
  internal.copyWithProgress(source, destination, options) as Stream.Stream<
    Progress,
    NbdError.NbdError | ErrorOf<S> | ErrorOf<D>,
    ContextOf<S> | ContextOf<D>
  >
