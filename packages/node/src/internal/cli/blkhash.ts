/**
 * The block hash of `nbdcopy --blkhash` (libnbd 1.24; Nir Soffer's blkhash, its flat form): the image is
 * cut into blocks (default 64 KiB; the last may be short), each block is digested, and the result is
 * `H( H(block 1) || H(block 2) || ... || H(block N) || le64(length) )`, H being the chosen digest (default
 * sha256). An all-zero block reuses one precomputed digest. libnbd's known-answer vectors
 * (copy/copy-blkhash-known.sh) are in the tests.
 *
 * @since 0.2.0
 */
import * as Crypto from "node:crypto"

/**
 * What `--blkhash=DIGEST[/BLOCKSIZE]` names.
 * @since 0.2.0
 * @category models
 */
export interface Spec {
  readonly digest: string
  readonly blockSize: number
}

/**
 * The default: sha256 over 64 KiB blocks.
 * @since 0.2.0
 * @category models
 */
export const defaults: Spec = { digest: "sha256", blockSize: 64 * 1024 }

/** A block's place in the hash once it is digested: its digest, or a count of full zero blocks in a row. */
type Finished = Buffer | number

/** A block only part of which has arrived: its bytes so far (zero elsewhere) and how many arrived. */
interface Partial {
  readonly bytes: Uint8Array
  filled: number
}

/**
 * An incremental block hash. The bytes may come in any order, as a parallel copy reads them: `write` and
 * `zero` at their offsets, each byte once (or `update` for bytes in order), then `hexDigest`. A block is
 * digested as soon as all of it has come; the root takes the digests in block order, so it holds only
 * the blocks that finished ahead of one still missing.
 * @since 0.2.0
 * @category models
 */
export class Blkhash {
  private readonly root: Crypto.Hash
  private readonly partial = new Map<number, Partial>()
  private readonly finished = new Map<number, Finished>()
  /** The next block the root takes. */
  private next = 0
  /** Where the bytes seen so far end: the image's length once all have come. */
  private end = 0
  /** Where `update` appends. */
  private appended = 0
  private zeroDigest: Buffer | undefined
  /** The zero block's digest many times over, for long zero runs. */
  private zeroDigests: Buffer | undefined

  constructor(readonly spec: Spec) {
    this.root = Crypto.createHash(spec.digest)
  }

  private digestOfZeroBlock(): Buffer {
    this.zeroDigest ??= Crypto.createHash(this.spec.digest).update(new Uint8Array(this.spec.blockSize)).digest()
    return this.zeroDigest
  }

  /** A block's digest; a full all-zero block reuses one precomputed digest, as blkhash does. */
  private digest(data: Uint8Array): Buffer {
    return data.length === this.spec.blockSize && isZero(data)
      ? this.digestOfZeroBlock()
      : Crypto.createHash(this.spec.digest).update(data).digest()
  }

  private finish(index: number, value: Finished): void {
    this.finished.set(index, value)
    for (let f = this.finished.get(this.next); f !== undefined; f = this.finished.get(this.next)) {
      this.finished.delete(this.next)
      if (typeof f === "number") {
        this.rootZeroes(f)
        this.next += f
      } else {
        this.root.update(f)
        this.next++
      }
    }
  }

  /** `count` zero-block digests into the root, many per update. */
  private rootZeroes(count: number): void {
    const one = this.digestOfZeroBlock()
    const batch = 1024
    if (this.zeroDigests === undefined) {
      this.zeroDigests = Buffer.alloc(one.length * batch)
      for (let i = 0; i < batch; i++) one.copy(this.zeroDigests, i * one.length)
    }
    for (let left = count; left > 0; left -= batch)
      this.root.update(this.zeroDigests.subarray(0, Math.min(left, batch) * one.length))
  }

