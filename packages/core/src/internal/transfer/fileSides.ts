/**
 * Files as the sides of a copy: positional I/O on one descriptor when the context provides PositionalFile
 * (every lane's requests in flight side by side, with a direct path for the copy's hot loop), else a handle
 * per lane that seeks and reads or writes under a lock. A destination file is sized to the source, so what
 * is never written reads as zeroes.
 */
import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as PositionalFile from "../../PositionalFile.js"
import * as Protocol from "../../Protocol.js"
import { Lock } from "./lock.js"
import { finishedAtOnce, mustFinish, type Reader, type Writer } from "./sides.js"

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

export const fileReader = (
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
export const fileWriter = (
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
