import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Option from "effect/Option"
import * as Nbd from "../Nbd.js"
import type * as NbdCopy from "../NbdCopy.js"
import type * as NbdError from "../NbdError.js"
import type * as NbdPool from "../NbdPool.js"
import * as PositionalFile from "../PositionalFile.js"
import * as Protocol from "../Protocol.js"
import { checkCount, DEFAULT_CONNECTIONS, handlesOf, isPool, MAX_CONNECTIONS } from "./nbdPool.js"
import { BufferPool } from "./transfer/bufferPool.js"
import { copyRandom, type Observer } from "./transfer/copyLoop.js"
import { DEFAULT_REQUEST_SIZE, DEFAULT_REQUESTS, MAX_REQUESTS, MAX_ZERO, toOffset } from "./transfer/limits.js"
import { Lock } from "./transfer/lock.js"
import { nbdReader, nbdWriter } from "./transfer/nbdSides.js"
import { orderedStream } from "./transfer/orderedStream.js"
import { Planner } from "./transfer/planner.js"
import { sequentialSink } from "./transfer/sequentialSink.js"
import { discardWriter, finishedAtOnce, mustFinish, type Reader, type Writer } from "./transfer/sides.js"
import { Tracker } from "./transfer/tracker.js"

const OPERATION = "copy"

const isTarget = (u: unknown): u is NbdPool.Target => isPool(u) || Predicate.hasProperty(u, Nbd.TypeId)

// ---------------------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------------------

type FileError = PlatformError.PlatformError

const unexpectedEof = (path: string) =>
  new PlatformError.SystemError({
    module: "FileSystem",
    method: "read",
    reason: "UnexpectedEof",
    pathOrDescriptor: path,
    description: "unexpected end of file"
  })

/** `lanes` handles on one file, each with its own position, so reads and writes run side by side. */
const openLanes = (
  path: string,
  lanes: number,
  first: FileSystem.OpenFlag,
  rest: FileSystem.OpenFlag
): Effect.Effect<ReadonlyArray<FileSystem.File>, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const files = [yield* fs.open(path, { flag: first })]
    for (let i = 1; i < lanes; i++) files.push(yield* fs.open(path, { flag: rest }))
    return files
  })

/** Seek and I/O on one handle must not interleave with another fiber's: one lock per handle. */
const locked = (lanes: number) => Array.from({ length: lanes }, () => new Lock())

/** Where a file's bytes move: positional I/O on one descriptor when the context has it, else seek and I/O. */
interface FileIo {
  readonly lanes: number
  readonly first: FileSystem.File
  /** Reads `into.length` bytes at `offset`; fails at the end of the file. */
  readonly readAt: (lane: number, offset: number, into: Uint8Array) => Effect.Effect<void, FileError>
  readonly writeAt: (lane: number, offset: number, data: Uint8Array) => Effect.Effect<void, FileError>
  /** The same without an effect, with positional I/O only. */
  readonly direct:
    | {
        readonly readAt: (offset: number, into: Uint8Array, done: (error: FileError | undefined) => void) => void
        readonly writeAt: (offset: number, data: Uint8Array, done: (error: FileError | undefined) => void) => void
      }
    | undefined
}

/**
 * Opens `path` for a copy. With `PositionalFile` one descriptor serves every lane, requests in flight side by
 * side; without it, each lane has a handle of its own with its own position, under a lock.
 */
const openFile = (
  path: string,
  lanes: number,
  first: FileSystem.OpenFlag,
  rest: FileSystem.OpenFlag
): Effect.Effect<FileIo, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const positional = yield* Effect.serviceOption(PositionalFile.PositionalFile)
    if (Option.isSome(positional)) {
      const fs = yield* FileSystem.FileSystem
      const file = yield* fs.open(path, { flag: first })
      return positionalIo(path, lanes, file, positional.value)
    }
    const files = yield* openLanes(path, lanes, first, rest)
    const locks = locked(files.length)
    const readFully = (file: FileSystem.File, offset: number, into: Uint8Array) =>
      Effect.gen(function* () {
        yield* file.seek(offset, "start")
        let done = 0
        while (done < into.length) {
          const n = Number(yield* file.read(into.subarray(done)))
          if (n === 0) return yield* Effect.fail(unexpectedEof(path))
          done += n
        }
      })
    return {
      lanes: files.length,
      first: files[0]!,
      readAt: (lane, offset, into) => locks[lane]!.with(readFully(files[lane]!, offset, into)),
      writeAt: (lane, offset, data) =>
        locks[lane]!.with(Effect.zipRight(files[lane]!.seek(offset, "start"), files[lane]!.writeAll(data))),
      direct: undefined
    }
  })

const positionalIo = (path: string, lanes: number, file: FileSystem.File, io: PositionalFile.Service): FileIo => {
  const readAt = (offset: number, into: Uint8Array, done: (error: FileError | undefined) => void): void => {
    const from = (at: number): void =>
      io.read(file.fd, offset + at, at === 0 ? into : into.subarray(at), (error, n) => {
        if (error !== undefined) return done(error)
        if (n === 0) return done(unexpectedEof(path))
        if (at + n < into.length) return from(at + n)
        done(undefined)
      })
    if (into.length === 0) return done(undefined)
    from(0)
  }
  const writeAt = (offset: number, data: Uint8Array, done: (error: FileError | undefined) => void): void =>
    io.write(file.fd, offset, data, (error) => done(error))
  // Uninterruptible: the file must not be closed under an I/O that is still running.
  const effect = (start: (done: (error: FileError | undefined) => void) => void): Effect.Effect<void, FileError> =>
    Effect.uninterruptible(
      Effect.async<void, FileError>((resume) =>
        start((error) => resume(error === undefined ? Effect.void : Effect.fail(error)))
      )
    )
  return {
    lanes,
    first: file,
    readAt: (_lane, offset, into) => effect((done) => readAt(offset, into, done)),
    writeAt: (_lane, offset, data) => effect((done) => writeAt(offset, data, done)),
    direct: { readAt, writeAt }
  }
}

