/**
 * The body of NbdCopy: a copy's settings checked, its source and destination opened as sides (NBD, file,
 * stream, sink, null:), then the way to move bytes chosen by what the two sides can do: the copy loop between
 * two random-access sides, an ordered stream into a sink, a sequential sink from a stream, or a stream run
 * straight into a sink. Progress is counted by one tracker, which copyWithProgress samples.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Nbd from "../../Nbd.js"
import type * as NbdCopy from "../../NbdCopy.js"
import type * as NbdError from "../../NbdError.js"
import type * as NbdPool from "../../NbdPool.js"
import * as Protocol from "../../Protocol.js"
import { toOffset } from "../api/arguments.js"
import { checkCount, DEFAULT_CONNECTIONS, handlesOf, isPool, MAX_CONNECTIONS } from "../api/nbdPool.js"
import { BufferPool } from "./bufferPool.js"
import { copyRandom, type Observer } from "./copyLoop.js"
import { fileReader, fileWriter } from "./fileSides.js"
import { DEFAULT_REQUEST_SIZE, DEFAULT_REQUESTS, MAX_REQUESTS, MAX_ZERO } from "./limits.js"
import { nbdReader, nbdWriter } from "./nbdSides.js"
import { orderedStream } from "./orderedStream.js"
import { Planner } from "./planner.js"
import { sequentialSink } from "./sequentialSink.js"
import { discardWriter, type Reader, type Writer } from "./sides.js"
import { Tracker } from "./tracker.js"

const OPERATION = "copy"

const isTarget = (u: unknown): u is NbdPool.Target => isPool(u) || Predicate.hasProperty(u, Nbd.TypeId)

type AnyError = unknown

type OpenedSource =
  | { readonly _tag: "Random"; readonly reader: Reader<AnyError> }
  | { readonly _tag: "Sequential"; readonly stream: Stream.Stream<Uint8Array, AnyError, any>; readonly size?: number }

type OpenedDestination =
  | { readonly _tag: "Random"; readonly writer: Writer<AnyError> }
  | { readonly _tag: "Sink"; readonly sink: NbdCopy.ToSink<AnyError, any>["sink"] }

interface Settings {
  readonly requestSize: number
  readonly requests: number
  readonly lanes: number
  readonly sparse: boolean
  readonly sparseSize: number | undefined
  readonly allocated: boolean
  readonly destinationIsZero: boolean
  readonly flush: boolean
  readonly observer: Observer | undefined
}

const settingsOf = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  options: NbdCopy.Options
): Effect.Effect<Settings, NbdError.NbdError> =>
  Effect.gen(function* () {
    const requestSize = yield* checkCount(
      OPERATION,
      "requestSize",
      options.requestSize ?? DEFAULT_REQUEST_SIZE,
      Protocol.Limits.MAX_REQUEST_SIZE
    )
    const requests = yield* checkCount(OPERATION, "requests", options.requests ?? DEFAULT_REQUESTS, MAX_REQUESTS)
    const connections =
      options.connections === undefined
        ? undefined
        : yield* checkCount(OPERATION, "connections", options.connections, MAX_CONNECTIONS)
    // Multi-conn on both NBD sides or as many as the poorer one has (nbdcopy's rule).
    const nbd = [source, destination].filter(isTarget).map((t) => handlesOf(t).length)
    const lanes = Math.min(...nbd, connections ?? (nbd.length > 0 ? Number.POSITIVE_INFINITY : DEFAULT_CONNECTIONS))
    const sparseSize =
      options.sparseSize === undefined
        ? undefined
        : yield* checkCount(OPERATION, "sparseSize", options.sparseSize, Protocol.Limits.MAX_REQUEST_SIZE)
    return {
      requestSize,
      requests,
      lanes,
      sparse: options.sparse ?? true,
      sparseSize,
      allocated: options.allocated ?? false,
      destinationIsZero: options.destinationIsZero ?? false,
      flush: options.flush ?? false,
      observer: options.observer
    }
  })

/**
 * The minimum block size of an NBD destination (1 for any other): the source's zero runs are aligned to it
 * too, so no write or zero it is sent covers part of one of its blocks. nbdcopy 1.14, source and destination
 * as in copy-block-sizes.test.ts, ends with the same content, its writes and zeroes also whole 4K blocks.
 */
