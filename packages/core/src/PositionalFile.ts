/**
 * Reads and writes at an offset on an open file, which `FileSystem.File` does not offer for writes
 * (it has one position per handle, moved by `seek`). A copy from or to a file uses this service when its
 * context has one, many requests in flight on one descriptor and no fiber step per request; without it, the
 * copy seeks and reads through `FileSystem`, one request at a time per handle. The files are still opened,
 * sized and closed through `FileSystem`: this service only moves bytes on their descriptors.
 *
 * `@effect-nbd/node` provides it as `NodePositionalFile.layer`.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import type * as PlatformError from "effect/PlatformError"

/**
 * An open file's descriptor. A copy takes it from the `fd` property of the `FileSystem.File` it opened (Node's
 * file system has one); a file without one is copied through `FileSystem` instead.
 * @since 1.0.0
 * @category models
 */
export type Descriptor = number

/**
 * The two calls. Each starts the I/O at once and calls `done` once, with the error or the number of bytes
 * moved (fewer than asked only at the end of a file, for a read). The I/O cannot be called back: a caller
 * must let it finish before it closes the file.
 * @since 0.2.0
 * @category models
 */
export interface Service {
  readonly read: (
    fd: Descriptor,
    offset: number,
    into: Uint8Array,
    done: (error: PlatformError.PlatformError | undefined, bytes: number) => void
  ) => void
  readonly write: (
    fd: Descriptor,
    offset: number,
    data: Uint8Array,
    done: (error: PlatformError.PlatformError | undefined, bytes: number) => void
  ) => void
}

/**
 * The positional file service.
 * @since 0.2.0
 * @category services
 */
export class PositionalFile extends Context.Service<PositionalFile, Service>()("@effect-nbd/core/PositionalFile") {}