const fileReader = (
  path: string,
  lanes: number
): Effect.Effect<Reader<FileError>, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const io = yield* openFile(path, lanes, "r", "r")
    const size = Number((yield* io.first.stat).size)
    const direct = io.direct
    return {
      size,
      lanes: io.lanes,
      maxRequest: Protocol.Limits.MAX_REQUEST_SIZE,
      read: (lane, offset, into) => Effect.as(io.readAt(lane, offset, into), Effect.void),
      extents: undefined,
      ...(direct === undefined
        ? {}
        : {
            readDirect: (_lane: number, offset: number, _length: number, into: Uint8Array | undefined) =>
              into === undefined
                ? () => undefined
                : (done: (error: FileError | undefined) => void) => {
                    direct.readAt(offset, into, done)
                    return mustFinish
                  }
          })
    }
  })

/**
 * A file destination: created or truncated, then sized to the source when its size is known (else at the
 * end), so a regular file reads as zeroes wherever nothing is written.
 */
const fileWriter = (
  path: string,
  lanes: number,
  sourceSize: number | undefined,
  destinationIsZero: boolean,
  allocated: boolean
): Effect.Effect<Writer<FileError>, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const io = yield* openFile(path, lanes, "w", "r+")
    const first = io.first
    // A regular file keeps zero ranges as holes; anything else (a device, /dev/null) is written in full.
    const regular = (yield* first.stat).type === "File"
    if (regular && sourceSize !== undefined) yield* first.truncate(sourceSize)
    const holes = destinationIsZero || (regular && !allocated)
    let zeroes: Uint8Array | undefined
    const started = Effect.succeed(Effect.void)
    const direct = io.direct
    return {
      lanes: io.lanes,
      maxRequest: Protocol.Limits.MAX_REQUEST_SIZE,
      discards: false,
      write: (lane, offset, data) => Effect.as(io.writeAt(lane, offset, data), Effect.void),
      // A hole in a regular file reads as zeroes, unless the file must end allocated.
      zero: (lane, offset, length) =>
        holes
          ? started
          : Effect.gen(function* () {
              zeroes ??= new Uint8Array(1 << 20)
              for (let done = 0; done < length; done += zeroes.length)
                yield* io.writeAt(lane, offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)))
              return Effect.void
            }),
      finish: (size, flush) =>
        Effect.zipRight(
          regular && sourceSize === undefined ? first.truncate(size) : Effect.void,
          flush ? first.sync : Effect.void
        ),
      ...(direct === undefined
        ? {}
        : {
            writeDirect:
              (_lane: number, offset: number, data: Uint8Array) => (done: (error: FileError | undefined) => void) => {
                direct.writeAt(offset, data, done)
                return mustFinish
              }
          }),
      ...(holes ? { zeroDirect: () => finishedAtOnce } : {})
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// The copy
// ---------------------------------------------------------------------------------------------------------------

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

const openSource = (source: NbdCopy.Source, settings: Settings): Effect.Effect<OpenedSource, AnyError, any> => {
  if (isTarget(source))
    return Effect.map(nbdReader(OPERATION, source, settings.lanes, settings.sparse), (reader) => ({
      _tag: "Random" as const,
      reader
    }))
  switch (source._tag) {
    case "File":
      return Effect.map(fileReader(source.path, settings.lanes), (reader) => ({ _tag: "Random" as const, reader }))
    case "FromStream":
      return Effect.map(
        source.size === undefined ? Effect.succeed(undefined) : toOffset(OPERATION, "size", source.size),
        (size) => ({ _tag: "Sequential" as const, stream: source.stream, ...(size === undefined ? {} : { size }) })
      )
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
  Stream.mapChunks(stream, (chunk) => {
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
        return Stream.mapChunks(stream, (chunk) => {
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
      const src = yield* openSource(source, settings)
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
            zeroBlock: settings.sparseSize,
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
            zeroBlock: settings.sparseSize,
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
    return Effect.zipRight(tracker.begin, run(source, destination, options, tracker))
  })

export const copyWithProgress = (
  source: NbdCopy.Source,
  destination: NbdCopy.Destination,
  options: NbdCopy.ProgressOptions = {}
): Stream.Stream<NbdCopy.Progress, AnyError, any> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      const tracker = new Tracker()
      yield* tracker.begin
      // The copy's fiber ends with its exit as its value: a failed copy fails the stream, never that fiber,
      // so no fiber of ours ends with an error nobody observed.
      const copied = yield* Effect.forkScoped(Effect.exit(run(source, destination, options, tracker)))
      const interval = Duration.decode(options.interval ?? Duration.seconds(1))
      const ticks = Stream.repeatEffectWithSchedule(tracker.snapshot, Schedule.spaced(interval))
      return Stream.concat(
        Stream.interruptWhen(ticks, Fiber.join(copied)),
        Stream.fromEffect(Effect.zipRight(Effect.flatten(Fiber.join(copied)), tracker.snapshot))
      )
    })
  )
