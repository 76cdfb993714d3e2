// NbdCopy's sparseSize, allocated and observer options as a library caller uses them, against nbdkit:
// what the result counts, what the server was sent (its log filter), what the observer saw.
import { NbdCopy, NbdError, NbdPool } from "@effect-nbd/core"
import type { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { nbdkit, tempDir } from "./util/peers.js"

const KiB = 1024
const MiB = 1024 * KiB

const poolOf = (uri: string, connections: number, settings: Nbd.Settings = { metaContexts: ["base:allocation"] }) =>
  NbdPool.make({ connections, settings, connect: (h) => NodeNbd.connectUri(h, uri) }).pipe(Effect.orDie)

/** 1 MiB where every 8K holds 4K of data, then 4K of zeroes. */
const stripes = (): Uint8Array => {
  const out = new Uint8Array(MiB)
  for (let at = 0; at < MiB; at += 8 * KiB) out.fill(0x41 + ((at / (8 * KiB)) % 26), at, at + 4 * KiB)
  return out
}

const sha256 = (data: Uint8Array): string => Crypto.createHash("sha256").update(data).digest("hex")

/** The zero requests an nbdkit log filter saw, with their trim flag. */
const zeroes = (log: string): Array<{ readonly count: number; readonly trim: boolean }> =>
  Fs.readFileSync(log, "utf8")
    .split("\n")
    .filter((l) => / Zero id=/.test(l))
    .map((l) => ({ count: Number(/count=(0x[0-9a-f]+)/.exec(l)![1]), trim: / trim=1 /.test(l) }))

describe("NbdCopy options", () => {
  it.live("sparseSize: zero runs smaller than a request are zeroed, not written; content the same", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "stripes.img")
      const data = stripes()
      Fs.writeFileSync(source, data)
      const copyTo = (name: string, options: NbdCopy.Options) =>
        Effect.gen(function* () {
          const image = Path.join(dir, `${name}.img`)
          Fs.writeFileSync(image, new Uint8Array(MiB).fill(0xff))
          const log = Path.join(dir, `${name}.log`)
          const kit = yield* nbdkit(["--filter=log", "file", image, `logfile=${log}`])
          const destination = yield* poolOf(kit.uri, 1, {})
          const result = yield* Effect.orDie(NbdCopy.copy(NbdCopy.file(source), destination, options))
          return { result, image, log }
        }).pipe(Effect.provide(NodeFileSystem.layer))
      const whole = yield* copyTo("whole", {})
      const fine = yield* copyTo("fine", { sparseSize: 4096 })
      const coarse = yield* copyTo("coarse", { sparseSize: 65536 })
      // Without sparseSize no 256K request is all zeroes; with 4096 half the bytes are zero runs.
      expect([whole.result.dataBytes, whole.result.zeroBytes]).toEqual([BigInt(MiB), 0n])
      expect([fine.result.dataBytes, fine.result.zeroBytes]).toEqual([BigInt(MiB / 2), BigInt(MiB / 2)])
      expect([coarse.result.dataBytes, coarse.result.zeroBytes]).toEqual([BigInt(MiB), 0n])
      const fineZeroes = zeroes(fine.log)
      expect(fineZeroes).toHaveLength(128)
      expect(fineZeroes.every((z) => z.count === 4096 && z.trim)).toBe(true)
      expect(zeroes(whole.log)).toHaveLength(0)
      for (const c of [whole, fine, coarse]) expect(sha256(Fs.readFileSync(c.image))).toBe(sha256(data))
      // A size that is no count is refused before anything is copied.
      for (const bad of [0, 1.5, 128 * MiB]) {
        const r = yield* Effect.result(
          NbdCopy.copy(NbdCopy.file(source), NbdCopy.discard, { sparseSize: bad }).pipe(
            Effect.provide(NodeFileSystem.layer)
          )
        )
        expect(Result.isFailure(r) && NbdError.isNbdError(r.failure) && r.failure.errno, String(bad)).toBe("EINVAL")
      }
    })
  )

  it.live("allocated: zero extents go out with NO_HOLE and the destination ends allocated", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = yield* nbdkit(["data", '"hello" @1048576 "goodbye"', "size=4M"])
      const copyTo = (name: string, options: NbdCopy.Options) =>
        Effect.gen(function* () {
          const image = Path.join(dir, `${name}.img`)
          Fs.writeFileSync(image, "")
          Fs.truncateSync(image, 4 * MiB)
          const log = Path.join(dir, `${name}.log`)
          const kit = yield* nbdkit(["--filter=log", "file", image, `logfile=${log}`])
          const from = yield* poolOf(source.uri, 1)
          const to = yield* poolOf(kit.uri, 1, {})
          const result = yield* Effect.orDie(NbdCopy.copy(from, to, options))
          return { result, image, log }
        })
      const full = yield* copyTo("full", { allocated: true })
      const holes = yield* copyTo("holes", {})
      expect(zeroes(full.log).length).toBeGreaterThan(0)
      expect(zeroes(full.log).every((z) => !z.trim)).toBe(true)
      expect(zeroes(holes.log).every((z) => z.trim)).toBe(true)
      expect(Fs.statSync(full.image).blocks * 512).toBe(4 * MiB)
      expect(Fs.statSync(holes.image).blocks * 512).toBeLessThan(MiB)
      expect(sha256(Fs.readFileSync(full.image))).toBe(sha256(Fs.readFileSync(holes.image)))
    })
  )

  it.live("observer: every byte of the source once, data as read and holes as zero ranges", () =>
    Effect.gen(function* () {
      const source = yield* nbdkit(["data", '"hello" @1048576 (1 2 3)*100000 @3145728 "end"', "size=4M"])
      const expected = new Uint8Array(4 * MiB)
      expected.set(Buffer.from("hello"), 0)
      for (let i = 0; i < 300000; i++) expected[MiB + i] = (i % 3) + 1
      expected.set(Buffer.from("end"), 3 * MiB)
      for (const destination of ["discard", "pool"] as const) {
        const seen = new Uint8Array(4 * MiB)
        const times = new Uint8Array(4 * MiB)
        let zeroBytes = 0
        const observer: NbdCopy.Observer = {
          data: (offset, bytes) => {
            seen.set(bytes, offset)
            for (let i = 0; i < bytes.length; i++) times[offset + i]!++
          },
          zero: (offset, length) => {
            zeroBytes += length
            for (let i = 0; i < length; i++) times[offset + i]!++
          }
        }
        const from = yield* poolOf(source.uri, 4)
        const to =
          destination === "discard" ? NbdCopy.discard : yield* poolOf((yield* nbdkit(["memory", "4M"])).uri, 4, {})
        yield* Effect.orDie(NbdCopy.copy(from, to, { observer, requestSize: 64 * KiB }))
        expect(
          times.every((t) => t === 1),
          destination
        ).toBe(true)
        expect(sha256(seen), destination).toBe(sha256(expected))
        // The holes between the data were never read: block status gave them as zero ranges.
        expect(zeroBytes, destination).toBeGreaterThan(2 * MiB)
      }
    })
  )
})
