/**
 * The machinery under NbdStream and NbdCopy: random-access readers and writers (NBD handles and pools here,
 * files in nbdCopy.ts), a planner that hands out pieces of a range (data, or zero extents from block status),
 * a pool of reusable request buffers, progress counters, and the three ways to move bytes: workers between
 * two random-access sides, an ordered stream out of a reader, and a sequential sink into a writer.
 */
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { constVoid } from "effect/Function"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as Nbd from "../Nbd.js"
import * as NbdError from "../NbdError.js"
import type * as NbdPool from "../NbdPool.js"
import * as Protocol from "../Protocol.js"
import { nativeTracer } from "./call.js"
import * as commandCalls from "./commandCalls.js"
import * as commands from "./commands.js"
import type { HandleImpl } from "./handle.js"
import { handlesOf } from "./nbdPool.js"

/** The engine's view of a public handle (the same object). */
const implOf = (h: Nbd.Handle): HandleImpl => h as unknown as HandleImpl

/** nbdcopy's defaults: 256 KiB requests, 64 in flight per connection. */
export const DEFAULT_REQUEST_SIZE = 256 * 1024
export const DEFAULT_REQUESTS = 64
export const MAX_REQUESTS = 1024

/** The largest zero extent handed out at once (one NBD_CMD_WRITE_ZEROES), and the largest block-status range. */
export const MAX_ZERO = 1 << 30
export const MAX_STATUS = 1 << 30

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/** A piece of work: a range, and whether it is known to read as zeroes. */
export interface Item {
  readonly offset: number
  readonly length: number
  readonly zero: boolean
}

/** Starting an I/O gives the effect that waits for it: many can be started before the first is awaited. */
export type Start<E> = Effect.Effect<Effect.Effect<unknown, E>, E>

const started: Start<never> = Effect.succeed(Effect.void)

/**
 * Starting an I/O without an effect, for the copy's hot loop: `done` is called once, with the error or
 * undefined. Answers how to stop waiting for it, or undefined when it cannot start this way now (while a
 * handle reconnects, say): the caller then takes the effect path.
 */
export type Direct<E> = (done: (error: E | undefined) => void) => (() => void) | undefined

/**
 * What a direct I/O answers when it cannot be called back (a file read or write): an interrupted copy waits
 * for it to finish, so its file is never closed under it.
 */
export const mustFinish = (): void => {}

/** A source that can be read anywhere, on lane (connection or file handle) `lane`. */
export interface Reader<E> {
  readonly size: number
  readonly lanes: number
  /** The largest request this side takes. */
  readonly maxRequest: number
  readonly read: (lane: number, offset: number, into: Uint8Array) => Start<E>
  /** A read into a fresh buffer the reader makes itself (an NBD read then skips zeroing a given one). */
  readonly readFresh?: (lane: number, offset: number, length: number) => Effect.Effect<Effect.Effect<Uint8Array, E>, E>
  /** Base:allocation extents from `offset` (at least one, within the range), when the source knows them. */
  readonly extents: ((offset: number, length: number) => Effect.Effect<ReadonlyArray<Item>, E>) | undefined
  /** `read` without an effect. */
  readonly readDirect?: (lane: number, offset: number, length: number, into: Uint8Array | undefined) => Direct<E>
  /** Whether `readDirect` takes no buffer, reading the data and dropping it (what null: needs). */
  readonly readDrops?: boolean
}

