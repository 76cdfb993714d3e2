/**
 * `PositionalFile` on Node: `fs.read` and `fs.write` at an offset, with their callbacks. Provide the layer
 * beside `NodeFileSystem.layer` and a copy from or to a file keeps many requests in flight on one
 * descriptor, as nbdcopy does with pread and pwrite.
 *
 * @since 0.2.0
 */
import * as PlatformError from "effect/PlatformError"
import { PositionalFile } from "@effect-nbd/core"
import * as Layer from "effect/Layer"
import * as Fs from "node:fs"

/** The tags @effect/platform-node gives the same errno codes. */
const reasonOf = (code: string | undefined): PlatformError.SystemErrorTag => {
  switch (code) {
    case "ENOENT":
      return "NotFound"
    case "EACCES":
    case "EPERM":
      return "PermissionDenied"
    case "EEXIST":
      return "AlreadyExists"
    case "EISDIR":
    case "ENOTDIR":
    case "ELOOP":
    case "EBADF":
      return "BadResource"
    case "EBUSY":
      return "Busy"
    case "EAGAIN":
      return "WouldBlock"
    default:
      return "Unknown"
  }
}

const systemError = (method: string, fd: number, cause: NodeJS.ErrnoException): PlatformError.PlatformError =>
  PlatformError.systemError({
    _tag: reasonOf(cause.code),
    module: "FileSystem",
    method,
    pathOrDescriptor: fd,
    ...(cause.syscall === undefined ? {} : { syscall: cause.syscall }),
    description: cause.message,
    cause
  })

const read: PositionalFile.Service["read"] = (fd, offset, into, done) =>
  Fs.read(fd, into, 0, into.length, offset, (error, bytes) =>
    error === null ? done(undefined, bytes) : done(systemError("read", fd, error), 0)
  )

/** Writes all of `data`, going on after a short write as `writeAll` does. */
const write: PositionalFile.Service["write"] = (fd, offset, data, done) => {
  const from = (at: number): void =>
    Fs.write(fd, data, at, data.length - at, offset + at, (error, bytes) => {
      if (error !== null) return done(systemError("write", fd, error), at)
      if (bytes === 0 && at < data.length)
        return done(
          PlatformError.systemError({
            _tag: "WriteZero",
            module: "FileSystem",
            method: "write",
            pathOrDescriptor: fd,
            description: "write returned 0 bytes written"
          }),
          at
        )
      if (at + bytes < data.length) return from(at + bytes)
      done(undefined, data.length)
    })
  from(0)
}

/**
 * The service, for `Effect.provide`.
 * @since 0.2.0
 * @category layers
 */
export const layer: Layer.Layer<PositionalFile.PositionalFile> = Layer.succeed(PositionalFile.PositionalFile, {
  read,
  write
})
