import { Nbd, NbdCopy, NbdError, NbdPool, NbdStream } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as PlatformError from "effect/PlatformError"
import * as Result from "effect/Result"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { noise, sha256 } from "./util/bytes.js"
import { captureLogs, withCapturedLogs } from "./util/logs.js"
import { nbdinfoMap, nbdkit, tempDir } from "./util/peers.js"

const KiB = 1024
const MiB = 1024 * KiB

const sha256Of = (chunks: Iterable<Uint8Array>): string => {
  const hash = Crypto.createHash("sha256")
  for (const c of chunks) hash.update(c)
  return hash.digest("hex")
}

/** A handle connected to a URI for the scope, with base:allocation asked for. */
const connect = (uri: string, settings: Nbd.Settings = { metaContexts: ["base:allocation"] }) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make(settings)
    yield* NodeNbd.connectUri(h, uri)
    return h
  }).pipe(Effect.orDie)

const poolOf = (uri: string, connections: number, settings: Nbd.Settings = { metaContexts: ["base:allocation"] }) =>
  NbdPool.make({ connections, settings, connect: (h) => NodeNbd.connectUri(h, uri) }).pipe(Effect.orDie)

/** Reads a whole export back with plain preads. */
const readAll = (h: Nbd.Handle) =>
  Effect.gen(function* () {
    const size = Number(yield* Nbd.getSize(h))
    const out = new Uint8Array(size)
    for (let at = 0; at < size; at += 4 * MiB) {
      const n = Math.min(4 * MiB, size - at)
      yield* Nbd.pread(h, n, at, { buffer: out.subarray(at, at + n) })
    }
    return out
  }).pipe(Effect.orDie)

/** The requests an nbdkit log filter saw, by kind ("Read", "Write", "Zero", "Flush", ...). */
const logged = (log: string, kind: string): Array<{ connection: number; offset: number; count: number }> =>
  Fs.readFileSync(log, "utf8")
    .split("\n")
    .filter((l) => new RegExp(`connection=\\d+ ${kind} id=`).test(l))
    .map((l) => ({
      connection: Number(/connection=(\d+)/.exec(l)![1]),
      offset: Number(/offset=(0x[0-9a-f]+)/.exec(l)?.[1] ?? 0),
      count: Number(/count=(0x[0-9a-f]+)/.exec(l)?.[1] ?? 0)
    }))

const server = (config: TestServer.Config) => TestServer.make(config).pipe(Effect.orDie)

