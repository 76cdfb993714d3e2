/**
 * A file or block device export, like nbdkit's file plugin: reads and writes at offsets, FUA and flush
 * reaching the disk (fdatasync / fsync), zeroes written as zeroes.
 *
 * What pure Node cannot do, and what this backend does instead:
 *
 * - Node has no `lseek(SEEK_HOLE / SEEK_DATA)`, so holes cannot be located. Block status reports the whole
 *   file as data, except a regular file with no block allocated at all (`st_blocks` 0, e.g. just made by
 *   `truncate -s`), which is one hole. Clients copy such data as data, which is correct, only slower.
 * - Node has no `fallocate(PUNCH_HOLE)`: a trim or a zero that may trim frees space only when it reaches the
 *   end of a regular file (the file is truncated to the offset and grown back, which leaves a hole); else a
 *   zero writes zeroes and a trim, which is advisory, leaves the data as it is.
 * - A block device's size comes from `/sys/dev/block/MAJOR:MINOR/size` (Linux), as Node cannot seek to its end.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as NbdError from "@effect-nbd/core/NbdError"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as Fs from "node:fs"
import * as Backend from "./Backend.js"

/**
 * Options of the file backend.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileOptions {
  /** Open the file read-only and serve it read-only. Default false. */
  readonly readOnly?: boolean
}

/** The system errors a client sees as they are: those the protocol has a value for. */
const ERRNOS: ReadonlySet<string> = new Set(Protocol.errnoNames)

const backendError = (what: string, error: unknown): Backend.BackendError => {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  // nbdkit's mapping of what NBD has no name for.
  const errno = (
    code !== undefined && ERRNOS.has(code)
      ? code
      : code === "EROFS" || code === "EACCES"
        ? "EPERM"
        : code === "EDQUOT" || code === "EFBIG"
          ? "ENOSPC"
          : "EIO"
  ) as NbdError.Errno
  return new Backend.BackendError({
    errno,
    message: `${what}: ${error instanceof Error ? error.message : String(error)}`
  })
}

const call = <A>(what: string, f: (done: (error: NodeJS.ErrnoException | null, value?: A) => void) => void) =>
  Effect.callback<A, Backend.BackendError>((resume) => {
    f((error, value) => resume(error === null ? Effect.succeed(value as A) : Effect.fail(backendError(what, error))))
  })

/** Linux's dev_t split into major and minor, as glibc's `major()` / `minor()` do. */
const majorMinor = (rdev: number): [number, number] => {
  const dev = BigInt(rdev)
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn))
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn))
  return [major, minor]
}

const blockDeviceSize = (path: string, rdev: number): bigint => {
  const [major, minor] = majorMinor(rdev)
  try {
    return BigInt(Fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8").trim()) * 512n
  } catch (error) {
    throw new Error(`cannot find the size of block device ${path} (/sys/dev/block/${major}:${minor}/size): ${error}`)
  }
}

const ZERO_CHUNK = 1024 * 1024

/**
 * Opens a file or block device as a backend for the scope (the descriptor is closed with it). The export's
 * size is the file's size (a block device's size), read once here.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  path: string,
  options: FileOptions = {}
): Effect.Effect<Backend.Backend, Backend.BackendError, Scope.Scope> =>
  Effect.gen(function* () {
    const readOnly = options.readOnly ?? false
    const fd = yield* Effect.acquireRelease(
      Effect.try({
        try: () => Fs.openSync(path, readOnly ? "r" : "r+"),
        catch: (error) => backendError(`cannot open ${path}`, error)
      }),
      (fd) => Effect.sync(() => Fs.closeSync(fd))
    )
    const stat = yield* Effect.try({
      try: () => Fs.fstatSync(fd),
      catch: (error) => backendError(`cannot stat ${path}`, error)
    })
    const isBlock = stat.isBlockDevice()
    if (!isBlock && !stat.isFile())
      return yield* new Backend.BackendError({
        errno: "EINVAL",
        message: `${path} is neither a regular file nor a block device`
      })
    const size = isBlock
      ? yield* Effect.try({
          try: () => blockDeviceSize(path, stat.rdev),
          catch: (error) => backendError("block device", error)
        })
      : BigInt(stat.size)
    const end = Number(size)

    const pwriteAll = (data: Uint8Array, offset: number): Effect.Effect<void, Backend.BackendError> =>
      call<number>(`write ${path}`, (done) => Fs.write(fd, data, 0, data.length, offset, done)).pipe(
        Effect.flatMap((n) => (n < data.length ? pwriteAll(data.subarray(n), offset + n) : Effect.void))
      )

    const readAll = (buf: Uint8Array, at: number, offset: number): Effect.Effect<void, Backend.BackendError> =>
      call<number>(`read ${path}`, (done) => Fs.read(fd, buf, at, buf.length - at, offset, done)).pipe(
        Effect.flatMap((n) =>
          // A read past the end of a file that shrank under us gives zeroes, as a hole would.
          n === 0 || at + n >= buf.length ? Effect.void : readAll(buf, at + n, offset + n)
        )
      )

    const datasync = call<void>(`fdatasync ${path}`, (done) => Fs.fdatasync(fd, done))
    const fsync = call<void>(`fsync ${path}`, (done) => Fs.fsync(fd, done))
    const truncate = (length: number) => call<void>(`ftruncate ${path}`, (done) => Fs.ftruncate(fd, length, done))

    /** Frees the tail of a regular file from `offset`: truncated there and grown back, a hole. */
    const punchTail = (offset: number) => Effect.andThen(truncate(offset), truncate(end))

    const writeZeroes = (offset: number, length: number): Effect.Effect<void, Backend.BackendError> => {
      const zeroes = new Uint8Array(Math.min(length, ZERO_CHUNK))
      const loop = (at: number): Effect.Effect<void, Backend.BackendError> =>
        at >= offset + length
          ? Effect.void
          : Effect.andThen(
              pwriteAll(zeroes.subarray(0, Math.min(zeroes.length, offset + length - at)), at),
              Effect.suspend(() => loop(at + zeroes.length))
            )
      return loop(offset)
    }

    const readOnlyError = Effect.fail(new Backend.BackendError({ errno: "EPERM", message: `${path} is read-only` }))

    return {
      _tag: "Backend",
      name: "file",
      size,
      readOnly,
      read: (offset, length) =>
        Effect.suspend(() => {
          const buf = new Uint8Array(length)
          return Effect.as(readAll(buf, 0, offset), [buf])
        }),
      write: (offset, data, fua) =>
        readOnly ? readOnlyError : fua ? Effect.andThen(pwriteAll(data, offset), datasync) : pwriteAll(data, offset),
      zero: (offset, length, mayTrim) =>
        readOnly
          ? readOnlyError
          : mayTrim && !isBlock && offset + length >= end
            ? punchTail(offset)
            : writeZeroes(offset, length),
      trim: (offset, length) =>
        readOnly ? readOnlyError : !isBlock && offset + length >= end ? punchTail(offset) : Effect.void,
      flush: fsync,
      cache: () => Effect.void,
      extents: (_offset, length) =>
        Effect.sync(() => {
          if (isBlock) return [{ length, flags: 0 }]
          const now = Fs.fstatSync(fd)
          return [{ length, flags: now.blocks === 0 ? Protocol.STATE_HOLE | Protocol.STATE_ZERO : 0 }]
        })
    } satisfies Backend.Backend
  })