  /** Bytes of one block, at `within` it: the block is digested once all of it has come. */
  private fill(index: number, within: number, data: Uint8Array | number): void {
    let p = this.partial.get(index)
    if (p === undefined) {
      p = { bytes: new Uint8Array(this.spec.blockSize), filled: 0 }
      this.partial.set(index, p)
    }
    // Zeroes need no copying: the block's bytes start as zeroes and each byte comes once.
    if (typeof data === "number") p.filled += data
    else {
      p.bytes.set(data, within)
      p.filled += data.length
    }
    if (p.filled === this.spec.blockSize) {
      this.partial.delete(index)
      this.finish(index, this.digest(p.bytes))
    }
  }

  /** Walks `[offset, offset + length)` block by block: whole blocks to `whole`, parts of one to `part`. */
  private split(
    offset: number,
    length: number,
    whole: (index: number, at: number) => void,
    part: (index: number, within: number, at: number, n: number) => void
  ): void {
    const size = this.spec.blockSize
    this.end = Math.max(this.end, offset + length)
    for (let at = 0; at < length;) {
      const index = Math.floor((offset + at) / size)
      const within = offset + at - index * size
      const n = Math.min(size - within, length - at)
      if (n === size) whole(index, at)
      else part(index, within, at, n)
      at += n
    }
  }

  /** The bytes at `offset`. */
  write(offset: number, data: Uint8Array): void {
    const size = this.spec.blockSize
    this.split(
      offset,
      data.length,
      (index, at) => this.finish(index, this.digest(data.subarray(at, at + size))),
      (index, within, at, n) => this.fill(index, within, data.subarray(at, at + n))
    )
  }

  /** `length` bytes that read as zeroes at `offset`, without a buffer of them. */
  zero(offset: number, length: number): void {
    let run: { first: number; count: number } | undefined
    const flush = () => {
      if (run !== undefined) this.finish(run.first, run.count)
      run = undefined
    }
    this.split(
      offset,
      length,
      (index) => {
        if (run === undefined) run = { first: index, count: 0 }
        run.count++
      },
      (index, within, _at, n) => {
        flush()
        this.fill(index, within, n)
      }
    )
    flush()
  }

  /** The next bytes in order, after those `update` had before. */
  update(data: Uint8Array): void {
    this.write(this.appended, data)
    this.appended += data.length
  }

  /** The hash, once every byte of the image has come; a short last block is digested here. */
  hexDigest(): string {
    const last = Math.floor(this.end / this.spec.blockSize)
    const tail = this.partial.get(last)
    if (tail !== undefined && tail.filled === this.end - last * this.spec.blockSize) {
      this.partial.delete(last)
      this.finish(last, this.digest(tail.bytes.subarray(0, tail.filled)))
    }
    if (this.next * this.spec.blockSize < this.end || this.partial.size > 0)
      throw new Error(`blkhash: bytes before ${this.end} are missing`)
    const length = Buffer.alloc(8)
    length.writeBigUInt64LE(BigInt(this.end))
    return this.root.update(length).digest("hex")
  }
}

const isZero = (data: Uint8Array): boolean => {
  const words = data.byteOffset % 8 === 0 && data.length % 8 === 0
  if (words) {
    const view = new BigUint64Array(data.buffer, data.byteOffset, data.length / 8)
    for (let i = 0; i < view.length; i++) if (view[i] !== 0n) return false
    return true
  }
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false
  return true
}

/**
 * Parses `DIGEST[/BLOCKSIZE]` ("sha256", "md5/4", "sha512/512k"); undefined fields take the defaults.
 * @since 0.2.0
 * @category parsing
 */
export const parseSpec = (
  text: string,
  parseSize: (s: string) => number | undefined
): { readonly spec: Spec } | { readonly error: string } => {
  const [name, size] = text.split("/", 2)
  const digest = name === undefined || name === "" ? defaults.digest : name.toLowerCase()
  if (!Crypto.getHashes().includes(digest)) return { error: `--blkhash: unknown digest '${name}' (EINVAL)` }
  if (size === undefined) return { spec: { digest, blockSize: defaults.blockSize } }
  const blockSize = parseSize(size)
  if (blockSize === undefined || blockSize < 1 || blockSize > 64 * 1024 * 1024)
    return { error: `--blkhash: bad block size '${size}' (EINVAL)` }
  return { spec: { digest, blockSize } }
}
