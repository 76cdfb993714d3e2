/**
 * The copy between two random-access sides: `lanes × requests` request slots run as callbacks, each taking
 * the next piece from the planner, reading it into a pooled buffer and writing it (or zeroing it), with an
 * observer that may see every byte of the source.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import { nativeTracer } from "../api/call.js"
import type { BufferPool } from "./bufferPool.js"
import type { Planner } from "./planner.js"
import { type Direct, type Item, mustFinish, type Reader, type Start, type Writer } from "./sides.js"
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
    // The fiber's value is the side's exit, so a side's failure never ends a fiber unobserved (which Effect
    // reports as an unhandled error); an interruption of the fiber itself still shows as its own exit.
    const fiber = this.runFork(Effect.exit(effect))
    this.fibers.add(fiber)
    fiber.addObserver((outer) => {
      this.fibers.delete(fiber)
      if (this.stopped) return
      const exit: Exit.Exit<unknown, E> = Exit.isSuccess(outer) ? outer.value : outer
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
