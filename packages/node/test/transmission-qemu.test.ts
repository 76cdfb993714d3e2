import { HandleState, Nbd, Protocol } from "@effect-nbd/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { clientMap, connectWithAllocation as connect } from "./util/maps.js"
import { type MapExtent, qcow2Image, qemuImgMap, qemuNbd } from "./util/peers.js"

const { CmdFlag } = Nbd

const KiB = 1024
const MiB = 1024 * 1024
const SIZE = 4 * MiB

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)

/**
 * A 4 MiB qcow2 image (64 KiB clusters): 64 KiB of 0xab at 1 MiB, a zero cluster run (allocated as zero,
 * reads as zero) at 2 MiB, 4 KiB of 0xcd at 3 MiB (its whole cluster allocated), the rest unallocated.
 */
const image = qcow2Image("4M", ["write -P 0xab 1M 64k", "write -z 2M 128k", "write -P 0xcd 3M 4k"])

/** What the image must read as. */
const contents = (): Uint8Array => {
  const out = new Uint8Array(SIZE)
  out.fill(0xab, MiB, MiB + 64 * KiB)
  out.fill(0xcd, 3 * MiB, 3 * MiB + 4 * KiB)
  return out
}

/** The flags of the map extent holding `offset`. */
const flagsAt = (map: ReadonlyArray<MapExtent>, offset: number): number => {
  const e = map.find((x) => x.offset <= offset && offset < x.offset + x.length)
  if (e === undefined) throw new Error(`no extent at ${offset}`)
  return e.flags
}

/** Whether the whole range [offset, offset+length) lies in extents with (or without) STATE_HOLE. */
const allHole = (map: ReadonlyArray<MapExtent>, offset: number, length: number, hole: boolean): boolean =>
  map
    .filter((e) => e.offset < offset + length && offset < e.offset + e.length)
    .every((e) => ((e.flags & Protocol.STATE_HOLE) !== 0) === hole)

