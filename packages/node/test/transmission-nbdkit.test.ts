import { HandleState, Nbd, NbdError, Protocol } from "@effect-nbd/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { clientMap, connectWithAllocation as connect } from "./util/maps.js"
import { nbdinfoMap, nbdkit, tempDir } from "./util/peers.js"

const { CmdFlag, Strict } = Nbd

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff || 1
  return out
}

const filled = (n: number, value: number): Uint8Array => new Uint8Array(n).fill(value)

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)

const isZero = (a: Uint8Array): boolean => a.every((b) => b === 0)

/** The request must be refused by the client: its typed error has `errno`, and not a byte was sent. */
const refusedLocally = <A>(h: Nbd.Handle, request: Effect.Effect<A, NbdError.NbdError>, errno: string) =>
  Effect.gen(function* () {
    const before = yield* Nbd.stats(h)
    const error = yield* Effect.flip(request)
    expect(error._tag).not.toBe("CommandError")
    expect(error.errno).toBe(errno)
    const after = yield* Nbd.stats(h)
    expect(after.bytesSent).toBe(before.bytesSent)
    expect(after.chunksSent).toBe(before.chunksSent)
    expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    return error
  })

/** The request must reach the server, whose error comes back as a CommandError with `errno`; the handle stays Ready. */
const refusedByServer = <A>(h: Nbd.Handle, request: Effect.Effect<A, NbdError.NbdError>, errno: string) =>
  Effect.gen(function* () {
    const before = yield* Nbd.stats(h)
    const error = yield* Effect.flip(request)
    expect(error._tag).toBe("CommandError")
    expect(error.errno).toBe(errno)
    const after = yield* Nbd.stats(h)
    expect(after.bytesSent).toBeGreaterThanOrEqual(before.bytesSent + 28)
    expect(after.chunksReceived).toBeGreaterThan(before.chunksReceived)
    expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    return error
  })

