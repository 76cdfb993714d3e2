/**
 * A writer as a sink (NbdStream.writeSink, and a copy from a stream into a random-access destination): chunks
 * written one after another with many writes in flight, zero runs zeroed when asked.
 */
import type * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import type * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import { abandonAll, type Done, InFlight, type Started, type Writer } from "./sides.js"
import type { Tracker } from "./tracker.js"
import { Window } from "./window.js"
import { zeroRuns } from "./zeroRuns.js"

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
    const inFlight = new Set<InFlight<E, unknown>>()
    const tracker = options.tracker
    const maxRequest = Math.min(writer.maxRequest, Protocol.Limits.DEFAULT_PAYLOAD_MAX)
    const lanes = Number.isFinite(writer.lanes) ? writer.lanes : 1
    let pos = options.offset
    let lane = 0
    /** Starts an I/O, and waits for the oldest once more than `inFlight` are started. */
    const issue = (start: (done: Done<E>) => Started, length: number, zero: boolean): Effect.Effect<void, E> =>
      Effect.suspend(() => {
        window.push(new InFlight<E, unknown>(inFlight).begin(start).wait, length, zero)
        return window.size > options.inFlight ? window.shift(tracker) : Effect.void
      })
    const push = (chunk: Arr.NonEmptyReadonlyArray<Uint8Array>): Effect.Effect<void, E> =>
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
            const on = lane
            if (!options.detectZeroes)
              yield* issue((done) => writer.write(on, offset, piece, done), piece.length, false)
            else
              for (const r of zeroRuns(piece, offset, options.zeroBlock)) {
                const part = r.length === piece.length ? piece : piece.subarray(r.start, r.start + r.length)
                const at = offset + r.start
                yield* issue(
                  r.zero ? (done) => writer.zero(on, at, r.length, done) : (done) => writer.write(on, at, part, done),
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
        return yield* invalidArgument(
          options.operation,
          `the source gave ${written} bytes where its size said ${options.expected}`,
          "EIO"
        )
      yield* writer.finish(pos, options.flush)
      return written
    })
    // Writes started and never awaited (the input failed, or the sink was interrupted) are stopped, and file
    // writes waited for, before the destination can be closed.
    return Sink.forEachArray(push).pipe(
      Sink.mapEffect(() => end),
      Sink.ensuring(abandonAll(inFlight))
    )
  })