/** A destination that can be written anywhere. */
export interface Writer<E> {
  readonly lanes: number
  readonly maxRequest: number
  /** Nothing is stored (null:): reads need no zero check. */
  readonly discards: boolean
  readonly write: (lane: number, offset: number, data: Uint8Array) => Start<E>
  /** Makes a range read as zeroes: skipped when the destination is known zero, else zeroed or written. */
  readonly zero: (lane: number, offset: number, length: number) => Start<E>
  /** The end: `size` is where the data ended (the source's size in a copy); `flush` asks for durability. */
  readonly finish: (size: number, flush: boolean) => Effect.Effect<void, E>
  /** `write` and `zero` without an effect, where the destination can (undefined: take the effect). */
  readonly writeDirect?: (lane: number, offset: number, data: Uint8Array) => Direct<E> | undefined
  readonly zeroDirect?: (lane: number, offset: number, length: number) => Direct<E> | undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Errors and checks
// ---------------------------------------------------------------------------------------------------------------

export const invalidArgument = (operation: string, message: string, errno: NbdError.Errno = "EINVAL") =>
  new NbdError.InvalidArgumentError({ errno, operation, message })

/** An offset or length as a safe number. */
export const toOffset = (
  operation: string,
  what: string,
  v: number | bigint
): Effect.Effect<number, NbdError.InvalidArgumentError> => {
  if (typeof v === "bigint")
    return v >= 0n && v <= MAX_SAFE
      ? Effect.succeed(Number(v))
      : Effect.fail(invalidArgument(operation, `${what} is out of range: ${v}`, "ERANGE"))
  return Number.isSafeInteger(v) && v >= 0
    ? Effect.succeed(v)
    : Effect.fail(invalidArgument(operation, `${what} must be a non-negative integer, got ${v}`))
}

/** Whether every byte is zero, four at a time where the alignment allows. */
export const isAllZero = (b: Uint8Array): boolean => isZeroRange(b, undefined, 0, b.length)

/**
 * Whether `b[from, to)` is all zeroes; `words` is a view of `b`'s whole buffer as 32-bit words, made once by
 * a caller that checks many ranges of one buffer.
 */
const isZeroRange = (b: Uint8Array, words: Uint32Array | undefined, from: number, to: number): boolean => {
  if (to <= from) return true
  // Data usually shows itself in the first or the last byte.
  if (b[from] !== 0 || b[to - 1] !== 0) return false
  let i = from
  while (i < to && ((b.byteOffset + i) & 3) !== 0) if (b[i++] !== 0) return false
  const count = (to - i) >>> 2
  if (count > 0) {
    const w = words ?? new Uint32Array(b.buffer, b.byteOffset + i, count)
    const first = words === undefined ? 0 : (b.byteOffset + i) >>> 2
    for (let j = first; j < first + count; j++) if (w[j] !== 0) return false
    i += count * 4
  }
  for (; i < to; i++) if (b[i] !== 0) return false
  return true
}

/** A part of a piece, relative to its start: all zeroes or data. */
export interface Run {
  readonly start: number
  readonly length: number
  readonly zero: boolean
}

/**
 * How zero detection cuts a piece read at `offset`. Without `blockSize` the piece is one run, zero only
 * if every byte is. With it (nbdcopy's -S N), the piece is checked in blocks of `blockSize` aligned to the
 * export, neighbours of one kind joined; a partial block at either end is data, as nbdcopy treats it.
 */
export const zeroRuns = (data: Uint8Array, offset: number, blockSize: number | undefined): ReadonlyArray<Run> => {
  const n = data.length
  if (blockSize === undefined) return [{ start: 0, length: n, zero: isAllZero(data) }]
  const runs: Array<Run> = []
  // A run is only recorded where the kind changes: most pieces are one run of data.
  let runStart = 0
  let runZero = false
  const cut = (at: number, zero: boolean) => {
    if (zero === runZero) return
    if (at > runStart) runs.push({ start: runStart, length: at - runStart, zero: runZero })
    runStart = at
    runZero = zero
  }
  const words = new Uint32Array(data.buffer, 0, data.buffer.byteLength >>> 2)
  const head = Math.min((blockSize - (offset % blockSize)) % blockSize, n)
  let at = head
  for (; at + blockSize <= n; at += blockSize) cut(at, isZeroRange(data, words, at, at + blockSize))
  cut(at, false)
  if (n > runStart) runs.push({ start: runStart, length: n - runStart, zero: runZero })
  return runs.length > 0 ? runs : [{ start: 0, length: n, zero: false }]
}

/**
 * Sees every byte of a copy's source once: `data` with what was read (valid only during the call), `zero`
 * with a range block status reported as zeroes, which is never read. In no particular order.
 */
export interface Observer {
  readonly data: (offset: number, bytes: Uint8Array) => void
  readonly zero: (offset: number, length: number) => void
}

// ---------------------------------------------------------------------------------------------------------------
// NBD sides
// ---------------------------------------------------------------------------------------------------------------

/** The largest request a handle takes: the server's maximum block size, within libnbd's payload cap. */
const requestLimit = (h: Nbd.Handle): Effect.Effect<number, NbdError.NbdError> =>
  Effect.zipWith(Nbd.getBlockSize(h, "maximum"), Nbd.getBlockSize(h, "payload"), (maximum, payload) =>
    maximum > 0 ? Math.min(maximum, payload) : payload
  )

const exportSize = (operation: string, h: Nbd.Handle): Effect.Effect<number, NbdError.NbdError> =>
  Effect.flatMap(Nbd.getSize(h), (size) => toOffset(operation, "the export size", size))

/** Base:allocation extents as items over `[offset, offset + length)`, neighbours of one kind joined. */
const itemsOf = (entries: ReadonlyArray<Nbd.BlockStatusEntry>, offset: number, length: number): ReadonlyArray<Item> => {
  const items: Array<Item> = []
  const end = offset + length
  let at = offset
  for (const e of entries.find((x) => x.context === "base:allocation")?.extents ?? []) {
    if (at >= end) break
    const len = Math.min(Number(e.length), end - at)
    if (len <= 0) continue
    const zero = (e.flags & Protocol.STATE_ZERO) !== 0
    const last = items[items.length - 1]
    if (last !== undefined && last.zero === zero) items[items.length - 1] = { ...last, length: last.length + len }
    else items.push({ offset: at, length: len, zero })
    at += len
  }
  // A server that answered nothing usable: the range is data.
  return items.length > 0 ? items : [{ offset, length, zero: false }]
}

/**
 * The items with their zero runs shrunk to whole blocks of `minimum` (the source's minimum block size), the
 * range's own ends kept: since doc/proto.md of 2025-06 a server may report extents of any length, and a
 * read of part of a block is one that strict mode refuses. A block only partly zero is read as data.
 */
export const alignToBlocks = (items: ReadonlyArray<Item>, minimum: number): ReadonlyArray<Item> => {
  const first = items[0]
  const last = items[items.length - 1]
  if (minimum <= 1 || first === undefined || last === undefined) return items
  const start = first.offset
  const end = last.offset + last.length
  const out: Array<Item> = []
  const push = (offset: number, length: number, zero: boolean): void => {
    if (length <= 0) return
    const prev = out[out.length - 1]
    if (prev !== undefined && prev.zero === zero) out[out.length - 1] = { ...prev, length: prev.length + length }
    else out.push({ offset, length, zero })
  }
  let at = start
  for (const item of items) {
    if (!item.zero) continue
    const itemEnd = item.offset + item.length
    const from = item.offset === start ? start : Math.ceil(item.offset / minimum) * minimum
    const to = itemEnd === end ? end : Math.floor(itemEnd / minimum) * minimum
    if (to <= from) continue
    push(at, from - at, false)
    push(from, to - from, true)
    at = to
  }
  push(at, end - at, false)
  return out
}

/** The handles of a target, at most `lanes` of them. */
const lanesOf = (target: NbdPool.Target, lanes: number): ReadonlyArray<Nbd.Handle> =>
  handlesOf(target).slice(0, Math.max(1, lanes))

/** A handle or pool as a reader; block status is used when `sparse` and the source negotiated base:allocation. */
export const nbdReader = (
  operation: string,
  target: NbdPool.Target,
  lanes: number,
  sparse: boolean
): Effect.Effect<Reader<NbdError.NbdError>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const handles = lanesOf(target, lanes)
    const h0 = handles[0]!
    const size = yield* exportSize(operation, h0)
    const maxRequest = yield* requestLimit(h0)
    const allocation = sparse && (yield* Effect.orElseSucceed(Nbd.canMetaContext(h0, "base:allocation"), () => false))
    const minimum = yield* Nbd.getBlockSize(h0, "minimum")
    return {
      size,
      lanes: handles.length,
      maxRequest,
      read: (lane, offset, into) =>
        Effect.map(Nbd.aioPread(handles[lane]!, into.length, offset, { buffer: into }), (c) => c.await),
      readFresh: (lane, offset, length) => Effect.map(Nbd.aioPread(handles[lane]!, length, offset), (c) => c.await),
      readDrops: true,
      readDirect: (lane, offset, length, into) => {
        const impl = implOf(handles[lane]!)
        return direct(impl, {
          operation: "nbd_aio_pread",
          type: Protocol.Cmd.READ,
          flags: 0,
          offset,
          count: length,
          buffer: into === undefined || !impl.settings.preadInitialize ? into : into.fill(0)
        })
      },
      extents: allocation
        ? (offset, length) =>
            Effect.map(Nbd.blockStatus(h0, length, offset), (e) => alignToBlocks(itemsOf(e, offset, length), minimum))
        : undefined
    }
  })

