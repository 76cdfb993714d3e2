/**
 * Export storage for the test server: one interface, and the backends that implement it (a sparse memory
 * backend, a null backend and nbdkit's "pattern").
 *
 * Offsets and lengths are numbers: the server checks that a request fits the export and lies below 2^53
 * before it calls a backend. Export sizes are bigints, up to 2^63 - 1.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as NbdError from "@effect-nbd/core/NbdError"
import * as Protocol from "@effect-nbd/core/Protocol"

/**
 * A failure of a backend, with the errno name the client should see ("EIO", "ENOSPC", "EPERM" ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly errno: NbdError.Errno
  readonly message: string
}> {}

/**
 * A run of zero bytes in a read result, which the server may send as a hole.
 *
 * @since 0.1.0
 * @category models
 */
export interface Zeroes {
  readonly _tag: "Zeroes"
  readonly length: number
}

/**
 * A piece of a read result: bytes, or a run of zeroes. The pieces of a read add up to its length.
 * Byte arrays may be views of the backend's own storage: the server only sends them.
 *
 * @since 0.1.0
 * @category models
 */
export type ReadChunk = Uint8Array | Zeroes

/**
 * Makes a run of zeroes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const zeroes = (length: number): Zeroes => ({ _tag: "Zeroes", length })

/**
 * Whether a read chunk is a run of zeroes.
 *
 * @since 0.1.0
 * @category guards
 */
export const isZeroes = (chunk: ReadChunk): chunk is Zeroes => !(chunk instanceof Uint8Array)

/**
 * One extent of the `base:allocation` context: a length and its flags (`STATE_HOLE` 1, `STATE_ZERO` 2).
 *
 * @since 0.1.0
 * @category models
 */
export interface Extent {
  readonly length: number
  readonly flags: number
}

/**
 * A backend's read. One that never waits and never fails may carry `now`, the same read done at once: the
 * server then answers a request inline, with no fiber, when no fault applies to it. A filter that replaces
 * `read` gives another function, without `now`, so its requests never bypass it; one that only changes
 * flags keeps the function, and its requests may still be served inline.
 *
 * @since 0.3.0
 * @category models
 */
export interface Read {
  (offset: number, length: number): Effect.Effect<ReadonlyArray<ReadChunk>, BackendError>
  /** The same read, answered at once: it never waits and never fails. */
  readonly now?: ((offset: number, length: number) => ReadonlyArray<ReadChunk>) | undefined
}

/**
 * A backend's write. One that never waits and never fails may carry `now`, the same write done at once,
 * as `Read` may: the server then serves a write inline, and may hand it a payload buffer it reuses.
 *
 * @since 0.3.0
 * @category models
 */
export interface Write {
  (offset: number, data: Uint8Array, fua: boolean): Effect.Effect<void, BackendError>
  /** The same write, done at once: it never waits and never fails; `data` is not kept after it returns. */
  readonly now?: ((offset: number, data: Uint8Array) => void) | undefined
}

/**
 * The storage behind one export. Every operation gets a range the server already checked against `size`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Backend {
  readonly _tag: "Backend"
  /** The backend's name, for messages. */
  readonly name: string
  /** The size of the storage in bytes. */
  readonly size: bigint
  /** Whether writes are impossible (the server then advertises READ_ONLY). */
  readonly readOnly: boolean
  readonly read: Read
  readonly write: Write
  /** Writes zeroes; `mayTrim` is false when the client asked for NO_HOLE. */
  readonly zero: (offset: number, length: number, mayTrim: boolean) => Effect.Effect<void, BackendError>
  readonly trim: (offset: number, length: number) => Effect.Effect<void, BackendError>
  readonly flush: Effect.Effect<void, BackendError>
  readonly cache: (offset: number, length: number) => Effect.Effect<void, BackendError>
  /** `base:allocation` extents from `offset`, covering at most `length` bytes (fewer extents may cover less). */
  readonly extents: (offset: number, length: number) => Effect.Effect<ReadonlyArray<Extent>, BackendError>
  /** Whether to advertise NBD_FLAG_SEND_TRIM (default true); without it a trim is refused with EINVAL. */
  readonly canTrim?: boolean | undefined
  /** Whether to advertise NBD_FLAG_SEND_WRITE_ZEROES (default true); without it a zero is refused with EINVAL. */
  readonly canZero?: boolean | undefined
  /** Whether to advertise NBD_FLAG_CAN_MULTI_CONN (default true). */
  readonly canMultiConn?: boolean | undefined
  /** Block size constraints of this export, in place of the server's (see `Filter.blockSizePolicy`). */
  readonly blockSize?: Protocol.BlockSizes | undefined
}

