import type * as Backend from "../Backend.js"

/** A read that never waits and never fails, answered at once. */
export type SyncRead = (offset: number, length: number) => ReadonlyArray<Backend.ReadChunk>

/**
 * The synchronous twins of backends' `read` functions, keyed by the function itself. A filter that replaces
 * `read` has another function, so its reads never bypass it; one that only changes flags keeps `read`, and
 * its reads may be served inline.
 */
export const syncReads = new WeakMap<Backend.Backend["read"], SyncRead>()

/** Registers `read`'s synchronous twin and gives `read` back. */
export const withSyncRead = (read: Backend.Backend["read"], now: SyncRead): Backend.Backend["read"] => {
  syncReads.set(read, now)
  return read
}