describe("transmission against nbdkit memory", () => {
  it.live("pwrite with and without FUA reads back", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canFua(h)).toBe(true)
      const plain = bytes(8192, 1)
      const fua = bytes(12288, 2)
      yield* Nbd.pwrite(h, plain, 0)
      yield* Nbd.pwrite(h, fua, 65536, { flags: CmdFlag.FUA })
      // An unaligned write inside the first one.
      const small = filled(100, 0x5a)
      yield* Nbd.pwrite(h, small, 1001)
      const expected = new Uint8Array(plain)
      expected.set(small, 1001)
      expect(same(yield* Nbd.pread(h, 8192, 0), expected)).toBe(true)
      expect(same(yield* Nbd.pread(h, 12288, 65536), fua)).toBe(true)
      // Around the writes nothing changed.
      expect(isZero(yield* Nbd.pread(h, 65536 - 8192, 8192))).toBe(true)
      expect(isZero(yield* Nbd.pread(h, 4096, 65536 + 12288))).toBe(true)
      // Into a caller's buffer.
      const into = new Uint8Array(12288)
      const result = yield* Nbd.pread(h, 12288, 65536, { buffer: into })
      expect(result).toBe(into)
      expect(same(into, fua)).toBe(true)
    })
  )

  it.live("zero with and without NO_HOLE and FAST_ZERO reads back as zeroes", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canZero(h)).toBe(true)
      // nbdinfo reports can_fast_zero: true for nbdkit memory.
      expect(yield* Nbd.canFastZero(h)).toBe(true)
      const cases: ReadonlyArray<readonly [number, number]> = [
        [0, 0],
        [65536, CmdFlag.NO_HOLE],
        [131072, CmdFlag.FAST_ZERO],
        [196608, CmdFlag.NO_HOLE | CmdFlag.FUA],
        [262144, CmdFlag.FAST_ZERO | CmdFlag.FUA]
      ]
      for (const [offset, flags] of cases) {
        yield* Nbd.pwrite(h, filled(65536, 0xee), offset)
        // Zero the middle 32 KiB, unaligned to the page.
        yield* Nbd.zero(h, 32768, offset + 4096, { flags })
        const back = yield* Nbd.pread(h, 65536, offset)
        expect(back.subarray(0, 4096).every((b) => b === 0xee)).toBe(true)
        expect(isZero(back.subarray(4096, 4096 + 32768))).toBe(true)
        expect(back.subarray(4096 + 32768).every((b) => b === 0xee)).toBe(true)
      }
    })
  )

  it.live("FAST_ZERO the server cannot do fast fails ENOTSUP and writes nothing; a plain zero still works", () =>
    Effect.gen(function* () {
      // The delay filter with delay-fast-zero=false answers fast zero requests with ENOTSUP at once.
      const server = yield* nbdkit([
        "--log=null",
        "--filter=delay",
        "memory",
        "1M",
        "delay-zero=10ms",
        "delay-fast-zero=false"
      ])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canFastZero(h)).toBe(true)
      yield* Nbd.pwrite(h, filled(8192, 0x3c), 0)
      yield* refusedByServer(h, Nbd.zero(h, 8192, 0, { flags: CmdFlag.FAST_ZERO }), "ENOTSUP")
      expect(same(yield* Nbd.pread(h, 8192, 0), filled(8192, 0x3c))).toBe(true)
      yield* Nbd.zero(h, 8192, 0)
      expect(isZero(yield* Nbd.pread(h, 8192, 0))).toBe(true)
    })
  )

  it.live("trim reads back as zeroes on the memory plugin; cache and flush change nothing", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canTrim(h)).toBe(true)
      expect(yield* Nbd.canCache(h)).toBe(true)
      expect(yield* Nbd.canFlush(h)).toBe(true)
      const data = bytes(262144, 3)
      yield* Nbd.pwrite(h, data, 0)
      yield* Nbd.cache(h, 262144, 0)
      yield* Nbd.flush(h)
      expect(same(yield* Nbd.pread(h, 262144, 0), data)).toBe(true)
      // The memory plugin's trim zeroes (nbdkit-memory-plugin(1)); here aligned to its 32 KiB pages.
      yield* Nbd.trim(h, 65536, 65536)
      yield* Nbd.trim(h, 1000, 200000, { flags: CmdFlag.FUA })
      yield* Nbd.flush(h)
      const back = yield* Nbd.pread(h, 262144, 0)
      const expected = new Uint8Array(data)
      expected.fill(0, 65536, 131072)
      expected.fill(0, 200000, 201000)
      expect(same(back, expected)).toBe(true)
    })
  )

  it.live("block status after writes, trims and zeroes matches nbdinfo --map extent by extent", () =>
    Effect.gen(function* () {
      const size = 2 * 1024 * 1024
      const server = yield* nbdkit(["memory", String(size)])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      // A fresh export is one hole that reads as zeroes.
      expect(yield* clientMap(h, size)).toEqual([{ offset: 0, length: size, flags: 3 }])
      expect(yield* nbdinfoMap(server.uri)).toEqual([{ offset: 0, length: size, flags: 3 }])
      yield* Nbd.pwrite(h, filled(262144, 0xab), 0)
      yield* Nbd.pwrite(h, filled(4096, 0xcd), 524288 + 1000)
      yield* Nbd.pwrite(h, filled(131072, 0x11), 1048576)
      yield* Nbd.trim(h, 65536, 65536)
      yield* Nbd.zero(h, 32768, 1048576 + 32768)
      yield* Nbd.zero(h, 32768, 1048576 + 65536, { flags: CmdFlag.NO_HOLE })
      yield* Nbd.pwrite(h, new Uint8Array(4096), 1572864)
      const ours = yield* clientMap(h, size)
      const theirs = yield* nbdinfoMap(server.uri)
      expect(ours).toEqual(theirs)
      // What the map must say whatever nbdkit's page size: written data is data, never-written space is a hole.
      const at = (offset: number) => ours.find((e) => e.offset <= offset && offset < e.offset + e.length)!
      expect(at(0).flags & Protocol.STATE_HOLE).toBe(0)
      expect(at(0).flags & Protocol.STATE_ZERO).toBe(0)
      expect(at(524288 + 1000).flags & Protocol.STATE_ZERO).toBe(0)
      expect(at(1048576).flags & Protocol.STATE_ZERO).toBe(0)
      expect(at(1900000).flags).toBe(Protocol.STATE_HOLE | Protocol.STATE_ZERO)
      // A page-aligned trim and zero on the memory plugin leave holes that read as zeroes.
      expect(at(65536).flags & Protocol.STATE_ZERO).toBe(Protocol.STATE_ZERO)
      expect(at(1048576 + 32768).flags & Protocol.STATE_ZERO).toBe(Protocol.STATE_ZERO)
      expect(ours.length).toBeGreaterThan(4)
    })
  )

  it.live("REQ_ONE gives exactly one extent no longer than the request", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      yield* Nbd.pwrite(h, filled(65536, 1), 65536)
      yield* Nbd.pwrite(h, filled(65536, 2), 262144)
      const full = yield* Nbd.blockStatus(h, 1048576, 0)
      expect(full).toHaveLength(1)
      expect(full[0]!.extents.length).toBeGreaterThan(1)
      for (const [count, offset] of [
        [1048576, 0],
        [1048576 - 65536, 65536],
        [4096, 65536 + 4096],
        [300000, 100000],
        [512, 1048576 - 512]
      ] as const) {
        const entries = yield* Nbd.blockStatus(h, count, offset, { flags: CmdFlag.REQ_ONE })
        expect(entries).toHaveLength(1)
        expect(entries[0]!.context).toBe("base:allocation")
        expect(entries[0]!.offset).toBe(BigInt(offset))
        expect(entries[0]!.extents).toHaveLength(1)
        const extent = entries[0]!.extents[0]!
        expect(extent.length).toBeGreaterThan(0n)
        expect(extent.length).toBeLessThanOrEqual(BigInt(count))
        // The one extent agrees with the first extent of the full map at that offset.
        const map = yield* clientMap(h, 1048576)
        const first = map.find((e) => e.offset <= offset && offset < e.offset + e.length)!
        expect(extent.flags).toBe(first.flags)
        expect(Number(extent.length)).toBeLessThanOrEqual(first.offset + first.length - offset)
      }
    })
  )

  it.live("preadStructured: nbdkit sends data chunks that cover the request exactly, even over holes", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
      const data = bytes(131072, 4)
      yield* Nbd.pwrite(h, data, 65536)
      yield* Nbd.trim(h, 32768, 65536 + 32768)
      const expected = new Uint8Array(262144)
      expected.set(data, 65536)
      expected.fill(0, 65536 + 32768, 65536 + 65536)
      for (const flags of [0, CmdFlag.DF]) {
        const read = yield* Nbd.preadStructured(h, 262144, 0, { flags })
        expect(same(read.data, expected)).toBe(true)
        // nbdkit 1.32 answers every read with one OFFSET_DATA chunk: it never sends holes.
        expect(read.chunks.every((c) => c._tag === "Data")).toBe(true)
        const sorted = [...read.chunks].sort((a, b) => a.offset - b.offset)
        let next = 0
        for (const c of sorted) {
          expect(c.offset).toBe(next)
          next += c._tag === "Error" ? 0 : c.length
        }
        expect(next).toBe(262144)
        if (flags === CmdFlag.DF) expect(read.chunks).toHaveLength(1)
      }
      // An unaligned read in the middle.
      const mid = yield* Nbd.preadStructured(h, 5000, 70001)
      expect(same(mid.data, expected.subarray(70001, 75001))).toBe(true)
      expect(mid.chunks).toEqual([{ _tag: "Data", offset: 70001, length: 5000 }])
    })
  )

  it.live("64 commands in flight with mixed sizes and kinds all give the right result", () =>
    Effect.gen(function* () {
      const slot = 131072
      const server = yield* nbdkit(["memory", String(64 * slot)])
      const h = yield* connect(server.uri)
      const sizeOf = (i: number) => 4096 * (1 + (i % 16))
      const seed = (i: number) => filled(slot, (i % 250) + 1)
      const fresh = (i: number) => bytes(sizeOf(i), i + 100)
      yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i) => Nbd.pwrite(h, seed(i), i * slot),
        { concurrency: 16 }
      )
      const kinds = ["pread", "pwrite", "zero", "trim", "flush", "blockStatus", "cache", "preadStructured"] as const
      const kindOf = (i: number) => kinds[i % kinds.length]!
      const issued = yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i) => {
          const offset = i * slot + 4096
          switch (kindOf(i)) {
            case "pread":
              return Nbd.aioPread(h, sizeOf(i), offset)
            case "preadStructured":
              return Nbd.aioPreadStructured(h, sizeOf(i), offset)
            case "pwrite":
              return Nbd.aioPwrite(h, fresh(i), offset)
            case "zero":
              return Nbd.aioZero(h, sizeOf(i), offset)
            case "trim":
              return Nbd.aioTrim(h, sizeOf(i), offset)
            case "flush":
              return Nbd.aioFlush(h)
            case "blockStatus":
              return Nbd.aioBlockStatus(h, sizeOf(i), offset)
            case "cache":
              return Nbd.aioCache(h, sizeOf(i), offset)
          }
        }
      )
      expect(new Set(issued.map((c) => c.cookie)).size).toBe(64)
      expect(yield* Nbd.aioInFlight(h)).toBeGreaterThan(0)
      const results = yield* Effect.forEach(issued, (c) => c.await as Effect.Effect<unknown, NbdError.NbdError>, {
        concurrency: "unbounded"
      })
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
      for (let i = 0; i < 64; i++) {
        const result = results[i]
        const want = seed(i).subarray(4096, 4096 + sizeOf(i))
        switch (kindOf(i)) {
          case "pread":
            expect(same(result as Uint8Array, want)).toBe(true)
            break
          case "preadStructured": {
            const read = result as Nbd.StructuredRead
            expect(same(read.data, want)).toBe(true)
            expect(read.chunks.reduce((n, c) => n + (c._tag === "Error" ? 0 : c.length), 0)).toBe(sizeOf(i))
            break
          }
          case "blockStatus": {
            const entries = result as ReadonlyArray<Nbd.BlockStatusEntry>
            expect(entries).toHaveLength(1)
            expect(entries[0]!.offset).toBe(BigInt(i * slot + 4096))
            // The slot was written all through before: data, not a hole, not zero.
            expect(entries[0]!.extents[0]!.flags).toBe(0)
            break
          }
          default:
            expect(result).toBeUndefined()
        }
      }
      // Read back what the writes, zeroes and trims left.
      for (let i = 0; i < 64; i++) {
        const back = yield* Nbd.pread(h, slot, i * slot)
        const expected = new Uint8Array(seed(i))
        if (kindOf(i) === "pwrite") expected.set(fresh(i), 4096)
        if (kindOf(i) === "zero" || kindOf(i) === "trim") expected.fill(0, 4096, 4096 + sizeOf(i))
        expect(same(back, expected)).toBe(true)
      }
    })
  )

  it.live("stats count the bytes and chunks of each request and reply", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* connect(server.uri)
      const s0 = yield* Nbd.stats(h)
      // The handshake went both ways.
      expect(s0.bytesSent).toBeGreaterThan(0)
      expect(s0.bytesReceived).toBeGreaterThan(0)
      expect(s0.chunksSent).toBeGreaterThan(0)
      expect(s0.chunksReceived).toBeGreaterThan(0)
      yield* Nbd.pwrite(h, bytes(4096, 5), 0)
      const s1 = yield* Nbd.stats(h)
      // A compact request header is 28 bytes; the payload goes with it.
      expect(s1.bytesSent - s0.bytesSent).toBe(28 + 4096)
      expect(s1.chunksSent - s0.chunksSent).toBe(1)
      // The reply: at least a simple reply (16 bytes), in one chunk.
      expect(s1.bytesReceived - s0.bytesReceived).toBeGreaterThanOrEqual(16)
      expect(s1.chunksReceived - s0.chunksReceived).toBe(1)
      yield* Nbd.pread(h, 4096, 0)
      const s2 = yield* Nbd.stats(h)
      expect(s2.bytesSent - s1.bytesSent).toBe(28)
      expect(s2.chunksSent - s1.chunksSent).toBe(1)
      // A structured data chunk: 20-byte header, 8-byte offset, the data.
      expect(s2.bytesReceived - s1.bytesReceived).toBeGreaterThanOrEqual(4096 + 28)
      expect(s2.chunksReceived - s1.chunksReceived).toBeGreaterThanOrEqual(1)
      yield* Nbd.flush(h)
      const s3 = yield* Nbd.stats(h)
      expect(s3.bytesSent - s2.bytesSent).toBe(28)
      expect(s3.chunksSent - s2.chunksSent).toBe(1)
      expect(s3.bytesReceived - s2.bytesReceived).toBeGreaterThanOrEqual(16)
      expect(s3.chunksReceived - s2.chunksReceived).toBe(1)
      // Ten reads in flight: ten requests, at least ten reply chunks, all counted.
      const reads = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => i),
        (i) => Nbd.aioPread(h, 1024, i * 1024)
      )
      yield* Effect.forEach(reads, (c) => c.await)
      const s4 = yield* Nbd.stats(h)
      expect(s4.bytesSent - s3.bytesSent).toBe(280)
      expect(s4.chunksSent - s3.chunksSent).toBe(10)
      expect(s4.bytesReceived - s3.bytesReceived).toBeGreaterThanOrEqual(10 * (1024 + 28))
      expect(s4.chunksReceived - s3.chunksReceived).toBeGreaterThanOrEqual(10)
    })
  )
})