/** The options of an NBD writer. */
export interface NbdWriterOptions {
  /** The source's size when known: a smaller destination fails at once with ENOSPC. */
  readonly sourceSize?: number | undefined
  /** Where the data starts (a write sink at an offset). */
  readonly offset?: number | undefined
  readonly destinationIsZero?: boolean | undefined
  /** Zero ranges must end allocated: NBD_CMD_WRITE_ZEROES with NO_HOLE (nbdcopy's --allocated). */
  readonly allocated?: boolean | undefined
}

/**
 * A handle or pool as a writer: read-only fails with EPERM, a source larger than the export with ENOSPC;
 * zero ranges become NBD_CMD_WRITE_ZEROES where the server has it, else writes of a shared zero buffer.
 */
export const nbdWriter = (
  operation: string,
  target: NbdPool.Target,
  lanes: number,
  options: NbdWriterOptions
): Effect.Effect<Writer<NbdError.NbdError>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const handles = lanesOf(target, lanes)
    const h0 = handles[0]!
    const size = yield* exportSize(operation, h0)
    if (yield* Nbd.isReadOnly(h0))
      return yield* Effect.fail(invalidArgument(operation, "the destination export is read-only", "EPERM"))
    const start = options.offset ?? 0
    if (options.sourceSize !== undefined && start + options.sourceSize > size)
      return yield* Effect.fail(
        invalidArgument(
          operation,
          `the destination (${size} bytes) is smaller than the source (${options.sourceSize} bytes)`,
          "ENOSPC"
        )
      )
    const canZero = yield* Nbd.canZero(h0)
    const canFlush = yield* Nbd.canFlush(h0)
    const maxRequest = yield* requestLimit(h0)
    const zeroFlags: { readonly flags?: number } = options.allocated ? { flags: Protocol.CmdFlag.NO_HOLE } : {}
    let zeroes: Uint8Array | undefined
    const outOfSpace = Effect.fail(
      invalidArgument(operation, `the source is larger than the destination (${size} bytes)`, "ENOSPC")
    )
    const fits = (offset: number, length: number) => offset + length <= size
    const writeZeroes = (h: Nbd.Handle, offset: number, length: number) =>
      Effect.gen(function* () {
        zeroes ??= new Uint8Array(Math.min(maxRequest, 1 << 20))
        for (let done = 0; done < length; done += zeroes.length)
          yield* Nbd.pwrite(h, zeroes.subarray(0, Math.min(zeroes.length, length - done)), offset + done)
        return Effect.void
      })
    return {
      lanes: handles.length,
      maxRequest,
      discards: false,
      write: (lane, offset, data) =>
        fits(offset, data.length)
          ? Effect.map(Nbd.aioPwrite(handles[lane]!, data, offset), (c) => c.await)
          : outOfSpace,
      zero: (lane, offset, length) =>
        !fits(offset, length)
          ? outOfSpace
          : options.destinationIsZero
            ? started
            : canZero
              ? Effect.map(Nbd.aioZero(handles[lane]!, length, offset, zeroFlags), (c) => c.await)
              : writeZeroes(handles[lane]!, offset, length),
      finish: (_size, flush) =>
        flush && canFlush
          ? Effect.forEach(handles, (h) => Nbd.flush(h), { concurrency: "unbounded", discard: true })
          : Effect.void,
      writeDirect: (lane, offset, data) => {
        if (!fits(offset, data.length)) return undefined
        const impl = implOf(handles[lane]!)
        return direct(impl, {
          operation: "nbd_aio_pwrite",
          type: Protocol.Cmd.WRITE,
          flags: commandCalls.autoPayloadLen(impl, 0),
          offset,
          count: data.length,
          payload: data
        })
      },
      zeroDirect: (lane, offset, length) =>
        !fits(offset, length) || !canZero || options.destinationIsZero
          ? undefined
          : direct(implOf(handles[lane]!), {
              operation: "nbd_aio_zero",
              type: Protocol.Cmd.WRITE_ZEROES,
              flags: zeroFlags.flags ?? 0,
              offset,
              count: length
            })
    }
  })