/**
 * The request a backend call serves, as the server tells it: `ordinal` is its number among the requests of
 * the same command on its connection (1-based), counted once the server's own checks (bounds, flags)
 * passed. Filters read it to act on the nth request (`Filter.error`'s and `Filter.delay`'s `nth`, or a
 * `Filter.Trigger`'s `when`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly ordinal: number
}

/**
 * Whether a value is a `Backend`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isBackend = (u: unknown): u is Backend =>
  typeof u === "object" && u !== null && "_tag" in u && (u as { _tag: unknown })._tag === "Backend"

const HOLE_ZERO = Protocol.STATE_HOLE | Protocol.STATE_ZERO

/** Gives `operation` carrying `now`, its twin done at once. */
const withNow = <F extends Read | Write>(operation: F, now: NonNullable<F["now"]>): F =>
  Object.assign(operation, { now })

/**
 * The largest export size: 2^63 - 1.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_SIZE = 0x7fffffffffffffffn

/**
 * Options of the memory backend.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /** Page size in bytes, a power of two; default 64 KiB. */
  readonly pageSize?: number
  /** Most extents one block-status answer lists; default 65536. */
  readonly maxExtents?: number
}

/** Pages are cut from slabs of this size: a 1 GiB write makes 64 buffers for the GC to track, not 16384. */
const SLAB_SIZE = 16 * 1024 * 1024

/** Hands out zeroed pages, cut from slabs no larger than the export needs. */
const pageAllocator = (pageSize: number, exportSize: bigint | number): (() => Uint8Array) => {
  const wanted = BigInt(exportSize) < BigInt(SLAB_SIZE) ? Number(exportSize) : SLAB_SIZE
  const slabSize = Math.max(pageSize, Math.ceil(wanted / pageSize) * pageSize)
  let slab: Uint8Array | undefined
  let at = 0
  return () => {
    if (slab === undefined || at === slab.length) {
      slab = new Uint8Array(slabSize)
      at = 0
    }
    const page = slab.subarray(at, at + pageSize)
    at += pageSize
    return page
  }
}

/**
 * A sparse memory backend: pages are allocated on first write, so a 1 TiB export costs nothing until
 * written. Unwritten pages read as zeroes and report `HOLE|ZERO`; written pages report 0. Trimming or zeroing
 * a whole page makes it a hole again; its memory is kept for the next page written.
 *
 * @since 0.1.0
 * @category constructors
 */
