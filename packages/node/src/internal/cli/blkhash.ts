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

/**
 * An incremental block hash: `update` with the image's bytes in order, then `hexDigest`.
 * @since 0.2.0
 * @category models
 */
export class Blkhash {
  private readonly root: Crypto.Hash
  private readonly pending: Uint8Array
  private filled = 0
  private length = 0n
  private zeroDigest: Buffer | undefined

  constructor(readonly spec: Spec) {
    this.root = Crypto.createHash(spec.digest)
    this.pending = new Uint8Array(spec.blockSize)
  }

  private block(data: Uint8Array): void {
    const full = data.length === this.spec.blockSize
    if (full && isZero(data)) {
      this.zeroDigest ??= Crypto.createHash(this.spec.digest).update(data).digest()
      this.root.update(this.zeroDigest)
    } else this.root.update(Crypto.createHash(this.spec.digest).update(data).digest())
  }

  update(data: Uint8Array): void {
    this.length += BigInt(data.length)
    let at = 0
    if (this.filled > 0) {
      const take = Math.min(this.spec.blockSize - this.filled, data.length)
      this.pending.set(data.subarray(0, take), this.filled)
      this.filled += take
      at = take
      if (this.filled < this.spec.blockSize) return
      this.block(this.pending)
      this.filled = 0
    }
    for (; at + this.spec.blockSize <= data.length; at += this.spec.blockSize)
      this.block(data.subarray(at, at + this.spec.blockSize))
    if (at < data.length) {
      this.pending.set(data.subarray(at), 0)
      this.filled = data.length - at
    }
  }

  hexDigest(): string {
    if (this.filled > 0) this.block(this.pending.subarray(0, this.filled))
    this.filled = 0
    const length = Buffer.alloc(8)
    length.writeBigUInt64LE(this.length)
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
