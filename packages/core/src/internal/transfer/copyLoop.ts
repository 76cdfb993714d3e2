/**
 * The copy between two random-access sides: `lanes × requests` request slots run as callbacks, each taking
 * the next piece from the planner, reading it into a pooled buffer and writing it (or zeroing it), with an
 * observer that may see every byte of the source.
 */
import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Context from "effect/Context"
import type { BufferPool } from "./bufferPool.js"
import type { Planner } from "./planner.js"
import { type Done, forkIo, ioContext, type Item, type Reader, type Started, type Writer } from "./sides.js"
import type { Tracker } from "./tracker.js"
import { type Run, zeroRuns } from "./zeroRuns.js"

/**
 * Sees every byte of a copy's source once: `data` with what was read (valid only during the call), `zero`
 * with a range block status reported as zeroes, which is never read. In no particular order.
 */
export interface Observer {
  readonly data: (offset: number, bytes: Uint8Array) => void
  readonly zero: (offset: number, length: number) => void
}

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
 * The slots are callbacks, not fibers, and every I/O is started the one way a side offers (`Reader.read`,
 * `Writer.write`, `Writer.zero`): an NBD command or positional file I/O costs no fiber step at all, which
 * was most of a copy's time; a side that runs an effect (a file without positional I/O) forks it itself. The
 * first error, or a side's defect, stops new work; it is reported once everything in flight has settled, so
 * no buffer is reused under a running I/O. An interrupted copy stops waiting for NBD replies at once, and
 * waits for the I/O that cannot be stopped (file I/O) before it returns.
 *
 * Whatever the tracer, the copy runs the same way: its requests open no span (a span per request would only
 * time its queueing, thousands per GiB), while the calls it makes (block status, flush) are spans under the
 * caller's, as the side effects run in the caller's context. Debug output and metrics see every request
 * (commands.submit's `Report`).
 */
export const copyRandom = <E1, E2>(
  reader: Reader<E1>,
  writer: Writer<E2>,
  planner: Planner<E1>,
  options: CopyOptions
): Effect.Effect<void, E1 | E2> =>
  Effect.flatMap(ioContext, (runtime) =>
    Effect.callback<void, E1 | E2>((resume) => {
      const copy = new CopyLoop(reader, writer, planner, options, runtime, (exit) => resume(exit))
      copy.start()
      return copy.stop
    })
  )

/** The state of one `copyRandom` run. */
class CopyLoop<E1, E2> {
  private readonly zeroCheck: boolean
  /** Whether a read's data is needed: not for null:, unless an observer must see it. */
  private readonly keepsData: boolean
  /** The I/O in flight, to stop when the copy is interrupted, and how many there are. */
  private readonly running = new Set<Started>()
  private inFlight = 0
  /** I/O that could not be stopped when the copy was interrupted, still to end. */
  private unfinished = 0
  private onSettled: (() => void) | undefined = undefined
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
    private readonly runtime: Context.Context<never>,
    private readonly finish: (exit: Exit.Exit<void, E1 | E2>) => void
  ) {
    this.zeroCheck = options.detectZeroes && !writer.discards
    this.keepsData = !writer.discards || options.observer !== undefined
    this.slots = options.lanes * options.requests
  }

  start(): void {
    const slots = this.slots
    this.active = slots
    for (let slot = 0; slot < slots && !this.stopped; slot++) this.next(slot % this.options.lanes)
  }

  /** Interruption: nothing more is started, every I/O in flight is stopped, and those that cannot be are waited for. */
  readonly stop: Effect.Effect<void> = Effect.suspend(() => {
    this.stopped = true
    // Counted before any is stopped: one that cannot be may end inside its `cancel` (a fiber interrupted
    // while it waits ends there and then), and its end is then already one fewer to wait for.
    this.unfinished = this.inFlight
    // An I/O that can be stopped is an object of its own; one that cannot may share one (`uncancellable`).
    for (const io of this.running) if (io.cancel()) this.unfinished--
    this.running.clear()
    return Effect.callback<void>((resume) => {
      if (this.unfinished === 0) return resume(Effect.void)
      this.onSettled = () => resume(Effect.void)
    })
  })

  private fail(failure: Cause.Cause<E1 | E2>): void {
    this.failure ??= failure
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
    const { buffers, observer, tracker } = this.options
    if (item.zero) {
      observer?.zero(offset, length)
      return this.track<E2, void>(
        (settle) => this.writer.zero(lane, offset, length, settle),
        (failure) => {
          if (failure !== undefined) this.fail(failure)
          else tracker.zero(length)
          then()
        }
      )
    }
    // Only a reader that drops data may read without a buffer (null: with no observer).
    const into: Uint8Array | "drop" = this.keepsData || !this.reader.drops ? buffers.acquire(length) : "drop"
    this.track<E1, Uint8Array>(
      (settle) => this.reader.read(lane, offset, length, into, settle),
      (failure) => {
        if (failure !== undefined || this.stopped) {
          if (failure !== undefined) this.fail(failure)
          if (into !== "drop") buffers.release(into)
          return then()
        }
        if (into === "drop" || !this.keepsData) {
          if (into !== "drop") buffers.release(into)
          tracker.data(length)
          return then()
        }
        observer?.data(offset, into)
        this.store(lane, offset, into, () => {
          buffers.release(into)
          then()
        })
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
      (failure) => {
        if (failure !== undefined) this.fail(failure)
        else if (r.zero) tracker.zero(r.length)
        else tracker.data(r.length)
        if (--left === 0) then()
      }
    for (const r of runs) {
      const at = offset + r.start
      if (r.zero) this.track<E2, void>((settle) => this.writer.zero(lane, at, r.length, settle), counted(r))
      else {
        const data = runs.length === 1 ? buffer : buffer.subarray(r.start, r.start + r.length)
        this.track<E2, void>((settle) => this.writer.write(lane, at, data, settle), counted(r))
      }
    }
  }

  /**
   * Starts an I/O, holding it while it runs so an interrupted copy can stop it. Its end reaches `done`
   * unless the copy was interrupted meanwhile: then it only counts as one fewer to wait for.
   */
  private track<E, A>(
    start: (settle: Done<E, A>) => Started,
    done: (failure: Cause.Cause<E> | undefined) => void
  ): void {
    let io: Started | undefined
    let ended = false
    io = start((failure) => {
      ended = true
      if (this.stopped) return this.settled()
      if (io !== undefined) {
        this.inFlight--
        this.running.delete(io)
      }
      done(failure)
    })
    if (ended) return
    this.inFlight++
    this.running.add(io)
  }

  /** One I/O that could not be stopped has ended; an interrupted copy may be waiting for the last. */
  private settled(): void {
    if (--this.unfinished === 0) this.onSettled?.()
  }

  /** The planner needs more of the block-status map: one slot fetches it, the others wait for it. */
  private awaitMap(lane: number): void {
    this.waitingForMap.push(lane)
    if (this.refilling) return
    this.refilling = true
    this.track<E1, void>(
      (settle) => forkIo(this.runtime, this.planner.refill, settle),
      (failure) => {
        this.refilling = false
        if (failure !== undefined) this.fail(failure)
        const waiting = this.waitingForMap.splice(0)
        for (const l of waiting) this.next(l)
      }
    )
  }
}