export const memory = (size: bigint | number, options: MemoryOptions = {}): Backend => {
  const pageSize = options.pageSize ?? 65536
  if (!Number.isInteger(Math.log2(pageSize))) throw new RangeError(`page size must be a power of two: ${pageSize}`)
  const maxExtents = options.maxExtents ?? 65536
  const pages = new Map<number, Uint8Array>()
  const newPage = pageAllocator(pageSize, size)
  /** Pages that became holes, for reuse. */
  const spare: Array<Uint8Array> = []

  const readSync = (offset: number, length: number): Array<ReadChunk> => {
    const out: Array<ReadChunk> = []
    let zeroRun = 0
    let at = offset
    const end = offset + length
    while (at < end) {
      const index = Math.floor(at / pageSize)
      const inPage = at - index * pageSize
      const step = Math.min(pageSize - inPage, end - at)
      const page = pages.get(index)
      if (page === undefined) zeroRun += step
      else {
        if (zeroRun > 0) {
          out.push(zeroes(zeroRun))
          zeroRun = 0
        }
        out.push(page.subarray(inPage, inPage + step))
      }
      at += step
    }
    if (zeroRun > 0) out.push(zeroes(zeroRun))
    return out
  }

  const writeSync = (offset: number, data: Uint8Array): void => {
    let at = offset
    let from = 0
    while (from < data.length) {
      const index = Math.floor(at / pageSize)
      const inPage = at - index * pageSize
      const step = Math.min(pageSize - inPage, data.length - from)
      let page = pages.get(index)
      if (page === undefined) {
        page = spare.pop()?.fill(0) ?? newPage()
        pages.set(index, page)
      }
      page.set(step === data.length ? data : data.subarray(from, from + step), inPage)
      at += step
      from += step
    }
  }

  const zeroSync = (offset: number, length: number): void => {
    const end = offset + length
    const first = Math.floor(offset / pageSize)
    const last = Math.floor((end - 1) / pageSize)
    // Few pages are allocated in a large range: walk the map rather than the range.
    if (last - first > pages.size) {
      for (const [index, page] of pages) {
        if (index < first || index > last) continue
        zeroPage(index, page, offset, end)
      }
      return
    }
    for (let index = first; index <= last; index++) {
      const page = pages.get(index)
      if (page !== undefined) zeroPage(index, page, offset, end)
    }
  }

  const zeroPage = (index: number, page: Uint8Array, offset: number, end: number): void => {
    const start = index * pageSize
    const from = Math.max(offset, start) - start
    const to = Math.min(end, start + pageSize) - start
    if (from === 0 && to === pageSize) {
      pages.delete(index)
      spare.push(page)
    } else page.fill(0, from, to)
  }

  const extentsSync = (offset: number, length: number): Array<Extent> => {
    const end = offset + length
    const first = Math.floor(offset / pageSize)
    const last = Math.floor((end - 1) / pageSize)
    let allocated: Array<number>
    if (last - first > pages.size) {
      allocated = []
      for (const index of pages.keys()) if (index >= first && index <= last) allocated.push(index)
      allocated.sort((a, b) => a - b)
    } else {
      allocated = []
      for (let index = first; index <= last; index++) if (pages.has(index)) allocated.push(index)
    }
    const out: Array<Extent> = []
    const push = (length: number, flags: number): void => {
      if (length <= 0) return
      const prev = out[out.length - 1]
      if (prev !== undefined && prev.flags === flags) out[out.length - 1] = { length: prev.length + length, flags }
      else out.push({ length, flags })
    }
    let at = offset
    for (const index of allocated) {
      if (out.length >= maxExtents) return out
      const start = Math.max(index * pageSize, offset)
      const stop = Math.min((index + 1) * pageSize, end)
      push(start - at, HOLE_ZERO)
      push(stop - start, 0)
      at = stop
    }
    if (out.length < maxExtents) push(end - at, HOLE_ZERO)
    return out
  }

  return {
    _tag: "Backend",
    name: "memory",
    size: BigInt(size),
    readOnly: false,
    read: withNow<Read>((offset, length) => Effect.sync(() => readSync(offset, length)), readSync),
    write: withNow<Write>((offset, data) => Effect.sync(() => writeSync(offset, data)), writeSync),
    zero: (offset, length) => Effect.sync(() => zeroSync(offset, length)),
    trim: (offset, length) => Effect.sync(() => zeroSync(offset, length)),
    flush: Effect.void,
    cache: () => Effect.void,
    extents: (offset, length) => Effect.sync(() => extentsSync(offset, length))
  }
}

/**
 * A backend that reads zeroes and discards writes, like nbdkit's null plugin. Every extent is `HOLE|ZERO`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const nullBackend = (size: bigint | number): Backend => ({
  _tag: "Backend",
  name: "null",
  size: BigInt(size),
  readOnly: false,
  read: withNow<Read>(
    (_offset, length) => Effect.succeed([zeroes(length)]),
    (_offset, length) => [zeroes(length)]
  ),
  write: withNow<Write>(
    () => Effect.void,
    () => {}
  ),
  zero: () => Effect.void,
  trim: () => Effect.void,
  flush: Effect.void,
  cache: () => Effect.void,
  extents: (_offset, length) => Effect.succeed([{ length, flags: HOLE_ZERO }])
})

/**
 * A read-only backend whose every 8-byte aligned word holds its own offset as a big-endian u64, like
 * nbdkit's pattern plugin. Reports all data allocated.
 *
 * @since 0.1.0
 * @category constructors
 */
export const pattern = (size: bigint | number): Backend => {
  const readOnlyError = Effect.fail(new BackendError({ errno: "EPERM", message: "the pattern backend is read-only" }))
  return {
    _tag: "Backend",
    name: "pattern",
    size: BigInt(size),
    readOnly: true,
    read: (offset, length) =>
      Effect.sync(() => {
        const start = Math.floor(offset / 8) * 8
        const words = new Uint8Array(Math.ceil((offset + length - start) / 8) * 8)
        const view = new DataView(words.buffer)
        for (let at = 0; at < words.length; at += 8) {
          const value = start + at
          view.setUint32(at, Math.floor(value / 0x100000000))
          view.setUint32(at + 4, value >>> 0)
        }
        return [words.subarray(offset - start, offset - start + length)]
      }),
    write: () => readOnlyError,
    zero: () => readOnlyError,
    trim: () => readOnlyError,
    flush: Effect.void,
    cache: () => Effect.void,
    extents: (_offset, length) => Effect.succeed([{ length, flags: 0 }])
  }
}