describe("NbdStream.readStream", () => {
  it.live("gives a range in order, request by request, with the export's bytes (sha256)", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 8 * MiB }] })
      const h = yield* connect(s.uri)
      const content = noise(8 * MiB, 7)
      yield* Effect.orDie(Nbd.pwrite(h, content, 0))
      const whole = yield* Stream.runCollect(NbdStream.readStream(h, { requestSize: 64 * KiB, requests: 8 }))
      expect(whole.length).toBe(128)
      expect(whole.every((c) => c.length === 64 * KiB)).toBe(true)
      expect(sha256Of(whole)).toBe(sha256(content))
      // An unaligned range: the last element is the short rest.
      const start = 1000
      const length = 3 * MiB + 17
      const part = yield* Stream.runCollect(
        NbdStream.readStream(h, { offset: start, length: BigInt(length), requestSize: MiB })
      )
      expect(part.map((c) => c.length)).toEqual([MiB, MiB, MiB, 17])
      expect(sha256Of(part)).toBe(sha256(content.subarray(start, start + length)))
      // Past the end: a typed error, nothing read.
      const beyond = yield* Effect.result(
        Stream.runDrain(NbdStream.readStream(h, { offset: 8 * MiB - 10, length: 11 }))
      )
      expect(Result.isFailure(beyond) && NbdError.isNbdError(beyond.failure) && beyond.failure.errno).toBe("EINVAL")
    })
  )

  it.live("reads nothing until it runs, and every run reads anew into fresh buffers", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 1 * MiB }] })
      const h = yield* connect(s.uri)
      const stream = NbdStream.readStream(h, { requestSize: 256 * KiB })
      const before = (yield* Nbd.stats(h)).bytesReceived
      yield* Effect.sleep("50 millis")
      expect((yield* Nbd.stats(h)).bytesReceived).toBe(before)
      yield* Effect.orDie(Nbd.pwrite(h, new Uint8Array(1 * MiB).fill(0x11), 0))
      const first = yield* Stream.runCollect(stream)
      yield* Effect.orDie(Nbd.pwrite(h, new Uint8Array(1 * MiB).fill(0x22), 0))
      const second = yield* Stream.runCollect(stream)
      expect(first.length).toBe(4)
      expect(second.length).toBe(4)
      // The first run's buffers kept what they had: the second run did not reuse them.
      expect(first.every((c) => c.every((b) => b === 0x11))).toBe(true)
      expect(second.every((c) => c.every((b) => b === 0x22))).toBe(true)
      for (const c of second) expect(first.some((f) => f.buffer === c.buffer)).toBe(false)
    })
  )

  it.live("sparse: what block status reports as zero is not read, and still comes out as zeroes", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const log = Path.join(dir, "nbdkit.log")
      const kit = yield* nbdkit(["--filter=log", "memory", "64M", `logfile=${log}`])
      const h = yield* connect(kit.uri)
      const data = noise(1 * MiB, 3)
      yield* Effect.orDie(Nbd.pwrite(h, data, 32 * MiB))
      const chunks = yield* Stream.runCollect(NbdStream.readStream(h, { sparse: true }))
      const all = new Uint8Array(64 * MiB)
      let at = 0
      for (const c of chunks) {
        all.set(c, at)
        at += c.length
      }
      expect(at).toBe(64 * MiB)
      const expected = new Uint8Array(64 * MiB)
      expected.set(data, 32 * MiB)
      expect(sha256(all)).toBe(sha256(expected))
      const reads = logged(log, "Read")
      expect(reads.reduce((n, r) => n + r.count, 0)).toBe(1 * MiB)
    })
  )
})

describe("NbdStream.writeSink", () => {
  it.live("writes chunks one after another at an offset, splits large ones, flushes when asked", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const log = Path.join(dir, "nbdkit.log")
      const kit = yield* nbdkit(["--filter=log", "memory", "16M", `logfile=${log}`])
      const h = yield* connect(kit.uri)
      const content = noise(5 * MiB + 333, 9)
      // Chunks of uneven sizes, one larger than the request size.
      const sizes = [1, 4095, 70_000, 3 * MiB, 12_345]
      const chunks: Array<Uint8Array> = []
      let at = 0
      for (const n of sizes) {
        chunks.push(content.subarray(at, at + n))
        at += n
      }
      chunks.push(content.subarray(at))
      const written = yield* Stream.run(
        Stream.fromIterable(chunks),
        NbdStream.writeSink(h, { offset: 4096, requests: 4, requestSize: MiB, flush: true })
      )
      expect(written).toBe(BigInt(content.length))
      expect(sha256(yield* Effect.orDie(Nbd.pread(h, content.length, 4096)))).toBe(sha256(content))
      const writes = logged(log, "Write")
      expect(Math.max(...writes.map((w) => w.count))).toBe(MiB)
      expect(logged(log, "Flush").length).toBe(1)
      // Past the end of the export: ENOSPC.
      const over = yield* Effect.result(
        Stream.run(Stream.make(new Uint8Array(8192)), NbdStream.writeSink(h, { offset: 16 * MiB - 4096 }))
      )
      expect(Result.isFailure(over) && NbdError.isNbdError(over.failure) && over.failure.errno).toBe("ENOSPC")
    })
  )
})

