import type * as Backend from "../Backend.js"

/** A read that never waits and never fails, answered at once. */
export type SyncRead = (offset: number, length: number) => ReadonlyArray<Backend.ReadChunk>

/** A write that never waits and never fails, done at once; `data` is not kept after it returns. */
export type SyncWrite = (offset: number, data: Uint8Array) => void

/**
 * The synchronous twins of backends' `read` and `write` functions, keyed by the function itself. A filter
 * that replaces `read` or `write` has another function, so its requests never bypass it; one that only
 * changes flags keeps them, and its requests may be served inline.
 */
export const syncReads = new WeakMap<Backend.Backend["read"], SyncRead>()

/** See `syncReads`. */
export const syncWrites = new WeakMap<Backend.Backend["write"], SyncWrite>()

/** Registers `read`'s synchronous twin and gives `read` back. */
export const withSyncRead = (read: Backend.Backend["read"], now: SyncRead): Backend.Backend["read"] => {
  syncReads.set(read, now)
  return read
}

/** Registers `write`'s synchronous twin and gives `write` back. */
export const withSyncWrite = (write: Backend.Backend["write"], now: SyncWrite): Backend.Backend["write"] => {
  syncWrites.set(write, now)
  return write
}
