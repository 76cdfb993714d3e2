/**
 * Filters: behaviours layered over any backend, as nbdkit layers `--filter=error --filter=delay memory 1G`.
 * A filter takes a `Backend` and gives one that changes one thing: errors, delays, read-only, advertised
 * capabilities, block sizes, flipped bits. `Filter.apply(backend, a, b)` makes `a` the outermost layer, as
 * `--filter=a --filter=b` does.
 *
 * @example
 * ```ts
 * import { Backend, Filter } from "@effect-nbd/test-server"
 *
 * const flaky = Filter.apply(
 *   Backend.memory(1n << 30n),
 *   Filter.error({ errno: "EIO", rates: { read: 0.1 } }),
 *   Filter.delay({ read: 200 })
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as NbdError from "@effect-nbd/core/NbdError"
import type * as Protocol from "@effect-nbd/core/Protocol"
import * as Fs from "node:fs"
import * as Backend from "./Backend.js"
import * as Request from "./internal/request.js"

/**
 * A layer over a backend.
 *
 * @since 0.1.0
 * @category models
 */
export type Filter = (backend: Backend.Backend) => Backend.Backend

/**
 * The backend operations a filter can target, by nbdkit's names.
 *
 * @since 0.1.0
 * @category models
 */
export type Operation = "read" | "write" | "zero" | "trim" | "flush" | "extents" | "cache"

/**
 * Applies filters to a backend: the first is the outermost, as in nbdkit's `--filter=a --filter=b plugin`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const apply = (backend: Backend.Backend, ...filters: ReadonlyArray<Filter>): Backend.Backend =>
  filters.reduceRight((inner, filter) => filter(inner), backend)

/** Wraps the operations of a backend, one effect transformer for each. */
const around = (
  backend: Backend.Backend,
  wrap: <A>(
    operation: Operation,
    effect: Effect.Effect<A, Backend.BackendError>
  ) => Effect.Effect<A, Backend.BackendError>
): Backend.Backend => ({
  ...backend,
  read: (offset, length) => wrap("read", backend.read(offset, length)),
  write: (offset, data, fua) => wrap("write", backend.write(offset, data, fua)),
  zero: (offset, length, mayTrim) => wrap("zero", backend.zero(offset, length, mayTrim)),
  trim: (offset, length) => wrap("trim", backend.trim(offset, length)),
  flush: Effect.suspend(() => wrap("flush", backend.flush)),
  cache: (offset, length) => wrap("cache", backend.cache(offset, length)),
  extents: (offset, length) => wrap("extents", backend.extents(offset, length))
})

/**
 * When a filter acts on a call, by operation. The first that applies decides:
 *
 * - `when`: a predicate of the operation and the request the server is serving, for triggers the others
 *   cannot say; two filters given one predicate act on the same calls.
 * - `nths` / `nth`: only the nth request of the operation on each connection (1-based, as the server counts
 *   them: `Backend.Request.ordinal`). A call outside a server is never the nth.
 * - `rates` / `rate`: a share of the calls, in [0, 1], drawn with `random` (default Math.random).
 *
 * With none of them, the filter's default rate applies (the error filter: 0, nbdkit's default; the delay
 * filter: 1, every call).
 *
 * @since 0.1.0
 * @category models
 */
export interface Trigger {
  readonly when?: (operation: Operation, request: Backend.Request | undefined) => boolean
  readonly nth?: number
  readonly nths?: Partial<Record<Operation, number>>
  readonly rate?: number
  readonly rates?: Partial<Record<Operation, number>>
  /** The random source, in [0, 1); default Math.random. */
  readonly random?: () => number
}

/** Whether a trigger fires on a call: an effect, as it reads the request the call serves. */
const fires = (trigger: Trigger, operation: Operation, defaultRate: number): Effect.Effect<boolean> => {
  const { when } = trigger
  if (when !== undefined)
    return Effect.map(Effect.service(Request.currentRequest), (request) => when(operation, request))
  const nth = trigger.nths?.[operation] ?? trigger.nth
  if (nth !== undefined)
    return Effect.map(Effect.service(Request.currentRequest), (request) => request?.ordinal === nth)
  const rate = trigger.rates?.[operation] ?? trigger.rate ?? defaultRate
  if (rate <= 0) return Effect.succeed(false)
  if (rate >= 1) return Effect.succeed(true)
  return Effect.sync(() => (trigger.random ?? Math.random)() < rate)
}

/**
 * Options of the error filter (nbdkit's error filter): the errno (default EIO, or per operation
 * `errnos`), when it fires (`Trigger`: by default a rate of 0, so an operation fails only with a rate, an
 * nth or a predicate), and trigger files: with `file` (or a per-operation `files` entry) errors are
 * injected only while that file exists.
 *
 * @since 0.1.0
 * @category models
 */
export interface ErrorOptions extends Trigger {
  readonly errno?: NbdError.Errno
  readonly errnos?: Partial<Record<Operation, NbdError.Errno>>
  readonly file?: string
  readonly files?: Partial<Record<Operation, string>>
}

/**
 * Fails operations with an errno, at a rate (or on the nth request, or by a predicate), while a trigger
 * file exists: nbdkit's error filter. The inner backend is not called for a failed operation.
 *
 * @since 0.1.0
 * @category filters
 */
