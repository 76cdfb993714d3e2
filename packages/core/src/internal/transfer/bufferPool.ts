/**
 * The request buffers of a copy: a free list, so a copy of any size allocates no more buffers than it has
 * requests in flight.
 */

/** Request buffers, reused once the write that used one completes: at most one per worker is ever allocated. */
export class BufferPool {
  private readonly free: Array<Uint8Array> = []
  allocated = 0
  constructor(readonly size: number) {}
  acquire(length: number): Uint8Array {
    let buffer = this.free.pop()
    if (buffer === undefined) {
      buffer = new Uint8Array(this.size)
      this.allocated++
    }
    return length === this.size ? buffer : buffer.subarray(0, length)
  }
  release(view: Uint8Array): void {
    this.free.push(view.length === this.size ? view : new Uint8Array(view.buffer, 0, this.size))
  }
}