describe("NbdPool", () => {
  it.live("opens N connections to a multi-conn server, one without, and spreads commands over them", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const log = Path.join(dir, "multi.log")
      const multi = yield* nbdkit(["--filter=log", "memory", "16M", `logfile=${log}`])
      const single = yield* nbdkit(["--filter=multi-conn", "memory", "16M", "multi-conn-mode=disable"])
      const pool = yield* poolOf(multi.uri, 4)
      expect(NbdPool.size(pool)).toBe(4)
      expect(yield* Effect.orDie(Nbd.canMultiConn(pool.handles[0]))).toBe(true)
      const alone = yield* poolOf(single.uri, 4)
      expect(NbdPool.size(alone)).toBe(1)
      expect(yield* Effect.orDie(Nbd.canMultiConn(alone.handles[0]))).toBe(false)
      // The server saw four connections, and a read stream used every one of them.
      const content = noise(8 * MiB, 5)
      yield* Effect.orDie(Nbd.pwrite(pool.handles[0], content, 0))
      const read = yield* Stream.runCollect(NbdStream.readStream(pool, { length: 8 * MiB, requestSize: 128 * KiB }))
      expect(sha256Of(read)).toBe(sha256(content))
      const perConnection = new Map<number, number>()
      for (const r of logged(log, "Read")) perConnection.set(r.connection, (perConnection.get(r.connection) ?? 0) + 1)
      expect(perConnection.size).toBe(4)
      for (const n of perConnection.values()) expect(n).toBe(16)
      // Pool commands go to the least busy connection: 64 concurrent reads land on all four.
      const before = yield* Effect.forEach(pool.handles, (h) => Nbd.stats(h))
      yield* Effect.orDie(
        Effect.forEach(
          Array.from({ length: 64 }, (_, i) => i),
          (i) => NbdPool.pread(pool, 4096, i * 4096),
          { concurrency: 64 }
        )
      )
      const after = yield* Effect.forEach(pool.handles, (h) => Nbd.stats(h))
      for (let i = 0; i < 4; i++) expect(after[i]!.bytesReceived).toBeGreaterThan(before[i]!.bytesReceived)
      // A connection count out of range is refused before anything connects.
      const bad = yield* Effect.result(
        NbdPool.make({ connections: 0, connect: (h) => NodeNbd.connectUri(h, multi.uri) })
      )
      expect(Result.isFailure(bad) && bad.failure.errno).toBe("EINVAL")
    })
  )
})

