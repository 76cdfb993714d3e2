/**
 * The body of NbdStream: an export read as an ordered stream and written through a sequential sink, over a
 * handle or every connection of a pool, after the options are checked.
 */
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type * as NbdError from "../../NbdError.js"
import type * as NbdPool from "../../NbdPool.js"
import type * as NbdStream from "../../NbdStream.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import { toOffset } from "../api/arguments.js"
import { checkCount } from "../api/nbdPool.js"
import { DEFAULT_REQUEST_SIZE, DEFAULT_REQUESTS, MAX_REQUESTS } from "./limits.js"
import { nbdReader, nbdWriter } from "./nbdSides.js"
import { orderedStream } from "./orderedStream.js"
import { sequentialSink } from "./sequentialSink.js"

const ALL_LANES = Number.POSITIVE_INFINITY

export const readStream = (
  target: NbdPool.Target,
  options: NbdStream.ReadOptions = {}
): Stream.Stream<Uint8Array, NbdError.NbdError> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const operation = "readStream"
      const requestSize = yield* checkCount(
        operation,
        "requestSize",
        options.requestSize ?? DEFAULT_REQUEST_SIZE,
        Protocol.Limits.MAX_REQUEST_SIZE
      )
      const requests = yield* checkCount(operation, "requests", options.requests ?? DEFAULT_REQUESTS, MAX_REQUESTS)
      const reader = yield* nbdReader(operation, target, ALL_LANES, options.sparse ?? false)
      const start = yield* toOffset(operation, "offset", options.offset ?? 0)
      const length =
        options.length === undefined
          ? Math.max(0, reader.size - start)
          : yield* toOffset(operation, "length", options.length)
      if (start + length > reader.size)
        return yield* invalidArgument(
          operation,
          `the range ${start}+${length} ends past the end of the export (${reader.size} bytes)`
        )
      return orderedStream(reader, {
        start,
        end: start + length,
        requestSize,
        inFlight: requests * reader.lanes
      })
    })
  )

export const writeSink = (
  target: NbdPool.Target,
  options: NbdStream.WriteOptions = {}
): Sink.Sink<bigint, Uint8Array, never, NbdError.NbdError> =>
  Sink.unwrap(
    Effect.gen(function* () {
      const operation = "writeSink"
      const requests = yield* checkCount(operation, "requests", options.requests ?? DEFAULT_REQUESTS, MAX_REQUESTS)
      const requestSize =
        options.requestSize === undefined
          ? Protocol.Limits.MAX_REQUEST_SIZE
          : yield* checkCount(operation, "requestSize", options.requestSize, Protocol.Limits.MAX_REQUEST_SIZE)
      const offset = yield* toOffset(operation, "offset", options.offset ?? 0)
      const writer = yield* nbdWriter(operation, target, ALL_LANES, { offset })
      return Sink.map(
        sequentialSink(
          { ...writer, maxRequest: Math.min(writer.maxRequest, requestSize) },
          {
            offset,
            inFlight: requests * writer.lanes,
            detectZeroes: options.detectZeroes ?? false,
            flush: options.flush ?? false,
            operation
          }
        ),
        (written) => BigInt(written)
      )
    })
  )