export const error =
  (options: ErrorOptions): Filter =>
  (backend) =>
    around(backend, (operation, effect) =>
      Effect.flatMap(fires(options, operation, 0), (fire) => {
        if (!fire) return effect
        const file = options.files?.[operation] ?? options.file
        if (file !== undefined && !Fs.existsSync(file)) return effect
        const errno = options.errnos?.[operation] ?? options.errno ?? "EIO"
        return Effect.fail(new Backend.BackendError({ errno, message: `injected ${errno} on ${operation}` }))
      })
    )

/**
 * Delays operations by milliseconds, each operation its own: nbdkit's delay filter. Other requests are not
 * held up: the server serves requests concurrently. By default every call is delayed; a `Trigger` narrows
 * it to a rate, the nth request or a predicate (which nbdkit's filter has not).
 *
 * @since 0.1.0
 * @category filters
 */
export const delay =
  (delays: Partial<Record<Operation, number>>, trigger: Trigger = {}): Filter =>
  (backend) =>
    around(backend, (operation, effect) => {
      const ms = delays[operation] ?? 0
      if (ms <= 0) return effect
      return Effect.flatMap(fires(trigger, operation, 1), (fire) => (fire ? Effect.delay(effect, ms) : effect))
    })

/**
 * Serves the backend read-only: the export is advertised READ_ONLY and writes fail with EPERM.
 *
 * @since 0.1.0
 * @category filters
 */
export const readOnly: Filter = (backend) => {
  const refuse = Effect.fail(new Backend.BackendError({ errno: "EPERM", message: "the export is read-only" }))
  return { ...backend, readOnly: true, write: () => refuse, zero: () => refuse, trim: () => refuse }
}

/**
 * Stops advertising NBD_CMD_WRITE_ZEROES: nbdkit's nozero filter (its default mode). The server then
 * refuses a zero with EINVAL.
 *
 * @since 0.1.0
 * @category filters
 */
export const noZero: Filter = (backend) => ({ ...backend, canZero: false })

/**
 * Stops advertising NBD_CMD_TRIM. The server then refuses a trim with EINVAL.
 *
 * @since 0.1.0
 * @category filters
 */
export const noTrim: Filter = (backend) => ({ ...backend, canTrim: false })

/**
 * Reports every range as data, as a backend without extents does: nbdkit's noextents filter.
 *
 * @since 0.1.0
 * @category filters
 */
export const noExtents: Filter = (backend) => ({
  ...backend,
  extents: (_offset, length) => Effect.succeed([{ length, flags: 0 }])
})

/**
 * Advertises NBD_FLAG_CAN_MULTI_CONN or not: nbdkit's multi-conn filter (`multi-conn-mode=unsafe` or
 * `disable`).
 *
 * @since 0.1.0
 * @category filters
 */
export const multiConn =
  (enabled: boolean): Filter =>
  (backend) => ({ ...backend, canMultiConn: enabled })

/**
 * Advertises these block size constraints for the export (nbdkit's blocksize-policy filter with
 * `blocksize-error-policy=error`): a request not aligned to the minimum is refused with EINVAL, a read or
 * write beyond the maximum with EOVERFLOW.
 *
 * @since 0.1.0
 * @category filters
 */
export const blockSizePolicy =
  (sizes: Protocol.BlockSizes): Filter =>
  (backend) => ({ ...backend, blockSize: sizes })

/**
 * Options of the evil filter: `probability`, the chance that each bit read is flipped (nbdkit's
 * `evil-probability`, cosmic-rays mode), and `seed` for the generator, so a run can be repeated.
 *
 * @since 0.1.0
 * @category models
 */
export interface EvilOptions {
  readonly probability: number
  readonly seed?: number
}

/** mulberry32: a small seeded generator, uniform in [0, 1). */
const mulberry32 = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Flips bits in read data at a seeded rate, for checksum and retry tests: nbdkit's evil filter
 * (cosmic-rays). Each bit read is flipped with `probability`; the flips are drawn as gaps between them, so a
 * low rate costs little. Writes are untouched; what is stored stays correct.
 *
 * @since 0.1.0
 * @category filters
 */
export const evil =
  (options: EvilOptions): Filter =>
  (backend) => {
    const p = options.probability
    const random = mulberry32(options.seed ?? 0)
    /** Bits until the next flip: a geometric draw. */
    const gap = (): number => (p >= 1 ? 0 : Math.floor(Math.log(1 - random()) / Math.log(1 - p)))
    let next = p > 0 ? gap() : Infinity
    return {
      ...backend,
      read: (offset, length) =>
        Effect.map(backend.read(offset, length), (chunks) => {
          const bits = length * 8
          if (next >= bits) {
            next -= bits
            return chunks
          }
          // Copy: the chunks may be views of the backend's own storage.
          const out = new Uint8Array(length)
          let at = 0
          for (const c of chunks) {
            if (!Backend.isZeroes(c)) out.set(c, at)
            at += c.length
          }
          let bit = next
          while (bit < bits) {
            out[bit >>> 3]! ^= 1 << (bit & 7)
            bit += 1 + gap()
          }
          next = bit - bits
          return [out]
        })
    }
  }