describe("transmission against qemu-nbd (qcow2)", () => {
  it.live("blockStatus matches qemu-img map extent by extent", () =>
    Effect.gen(function* () {
      const img = yield* image
      const expected = yield* qemuImgMap(img)
      // The image is what we meant to make: data at 1M and 3M, holes elsewhere, all of it covered.
      expect(expected.reduce((n, e) => n + e.length, 0)).toBe(SIZE)
      expect(flagsAt(expected, MiB)).toBe(0)
      expect(flagsAt(expected, 3 * MiB)).toBe(0)
      expect(flagsAt(expected, 0)).toBe(Protocol.STATE_HOLE | Protocol.STATE_ZERO)
      expect(flagsAt(expected, 2 * MiB)).toBe(Protocol.STATE_HOLE | Protocol.STATE_ZERO)
      const server = yield* qemuNbd(img, ["--format=qcow2"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(SIZE))
      expect(yield* clientMap(h, SIZE)).toEqual(expected)
      // From an unaligned offset in the middle of a hole, the first extent ends where qemu-img says.
      const entries = yield* Nbd.blockStatus(h, SIZE - 12345, 12345)
      expect(entries).toHaveLength(1)
      expect(entries[0]!.context).toBe("base:allocation")
      expect(entries[0]!.offset).toBe(12345n)
      expect(entries[0]!.extents[0]!).toEqual({ length: BigInt(MiB - 12345), flags: 3 })
    })
  )

  it.live("REQ_ONE gives exactly one extent no longer than the request", () =>
    Effect.gen(function* () {
      const img = yield* image
      const map = yield* qemuImgMap(img)
      const server = yield* qemuNbd(img, ["--format=qcow2"])
      const h = yield* connect(server.uri)
      for (const [count, offset] of [
        [SIZE, 0],
        [SIZE - MiB, MiB],
        [4 * KiB, MiB + 4 * KiB],
        [2 * MiB, 2 * MiB - 512],
        [512, SIZE - 512]
      ] as const) {
        const entries = yield* Nbd.blockStatus(h, count, offset, { flags: CmdFlag.REQ_ONE })
        expect(entries).toHaveLength(1)
        expect(entries[0]!.extents).toHaveLength(1)
        const extent = entries[0]!.extents[0]!
        expect(extent.length).toBeGreaterThan(0n)
        expect(extent.length).toBeLessThanOrEqual(BigInt(count))
        expect(extent.flags).toBe(flagsAt(map, offset))
      }
    })
  )

  it.live("preadStructured reports holes as Hole chunks where the image is unallocated or zero", () =>
    Effect.gen(function* () {
      const img = yield* image
      const map = yield* qemuImgMap(img)
      const server = yield* qemuNbd(img, ["--format=qcow2"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
      const want = contents()
      for (const [count, offset] of [
        [SIZE, 0],
        [128 * KiB, MiB - 64 * KiB],
        [MiB + 5000, 2 * MiB - 1000]
      ] as const) {
        const read = yield* Nbd.preadStructured(h, count, offset)
        expect(same(read.data, want.subarray(offset, offset + count))).toBe(true)
        // The chunks tile the request exactly, without overlap.
        const sorted = [...read.chunks].sort((a, b) => a.offset - b.offset)
        let next = offset
        for (const c of sorted) {
          expect(c._tag).not.toBe("Error")
          if (c._tag === "Error") continue
          expect(c.offset).toBe(next)
          expect(c.length).toBeGreaterThan(0)
          next += c.length
          // A hole chunk only where the image has no data, a data chunk only where it has.
          expect(allHole(map, c.offset, c.length, c._tag === "Hole")).toBe(true)
        }
        expect(next).toBe(offset + count)
        // And every hole byte of the map inside the request came as a hole.
        const holeBytes = read.chunks.reduce((n, c) => n + (c._tag === "Hole" ? c.length : 0), 0)
        const mapHoleBytes = map
          .filter((e) => e.flags & Protocol.STATE_HOLE)
          .reduce(
            (n, e) => n + Math.max(0, Math.min(e.offset + e.length, offset + count) - Math.max(e.offset, offset)),
            0
          )
        expect(holeBytes).toBe(mapHoleBytes)
        expect(holeBytes).toBeGreaterThan(0)
      }
      // DF: the server must not fragment the reply.
      const df = yield* Nbd.preadStructured(h, 128 * KiB, MiB - 64 * KiB, { flags: CmdFlag.DF })
      expect(df.chunks).toHaveLength(1)
      expect(df.chunks[0]).toMatchObject({ offset: MiB - 64 * KiB, length: 128 * KiB })
      expect(same(df.data, want.subarray(MiB - 64 * KiB, MiB + 64 * KiB))).toBe(true)
      // A plain pread of the same range gives the same bytes, holes zeroed.
      expect(same(yield* Nbd.pread(h, SIZE, 0), want)).toBe(true)
      // Into a dirty caller buffer: holes must be zeroed, not left as they were.
      const dirty = new Uint8Array(128 * KiB).fill(0x55)
      const into = yield* Nbd.pread(h, 128 * KiB, MiB - 64 * KiB, { buffer: dirty })
      expect(same(into, want.subarray(MiB - 64 * KiB, MiB + 64 * KiB))).toBe(true)
    })
  )

  it.live("writes, zeroes and trims through qemu-nbd read back and show in qemu-img map", () =>
    Effect.gen(function* () {
      const img = yield* image
      const server = yield* qemuNbd(img, ["--format=qcow2", "--discard=unmap"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canZero(h)).toBe(true)
      expect(yield* Nbd.canTrim(h)).toBe(true)
      const want = contents()
      const data = new Uint8Array(64 * KiB).fill(0x42)
      yield* Nbd.pwrite(h, data, 512 * KiB, { flags: CmdFlag.FUA })
      want.set(data, 512 * KiB)
      // Zero the data cluster at 1 MiB, and trim the one at 3 MiB.
      yield* Nbd.zero(h, 64 * KiB, MiB)
      want.fill(0, MiB, MiB + 64 * KiB)
      yield* Nbd.trim(h, 64 * KiB, 3 * MiB)
      want.fill(0, 3 * MiB, 3 * MiB + 64 * KiB)
      yield* Nbd.flush(h)
      expect(same(yield* Nbd.pread(h, SIZE, 0), want)).toBe(true)
      const ours = yield* clientMap(h, SIZE)
      expect(ours).toEqual(yield* qemuImgMap(img))
      expect(flagsAt(ours, 512 * KiB)).toBe(0)
      expect(flagsAt(ours, MiB) & Protocol.STATE_ZERO).toBe(Protocol.STATE_ZERO)
      expect(flagsAt(ours, 3 * MiB) & Protocol.STATE_ZERO).toBe(Protocol.STATE_ZERO)
      // The holes come back as Hole chunks in a structured read.
      const read = yield* Nbd.preadStructured(h, 2 * MiB, 0)
      expect(read.chunks.some((c) => c._tag === "Hole" && c.offset <= MiB && MiB < c.offset + c.length)).toBe(true)
      expect(
        read.chunks.some((c) => c._tag === "Data" && c.offset <= 512 * KiB && 512 * KiB < c.offset + c.length)
      ).toBe(true)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    })
  )
})
