/**
 * Files as the sides of a copy: positional I/O on one descriptor when the context provides PositionalFile
 * (every lane's requests in flight side by side, started with no fiber), else a handle per lane that seeks
 * and reads or writes under a lock, in a fiber per I/O. A destination file is sized to the source, so what
 * is never written reads as zeroes.
 */
import * as PlatformError from "effect/PlatformError"
import * as FileSystem from "effect/FileSystem"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as PositionalFile from "../../PositionalFile.js"
import * as Protocol from "../../Protocol.js"
import { Lock } from "./lock.js"
import { type Done, endNow, forkIo, ioContext, type Reader, type Started, uncancellable, type Writer } from "./sides.js"

type FileError = PlatformError.PlatformError

const unexpectedEof = (path: string): FileError =>
  PlatformError.systemError({
    _tag: "UnexpectedEof",
    module: "FileSystem",
    method: "read",
    pathOrDescriptor: path,
    description: "unexpected end of file"
  })

/** Seek and I/O on one handle must not interleave with another fiber's: one lock per handle. */
const locked = (lanes: number) => Array.from({ length: lanes }, () => new Lock())

/** Where a file's bytes move: positional I/O on one descriptor when the context has it, else seek and I/O. */
interface FileIo {
  readonly lanes: number
  readonly first: FileSystem.File
  /** Starts a read of `into.length` bytes at `offset` (failing at the end of the file), or a write. */
  readonly readAt: (lane: number, offset: number, into: Uint8Array, done: Done<FileError>) => Started
  readonly writeAt: (lane: number, offset: number, data: Uint8Array, done: Done<FileError>) => Started
  /** The same as an effect, for the writes of zeroes. */
  readonly writeAtEffect: (lane: number, offset: number, data: Uint8Array) => Effect.Effect<void, FileError>
}

/** A file error as an I/O's end. */
const failure = (error: FileError | undefined): Cause.Cause<FileError> | undefined =>
  error === undefined ? undefined : Cause.fail(error)

/**
 * Opens `path` for a copy. With `PositionalFile` one descriptor serves every lane, requests in flight side by
 * side, started with no fiber; without it, each lane has a handle of its own with its own position, under a
 * lock, and each I/O runs as a fiber of its own.
 */
const openFile = (
  path: string,
  lanes: number,
  first: FileSystem.OpenFlag,
  rest: FileSystem.OpenFlag
): Effect.Effect<FileIo, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const file = yield* fs.open(path, { flag: first })
    const positional = yield* Effect.serviceOption(PositionalFile.PositionalFile)
    const fd = descriptorOf(file)
    if (Option.isSome(positional) && fd !== undefined) return positionalIo(path, lanes, file, fd, positional.value)
    // `lanes` handles on one file, each with its own position, so reads and writes run side by side.
    const files = [file]
    for (let i = 1; i < lanes; i++) files.push(yield* fs.open(path, { flag: rest }))
    const locks = locked(files.length)
    const runtime = yield* ioContext
    // Each read and write uninterruptible: the file system cannot take back one it began (its callback still
    // comes), so a fiber interrupted meanwhile ends only once it has, while its buffer is in use and its file
    // must stay open. The interruption is taken between two of them.
    const readFully = (file: FileSystem.File, offset: number, into: Uint8Array) =>
      Effect.gen(function* () {
        yield* file.seek(BigInt(offset), "start")
        let done = 0
        while (done < into.length) {
          const n = Number(yield* Effect.uninterruptible(file.read(into.subarray(done))))
          if (n === 0) return yield* unexpectedEof(path)
          done += n
        }
      })
    const writeAtEffect = (lane: number, offset: number, data: Uint8Array) =>
      locks[lane]!.with(
        Effect.andThen(files[lane]!.seek(BigInt(offset), "start"), Effect.uninterruptible(files[lane]!.writeAll(data)))
      )
    return {
      lanes: files.length,
      first: files[0]!,
      readAt: (lane, offset, into, done) =>
        forkIo(runtime, locks[lane]!.with(readFully(files[lane]!, offset, into)), done),
      writeAt: (lane, offset, data, done) => forkIo(runtime, writeAtEffect(lane, offset, data), done),
      writeAtEffect
    }
  })