describe("NbdCopy.copy", () => {
  it.live("NBD to NBD over multi-conn pools: content by sha256, sparseness kept by block status", () =>
    Effect.gen(function* () {
      const src = yield* nbdkit(["memory", "64M"])
      const dst = yield* nbdkit(["memory", "64M"])
      const writer = yield* connect(src.uri)
      // Data at three places, the rest never written (holes).
      const pieces = [
        { offset: 0, data: noise(3 * MiB + 5000, 1) },
        { offset: 20 * MiB, data: noise(MiB, 2) },
        { offset: 63 * MiB, data: noise(MiB, 3) }
      ]
      for (const p of pieces) yield* Effect.orDie(Nbd.pwrite(writer, p.data, p.offset))
      const source = yield* poolOf(src.uri, 4)
      const destination = yield* poolOf(dst.uri, 4, {})
      const result = yield* NbdCopy.copy(source, destination, { flush: true, requests: 16 })
      expect(result.bytes).toBe(BigInt(64 * MiB))
      expect(result.connections).toBe(4)
      expect(result.dataBytes + result.zeroBytes).toBe(result.bytes)
      expect(result.zeroBytes).toBeGreaterThan(50n * BigInt(MiB))
      const expected = new Uint8Array(64 * MiB)
      for (const p of pieces) expected.set(p.data, p.offset)
      expect(sha256(yield* readAll(yield* connect(dst.uri)))).toBe(sha256(expected))
      // The destination's map has holes where the source had them.
      const [srcMap, dstMap] = yield* Effect.all([nbdinfoMap(src.uri), nbdinfoMap(dst.uri)], { concurrency: 2 })
      expect(srcMap.some((e) => (e.flags & 1) !== 0)).toBe(true)
      expect(dstMap).toEqual(srcMap)
    })
  )

  it.live("zero ranges: NBD_CMD_WRITE_ZEROES, all-zero data detected, nothing at all with destinationIsZero", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // A file source with data, then 2 MiB of real (allocated) zeroes, then data: no block status.
      const content = new Uint8Array(6 * MiB)
      content.set(noise(2 * MiB, 4), 0)
      content.set(noise(2 * MiB, 5), 4 * MiB)
      const file = Path.join(dir, "source.img")
      Fs.writeFileSync(file, content)
      const logA = Path.join(dir, "a.log")
      const logB = Path.join(dir, "b.log")
      const a = yield* nbdkit(["--filter=log", "memory", "6M", `logfile=${logA}`])
      const b = yield* nbdkit(["--filter=log", "memory", "6M", `logfile=${logB}`])
      const ra = yield* NbdCopy.copy(NbdCopy.file(file), yield* connect(a.uri, {}))
      const rb = yield* NbdCopy.copy(NbdCopy.file(file), yield* connect(b.uri, {}), { destinationIsZero: true })
      for (const r of [ra, rb]) {
        expect(r.dataBytes).toBe(BigInt(4 * MiB))
        expect(r.zeroBytes).toBe(BigInt(2 * MiB))
      }
      const sum = (entries: ReadonlyArray<{ count: number }>) => entries.reduce((n, e) => n + e.count, 0)
      expect(sum(logged(logA, "Write"))).toBe(4 * MiB)
      expect(sum(logged(logA, "Zero"))).toBe(2 * MiB)
      expect(sum(logged(logB, "Write"))).toBe(4 * MiB)
      expect(logged(logB, "Zero")).toEqual([])
      for (const uri of [a.uri, b.uri]) expect(sha256(yield* readAll(yield* connect(uri, {})))).toBe(sha256(content))
      // sparse: false copies every byte as data.
      const logC = Path.join(dir, "c.log")
      const c = yield* nbdkit(["--filter=log", "memory", "6M", `logfile=${logC}`])
      const rc = yield* NbdCopy.copy(NbdCopy.file(file), yield* connect(c.uri, {}), { sparse: false })
      expect(rc.zeroBytes).toBe(0n)
      expect(sum(logged(logC, "Write"))).toBe(6 * MiB)
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.live("files, streams and sinks: NBD to file keeps holes, file to stream to NBD to sink (sha256)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const kit = yield* nbdkit(["memory", "32M"])
      const h = yield* connect(kit.uri)
      const data = noise(2 * MiB, 6)
      yield* Effect.orDie(Nbd.pwrite(h, data, 16 * MiB))
      const expected = new Uint8Array(32 * MiB)
      expected.set(data, 16 * MiB)
      // NBD to a file: sized to the source, only the data allocated.
      const out = Path.join(dir, "out.img")
      yield* NbdCopy.copy(h, NbdCopy.file(out))
      expect(Fs.statSync(out).size).toBe(32 * MiB)
      expect(Fs.statSync(out).blocks * 512).toBeLessThan(4 * MiB)
      expect(sha256(Fs.readFileSync(out))).toBe(sha256(expected))
      // A stream (of odd-sized chunks) into our test server, then the server into a sink.
      const s = yield* server({ exports: [{ name: "", size: 32 * MiB }] })
      const t = yield* connect(s.uri)
      const parts: Array<Uint8Array> = []
      for (let at = 0; at < expected.length; at += 100_000) parts.push(expected.subarray(at, at + 100_000))
      const chunks = Stream.fromIterable(parts)
      const intoServer = yield* NbdCopy.copy(NbdCopy.fromStream(chunks, { size: 32 * MiB }), t)
      expect(intoServer.bytes).toBe(BigInt(32 * MiB))
      const collected: Array<Uint8Array> = []
      const intoSink = yield* NbdCopy.copy(
        t,
        NbdCopy.toSink(Sink.forEach((c: Uint8Array) => Effect.sync(() => collected.push(c))))
      )
      expect(intoSink.bytes).toBe(BigInt(32 * MiB))
      expect(sha256Of(collected)).toBe(sha256(expected))
      // A stream whose size was wrong fails.
      const short = yield* Effect.result(
        NbdCopy.copy(NbdCopy.fromStream(Stream.make(new Uint8Array(100)), { size: 200 }), t)
      )
      expect(Result.isFailure(short) && NbdError.isNbdError(short.failure) && short.failure.errno).toBe("EIO")
    }).pipe(Effect.provide(NodeFileSystem.layer))
  )

  it.live("memory stays bounded: 256 MiB through at most connections x requests buffers", () =>
    Effect.gen(function* () {
      const src = yield* nbdkit(["pattern", "256M"])
      const dst = yield* nbdkit(["memory", "256M"])
      const source = yield* poolOf(src.uri, 2)
      const destination = yield* poolOf(dst.uri, 2, {})
      const baseline = process.memoryUsage().arrayBuffers
      let peak = 0
      const events = yield* Stream.runCollect(
        NbdCopy.copyWithProgress(source, destination, { requests: 8, interval: "20 millis" }).pipe(
          Stream.tap(() => Effect.sync(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline))))
        )
      )
      const all = events
      expect(all[all.length - 1]!.bytes).toBe(BigInt(256 * MiB))
      // 2 x 8 buffers of 256 KiB are 4 MiB (measured: 4 MiB); room for the engine's own buffering, far below 256 MiB.
      expect(peak).toBeLessThan(32 * MiB)
      const result = yield* NbdCopy.copy(source, destination, { requests: 8 })
      expect(result.buffers).toBeGreaterThan(0)
      expect(result.buffers).toBeLessThanOrEqual(2 * 8)
      expect(result.dataBytes).toBe(BigInt(256 * MiB))
      // The pattern plugin's bytes: every 8-byte word is its own offset, big-endian.
      const check = yield* connect(dst.uri, {})
      for (const offset of [0, 123 * MiB + 4096, 256 * MiB - 16]) {
        const b = yield* Effect.orDie(Nbd.pread(check, 16, offset))
        const view = new DataView(b.buffer, b.byteOffset)
        expect(view.getBigUint64(0)).toBe(BigInt(offset))
        expect(view.getBigUint64(8)).toBe(BigInt(offset + 8))
      }
    })
  )

  it.live("progress: a first event at once, bytes never go back, the last equals the total", () =>
    Effect.gen(function* () {
      const src = yield* nbdkit(["--filter=delay", "pattern", "16M", "delay-read=20ms"])
      const h = yield* connect(src.uri)
      const events = yield* Stream.runCollect(
        NbdCopy.copyWithProgress(h, NbdCopy.discard, { requestSize: 64 * KiB, requests: 4, interval: "50 millis" })
      )
      expect(events.length).toBeGreaterThanOrEqual(3)
      expect(events[0]!.total).toBe(BigInt(16 * MiB))
      for (let i = 1; i < events.length; i++) expect(events[i]!.bytes).toBeGreaterThanOrEqual(events[i - 1]!.bytes)
      expect(events.some((e) => e.bytes > 0n && e.bytes < BigInt(16 * MiB))).toBe(true)
      const last = events[events.length - 1]!
      expect(last.bytes).toBe(BigInt(16 * MiB))
      expect(last.total).toBe(BigInt(16 * MiB))
      expect(last.rate).toBeGreaterThan(0)
    })
  )

  it.live("an error on either side fails the copy with a typed error, claims nothing, logs no unhandled fiber", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const good = yield* nbdkit(["pattern", "8M"])
      const badWrites = yield* nbdkit([
        "--log=null",
        "--filter=error",
        "memory",
        "8M",
        "error=EIO",
        "error-pwrite-rate=100%"
      ])
      const badReads = yield* nbdkit([
        "--log=null",
        "--filter=error",
        "pattern",
        "8M",
        "error=EIO",
        "error-pread-rate=100%"
      ])
      const memory = yield* nbdkit(["memory", "8M"])
      const small = yield* nbdkit(["memory", "4M"])
      const readOnly = yield* nbdkit(["-r", "memory", "8M"])
      const failure = (exit: Exit.Exit<unknown, unknown>): NbdError.NbdError => {
        expect(Exit.isFailure(exit)).toBe(true)
        const e = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined
        expect(NbdError.isNbdError(e)).toBe(true)
        return e as NbdError.NbdError
      }
      const destinationError = failure(
        yield* Effect.exit(NbdCopy.copy(yield* connect(good.uri), yield* connect(badWrites.uri, {})))
      )
      expect(destinationError._tag).toBe("CommandError")
      expect(destinationError.errno).toBe("EIO")
      const sourceError = failure(
        yield* Effect.exit(NbdCopy.copy(yield* connect(badReads.uri), yield* connect(memory.uri, {})))
      )
      expect(sourceError._tag).toBe("CommandError")
      expect(sourceError.errno).toBe("EIO")
      const tooSmall = failure(
        yield* Effect.exit(NbdCopy.copy(yield* connect(good.uri), yield* connect(small.uri, {})))
      )
      expect(tooSmall.errno).toBe("ENOSPC")
      expect(tooSmall.message).toMatch(/smaller than the source/)
      const ro = failure(yield* Effect.exit(NbdCopy.copy(yield* connect(good.uri), yield* connect(readOnly.uri, {}))))
      expect(ro.errno).toBe("EPERM")
      // With a tracer installed every I/O runs as an effect in a fiber of its own: a failed one too is observed.
      const native = yield* Effect.tracer
      const passThrough = Tracer.make({ span: native.span.bind(native) })
      const traced = failure(
        yield* Effect.exit(
          NbdCopy.copy(yield* connect(good.uri), yield* connect(badWrites.uri, {})).pipe(Effect.withTracer(passThrough))
        )
      )
      expect(traced.errno).toBe("EIO")
      // The copy's own fibers ended observed. (Past this point the test runs streams that fail, and a failed
      // stream run ends fibers of its own failed.)
      expect(logs.unhandled()).toEqual([])
      // As a progress stream: it fails, and no event claims the whole copy.
      const seen: Array<bigint> = []
      const streamed = yield* Effect.exit(
        Stream.runForEach(
          NbdCopy.copyWithProgress(yield* connect(good.uri), yield* connect(badWrites.uri, {}), {
            interval: "1 millis"
          }),
          (p) => Effect.sync(() => seen.push(p.bytes))
        )
      )
      expect(failure(streamed).errno).toBe("EIO")
      expect(seen.every((b) => b < BigInt(8 * MiB))).toBe(true)
      // A missing file fails with the file system's error.
      const missing = yield* Effect.result(NbdCopy.copy(NbdCopy.file("/nonexistent/disk.img"), NbdCopy.discard))
      const notFound = Result.isFailure(missing) ? missing.failure : undefined
      expect(notFound).toBeInstanceOf(PlatformError.PlatformError)
      expect((notFound as PlatformError.PlatformError).reason).toBeInstanceOf(PlatformError.SystemError)
      expect((notFound as PlatformError.PlatformError).reason._tag).toBe("NotFound")
      // A sink that fails: its error is the copy's.
      const refused = new Error("the sink refused")
      const failingSink = NbdCopy.toSink(Sink.forEach(() => Effect.fail(refused)))
      const sinkError = yield* Effect.flip(NbdCopy.copy(yield* connect(good.uri), failingSink))
      expect(sinkError).toBe(refused)
    }).pipe(Effect.provide(NodeFileSystem.layer), withCapturedLogs(logs))
  })

  it.live("interrupting a copy stops it promptly", () =>
    Effect.gen(function* () {
      const slow = yield* nbdkit(["--filter=delay", "pattern", "1G", "delay-read=50ms"])
      const h = yield* connect(slow.uri)
      const fiber = yield* Effect.forkChild(NbdCopy.copy(h, NbdCopy.discard, { requestSize: 64 * KiB }))
      yield* Effect.sleep("300 millis")
      const started = Date.now()
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.hasInterrupts(exit)).toBe(true)
      expect(Date.now() - started).toBeLessThan(2000)
      // The handle is still usable afterwards.
      expect((yield* Effect.orDie(Nbd.pread(h, 8, 8))).length).toBe(8)
    })
  )
})