const destinationMinimum = (destination: NbdCopy.Destination): Effect.Effect<number, NbdError.NbdError> =>
  isTarget(destination)
    ? // 0 when the server advertised no block sizes: any alignment then.
      Effect.map(Nbd.getBlockSize(handlesOf(destination)[0]!, "minimum"), (minimum) => Math.max(1, minimum))
    : Effect.succeed(1)

/**
 * Zero detection's block, rounded up to whole blocks of the destination's minimum: a zero run of part of one
 * would be refused. nbdcopy 1.14 with -S 512 to such a destination also sends only whole 4K blocks.
 */
const wholeBlocks = (sparseSize: number | undefined, minimum: number): number | undefined =>
  sparseSize === undefined ? undefined : Math.ceil(sparseSize / minimum) * minimum

const openSource = (
  source: NbdCopy.Source,
  settings: Settings,
  alignment: number
): Effect.Effect<OpenedSource, AnyError, any> => {
  if (isTarget(source))
    return Effect.map(nbdReader(OPERATION, source, settings.lanes, settings.sparse, alignment), (reader) => ({
      _tag: "Random" as const,
      reader
    }))
  switch (source._tag) {
    case "File":
      return Effect.map(fileReader(source.path, settings.lanes), (reader) => ({ _tag: "Random" as const, reader }))
    case "FromStream":
      return source.size === undefined
        ? Effect.succeed({ _tag: "Sequential" as const, stream: source.stream })
        : Effect.map(toOffset(OPERATION, "size", source.size), (size) => ({
            _tag: "Sequential" as const,
            stream: source.stream,
            size
          }))
  }
}

const openDestination = (
  destination: NbdCopy.Destination,
  settings: Settings,
  sourceSize: number | undefined
): Effect.Effect<OpenedDestination, AnyError, any> => {
  if (isTarget(destination))
    return Effect.map(
      nbdWriter(OPERATION, destination, settings.lanes, {
        sourceSize,
        destinationIsZero: settings.destinationIsZero,
        allocated: settings.allocated
      }),
      (writer) => ({ _tag: "Random" as const, writer })
    )
  switch (destination._tag) {
    case "File":
      return Effect.map(
        fileWriter(destination.path, settings.lanes, sourceSize, settings.destinationIsZero, settings.allocated),
        (writer) => ({
          _tag: "Random" as const,
          writer
        })
      )
    case "Discard":
      return Effect.succeed({ _tag: "Random" as const, writer: discardWriter })
    case "ToSink":
      return Effect.succeed({ _tag: "Sink" as const, sink: destination.sink })
  }
}

/** Counts chunks as they pass. */
const counted = <E, R>(stream: Stream.Stream<Uint8Array, E, R>, tracker: Tracker) =>
  Stream.mapArray(stream, (chunk) => {
    for (const data of chunk) tracker.data(data.length)
    return chunk
  })

/** Shows an in-order stream's bytes to the observer, with their offsets; fresh position on every run. */
const observed = <E, R>(
  stream: Stream.Stream<Uint8Array, E, R>,
  observer: Observer | undefined
): Stream.Stream<Uint8Array, E, R> =>
  observer === undefined
    ? stream
    : Stream.suspend(() => {
        let position = 0
        return Stream.mapArray(stream, (chunk) => {
          for (const data of chunk) {
            observer.data(position, data)
            position += data.length
          }
          return chunk
        })
      })

/**
 * Requests in flight per lane. With a file on either side `requests` is the total, shared by the lanes: the
 * file's I/O runs a few at a time on libuv's threads, so more slots would only hold more buffers (a copy
 * between a file and 4 connections ran as fast with 64 in flight as with 256, at 60 MiB less).
 */
const requestsPerLane = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  requests: number,
  lanes: number
): number => {
  const file = (!isTarget(source) && source._tag === "File") || (!isTarget(destination) && destination._tag === "File")
  return file ? Math.max(1, Math.ceil(requests / lanes)) : requests
}

