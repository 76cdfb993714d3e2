/**
 * The two sides of a transfer as the loops see them: a `Reader` that can be read anywhere and a `Writer` that
 * can be written anywhere, the pieces of work they trade (`Item`), how an I/O is started (a callback, once)
 * and stopped (`Started`), and null:, the writer that drops every byte. NBD handles and pools become sides in
 * nbdSides.ts, files in fileSides.ts.
 *
 * This folder is the machinery under NbdStream and NbdCopy: random-access readers and writers (NBD handles
 * and pools in nbdSides.ts, files in fileSides.ts), a planner that hands out pieces of a range (data, or zero
 * extents from block status), a pool of reusable request buffers, progress counters, and the three ways to
 * move bytes: workers between two random-access sides (copyLoop.ts), an ordered stream out of a reader
 * (orderedStream.ts), and a sequential sink into a writer (sequentialSink.ts). nbdCopy.ts and nbdStream.ts,
 * the bodies of the public modules, put them together.
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

/** A piece of work: a range, and whether it is known to read as zeroes. */
export interface Item {
  readonly offset: number
  readonly length: number
  readonly zero: boolean
}

/**
 * How an I/O ends: `failure` undefined when it succeeded, else why it failed (the side's error, or a
 * defect); `value` what it gives, when it gives something.
 */
export type Done<E, A = void> = (failure: Cause.Cause<E> | undefined, value?: A) => void

/** How a read ends, with its data when it succeeded (the buffer it was given, or the one it made). */
export type ReadDone<E> = Done<E, Uint8Array>

/**
 * An I/O a side has started. Its `done` is called once, possibly before the start returns (null:, or a
 * command that fails its checks). One that can be stopped is an object of its own; those that cannot may
 * share one (`uncancellable`).
 */
export interface Started {
  /**
   * Stops it, or stops waiting for it. True: its `done` will not be called (an NBD command: its reply is
   * read and dropped, its buffer never written again). False: it cannot be stopped at once (positional file
   * I/O runs to its end; an effect is being interrupted), and its `done` still comes once it has ended;
   * until then its buffer is in use and its file must stay open.
   */
  readonly cancel: () => boolean
}

/** An I/O that cannot be stopped once begun: whoever stops waiting for it must still wait for its `done`. */
export const uncancellable: Started = { cancel: () => false }

/** An I/O that ended before its start returned: there is nothing left to stop. */
export const ended: Started = { cancel: () => true }

/**
 * Where a read puts its data: into the given buffer, into one the reader makes when the data arrives
 * ("fresh": an NBD read then skips zeroing one), or nowhere ("drop": read and dropped, for null:; only
 * readers that say `drops`).
 */
export type Into = Uint8Array | "fresh" | "drop"

/** A source that can be read anywhere, on lane (connection or file handle) `lane`. */
export interface Reader<E> {
  readonly size: number
  readonly lanes: number
  /** The largest request this side takes. */
  readonly maxRequest: number
  /** Starts a read of `length` bytes at `offset`; `done` gets the data. */
  readonly read: (lane: number, offset: number, length: number, into: Into, done: ReadDone<E>) => Started
  /** Whether `read` takes "drop": it reads the data and drops it, with no buffer (what null: needs). */
  readonly drops: boolean
  /** Base:allocation extents from `offset` (at least one, within the range), when the source knows them. */
  readonly extents: ((offset: number, length: number) => Effect.Effect<ReadonlyArray<Item>, E>) | undefined
}

/** A destination that can be written anywhere. */
export interface Writer<E> {
  readonly lanes: number
  readonly maxRequest: number
  /** Nothing is stored (null:): reads need no zero check. */
  readonly discards: boolean
  readonly write: (lane: number, offset: number, data: Uint8Array, done: Done<E>) => Started
  /** Makes a range read as zeroes: skipped when the destination is known zero, else zeroed or written. */
  readonly zero: (lane: number, offset: number, length: number, done: Done<E>) => Started
  /** The end: `size` is where the data ended (the source's size in a copy); `flush` asks for durability. */
  readonly finish: (size: number, flush: boolean) => Effect.Effect<void, E>
}

