import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { isAllZero, zeroRuns } from "../src/internal/transfer/zeroRuns.js"

/** The rule spelled out byte by byte: blocks aligned to the export, partial blocks are data, neighbours joined. */
const reference = (data: Uint8Array, offset: number, blockSize: number) => {
  const kinds: Array<boolean> = []
  for (let i = 0; i < data.length; i++) {
    const blockStart = i - ((offset + i) % blockSize)
    const blockEnd = blockStart + blockSize
    const whole = blockStart >= 0 && blockEnd <= data.length
    kinds.push(whole && data.subarray(blockStart, blockEnd).every((b) => b === 0))
  }
  const runs: Array<{ start: number; length: number; zero: boolean }> = []
  kinds.forEach((zero, i) => {
    const last = runs[runs.length - 1]
    if (last !== undefined && last.zero === zero) last.length++
    else runs.push({ start: i, length: 1, zero })
  })
  return runs.length > 0 ? runs : [{ start: 0, length: data.length, zero: false }]
}

/** Bytes that are mostly zero, with a few set, at any alignment inside a larger buffer. */
const piece = fc
  .record({
    length: fc.integer({ min: 0, max: 600 }),
    lead: fc.integer({ min: 0, max: 7 }),
    set: fc.array(fc.nat(), { maxLength: 6 })
  })
  .map(({ lead, length, set }) => {
    const backing = new Uint8Array(lead + length + 5)
    const data = backing.subarray(lead, lead + length)
    for (const at of set) if (length > 0) data[at % length] = 1 + (at % 255)
    // Bytes outside the piece must not count.
    backing.fill(9, 0, lead)
    backing.fill(9, lead + length)
    return data
  })

describe("zero detection", () => {
  it("cuts a piece in zero and data runs exactly as the byte-by-byte rule does", () => {
    fc.assert(
      fc.property(
        piece,
        fc.integer({ min: 0, max: 100 }),
        fc.constantFrom(1, 2, 3, 4, 8, 16, 64),
        (data, offset, block) => {
          expect(zeroRuns(data, offset, block)).toEqual(reference(data, offset, block))
        }
      ),
      { numRuns: 2000 }
    )
  })

  it("without a block size a piece is one run, zero only if every byte is", () => {
    fc.assert(
      fc.property(piece, (data) => {
        const zero = data.every((b) => b === 0)
        expect(isAllZero(data)).toBe(zero)
        expect(zeroRuns(data, 0, undefined)).toEqual([{ start: 0, length: data.length, zero }])
      })
    )
  })
})
