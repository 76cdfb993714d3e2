import { HandleState, Nbd, NbdCopy, NbdError, NbdPool } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { restartable, tempDir } from "./util/peers.js"

const KiB = 1024
const MiB = 1024 * KiB

const server = (config: TestServer.Config) => TestServer.make(config).pipe(Effect.orDie)

/** nbdkit's pattern: each 8-byte word holds its own offset, big-endian. */
const patternAt = (offset: number, length: number): Uint8Array => {
  const out = Buffer.alloc(length)
  for (let at = 0; at < length; at += 8) out.writeBigUInt64BE(BigInt(offset + at), at)
  return out
}

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7) & 0xff
  return out
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))

const sha256 = (path: string): string => Crypto.createHash("sha256").update(Fs.readFileSync(path)).digest("hex")

/** Tries often and briefly: the servers here come back within a second. */
const quick = Schedule.spaced("20 millis").pipe(Schedule.upTo({ duration: "10 seconds" }))

/**
 * A Unix socket in front of a test server that closes its first `drops` connections before any greeting, as
 * a server on its way up may, then relays the rest to the server.
 */
const flakyFront = (drops: number, target: TestServer.Address) =>
  Effect.gen(function* () {
    const path = Path.join(yield* tempDir, "front.sock")
    const sockets = new Set<Net.Socket>()
    let accepted = 0
    yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const front = Net.createServer((socket) => {
          accepted += 1
          if (accepted <= drops) return void socket.end()
          const back = target._tag === "Unix" ? Net.connect(target.path) : Net.connect(target.port, target.host)
          for (const end of [socket, back]) {
            sockets.add(end)
            end.on("error", () => {})
            end.on("close", () => {
              sockets.delete(end)
              socket.destroy()
              back.destroy()
            })
          }
          socket.pipe(back)
          back.pipe(socket)
        })
        front.listen(path, () => resume(Effect.succeed(front)))
      }),
      (front) =>
        Effect.callback<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          front.close(() => resume(Effect.void))
        })
    )
    return { path, accepted: () => accepted }
  })

/** The reconnect's log lines, kept for a test to read instead of printed. */
const capturedLogs = (lines: Array<string>) =>
  Logger.layer([
    Logger.make(({ message }) => {
      lines.push(String(Array.isArray(message) ? message.join(" ") : message))
    })
  ])