/**
 * The descriptor of an open file, where the file system gives one (`FileSystem.File` does not promise it:
 * Node's file system keeps it as `fd`); a file without one is copied through `FileSystem`.
 */
const descriptorOf = (file: FileSystem.File): PositionalFile.Descriptor | undefined => {
  const fd = (file as { readonly fd?: unknown }).fd
  return typeof fd === "number" ? fd : undefined
}

/** Positional I/O cannot be stopped once begun: a transfer that stops waits for it before the file closes. */
const positionalIo = (
  path: string,
  lanes: number,
  file: FileSystem.File,
  fd: PositionalFile.Descriptor,
  io: PositionalFile.Service
): FileIo => {
  const readAt = (offset: number, into: Uint8Array, done: Done<FileError>): Started => {
    const from = (at: number): void =>
      io.read(fd, offset + at, at === 0 ? into : into.subarray(at), (error, n) => {
        if (error !== undefined) return done(Cause.fail(error))
        if (n === 0) return done(Cause.fail(unexpectedEof(path)))
        if (at + n < into.length) return from(at + n)
        done(undefined)
      })
    if (into.length === 0) return endNow(done, undefined)
    from(0)
    return uncancellable
  }
  const writeAt = (offset: number, data: Uint8Array, done: Done<FileError>): Started => {
    io.write(fd, offset, data, (error) => done(failure(error)))
    return uncancellable
  }
  return {
    lanes,
    first: file,
    readAt: (_lane, offset, into, done) => readAt(offset, into, done),
    writeAt: (_lane, offset, data, done) => writeAt(offset, data, done),
    // Uninterruptible: the file must not be closed under a write that is still running.
    writeAtEffect: (_lane, offset, data) =>
      Effect.uninterruptible(
        Effect.callback<void, FileError>((resume) => {
          writeAt(offset, data, (cause) => resume(cause === undefined ? Effect.void : Effect.failCause(cause)))
        })
      )
  }
}

export const fileReader = (
  path: string,
  lanes: number
): Effect.Effect<Reader<FileError>, FileError, FileSystem.FileSystem | Scope.Scope> =>
  Effect.gen(function* () {
    const io = yield* openFile(path, lanes, "r", "r")
    const size = Number((yield* io.first.stat).size)
    return {
      size,
      lanes: io.lanes,
      maxRequest: Protocol.Limits.MAX_REQUEST_SIZE,
      read: (lane, offset, length, into, done) => {
        // A file read always needs a buffer: "fresh" and "drop" get one of their own.
        const buffer = typeof into === "string" ? new Uint8Array(length) : into
        return io.readAt(lane, offset, buffer, (cause) => (cause === undefined ? done(undefined, buffer) : done(cause)))
      },
      drops: false,
      extents: undefined
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
    const runtime = yield* ioContext
    let zeroes: Uint8Array | undefined
    const writeZeroes = (lane: number, offset: number, length: number) =>
      Effect.gen(function* () {
        zeroes ??= new Uint8Array(1 << 20)
        for (let done = 0; done < length; done += zeroes.length)
          yield* io.writeAtEffect(lane, offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)))
      })
    return {
      lanes: io.lanes,
      maxRequest: Protocol.Limits.MAX_REQUEST_SIZE,
      discards: false,
      write: io.writeAt,
      // A hole in a regular file reads as zeroes, unless the file must end allocated.
      zero: (lane, offset, length, done) =>
        holes ? endNow(done, undefined) : forkIo(runtime, writeZeroes(lane, offset, length), done),
      finish: (size, flush) =>
        Effect.andThen(
          regular && sourceSize === undefined ? first.truncate(size) : Effect.void,
          flush ? first.sync : Effect.void
        )
    }
  })
