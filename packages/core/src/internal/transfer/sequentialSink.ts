/**
 * A writer as a sink (NbdStream.writeSink, and a copy from a stream into a random-access destination): chunks
 * written one after another with many writes in flight, zero runs zeroed when asked.
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import type * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../api/arguments.js"
import type { Start, Writer } from "./sides.js"
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