/** A command issued without an effect; its outcome reaches `done`. */
const direct =
  (impl: HandleImpl, spec: commands.CommandSpec): Direct<NbdError.NbdError> =>
  (done) =>
    commands.issueDirect(impl, spec, (exit) => done(Exit.isFailure(exit) ? failureOf(exit.cause) : undefined))

/** A command's failure is one typed error; anything else (a defect) is kept as it is. */
const failureOf = (cause: Cause.Cause<NbdError.NbdError>): NbdError.NbdError =>
  Option.getOrElse(Cause.failureOption(cause), () => Cause.squash(cause) as NbdError.NbdError)

/** null: every byte is dropped. */
export const discardWriter: Writer<never> = {
  lanes: Number.POSITIVE_INFINITY,
  maxRequest: Number.POSITIVE_INFINITY,
  discards: true,
  write: () => started,
  zero: () => started,
  finish: () => Effect.void,
  writeDirect: () => finishedAtOnce,
  zeroDirect: () => finishedAtOnce
}

export const finishedAtOnce: Direct<never> = (done) => {
  done(undefined)
  return constVoid
}

// ---------------------------------------------------------------------------------------------------------------
// Planning, buffers, progress
// ---------------------------------------------------------------------------------------------------------------

/**
 * A lock that passes straight to the longest waiter. A lane's 64 workers queue on one for every piece of a
 * file, and Effect's semaphore wakes every waiter at each release (all but one go back to sleep): quadratic
 * in the waiters, which made a copy from or to a file spend a quarter of its time collecting garbage.
 */
export class Lock {
  private held = false
  private readonly waiting: Array<() => void> = []

  private readonly acquire = Effect.async<void>((resume) => {
    if (!this.held) {
      this.held = true
      return resume(Effect.void)
    }
    const wake = () => resume(Effect.void)
    this.waiting.push(wake)
    return Effect.sync(() => {
      const i = this.waiting.indexOf(wake)
      if (i >= 0) this.waiting.splice(i, 1)
    })
  })

  private readonly release = Effect.sync(() => {
    const next = this.waiting.shift()
    // Still held: it belongs to the waiter now.
    if (next === undefined) this.held = false
    else next()
  })

  /** Runs `effect` holding the lock; waiting for it can be interrupted, and the lock is always given back. */
  with<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(restore(this.acquire), Effect.ensuring(restore(effect), this.release))
    )
  }
}

/** Hands out the pieces of `[start, end)` in offset order: data of at most `requestSize`, zero extents of at most `maxZero`. */
export class Planner<E> {
  private queue: ReadonlyArray<Item> = []
  private head = 0
  /** Without extents, the next offset to hand out; with them, where the known map ends. */
  private known: number
  private readonly lock = new Lock()
  constructor(
    private readonly extents: Reader<E>["extents"],
    start: number,
    private readonly end: number,
    private readonly requestSize: number,
    private readonly maxZero: number
  ) {
    this.known = start
  }

