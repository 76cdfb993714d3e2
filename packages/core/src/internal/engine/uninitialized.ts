/**
 * Memory for fresh reads without the cost of clearing it. A fresh 256 KiB `Uint8Array` is zeroed (calloc, or
 * the kernel clearing new pages); the read overwrites every byte of it anyway. Where the runtime has Node's
 * `Buffer` (Node, Bun), `allocUnsafeSlow` gives memory that is not cleared; elsewhere a plain `Uint8Array`.
 */
import type { Allocate } from "./pending.js"

interface UnsafeAllocator {
  readonly allocUnsafeSlow: (size: number) => Uint8Array
}

const runtimeBuffer = (globalThis as { readonly Buffer?: Partial<UnsafeAllocator> }).Buffer

/**
 * `allocUnsafeSlow`, never `allocUnsafe`: the latter carves small buffers out of a shared pool, and a caller
 * holding one could reach other reads' bytes through its `.buffer`. The result is a plain `Uint8Array` over
 * the buffer's own memory, so the caller gets the same type as from `new Uint8Array` (a `Buffer`'s `slice` is
 * a view, not a copy).
 */
export const uninitialized: Allocate =
  typeof runtimeBuffer?.allocUnsafeSlow === "function"
    ? ((allocUnsafeSlow) => (count) => {
        const memory = allocUnsafeSlow(count)
        return new Uint8Array(memory.buffer, memory.byteOffset, count)
      })(runtimeBuffer.allocUnsafeSlow.bind(runtimeBuffer))
    : (count) => new Uint8Array(count)