describe("server errors from nbdkit's error filter", () => {
  for (const errno of ["EIO", "EPERM", "ENOMEM", "EINVAL", "ENOSPC", "ESHUTDOWN"] as const) {
    it.live(`${errno} on pread and pwrite is a CommandError; the next command succeeds`, () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const inject = Path.join(dir, "inject")
        const server = yield* nbdkit([
          "--log=null",
          "--filter=error",
          "memory",
          "1M",
          `error=${errno}`,
          "error-pread-rate=100%",
          "error-pwrite-rate=100%",
          `error-file=${inject}`
        ])
        const h = yield* connect(server.uri)
        const data = bytes(4096, 6)
        yield* Nbd.pwrite(h, data, 8192)
        Fs.writeFileSync(inject, "")
        const readError = yield* refusedByServer(h, Nbd.pread(h, 4096, 8192), errno)
        expect(NbdError.isNbdError(readError)).toBe(true)
        expect(readError.operation).toBe("nbd_pread")
        // The structured form reports the same error.
        yield* refusedByServer(h, Nbd.preadStructured(h, 4096, 8192), errno)
        yield* refusedByServer(h, Nbd.pwrite(h, filled(4096, 0x77), 8192), errno)
        // Other commands are not affected while the errors are on.
        yield* Nbd.flush(h)
        Fs.rmSync(inject)
        expect(same(yield* Nbd.pread(h, 4096, 8192), data)).toBe(true)
        yield* Nbd.pwrite(h, filled(4096, 0x77), 8192)
        expect(same(yield* Nbd.pread(h, 4096, 8192), filled(4096, 0x77))).toBe(true)
        // And once more: an error between two successes on the same handle.
        Fs.writeFileSync(inject, "")
        const errors = yield* Effect.forEach([0, 4096, 8192], (o) => Effect.flip(Nbd.pread(h, 512, o)))
        expect(errors.map((e) => e.errno)).toEqual([errno, errno, errno])
        Fs.rmSync(inject)
        expect(same(yield* Nbd.pread(h, 4096, 8192), filled(4096, 0x77))).toBe(true)
        expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
        expect(yield* Nbd.aioInFlight(h)).toBe(0)
      })
    )
  }
})