/** Ends an I/O at once, before its start returns. */
export const endNow = <E, A>(done: Done<E, A>, failure: Cause.Cause<E> | undefined): Started => {
  done(failure)
  return ended
}

/** null: every byte is dropped. */
export const discardWriter: Writer<never> = {
  lanes: Number.POSITIVE_INFINITY,
  maxRequest: Number.POSITIVE_INFINITY,
  discards: true,
  write: (_lane, _offset, _data, done) => endNow(done, undefined),
  zero: (_lane, _offset, _length, done) => endNow(done, undefined),
  finish: () => Effect.void
}

/**
 * The context a side runs its effects in: the caller's (its logger, its tracer). Each I/O runs as a root fiber
 * of its own, interruptible whatever region the side was made in.
 */
export const ioContext: Effect.Effect<Context.Context<never>> = Effect.context<never>()

/**
 * Runs an effect as an I/O of a side, in a fiber of its own (files without positional I/O, writes of zeroes):
 * stopping it interrupts the fiber, whose end still comes to `done`. The fiber's value is the effect's exit,
 * so a failure never ends a fiber unobserved (which Effect reports as an unhandled error).
 */
export const forkIo = <A, E>(
  runtime: Context.Context<never>,
  effect: Effect.Effect<A, E>,
  done: Done<E, A>
): Started => {
  const fiber = Effect.runForkWith(runtime)(Effect.exit(effect))
  fiber.addObserver((outer) => {
    const exit: Exit.Exit<A, E> = Exit.isSuccess(outer) ? outer.value : Exit.failCause(outer.cause)
    if (Exit.isSuccess(exit)) done(undefined, exit.value)
    else done(exit.cause)
  })
  return {
    cancel: () => {
      fiber.interruptUnsafe()
      return false
    }
  }
}

/**
 * A started I/O as an effect that waits for it, for the ordered transfers' windows: started now, awaited
 * later, at most once. The wait suspends once; when it is interrupted the I/O is stopped, and one that cannot
 * be stopped is waited for. `inFlight` holds it until it ends, so a transfer that stops can `abandon` what it
 * never awaited.
 */
export class InFlight<E, A> {
  private failure: Cause.Cause<E> | undefined = undefined
  private value: A | undefined = undefined
  private settled = false
  private resume: (() => void) | undefined = undefined
  private started: Started = ended
  constructor(private readonly inFlight: Set<InFlight<E, A>>) {
    inFlight.add(this)
  }
  /** Starts the I/O: `start` gets the callback that ends it. */
  begin(start: (done: Done<E, A>) => Started): this {
    this.started = start(this.settle)
    return this
  }
  private readonly settle = (failure: Cause.Cause<E> | undefined, value?: A): void => {
    this.failure = failure
    this.value = value
    this.settled = true
    this.inFlight.delete(this)
    const resume = this.resume
    this.resume = undefined
    resume?.()
  }
  private get exit(): Exit.Exit<A, E> {
    return this.failure === undefined ? Exit.succeed(this.value as A) : Exit.failCause(this.failure)
  }
  /** Waits for its outcome. */
  readonly wait: Effect.Effect<A, E> = Effect.callback<A, E>((resume) => {
    if (this.settled) return resume(this.exit)
    this.resume = () => resume(this.exit)
    return this.abandon
  })
  /** Stops it, or stops waiting for it; one that cannot be stopped is waited for. Made when asked for. */
  get abandon(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.settled) return Effect.void
      this.resume = undefined
      if (this.started.cancel()) {
        // Its `done` will not come: it ends here, as stopped.
        this.settle(Cause.interrupt())
        return Effect.void
      }
      return Effect.callback<void>((resume) => {
        if (this.settled) return resume(Effect.void)
        this.resume = () => resume(Effect.void)
      })
    })
  }
}

/** Stops every I/O a transfer started and never awaited, waiting for those that cannot be stopped. */
export const abandonAll = <E, A>(inFlight: Set<InFlight<E, A>>): Effect.Effect<void> =>
  Effect.suspend(() => Effect.forEach([...inFlight], (io) => io.abandon, { discard: true }))
