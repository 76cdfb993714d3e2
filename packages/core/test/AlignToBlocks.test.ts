import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { alignToBlocks } from "../src/internal/transfer/nbdSides.js"
import type { Item } from "../src/internal/transfer/sides.js"

/** Items over [start, start + sum of lengths), alternating kinds as itemsOf joins neighbours. */
const itemsFrom = (start: number, lengths: ReadonlyArray<number>, firstZero: boolean): Array<Item> => {
  let at = start
  return lengths.map((length, i) => {
    const item = { offset: at, length, zero: (i % 2 === 0) === firstZero }
    at += length
    return item
  })
}

const zeroAt = (items: ReadonlyArray<Item>, at: number): boolean =>
  items.some((i) => i.zero && at >= i.offset && at < i.offset + i.length)

describe("alignToBlocks", () => {
  it("an unaligned map under 512-byte blocks: the partly zero blocks become data", () => {
    expect(alignToBlocks(itemsFrom(4096, [1, 65534, 1], false), 512)).toEqual([
      { offset: 4096, length: 512, zero: false },
      { offset: 4608, length: 65536 - 1024, zero: true },
      { offset: 4096 + 65536 - 512, length: 512, zero: false }
    ])
    // A zero run inside one block disappears; the range's own ends are kept.
    expect(alignToBlocks(itemsFrom(0, [100, 200, 212], false), 512)).toEqual([{ offset: 0, length: 512, zero: false }])
    expect(alignToBlocks(itemsFrom(0, [700, 324], true), 512)).toEqual([
      { offset: 0, length: 512, zero: true },
      { offset: 512, length: 512, zero: false }
    ])
  })

  it("without a minimum above 1 the map is unchanged", () => {
    const items = itemsFrom(0, [1, 2, 3], true)
    expect(alignToBlocks(items, 1)).toBe(items)
    expect(alignToBlocks(items, 0)).toBe(items)
  })

  it("covers the same range; zero only where it was zero, and every whole zero block stays zero", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 16 }),
        fc.array(fc.integer({ min: 1, max: 2000 }), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        fc.constantFrom(64, 512, 4096),
        (startBlock, lengths, firstZero, minimum) => {
          const start = startBlock * minimum
          const input = itemsFrom(start, lengths, firstZero)
          const end = start + lengths.reduce((a, b) => a + b, 0)
          const output = alignToBlocks(input, minimum)
          let at = start
          for (const [i, item] of output.entries()) {
            expect(item.offset).toBe(at)
            expect(item.length).toBeGreaterThan(0)
            if (i > 0) expect(item.zero).not.toBe(output[i - 1]!.zero)
            if (item.zero) {
              for (const edge of [item.offset, item.offset + item.length])
                expect(edge === start || edge === end || edge % minimum === 0).toBe(true)
              expect(zeroAt(input, item.offset) && zeroAt(input, item.offset + item.length - 1)).toBe(true)
            }
            at += item.length
          }
          expect(at).toBe(end)
          for (let block = start; block + minimum <= end; block += minimum) {
            const whole = input.some((i) => i.zero && i.offset <= block && block + minimum <= i.offset + i.length)
            if (whole) expect(zeroAt(output, block)).toBe(true)
          }
        }
      )
    )
  })
})