describe("server errors in flight", () => {
  it.live("64 reads in flight with half failing: each gets its own data or its own EIO", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "--filter=error", "memory", "4M", "error-pread-rate=50%"])
      const h = yield* connect(server.uri)
      for (let i = 0; i < 64; i++) yield* Nbd.pwrite(h, filled(4096 + i * 512, i + 1), i * 65536)
      const reads = yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i): Effect.Effect<Nbd.Command<Uint8Array | Nbd.StructuredRead>, NbdError.NbdError> =>
          i % 2 === 0
            ? Nbd.aioPread(h, 4096 + i * 512, i * 65536)
            : Nbd.aioPreadStructured(h, 4096 + i * 512, i * 65536)
      )
      const results = yield* Effect.forEach(reads, (c) => Effect.result(c.await), { concurrency: "unbounded" })
      let failures = 0
      results.forEach((r, i) => {
        if (Result.isFailure(r)) {
          failures++
          expect(r.failure._tag).toBe("CommandError")
          expect(r.failure.errno).toBe("EIO")
        } else {
          const data = r.success instanceof Uint8Array ? r.success : r.success.data
          expect(same(data, filled(4096 + i * 512, i + 1))).toBe(true)
        }
      })
      // 50% of 64: both outcomes happen (all-or-nothing has odds of 2^-63).
      expect(failures).toBeGreaterThan(0)
      expect(failures).toBeLessThan(64)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    })
  )
})