  /** The next piece, undefined at the end, or null when the map must be fetched first (`refill`). */
  takeSync(): Item | undefined | null {
    if (this.extents === undefined) {
      const at = this.known
      if (at >= this.end) return undefined
      const length = Math.min(this.requestSize, this.end - at)
      this.known = at + length
      return { offset: at, length, zero: false }
    }
    if (this.head >= this.queue.length) return this.known >= this.end ? undefined : null
    const item = this.queue[this.head]!
    const length = Math.min(item.length, item.zero ? this.maxZero : this.requestSize)
    if (length === item.length) this.head++
    else
      (this.queue as Array<Item>)[this.head] = {
        offset: item.offset + length,
        length: item.length - length,
        zero: item.zero
      }
    return length === item.length ? item : { offset: item.offset, length, zero: item.zero }
  }

  /** Fetches the next part of the map once the last is used up. */
  readonly refill: Effect.Effect<void, E> = Effect.suspend(() => {
    if (this.extents === undefined || this.head < this.queue.length || this.known >= this.end) return Effect.void
    const from = this.known
    return Effect.map(this.extents(from, Math.min(MAX_STATUS, this.end - from)), (items) => {
      this.queue = [...items]
      this.head = 0
      const last = items[items.length - 1]!
      this.known = last.offset + last.length
    })
  })

  /** The next piece for one of many workers: the map is fetched by one of them at a time. */
  readonly next: Effect.Effect<Item | undefined, E> = Effect.suspend(() => {
    const item = this.takeSync()
    return item !== null ? Effect.succeed(item) : Effect.zipRight(this.lock.with(this.refill), this.next)
  })
}

/** Request buffers, reused once the write that used one completes: at most one per worker is ever allocated. */
export class BufferPool {
  private readonly free: Array<Uint8Array> = []
  allocated = 0
  constructor(readonly size: number) {}
  acquire(length: number): Uint8Array {
    let buffer = this.free.pop()
    if (buffer === undefined) {
      buffer = new Uint8Array(this.size)
      this.allocated++
    }
    return length === this.size ? buffer : buffer.subarray(0, length)
  }
  release(view: Uint8Array): void {
    this.free.push(view.length === this.size ? view : new Uint8Array(view.buffer, 0, this.size))
  }
}

