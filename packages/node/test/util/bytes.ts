import * as Crypto from "node:crypto"

/** The hex sha256 of some bytes. */
export const sha256 = (data: Uint8Array): string => Crypto.createHash("sha256").update(data).digest("hex")

/** Deterministic bytes (xorshift32 from `seed`) that no request size divides into repeats. */
export const noise = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