describe("slow and dying servers (nbdkit's delay filter)", () => {
  it.live("64 commands of mixed kinds in flight all fail with ENOTCONN within a second of a kill", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit([
        "--log=null",
        "--filter=delay",
        "memory",
        "4M",
        "delay-read=5",
        "delay-write=5",
        "delay-zero=5",
        "delay-trim=5",
        "delay-extents=5",
        "delay-cache=5"
      ])
      const h = yield* connect(server.uri)
      const commands = yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i) => {
          const offset = i * 65536
          switch (i % 6) {
            case 0:
              return Nbd.aioPread(h, 4096 * (1 + (i % 5)), offset)
            case 1:
              return Nbd.aioPwrite(h, bytes(65536, i), offset)
            case 2:
              return Nbd.aioZero(h, 8192, offset)
            case 3:
              return Nbd.aioTrim(h, 8192, offset)
            case 4:
              return Nbd.aioBlockStatus(h, 65536, offset)
            default:
              return Nbd.aioPreadStructured(h, 512, offset)
          }
        }
      )
      expect(yield* Nbd.aioInFlight(h)).toBe(64)
      yield* Effect.sleep("200 millis")
      yield* server.kill
      const started = Date.now()
      const errors = yield* Effect.forEach(
        commands,
        (c) => Effect.flip(c.await as Effect.Effect<unknown, NbdError.NbdError>),
        { concurrency: "unbounded" }
      )
      expect(Date.now() - started).toBeLessThan(1000)
      expect(errors.map((e) => e.errno)).toEqual(Array.from({ length: 64 }, () => "ENOTCONN"))
      const state = yield* Nbd.state(h)
      expect(HandleState.isClosed(state) || HandleState.isDead(state)).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
      // Later commands fail at once, they do not wait.
      const later = yield* Effect.flip(Nbd.pread(h, 512, 0))
      expect(later._tag).toBe("InvalidStateError")
    })
  )

  it.live("shutdown({ abandonPending }) with writes queued: unsent ones fail ENOTCONN and are never sent", () =>
    Effect.gen(function* () {
      const chunk = 262144
      const server = yield* nbdkit(["--log=null", "--filter=delay", "memory", "64M", "delay-write=500ms"])
      const h = yield* connect(server.uri)
      const commands = yield* Effect.forEach(
        Array.from({ length: 64 }, (_, i) => i),
        (i) => Nbd.aioPwrite(h, filled(chunk, i + 1), i * chunk)
      )
      // Let the first writes reach the server; the rest wait behind them in the client.
      yield* Effect.sleep("300 millis")
      const started = Date.now()
      yield* Nbd.shutdown(h, { abandonPending: true })
      expect(Date.now() - started).toBeLessThan(5000)
      expect(HandleState.isClosed(yield* Nbd.state(h))).toBe(true)
      const results = yield* Effect.forEach(commands, (c) => Effect.result(c.await))
      // Each write was either answered by the server (success, or a CommandError: nbdkit's delay filter
      // aborts its sleep with ESHUTDOWN once the client has asked to disconnect) or abandoned unsent (ENOTCONN).
      const kinds = results.map((r) =>
        Result.isSuccess(r)
          ? "ok"
          : r.failure._tag === "CommandError"
            ? "answered"
            : r.failure.errno === "ENOTCONN"
              ? "unsent"
              : r.failure.errno
      )
      const unsent = kinds.flatMap((k, i) => (k === "unsent" ? [i] : []))
      console.log("KINDS", kinds.join(","))
      expect(kinds.every((k) => k === "ok" || k === "answered" || k === "unsent")).toBe(true)
      // Requests leave in order: the sent ones are a prefix, the abandoned ones the rest.
      expect(unsent.length).toBeGreaterThan(0)
      expect(unsent[0]).toBeGreaterThan(0)
      expect(unsent).toEqual(Array.from({ length: unsent.length }, (_, k) => 64 - unsent.length + k))
      // On a second connection: every write that succeeded is there, every abandoned one never reached the server.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const check = yield* connect(server.uri)
          for (let i = 0; i < 64; i++) {
            const back = yield* Nbd.pread(check, chunk, i * chunk)
            if (kinds[i] === "ok") expect(same(back, filled(chunk, i + 1))).toBe(true)
            if (kinds[i] === "unsent") expect(isZero(back)).toBe(true)
          }
        })
      )
    })
  )

  it.live("interrupting the fiber awaiting a command does not desynchronise the connection", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--filter=delay", "memory", "1M", "delay-read=150ms"])
      const h = yield* connect(server.uri)
      for (let i = 0; i < 8; i++) yield* Nbd.pwrite(h, filled(4096, i + 1), i * 4096)
      // Timed out: the await is interrupted while the read is at the server.
      const first = yield* Nbd.aioPread(h, 4096, 0)
      expect(yield* Effect.timeoutOption(first.await, "50 millis")).toEqual(Option.none())
      // Interrupted explicitly, with structured reads too.
      const second = yield* Nbd.aioPreadStructured(h, 4096, 4096)
      const fiber = yield* Effect.forkChild(second.await)
      yield* Effect.sleep("20 millis")
      yield* Fiber.interrupt(fiber)
      // Many more in flight, some interrupted, some awaited.
      const more = yield* Effect.forEach([2, 3, 4, 5, 6, 7], (i) => Nbd.aioPread(h, 4096, i * 4096))
      const interrupted = yield* Effect.forEach(
        more.filter((_, k) => k % 2 === 0),
        (c) => Effect.timeoutOption(c.await, "10 millis")
      )
      expect(interrupted.every(Option.isNone)).toBe(true)
      const kept = yield* Effect.forEach(
        more.filter((_, k) => k % 2 === 1),
        (c) => c.await
      )
      kept.forEach((data, k) => expect(same(data, filled(4096, [3, 4, 5, 6, 7, 8][2 * k + 1]!))).toBe(true))
      // Every command after this gets its own reply.
      for (let i = 7; i >= 0; i--) expect(same(yield* Nbd.pread(h, 4096, i * 4096), filled(4096, i + 1))).toBe(true)
      yield* Nbd.pwrite(h, filled(4096, 0x99), 0)
      expect(same(yield* Nbd.pread(h, 4096, 0), filled(4096, 0x99))).toBe(true)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    })
  )
})