/** What a transfer has done so far. */
export class Tracker {
  bytes = 0
  dataBytes = 0
  zeroBytes = 0
  total: number | undefined
  startedAt = 0
  data(n: number): void {
    this.bytes += n
    this.dataBytes += n
  }
  zero(n: number): void {
    this.bytes += n
    this.zeroBytes += n
  }
  readonly begin: Effect.Effect<void> = Effect.map(Clock.currentTimeMillis, (now) => {
    this.startedAt = now
  })
  /** Bytes done, the total when known, and the average rate in bytes per second. */
  readonly snapshot: Effect.Effect<{ bytes: bigint; total: bigint | undefined; rate: number }> = Effect.map(
    Clock.currentTimeMillis,
    (now) => {
      const seconds = (now - this.startedAt) / 1000
      return {
        bytes: BigInt(this.bytes),
        total: this.total === undefined ? undefined : BigInt(this.total),
        rate: seconds > 0 ? this.bytes / seconds : 0
      }
    }
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Moving bytes
// ---------------------------------------------------------------------------------------------------------------

/** The options of `copyRandom`. */
export interface CopyOptions {
  readonly lanes: number
  readonly requests: number
  readonly buffers: BufferPool
  readonly detectZeroes: boolean
  /** The granularity of zero detection; undefined: the whole piece. */
  readonly zeroBlock?: number | undefined
  readonly observer?: Observer | undefined
  readonly tracker: Tracker
}

/**
 * Random-access source to random-access destination, nbdcopy's way: `lanes × requests` request slots, each
 * taking the next piece, reading it into a pooled buffer, writing it (or zeroing it when it reads as zeroes),
 * and giving the buffer back once the write completed.
 *
 * The slots are callbacks, not fibers: an I/O a side can start without an effect (`readDirect` and its
 * kin: NBD commands, positional file I/O, null:) costs no fiber step at all, which was most of a copy's
 * time. The rest (files through FileSystem, block status, a handle that is reconnecting, a traced or
 * debugged handle) runs as a fiber of its own. The first error, or a side's defect, stops new work; it is
 * reported once everything in flight has settled, so no buffer is reused under a running I/O. An
 * interrupted copy stops waiting for NBD replies at once, and lets file I/O finish before it returns.
 */
export const copyRandom = <E1, E2>(
  reader: Reader<E1>,
  writer: Writer<E2>,
  planner: Planner<E1>,
  options: CopyOptions
): Effect.Effect<void, E1 | E2> =>
  Effect.withFiberRuntime<void, E1 | E2>((fiber) =>
    Effect.async<void, E1 | E2>((resume) => {
      const copy = new CopyLoop(reader, writer, planner, options, fiber, (exit) => resume(exit))
      copy.start()
      return copy.stop
    })
  )

type Done<E> = (error: E | undefined) => void

/** What a slot is told of an effect that died: not a side's error, but an end all the same. */
const DEFECT: unique symbol = Symbol("DEFECT")

/** The state of one `copyRandom` run. */
class CopyLoop<E1, E2> {
  private readonly zeroCheck: boolean
  /** Whether a read's data is needed: not for null:, unless an observer must see it. */
  private readonly keepsData: boolean
  /** Direct starts are used only where no tracer wants a span per command. */
  private readonly direct: boolean
  private readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  private readonly cancels = new Set<() => void>()
  /** Direct I/O in flight that cannot be called back (`mustFinish`). */
  private unfinished = 0
  private onSettled: (() => void) | undefined = undefined
  private readonly fibers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
  private readonly slots: number
  private active = 0
  /** Why the copy fails: the first error, or a defect of an effect a side ran. */
  private failure: Cause.Cause<E1 | E2> | undefined = undefined
  private stopped = false
  /** Slots waiting for the block-status map, and whether a refill is running. */
  private readonly waitingForMap: Array<number> = []
  private refilling = false

  constructor(
    private readonly reader: Reader<E1>,
    private readonly writer: Writer<E2>,
    private readonly planner: Planner<E1>,
    private readonly options: CopyOptions,
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    private readonly finish: (exit: Exit.Exit<void, E1 | E2>) => void
  ) {
    this.zeroCheck = options.detectZeroes && !writer.discards
    this.keepsData = !writer.discards || options.observer !== undefined
    this.direct = fiber.currentTracer === nativeTracer()
    this.runFork = Runtime.runFork(
      Runtime.make({
        context: fiber.currentContext,
        fiberRefs: fiber.getFiberRefs(),
        runtimeFlags: Runtime.defaultRuntimeFlags
      })
    ) as never
    this.slots = options.lanes * options.requests
  }

  start(): void {
    const slots = this.slots
    this.active = slots
    for (let slot = 0; slot < slots && !this.stopped; slot++) this.next(slot % this.options.lanes)
  }

  /** Interruption: nothing more is started, waits in flight are dropped, forked I/O is interrupted. */
  readonly stop: Effect.Effect<void> = Effect.suspend(() => {
    this.stopped = true
    for (const cancel of this.cancels) cancel()
    this.cancels.clear()
    const fibers = [...this.fibers]
    this.fibers.clear()
    const finished = Effect.async<void>((resume) => {
      if (this.unfinished === 0) return resume(Effect.void)
      this.onSettled = () => resume(Effect.void)
    })
    return Effect.zipRight(Fiber.interruptAll(fibers), finished)
  })

  private fail(error: E1 | E2): void {
    this.failure ??= Cause.fail(error)
  }

  /** A slot has nothing more to do; the last one ends the copy. */
  private retire(): void {
    if (--this.active > 0 || this.stopped) return
    this.stopped = true
    this.finish(this.failure === undefined ? Exit.void : Exit.failCause(this.failure))
  }

  /**
   * Runs a slot until it waits on an I/O. An I/O that ends at once (null:) loops here rather than
   * recursing, so a long run of them cannot overflow the stack.
   */
  private next(lane: number): void {
    let again = true
    while (again) {
      again = false
      if (this.stopped) return
      if (this.failure !== undefined) return this.retire()
      const item = this.planner.takeSync()
      if (item === undefined) return this.retire()
      if (item === null) return this.awaitMap(lane)
      let sync = true
      let finishedAtOnce = false
      const then = () => {
        if (sync) finishedAtOnce = true
        else this.next(lane)
      }
      this.piece(lane, item, then)
      sync = false
      again = finishedAtOnce
    }
  }

  /** One piece: zeroed, or read then written; `then` runs once it is done, whatever its outcome. */
  private piece(lane: number, item: Item, then: () => void): void {
    const { length, offset } = item
    const { observer, tracker } = this.options
    if (item.zero) {
      observer?.zero(offset, length)
      return this.run(
        this.writer.zeroDirect?.(lane, offset, length),
        () => this.writer.zero(lane, offset, length),
        (e) => {
          if (e !== undefined) this.fail(e)
          else tracker.zero(length)
          then()
        }
      )
    }
    const buffer =
      this.keepsData || this.reader.readDirect === undefined ? this.options.buffers.acquire(length) : undefined
    const afterRead: Done<E1> = (e) => {
      if (e !== undefined || this.stopped) {
        if (e !== undefined) this.fail(e)
        if (buffer !== undefined) this.options.buffers.release(buffer)
        return then()
      }
      if (buffer === undefined) {
        tracker.data(length)
        return then()
      }
      observer?.data(offset, buffer)
      this.store(lane, offset, buffer, () => {
        this.options.buffers.release(buffer)
        then()
      })
    }
    const readDirect = this.reader.readDirect?.(lane, offset, length, buffer)
    if (buffer !== undefined) return this.run(readDirect, () => this.reader.read(lane, offset, buffer), afterRead)
    // No buffer: only a direct read can drop the data; when it cannot start now, read into one after all.
    if (this.direct && readDirect !== undefined && this.track(readDirect, afterRead)) return
    const fallback = this.options.buffers.acquire(length)
    this.run(
      undefined,
      () => this.reader.read(lane, offset, fallback),
      (e) => {
        this.options.buffers.release(fallback)
        afterRead(e)
      }
    )
  }

  /** Writes what was read, as one write or as the runs zero detection cut it into, all started at once. */
  private store(lane: number, offset: number, buffer: Uint8Array, then: () => void): void {
    const { tracker, zeroBlock } = this.options
    const runs: ReadonlyArray<Run> = this.zeroCheck
      ? zeroRuns(buffer, offset, zeroBlock)
      : [{ start: 0, length: buffer.length, zero: false }]
    let left = runs.length
    const counted =
      (r: Run): Done<E2> =>
      (e) => {
        if (e !== undefined) this.fail(e)
        else if (r.zero) tracker.zero(r.length)
        else tracker.data(r.length)
        if (--left === 0) then()
      }
    for (const r of runs) {
      const at = offset + r.start
      if (r.zero)
        this.run(this.writer.zeroDirect?.(lane, at, r.length), () => this.writer.zero(lane, at, r.length), counted(r))
      else {
        const data = runs.length === 1 ? buffer : buffer.subarray(r.start, r.start + r.length)
        this.run(this.writer.writeDirect?.(lane, at, data), () => this.writer.write(lane, at, data), counted(r))
      }
    }
  }

  /** Starts an I/O directly when the side can and the copy may, else as a fiber of its own. */
  private run<E>(start: Direct<E> | undefined, effect: () => Start<E>, done: Done<E>): void {
    if (this.direct && start !== undefined && this.track(start, done)) return
    this.fork(Effect.flatten(effect()), done)
  }

  /** Starts a direct I/O, keeping how to stop waiting for it; false when it cannot start now. */
  private track<E>(start: Direct<E>, done: Done<E>): boolean {
    let cancel: (() => void) | undefined
    let ended = false
    cancel = start((e) => {
      ended = true
      if (cancel === mustFinish) this.settled()
      else if (cancel !== undefined) this.cancels.delete(cancel)
      if (!this.stopped) done(e)
    })
    if (cancel === undefined) return false
    if (cancel === mustFinish) {
      if (!ended) this.unfinished++
    } else if (!ended) this.cancels.add(cancel)
    return true
  }

  /** One I/O that cannot be called back has finished; an interrupted copy may be waiting for the last. */
  private settled(): void {
    if (--this.unfinished === 0) this.onSettled?.()
  }

  private fork<E>(effect: Effect.Effect<unknown, E>, done: Done<E>): void {
    const fiber = this.runFork(effect)
    this.fibers.add(fiber)
    fiber.addObserver((exit) => {
      this.fibers.delete(fiber)
      if (this.stopped) return
      if (Exit.isSuccess(exit)) return done(undefined)
      // A defect (or an interruption) is no typed error of a side: the copy fails with it as it is, once
      // everything in flight has settled like any failure. The slot sees an error and stops.
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) return done(failure.value)
      this.failure ??= exit.cause as Cause.Cause<E1 | E2>
      done(DEFECT as E)
    })
  }

  /** The planner needs more of the block-status map: one slot fetches it, the others wait for it. */
  private awaitMap(lane: number): void {
    this.waitingForMap.push(lane)
    if (this.refilling) return
    this.refilling = true
    this.fork(this.planner.refill, (e) => {
      this.refilling = false
      if (e !== undefined) this.fail(e)
      const waiting = this.waitingForMap.splice(0)
      for (const l of waiting) this.next(l)
    })
  }
}

/**
 * Started I/O in order, awaited oldest first. A slot is let go as soon as it is taken, and the front is
 * cut off as it grows, so a window that never empties (a stream topped up after every element) holds only
 * what is in flight, not everything it ever started.
 */
export class Window<E, A> {
  private waits: Array<Effect.Effect<A, E> | undefined> = []
  private lengths: Array<number> = []
  private zeroes: Array<boolean> = []
  private head = 0
  get size(): number {
    return this.waits.length - this.head
  }
  push(wait: Effect.Effect<A, E>, length: number, zero: boolean): void {
    this.waits.push(wait)
    this.lengths.push(length)
    this.zeroes.push(zero)
  }
  /** Waits for the oldest and counts it. */
  shift(tracker: Tracker | undefined): Effect.Effect<A, E> {
    const i = this.head++
    const wait = this.waits[i]!
    const length = this.lengths[i]!
    const zero = this.zeroes[i]!
    this.waits[i] = undefined
    if (this.head === this.waits.length) this.reset()
    else if (this.head >= 1024 && this.head * 2 >= this.waits.length) this.compact()
    return tracker === undefined ? wait : Effect.tap(wait, () => (zero ? tracker.zero(length) : tracker.data(length)))
  }
  private reset(): void {
    this.waits = []
    this.lengths = []
    this.zeroes = []
    this.head = 0
  }
  private compact(): void {
    this.waits = this.waits.slice(this.head)
    this.lengths = this.lengths.slice(this.head)
    this.zeroes = this.zeroes.slice(this.head)
    this.head = 0
  }
}

/** The options of an ordered read. */
export interface OrderedOptions {
  readonly start: number
  readonly end: number
  readonly requestSize: number
  /** Requests in flight in all. */
  readonly inFlight: number
  readonly tracker?: Tracker | undefined
}

/**
 * A reader as an ordered stream of fresh buffers: up to `inFlight` reads started ahead (round robin over
 * the lanes), the oldest awaited first; zero extents come out as zeroed buffers without a read. Its state
 * is made when the stream runs, so every run reads anew.
 */
export const orderedStream = <E>(reader: Reader<E>, options: OrderedOptions): Stream.Stream<Uint8Array, E> =>
  Stream.suspend(() => {
    const requestSize = Math.min(options.requestSize, reader.maxRequest)
    const planner = new Planner(reader.extents, options.start, options.end, requestSize, requestSize)
    const window = new Window<E, Uint8Array>()
    const tracker = options.tracker
    let lane = 0
    const readFresh =
      reader.readFresh ??
      ((lane: number, offset: number, length: number) => {
        const buffer = new Uint8Array(length)
        return Effect.map(reader.read(lane, offset, buffer), (wait) => Effect.as(wait, buffer))
      })
    const fill: Effect.Effect<void, E> = Effect.gen(function* () {
      while (window.size < options.inFlight) {
        const item = planner.takeSync()
        if (item === undefined) return
        if (item === null) {
          yield* planner.refill
          continue
        }
        if (item.zero) window.push(Effect.succeed(new Uint8Array(item.length)), item.length, true)
        else {
          window.push(yield* readFresh(lane, item.offset, item.length), item.length, false)
          lane = (lane + 1) % reader.lanes
        }
      }
    })
    const pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<E>> = Effect.flatMap(
      Effect.mapError(fill, Option.some),
      () => {
        if (window.size === 0) return Effect.fail(Option.none())
        return Effect.mapBoth(window.shift(tracker), { onFailure: Option.some, onSuccess: Chunk.of })
      }
    )
    return Stream.repeatEffectChunkOption(pull)
  })

/** The options of a sequential sink. */
export interface SequentialOptions {
  readonly offset: number
  /** Writes in flight in all. */
  readonly inFlight: number
  readonly detectZeroes: boolean
  /** The granularity of zero detection; undefined: the whole piece. */
  readonly zeroBlock?: number | undefined
  readonly flush: boolean
  readonly tracker?: Tracker | undefined
  /** The number of bytes the input must have, when known. */
  readonly expected?: number | undefined
  readonly operation: string
}

/**
 * A writer as a sink: chunks written one after another from `offset`, split at the writer's request
 * limit, up to `inFlight` at once (round robin over the lanes); all-zero pieces zeroed when asked. At the end
 * it waits for every write, finishes the writer (flushing when asked) and gives the bytes written. Fresh
 * state on every run.
 */
export const sequentialSink = <E>(
  writer: Writer<E>,
  options: SequentialOptions
): Sink.Sink<number, Uint8Array, never, E | NbdError.NbdError> =>
  Sink.suspend(() => {
    const window = new Window<E, unknown>()
    const tracker = options.tracker
    const maxRequest = Math.min(writer.maxRequest, Protocol.Limits.DEFAULT_PAYLOAD_MAX)
    const lanes = Number.isFinite(writer.lanes) ? writer.lanes : 1
    let pos = options.offset
    let lane = 0
    const issue = (start: Start<E>, length: number, zero: boolean): Effect.Effect<void, E> =>
      Effect.flatMap(start, (wait) => {
        window.push(wait, length, zero)
        return window.size > options.inFlight ? window.shift(tracker) : Effect.void
      })
    const push = (chunk: Chunk.Chunk<Uint8Array>): Effect.Effect<void, E> =>
      Effect.gen(function* () {
        for (const data of chunk) {
          for (let at = 0; at < data.length; at += maxRequest) {
            const piece = at === 0 && data.length <= maxRequest ? data : data.subarray(at, at + maxRequest)
            const offset = pos
            pos += piece.length
            if (writer.discards) {
              tracker?.data(piece.length)
              continue
            }
            if (!options.detectZeroes) yield* issue(writer.write(lane, offset, piece), piece.length, false)
            else
              for (const r of zeroRuns(piece, offset, options.zeroBlock)) {
                const part = r.length === piece.length ? piece : piece.subarray(r.start, r.start + r.length)
                yield* issue(
                  r.zero ? writer.zero(lane, offset + r.start, r.length) : writer.write(lane, offset + r.start, part),
                  r.length,
                  r.zero
                )
              }
            lane = (lane + 1) % lanes
          }
        }
      })
    const end: Effect.Effect<number, E | NbdError.NbdError> = Effect.gen(function* () {
      while (window.size > 0) yield* window.shift(tracker)
      const written = pos - options.offset
      if (options.expected !== undefined && written !== options.expected)
        return yield* Effect.fail(
          invalidArgument(
            options.operation,
            `the source gave ${written} bytes where its size said ${options.expected}`,
            "EIO"
          )
        )
      yield* writer.finish(pos, options.flush)
      return written
    })
    return Sink.forEachChunk(push).pipe(Sink.mapEffect(() => end))
  })
