/**
 * The two sides of a transfer as the loops see them: a `Reader` that can be read anywhere and a `Writer` that
 * can be written anywhere, the pieces of work they trade (`Item`), the two ways to start an I/O (`Start`, an
 * effect, and `Direct`, a callback), and null:, the writer that drops every byte. NBD handles and pools become
 * sides in nbdSides.ts, files in fileSides.ts.
 *
 * This folder is the machinery under NbdStream and NbdCopy: random-access readers and writers (NBD handles
 * and pools in nbdSides.ts, files in fileSides.ts), a planner that hands out pieces of a range (data, or zero
 * extents from block status), a pool of reusable request buffers, progress counters, and the three ways to
 * move bytes: workers between two random-access sides (copyLoop.ts), an ordered stream out of a reader
 * (orderedStream.ts), and a sequential sink into a writer (sequentialSink.ts). nbdCopy.ts and nbdStream.ts,
 * the bodies of the public modules, put them together.
 */
import * as Effect from "effect/Effect"
import { constVoid } from "effect/Function"

/** A piece of work: a range, and whether it is known to read as zeroes. */
export interface Item {
  readonly offset: number
  readonly length: number
  readonly zero: boolean
}

/** Starting an I/O gives the effect that waits for it: many can be started before the first is awaited. */
export type Start<E> = Effect.Effect<Effect.Effect<unknown, E>, E>

export const started: Start<never> = Effect.succeed(Effect.void)

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