describe("strict mode against nbdkit", () => {
  it.live("STRICT_BOUNDS: past the end is EINVAL for reads, ENOSPC for writes; off, nbdkit refuses", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "memory", "1M"])
      const h = yield* connect(server.uri)
      const end = 1048576
      expect((yield* Nbd.getStrictMode(h)) & Strict.BOUNDS).toBe(Strict.BOUNDS)
      const e1 = yield* refusedLocally(h, Nbd.pread(h, 1024, end - 512), "EINVAL")
      expect(e1.message).toContain("out of bounds")
      yield* refusedLocally(h, Nbd.pread(h, 1, end), "EINVAL")
      yield* refusedLocally(h, Nbd.cache(h, 1024, end - 512), "EINVAL")
      yield* refusedLocally(h, Nbd.blockStatus(h, 1024, end - 512), "EINVAL")
      yield* refusedLocally(h, Nbd.pwrite(h, new Uint8Array(1024), end - 512), "ENOSPC")
      yield* refusedLocally(h, Nbd.zero(h, 1024, end - 512), "ENOSPC")
      yield* refusedLocally(h, Nbd.trim(h, 1024, end - 512), "ENOSPC")
      // Exactly up to the end is fine.
      expect(isZero(yield* Nbd.pread(h, 512, end - 512))).toBe(true)
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.BOUNDS)
      yield* refusedByServer(h, Nbd.pread(h, 1024, end - 512), "EINVAL")
      yield* refusedByServer(h, Nbd.pwrite(h, filled(1024, 1), end - 512), "ENOSPC")
      yield* refusedByServer(h, Nbd.zero(h, 1024, end - 512), "ENOSPC")
      yield* refusedByServer(h, Nbd.trim(h, 1024, end - 512), "EINVAL")
      yield* refusedByServer(h, Nbd.cache(h, 1024, end - 512), "EINVAL")
      // nbdkit wrote nothing of the refused requests.
      expect(isZero(yield* Nbd.pread(h, 512, end - 512))).toBe(true)
    })
  )

  it.live("STRICT_ZERO_SIZE: count 0 is EINVAL; off, it reaches nbdkit", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "memory", "1M"])
      const h = yield* connect(server.uri)
      for (const request of [
        Nbd.pread(h, 0, 0),
        Nbd.pwrite(h, new Uint8Array(0), 0),
        Nbd.zero(h, 0, 0),
        Nbd.trim(h, 0, 0),
        Nbd.cache(h, 0, 0),
        Nbd.blockStatus(h, 0, 0)
      ] as ReadonlyArray<Effect.Effect<unknown, NbdError.NbdError>>) {
        const error = yield* refusedLocally(h, request, "EINVAL")
        expect(error.message).toContain("count cannot be 0")
      }
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.ZERO_SIZE)
      // nbdkit 1.32 refuses zero-length requests: EINVAL, and ENOSPC for the writing ones.
      yield* refusedByServer(h, Nbd.pread(h, 0, 0), "EINVAL")
      yield* refusedByServer(h, Nbd.pwrite(h, new Uint8Array(0), 0), "ENOSPC")
      yield* refusedByServer(h, Nbd.zero(h, 0, 0), "ENOSPC")
      yield* refusedByServer(h, Nbd.trim(h, 0, 0), "EINVAL")
      yield* refusedByServer(h, Nbd.cache(h, 0, 0), "EINVAL")
      yield* Nbd.pwrite(h, filled(512, 3), 0)
      expect(same(yield* Nbd.pread(h, 512, 0), filled(512, 3))).toBe(true)
    })
  )

  it.live("STRICT_ALIGN: with a 512-byte minimum block size unaligned requests are EINVAL; off, nbdkit refuses", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit([
        "--log=null",
        "--filter=blocksize-policy",
        "memory",
        "1M",
        "blocksize-minimum=512",
        "blocksize-error-policy=error"
      ])
      const h = yield* connect(server.uri)
      expect(yield* Nbd.getBlockSize(h, "minimum")).toBe(512)
      const e = yield* refusedLocally(h, Nbd.pread(h, 100, 0), "EINVAL")
      expect(e.message).toContain("unaligned")
      yield* refusedLocally(h, Nbd.pread(h, 512, 1), "EINVAL")
      yield* refusedLocally(h, Nbd.pwrite(h, new Uint8Array(100), 512), "EINVAL")
      yield* refusedLocally(h, Nbd.zero(h, 512, 100), "EINVAL")
      yield* refusedLocally(h, Nbd.trim(h, 1000, 0), "EINVAL")
      yield* Nbd.pwrite(h, filled(1024, 9), 512)
      expect(same(yield* Nbd.pread(h, 1024, 512), filled(1024, 9))).toBe(true)
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.ALIGN)
      yield* refusedByServer(h, Nbd.pread(h, 100, 0), "EINVAL")
      yield* refusedByServer(h, Nbd.pwrite(h, filled(100, 1), 512), "EINVAL")
      yield* refusedByServer(h, Nbd.zero(h, 512, 100), "EINVAL")
      expect(same(yield* Nbd.pread(h, 1024, 512), filled(1024, 9))).toBe(true)
    })
  )

  it.live("STRICT_COMMANDS: zero without can_zero, cache without can_cache; off, nbdkit refuses", () =>
    Effect.gen(function* () {
      const nozero = yield* nbdkit(["--log=null", "--filter=nozero", "memory", "1M"])
      const h = yield* connect(nozero.uri)
      expect(yield* Nbd.canZero(h)).toBe(false)
      const e = yield* refusedLocally(h, Nbd.zero(h, 512, 0), "EINVAL")
      expect(e.message).toContain("zero")
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.COMMANDS)
      yield* refusedByServer(h, Nbd.zero(h, 512, 0), "EINVAL")

      const nocache = yield* nbdkit(["--log=null", "--filter=nocache", "memory", "1M", "cachemode=none"])
      const c = yield* connect(nocache.uri)
      expect(yield* Nbd.canCache(c)).toBe(false)
      yield* refusedLocally(c, Nbd.cache(c, 512, 0), "EINVAL")
      yield* Nbd.setStrictMode(c, Strict.MASK & ~Strict.COMMANDS)
      yield* refusedByServer(c, Nbd.cache(c, 512, 0), "EINVAL")
      expect(isZero(yield* Nbd.pread(c, 512, 0))).toBe(true)
    })
  )

  it.live(
    "STRICT_COMMANDS: writes on a read-only export are refused (EPERM, or EINVAL for trim/zero); off, nbdkit refuses with EPERM",
    () =>
      Effect.gen(function* () {
        const server = yield* nbdkit(["--log=null", "-r", "memory", "1M"])
        const h = yield* connect(server.uri)
        expect(yield* Nbd.isReadOnly(h)).toBe(true)
        // nbdkit -r advertises neither trim, zero nor FUA. libnbd checks read-only first for pwrite (so FUA
        // does not matter), but can_trim / can_zero first for trim and zero (lib/rw.c).
        expect(yield* Nbd.canTrim(h)).toBe(false)
        expect(yield* Nbd.canZero(h)).toBe(false)
        expect(yield* Nbd.canFua(h)).toBe(false)
        const e = yield* refusedLocally(h, Nbd.pwrite(h, new Uint8Array(512), 0), "EPERM")
        expect(e.message).toContain("write operations")
        yield* refusedLocally(h, Nbd.pwrite(h, new Uint8Array(512), 0, { flags: CmdFlag.FUA }), "EPERM")
        expect((yield* refusedLocally(h, Nbd.zero(h, 512, 0), "EINVAL")).message).toContain("zero operations")
        expect((yield* refusedLocally(h, Nbd.trim(h, 512, 0), "EINVAL")).message).toContain("trim operations")
        yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.COMMANDS)
        yield* refusedByServer(h, Nbd.pwrite(h, filled(512, 1), 0), "EPERM")
        yield* refusedByServer(h, Nbd.zero(h, 512, 0), "EPERM")
        yield* refusedByServer(h, Nbd.trim(h, 512, 0), "EPERM")
        expect(isZero(yield* Nbd.pread(h, 512, 0))).toBe(true)
      })
  )

  it.live("STRICT_FLAGS: FUA or NO_HOLE on a read is EINVAL; off, nbdkit takes FUA and refuses NO_HOLE", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "memory", "1M"])
      const h = yield* connect(server.uri)
      yield* Nbd.pwrite(h, filled(512, 4), 0)
      const e = yield* refusedLocally(h, Nbd.pread(h, 512, 0, { flags: CmdFlag.FUA }), "EINVAL")
      expect(e.message).toContain("flag")
      yield* refusedLocally(h, Nbd.pread(h, 512, 0, { flags: CmdFlag.NO_HOLE }), "EINVAL")
      yield* refusedLocally(h, Nbd.pwrite(h, filled(512, 1), 0, { flags: CmdFlag.REQ_ONE }), "EINVAL")
      yield* refusedLocally(h, Nbd.cache(h, 512, 0, { flags: CmdFlag.FUA }), "EINVAL")
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.FLAGS)
      // nbdkit 1.32 accepts FUA on a read (it advertises FUA) and serves it.
      const before = yield* Nbd.stats(h)
      expect(same(yield* Nbd.pread(h, 512, 0, { flags: CmdFlag.FUA }), filled(512, 4))).toBe(true)
      expect((yield* Nbd.stats(h)).bytesSent).toBe(before.bytesSent + 28)
      yield* refusedByServer(h, Nbd.pread(h, 512, 0, { flags: CmdFlag.NO_HOLE }), "EINVAL")
      expect(same(yield* Nbd.pread(h, 512, 0), filled(512, 4))).toBe(true)
    })
  )

  it.live("STRICT_PAYLOAD: a write over the 32 MiB payload maximum is ERANGE; off, nbdkit takes it", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "memory", "64M"])
      const h = yield* connect(server.uri)
      // nbdkit memory advertises no maximum block size, so libnbd's payload maximum is 32 MiB.
      const big = bytes(32 * 1024 * 1024 + 4096, 8)
      const e = yield* refusedLocally(h, Nbd.pwrite(h, big, 0), "ERANGE")
      expect(e.message).toContain("maximum payload size is 33554432")
      // Exactly the maximum is fine.
      yield* Nbd.pwrite(h, big.subarray(0, 32 * 1024 * 1024), 0)
      yield* Nbd.setStrictMode(h, Strict.MASK & ~Strict.PAYLOAD)
      const before = yield* Nbd.stats(h)
      yield* Nbd.pwrite(h, big, 4096)
      expect((yield* Nbd.stats(h)).bytesSent).toBe(before.bytesSent + 28 + big.length)
      expect(same(yield* Nbd.pread(h, big.length, 4096), big)).toBe(true)
    })
  )

  it.live("the 64 MiB read and write cap is ERANGE whatever the strict mode", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--log=null", "memory", "128M"])
      const h = yield* connect(server.uri)
      const over = 64 * 1024 * 1024 + 1
      for (const mode of [Strict.MASK, 0]) {
        yield* Nbd.setStrictMode(h, mode)
        const e = yield* refusedLocally(h, Nbd.pread(h, over, 0), "ERANGE")
        expect(e.message).toContain("67108864")
        yield* refusedLocally(h, Nbd.preadStructured(h, over, 0), "ERANGE")
        yield* refusedLocally(h, Nbd.pwrite(h, new Uint8Array(over), 0), "ERANGE")
      }
      // 64 MiB itself is allowed with strict mode off (it is over the payload maximum for writes).
      yield* Nbd.setStrictMode(h, Strict.MASK)
      const all = yield* Nbd.pread(h, 64 * 1024 * 1024, 0)
      expect(all.length).toBe(64 * 1024 * 1024)
      expect(isZero(all)).toBe(true)
    })
  )
})
