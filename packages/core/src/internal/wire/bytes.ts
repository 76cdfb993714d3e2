/**
 * Big-endian byte helpers shared by both halves of the codec. Pure: no I/O, no `node:` imports.
 */

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder("utf-8", { fatal: false })

export const utf8 = (s: string): Uint8Array => textEncoder.encode(s)
export const fromUtf8 = (b: Uint8Array): string => textDecoder.decode(b)

export const u16 = (b: Uint8Array, at: number): number => (b[at]! << 8) | b[at + 1]!

export const u32 = (b: Uint8Array, at: number): number =>
  ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0

export const u64 = (b: Uint8Array, at: number): bigint => (BigInt(u32(b, at)) << 32n) | BigInt(u32(b, at + 4))

/** A u64 as a number when it fits in 53 bits, else `undefined`: cookies and lengths on the hot path. */
export const u64Small = (b: Uint8Array, at: number): number | undefined => {
  const hi = u32(b, at)
  if (hi > 0x1fffff) return undefined
  return hi * 0x100000000 + u32(b, at + 4)
}

export const putU16 = (b: Uint8Array, at: number, v: number): void => {
  b[at] = (v >>> 8) & 0xff
  b[at + 1] = v & 0xff
}

export const putU32 = (b: Uint8Array, at: number, v: number): void => {
  b[at] = (v >>> 24) & 0xff
  b[at + 1] = (v >>> 16) & 0xff
  b[at + 2] = (v >>> 8) & 0xff
  b[at + 3] = v & 0xff
}

export const putU64 = (b: Uint8Array, at: number, v: bigint | number): void => {
  if (typeof v === "number") {
    putU32(b, at, Math.floor(v / 0x100000000))
    putU32(b, at + 4, v >>> 0)
  } else {
    putU32(b, at, Number((v >> 32n) & 0xffffffffn))
    putU32(b, at + 4, Number(v & 0xffffffffn))
  }
}

/** Concatenates byte arrays into one new array. */
export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let size = 0
  for (const p of parts) size += p.length
  const out = new Uint8Array(size)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** Builds a message field by field. */
export class ByteWriter {
  private buf: Uint8Array
  private at = 0
  constructor(size = 64) {
    this.buf = new Uint8Array(size)
  }
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.at + n))
    next.set(this.buf.subarray(0, this.at))
    this.buf = next
  }
  u8(v: number): this {
    this.room(1)
    this.buf[this.at++] = v & 0xff
    return this
  }
  u16(v: number): this {
    this.room(2)
    putU16(this.buf, this.at, v)
    this.at += 2
    return this
  }
  u32(v: number): this {
    this.room(4)
    putU32(this.buf, this.at, v)
    this.at += 4
    return this
  }
  u64(v: bigint | number): this {
    this.room(8)
    putU64(this.buf, this.at, v)
    this.at += 8
    return this
  }
  bytes(b: Uint8Array): this {
    this.room(b.length)
    this.buf.set(b, this.at)
    this.at += b.length
    return this
  }
  /** A string prefixed with its u32 byte length. */
  lenString(s: string | Uint8Array): this {
    const b = typeof s === "string" ? utf8(s) : s
    return this.u32(b.length).bytes(b)
  }
  zeroes(n: number): this {
    this.room(n)
    this.buf.fill(0, this.at, this.at + n)
    this.at += n
    return this
  }
  get length(): number {
    return this.at
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.at)
  }
}

/** Chunks smaller than this are copied into a shared block, so a trickle of tiny reads stays compact. */
const SMALL_CHUNK = 16 * 1024

/** The size of the blocks small or borrowed chunks are copied into. */
const BLOCK_SIZE = 64 * 1024

/**
 * An accumulator of incoming chunks that hands out exact-size slices, whatever the chunk boundaries, in time
 * linear in the bytes pushed. A chunk pushed as borrowed (the transport reuses its memory) is copied at once;
 * so is any small chunk, into a block shared with its neighbours. Slices that lie inside one stored chunk are
 * returned without copying; stored bytes are never written again, so a returned slice stays valid.
 */
export class ByteQueue {
  private chunks: Array<Uint8Array> = []
  /** Index of the first live chunk: chunks before it are consumed (no `shift`, which is O(n) per call). */
  private first = 0
  private head = 0
  private size = 0
  private block: Uint8Array | undefined = undefined
  private blockFill = 0
  /** Where the last chunk starts in `block`, when the last chunk is the block's open tail; else -1. */
  private tailStart = -1

  get available(): number {
    return this.size
  }

  /** Adds a chunk. `borrowed`: the caller may overwrite its memory after this returns, so it is copied. */
  push(chunk: Uint8Array, borrowed = false): void {
    if (chunk.length === 0) return
    this.size += chunk.length
    if (!borrowed && chunk.length >= SMALL_CHUNK) {
      this.chunks.push(chunk)
      this.tailStart = -1
      return
    }
    let at = 0
    while (at < chunk.length) {
      if (this.block === undefined || this.blockFill === this.block.length) {
        this.block = new Uint8Array(Math.max(BLOCK_SIZE, chunk.length - at))
        this.blockFill = 0
        this.tailStart = -1
      }
      const n = Math.min(chunk.length - at, this.block.length - this.blockFill)
      this.block.set(chunk.subarray(at, at + n), this.blockFill)
      this.blockFill += n
      at += n
      if (this.tailStart >= 0) this.chunks[this.chunks.length - 1] = this.block.subarray(this.tailStart, this.blockFill)
      else {
        this.tailStart = this.blockFill - n
        this.chunks.push(this.block.subarray(this.tailStart, this.blockFill))
      }
    }
  }

  /**
   * Removes and returns exactly `n` bytes; the caller checks `available` first. Bytes inside one stored chunk
   * come back as a view of it; others are copied into `into` (at least `n` bytes) when given, else into a new
   * array.
   */
  take(n: number, into?: Uint8Array): Uint8Array {
    if (n === 0) return new Uint8Array(0)
    const first = this.chunks[this.first]!
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n)
      this.advance(n)
      return out
    }
    const out = into === undefined ? new Uint8Array(n) : into.subarray(0, n)
    this.copyInto(out, 0, n)
    return out
  }

  /** Removes `n` bytes and copies them into `target` at `at`. */
  copyInto(target: Uint8Array, at: number, n: number): void {
    let done = 0
    while (done < n) {
      const first = this.chunks[this.first]!
      const step = Math.min(n - done, first.length - this.head)
      target.set(first.subarray(this.head, this.head + step), at + done)
      done += step
      this.advance(step)
    }
  }

  /** Discards `n` bytes. */
  skip(n: number): void {
    let left = n
    while (left > 0) {
      const first = this.chunks[this.first]!
      const step = Math.min(left, first.length - this.head)
      left -= step
      this.advance(step)
    }
  }

  /** Takes everything that is buffered. */
  drain(): Uint8Array {
    return this.take(this.size)
  }

  private advance(n: number): void {
    this.head += n
    this.size -= n
    if (this.head < this.chunks[this.first]!.length) return
    this.head = 0
    this.first += 1
    if (this.first === this.chunks.length) {
      this.chunks = []
      this.first = 0
      this.tailStart = -1
    } else if (this.first >= 1024 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first)
      this.first = 0
    }
  }
}