describe("reconnect by schedule", () => {
  it.live("64 pipelined reads ride out a server that drops every connection at its 5th request", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 8 * MiB, backend: "pattern" }], disconnectAfter: 5 })
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, s.uri)
      const blocks = Array.from({ length: 64 }, (_, i) => i)
      const data = yield* Effect.forEach(blocks, (i) => Nbd.pread(h, 64 * KiB, i * 64 * KiB), {
        concurrency: "unbounded"
      })
      for (const i of blocks) expect(same(data[i]!, patternAt(i * 64 * KiB, 64 * KiB))).toBe(true)
      // Each connection answers 4 requests before it drops: 64 reads need at least 15 reconnects.
      expect((yield* Nbd.stats(h)).reconnects).toBeGreaterThanOrEqual(15)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("writes in flight when the connection drops are replayed, and read back as written", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 4 * MiB }], disconnectAfter: 7 })
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, s.uri)
      const blocks = Array.from({ length: 48 }, (_, i) => i)
      yield* Effect.forEach(blocks, (i) => Nbd.pwrite(h, bytes(32 * KiB, i), i * 32 * KiB), {
        concurrency: "unbounded",
        discard: true
      })
      // Read back through the same handle: every connection drops at its 7th request, so it reconnects too.
      for (const i of blocks) expect(same(yield* Nbd.pread(h, 32 * KiB, i * 32 * KiB), bytes(32 * KiB, i))).toBe(true)
      expect((yield* Nbd.stats(h)).reconnects).toBeGreaterThan(0)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("block status replayed after a drop reports each context once", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 4 * MiB }], disconnectAfter: 3 })
      const setup = yield* Nbd.make()
      yield* NodeNbd.connectUri(setup, s.uri)
      yield* Nbd.pwrite(setup, bytes(64 * KiB, 1), MiB)
      const h = yield* Nbd.make({ reconnect: quick, metaContexts: ["base:allocation"] })
      yield* NodeNbd.connectUri(h, s.uri)
      const results = yield* Effect.forEach(
        Array.from({ length: 16 }, (_, i) => i),
        () => Nbd.blockStatus(h, 4 * MiB, 0),
        { concurrency: "unbounded" }
      )
      for (const entries of results) {
        expect(entries.map((e) => e.context)).toEqual(["base:allocation"])
        const total = entries[0]!.extents.reduce((n, e) => n + e.length, 0n)
        expect(total).toBe(BigInt(4 * MiB))
      }
      expect((yield* Nbd.stats(h)).reconnects).toBeGreaterThan(0)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("TLS and extended headers are negotiated again on every reconnect", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const keys = Path.join(dir, "keys.psk")
      Fs.writeFileSync(keys, `alice:${"ab".repeat(32)}\n`)
      const s = yield* server({
        exports: [{ name: "", size: 4 * MiB, backend: "pattern" }],
        tls: "require",
        tlsPsk: keys,
        disconnectAfter: 4
      })
      const h = yield* Nbd.make({ reconnect: quick, tls: "require", tlsPskFile: keys, tlsUsername: "alice" })
      yield* NodeNbd.connectUri(h, s.uri, { allowLocalFile: true })
      const data = yield* Effect.forEach(
        Array.from({ length: 12 }, (_, i) => i),
        (i) => Nbd.pread(h, 16 * KiB, i * 16 * KiB),
        { concurrency: "unbounded" }
      )
      data.forEach((d, i) => expect(same(d, patternAt(i * 16 * KiB, 16 * KiB))).toBe(true))
      expect((yield* Nbd.stats(h)).reconnects).toBeGreaterThanOrEqual(3)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(true)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("each reconnect is a client span, nbd_reconnect, with the handle and the commands waiting", () =>
    Effect.gen(function* () {
      const spans: Array<{ readonly name: string; readonly attributes: ReadonlyMap<string, unknown> }> = []
      const native = yield* Effect.tracer
      const tracer = Tracer.make({
        span: (options) => {
          const span = native.span(options)
          spans.push({ name: options.name, attributes: span.attributes })
          return span
        }
      })
      const s = yield* server({ exports: [{ name: "", size: MiB, backend: "pattern" }], disconnectAfter: 3 })
      const h = yield* Nbd.make({ reconnect: quick, handleName: "traced" })
      yield* NodeNbd.connectUri(h, s.uri).pipe(Effect.withTracer(tracer))
      yield* Effect.forEach([0, 1, 2, 3], (i) => Nbd.pread(h, 4096, i * 4096), { concurrency: 4 }).pipe(
        Effect.withTracer(tracer)
      )
      const reconnects = spans.filter((span) => span.name === "nbd_reconnect")
      expect(reconnects.length).toBe((yield* Nbd.stats(h)).reconnects)
      expect(reconnects.length).toBeGreaterThan(0)
      expect(reconnects[0]!.attributes.get("nbd.handle.name")).toBe("traced")
      expect(typeof reconnects[0]!.attributes.get("nbd.waiting")).toBe("number")
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("a server error reply is not a drop: no reconnect, no replay", () =>
    Effect.gen(function* () {
      const s = yield* server({
        exports: [{ name: "", size: MiB }],
        faults: [{ command: "read", errno: "EIO" }]
      })
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, s.uri)
      const error = yield* Effect.flip(Nbd.pread(h, 4096, 0))
      expect(error._tag).toBe("CommandError")
      expect(error.errno).toBe("EIO")
      yield* Nbd.pwrite(h, bytes(4096, 2), 0)
      const stats = yield* Nbd.stats(h)
      expect(stats.reconnects).toBe(0)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    })
  )

  const logs: Array<string> = []
  it.live("stateChanges shows the drop and the reconnect; the log says so", () =>
    Effect.gen(function* () {
      const peer = yield* restartable(["memory", "1M"])
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, peer.uri)
      const seen = yield* Nbd.stateChanges(h).pipe(
        Stream.map((s) => s._tag),
        Stream.changes,
        Stream.takeUntil((tag) => tag === "Closed"),
        Stream.runCollect,
        Effect.forkChild
      )
      yield* Effect.sleep("20 millis")
      yield* peer.kill
      const read = yield* Effect.forkChild(Nbd.pread(h, 4096, 0))
      yield* Effect.sleep("150 millis")
      expect(HandleState.isConnecting(yield* Nbd.state(h))).toBe(true)
      yield* peer.start
      expect(same(yield* Fiber.join(read), new Uint8Array(4096))).toBe(true)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect((yield* Nbd.stats(h)).reconnects).toBe(1)
      yield* Nbd.shutdown(h)
      const tags = yield* Fiber.join(seen)
      expect(tags.slice(tags.indexOf("Ready"))).toEqual(["Ready", "Connecting", "Ready", "Closed"])
      expect(logs.some((l) => l.includes("connection dropped") && l.includes("reconnecting"))).toBe(true)
      expect(logs.some((l) => l.includes("reconnected"))).toBe(true)
    }).pipe(Effect.provide(capturedLogs(logs)))
  )

  it.live("a server that never comes back: every waiting command fails ENOTCONN when the schedule ends", () =>
    Effect.gen(function* () {
      const peer = yield* restartable(["memory", "1M"])
      const schedule = Schedule.spaced("25 millis").pipe(Schedule.upTo({ duration: "1 second" }))
      const h = yield* Nbd.make({ reconnect: schedule })
      yield* NodeNbd.connectUri(h, peer.uri)
      // Commands queued before the drop, and commands issued while the handle reconnects.
      const before = yield* Effect.forEach([0, 1, 2, 3], (i) => Nbd.aioPread(h, 4096, i * 4096))
      yield* peer.kill
      const started = Date.now()
      const during = yield* Effect.forkChild(
        Effect.all([Nbd.pread(h, 4096, 0), Nbd.pwrite(h, bytes(4096, 1), 0)], { concurrency: 2, mode: "result" })
      )
      const settled = yield* Effect.forEach(before, (c) => Effect.result(c.await))
      const late = yield* Fiber.join(during)
      const elapsed = Date.now() - started
      for (const outcome of [...settled, ...late]) {
        // A reply may have arrived before the kill: those succeed; the rest fail ENOTCONN with the cause.
        if (outcome._tag === "Success") continue
        expect(outcome.failure._tag).toBe("ConnectionError")
        expect(outcome.failure.errno).toBe("ENOTCONN")
        expect(NbdError.isNbdError((outcome.failure as NbdError.ConnectionError).cause)).toBe(true)
      }
      expect(late.every((o) => o._tag === "Failure")).toBe(true)
      expect(late.map((o) => (o._tag === "Failure" ? o.failure.operation : ""))).toEqual(["nbd_pread", "nbd_pwrite"])
      expect(elapsed).toBeLessThan(1000 + 100)
      const state = yield* Nbd.state(h)
      expect(HandleState.isDead(state)).toBe(true)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("a server that comes back with another size: ExportChangedError, nothing replayed or written", () =>
    Effect.gen(function* () {
      const first = yield* restartable(["memory", "1M"])
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, first.uri)
      yield* first.kill
      const write = yield* Effect.forkChild(Nbd.pwrite(h, bytes(4096, 9), 0))
      yield* Effect.sleep("100 millis")
      // The same socket, now a 2 MiB export.
      Fs.rmSync(first.socket, { force: true })
      const dir = Path.dirname(first.socket)
      const pidfile = Path.join(dir, "other.pid")
      const other = spawn("nbdkit", ["-f", "-U", first.socket, "-P", pidfile, "memory", "2M"], { stdio: "ignore" })
      yield* Effect.addFinalizer(() => Effect.sync(() => other.kill("SIGKILL")))
      const error = yield* Effect.flip(Fiber.join(write))
      expect(error._tag).toBe("ExportChangedError")
      expect(error.errno).toBe("ESTALE")
      expect(error.operation).toBe("nbd_pwrite")
      expect(error.message).toContain("size changed from 1048576 to 2097152")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
      const check = yield* Nbd.make()
      yield* NodeNbd.connectUri(check, first.uri)
      expect(same(yield* Nbd.pread(check, 4096, 0), new Uint8Array(4096))).toBe(true)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("interrupting a command that waits for a reconnect releases it at once", () =>
    Effect.gen(function* () {
      // Writes take 5 s, so the queued write is surely unanswered when the server dies.
      const peer = yield* restartable(["--filter=delay", "memory", "1M", "wdelay=5"])
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectUri(h, peer.uri)
      const queued = yield* Nbd.aioPwrite(h, bytes(4096, 4), 0)
      yield* Effect.sleep("50 millis")
      yield* peer.kill
      const started = Date.now()
      const timedOut = yield* Effect.result(Effect.timeout(Nbd.pread(h, 4096, 0), "100 millis"))
      expect(timedOut._tag).toBe("Failure")
      expect(Date.now() - started).toBeLessThan(1000)
      // The queued write's caller gives up too: it is not replayed.
      const given = yield* Effect.result(Effect.timeout(queued.await, "50 millis"))
      expect(given._tag).toBe("Failure")
      yield* peer.start
      // The new server is empty: had the abandoned write been replayed, it would hold block 4.
      expect(same(yield* Nbd.pread(h, 4096, 0), new Uint8Array(4096))).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("closing the handle while it reconnects fails what waits and does not hang", () =>
    Effect.gen(function* () {
      const peer = yield* restartable(["memory", "1M"])
      const outcome = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make({ reconnect: Schedule.spaced("50 millis") })
          yield* NodeNbd.connectUri(h, peer.uri)
          yield* peer.kill
          const read = yield* Effect.forkChild(Nbd.pread(h, 4096, 0))
          yield* Effect.sleep("100 millis")
          return read
        })
      ).pipe(Effect.flatMap((read) => Effect.result(Fiber.join(read))))
      expect(outcome._tag).toBe("Failure")
      if (outcome._tag === "Failure") expect(outcome.failure.errno).toBe("ENOTCONN")
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live("an open timeout retries the first connect until the server is there", () =>
    Effect.gen(function* () {
      const peer = yield* restartable(["memory", "1M"])
      yield* peer.kill
      const h = yield* Nbd.make({ openTimeout: "10 seconds" })
      const connect = yield* Effect.forkChild(NodeNbd.connectUri(h, peer.uri))
      yield* Effect.sleep("300 millis")
      expect(HandleState.isConnecting(yield* Nbd.state(h))).toBe(true)
      yield* peer.start
      yield* Fiber.join(connect)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(MiB))
      const never = yield* Nbd.make({ openTimeout: "300 millis" })
      const error = yield* Effect.flip(NodeNbd.connectUnix(never, Path.join(Path.dirname(peer.socket), "nobody")))
      expect(error._tag).toBe("ConnectionError")
      expect(error.errno).toBe("ENOENT")
      expect(HandleState.isDead(yield* Nbd.state(never))).toBe(true)
    })
  )

  it.live("an open timeout retries a server that closes the connection before its greeting", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: MiB }] })
      const front = yield* flakyFront(3, s.address)
      // Without an open timeout the close is the answer, a protocol error that says the server went away.
      const once = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUnix(once, front.path))
      expect(error._tag === "ProtocolError" && error.reason).toBe("Disconnected")
      expect(error.message).toContain("server disconnected unexpectedly")
      // With one, the same close is a drop: the connect tries again until the server answers.
      const h = yield* Nbd.make({ openTimeout: "10 seconds" })
      yield* NodeNbd.connectUnix(h, front.path)
      expect(yield* Nbd.getSize(h)).toBe(BigInt(MiB))
      expect(front.accepted()).toBe(4)
    })
  )

  it.live("a handle connected to a command line starts the command again", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make({ reconnect: quick })
      yield* NodeNbd.connectCommand(h, ["nbdkit", "-s", "--exit-with-parent", "pattern", "1M"])
      const first = yield* NodeNbd.getSubprocessPid(h)
      yield* NodeNbd.killSubprocess(h, "SIGKILL")
      expect(same(yield* Nbd.pread(h, 4096, 8192), patternAt(8192, 4096))).toBe(true)
      expect((yield* Nbd.stats(h)).reconnects).toBe(1)
      expect(yield* NodeNbd.getSubprocessPid(h)).not.toBe(first)
    }).pipe(Effect.provide(capturedLogs([])))
  )

  it.live(
    "a copy into a pool of 4 connections survives nbdkit killed and restarted mid-copy",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const source = Path.join(dir, "source.img")
        const target = Path.join(dir, "target.img")
        const size = 256 * MiB
        const fd = Fs.openSync(source, "w")
        for (let at = 0; at < size; at += 16 * MiB) Fs.writeSync(fd, Crypto.randomBytes(16 * MiB))
        Fs.closeSync(fd)
        Fs.writeFileSync(target, "")
        Fs.truncateSync(target, size)
        const peer = yield* restartable(["file", target])
        const pool = yield* NbdPool.make({
          connect: (h) => NodeNbd.connectUri(h, peer.uri),
          connections: 4,
          settings: { reconnect: quick }
        })
        expect(NbdPool.size(pool)).toBe(4)
        const copy = yield* Effect.forkChild(NbdCopy.copy(NbdCopy.file(source), pool, { requestSize: 256 * KiB }))
        yield* Effect.sleep("150 millis")
        yield* peer.kill
        yield* Effect.sleep("200 millis")
        yield* peer.start
        const result = yield* Fiber.join(copy)
        expect(result.bytes).toBe(BigInt(size))
        const reconnects = yield* Effect.forEach(pool.handles, (h) => Effect.map(Nbd.stats(h), (s) => s.reconnects))
        expect(reconnects.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1)
        expect(sha256(target)).toBe(sha256(source))
      }).pipe(Effect.provide(Layer.merge(NodeFileSystem.layer, capturedLogs([])))),
    60_000
  )
})