const run = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  options: NbdCopy.Options,
  tracker: Tracker
): Effect.Effect<NbdCopy.Result, AnyError, any> =>
  Effect.scoped(
    Effect.gen(function* () {
      const settings = yield* settingsOf(source, destination, options)
      const alignment = yield* destinationMinimum(destination)
      const src = yield* openSource(source, settings, alignment)
      const sourceSize = src._tag === "Random" ? src.reader.size : src.size
      tracker.total = sourceSize
      const dst = yield* openDestination(destination, settings, sourceSize)
      const lanes = Math.min(
        settings.lanes,
        src._tag === "Random" ? src.reader.lanes : Number.POSITIVE_INFINITY,
        dst._tag === "Random" ? dst.writer.lanes : Number.POSITIVE_INFINITY
      )
      const used = Number.isFinite(lanes) ? lanes : 1
      let buffers = 0
      if (src._tag === "Random") {
        const reader = src.reader
        const requestSize = Math.min(
          settings.requestSize,
          reader.maxRequest,
          dst._tag === "Random" ? dst.writer.maxRequest : Number.POSITIVE_INFINITY
        )
        if (dst._tag === "Random") {
          const pool = new BufferPool(requestSize)
          const planner = new Planner(reader.extents, 0, reader.size, requestSize, MAX_ZERO)
          yield* copyRandom(reader, dst.writer, planner, {
            lanes: used,
            requests: requestsPerLane(source, destination, settings.requests, used),
            buffers: pool,
            // A destination that must end allocated gets what was read as it is, zeroes or not.
            detectZeroes: settings.sparse && !settings.allocated,
            zeroBlock: wholeBlocks(settings.sparseSize, alignment),
            observer: settings.observer,
            tracker
          })
          yield* dst.writer.finish(reader.size, settings.flush)
          buffers = pool.allocated
        } else
          yield* Stream.run(
            observed(
              orderedStream(reader, {
                start: 0,
                end: reader.size,
                requestSize,
                inFlight: settings.requests * used,
                tracker
              }),
              settings.observer
            ),
            dst.sink
          )
      } else if (dst._tag === "Random")
        yield* Stream.run(
          observed(src.stream, settings.observer),
          sequentialSink(dst.writer, {
            offset: 0,
            inFlight: settings.requests * used,
            detectZeroes: settings.sparse && !settings.allocated,
            zeroBlock: wholeBlocks(settings.sparseSize, alignment),
            flush: settings.flush,
            tracker,
            expected: src.size,
            operation: OPERATION
          })
        )
      else yield* Stream.run(observed(counted(src.stream, tracker), settings.observer), dst.sink)
      if (tracker.total === undefined) tracker.total = tracker.bytes
      return {
        bytes: BigInt(tracker.bytes),
        dataBytes: BigInt(tracker.dataBytes),
        zeroBytes: BigInt(tracker.zeroBytes),
        connections: used,
        buffers
      }
    })
  )

export const copy = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  options: NbdCopy.Options = {}
): Effect.Effect<NbdCopy.Result, AnyError, any> =>
  Effect.suspend(() => {
    const tracker = new Tracker()
    return Effect.andThen(tracker.begin, run(source, destination, options, tracker))
  })

export const copyWithProgress = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  options: NbdCopy.ProgressOptions = {}
): Stream.Stream<NbdCopy.Progress, AnyError, any> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const tracker = new Tracker()
      yield* tracker.begin
      // The copy's fiber ends with its exit as its value: a failed copy fails the stream, never that fiber,
      // so no fiber of ours ends with an error nobody observed.
      const copied = yield* Effect.forkScoped(Effect.exit(run(source, destination, options, tracker)))
      const interval = Duration.fromInputUnsafe(options.interval ?? Duration.seconds(1))
      const ticks = Stream.fromEffectSchedule(tracker.snapshot, Schedule.spaced(interval))
      return Stream.concat(
        Stream.interruptWhen(ticks, Fiber.join(copied)),
        Stream.fromEffect(Effect.andThen(Effect.flatten(Fiber.join(copied)), tracker.snapshot))
      )
    })
  )
