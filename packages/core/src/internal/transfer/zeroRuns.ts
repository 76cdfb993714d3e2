/**
 * Zero detection: whether a buffer reads as zeroes, and how a piece that was read is cut into runs of zeroes
 * and of data (whole, or in blocks aligned to the export as nbdcopy's -S N does), so zero runs can be written
 * as NBD_CMD_WRITE_ZEROES or left as holes.
 */

/** Whether every byte is zero, four at a time where the alignment allows. */
export const isAllZero = (b: Uint8Array): boolean => isZeroRange(b, undefined, 0, b.length)

/**
 * Whether `b[from, to)` is all zeroes; `words` is a view of `b`'s whole buffer as 32-bit words, made once by
 * a caller that checks many ranges of one buffer.
 */
const isZeroRange = (b: Uint8Array, words: Uint32Array | undefined, from: number, to: number): boolean => {
  if (to <= from) return true
  // Data usually shows itself in the first or the last byte.
  if (b[from] !== 0 || b[to - 1] !== 0) return false
  let i = from
  while (i < to && ((b.byteOffset + i) & 3) !== 0) if (b[i++] !== 0) return false
  const count = (to - i) >>> 2
  if (count > 0) {
    const w = words ?? new Uint32Array(b.buffer, b.byteOffset + i, count)
    const first = words === undefined ? 0 : (b.byteOffset + i) >>> 2
    for (let j = first; j < first + count; j++) if (w[j] !== 0) return false
    i += count * 4
  }
  for (; i < to; i++) if (b[i] !== 0) return false
  return true
}

/** A part of a piece, relative to its start: all zeroes or data. */
export interface Run {
  readonly start: number
  readonly length: number
  readonly zero: boolean
}

/**
 * How zero detection cuts a piece read at `offset`. Without `blockSize` the piece is one run, zero only
 * if every byte is. With it (nbdcopy's -S N), the piece is checked in blocks of `blockSize` aligned to the
 * export, neighbours of one kind joined; a partial block at either end is data, as nbdcopy treats it.
 */
export const zeroRuns = (data: Uint8Array, offset: number, blockSize: number | undefined): ReadonlyArray<Run> => {
  const n = data.length
  if (blockSize === undefined) return [{ start: 0, length: n, zero: isAllZero(data) }]
  const runs: Array<Run> = []
  // A run is only recorded where the kind changes: most pieces are one run of data.
  let runStart = 0
  let runZero = false
  const cut = (at: number, zero: boolean) => {
    if (zero === runZero) return
    if (at > runStart) runs.push({ start: runStart, length: at - runStart, zero: runZero })
    runStart = at
    runZero = zero
  }
  const words = new Uint32Array(data.buffer, 0, data.buffer.byteLength >>> 2)
  const head = Math.min((blockSize - (offset % blockSize)) % blockSize, n)
  let at = head
  for (; at + blockSize <= n; at += blockSize) cut(at, isZeroRange(data, words, at, at + blockSize))
  cut(at, false)
  if (n > runStart) runs.push({ start: runStart, length: n - runStart, zero: runZero })
  return runs.length > 0 ? runs : [{ start: 0, length: n, zero: false }]
}
