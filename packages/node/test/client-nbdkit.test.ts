import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { directoryWith, nbdkit } from "./util/peers.js"

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff
  return out
}

describe("client against nbdkit", () => {
  it.live("memory: size, flags, write then read back", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getSize(h)).toBe(1048576n)
      expect(yield* Nbd.getProtocol(h)).toBe("newstyle-fixed")
      expect(yield* Nbd.isReadOnly(h)).toBe(false)
      expect(yield* Nbd.canFlush(h)).toBe(true)
      expect(yield* Nbd.canTrim(h)).toBe(true)
      expect(yield* Nbd.canZero(h)).toBe(true)
      expect(yield* Nbd.canMultiConn(h)).toBe(true)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
      // nbdkit 1.32 predates extended headers: asked for, refused, and the connection goes on without them.
      expect(yield* Nbd.getExtendedHeadersNegotiated(h)).toBe(false)
      const data = bytes(65536, 7)
      yield* Nbd.pwrite(h, data, 4096)
      yield* Nbd.flush(h)
      expect(yield* Nbd.pread(h, 65536, 4096)).toEqual(data)
      const around = yield* Nbd.pread(h, 8, 4092)
      expect(Array.from(around)).toEqual([0, 0, 0, 0, ...Array.from(data.subarray(0, 4))])
    })
  )

  it.live("many commands in flight complete with the right data", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "4M"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      const blocks = Array.from({ length: 64 }, (_, i) => bytes(4096 + i * 512, i))
      const writes = yield* Effect.forEach(blocks, (b, i) => Nbd.aioPwrite(h, b, i * 65536))
      expect(yield* Nbd.aioInFlight(h)).toBeGreaterThan(0)
      yield* Effect.forEach(writes, (c) => c.await)
      const reads = yield* Effect.forEach(blocks, (b, i) => Nbd.aioPread(h, b.length, i * 65536))
      const results = yield* Effect.forEach(reads, (c) => c.await, { concurrency: "unbounded" })
      results.forEach((r, i) => expect(Buffer.from(r).equals(blocks[i]!)).toBe(true))
      expect(new Set(reads.map((c) => c.cookie)).size).toBe(64)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    })
  )

  it.live("null with an exact odd size reads zeroes", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["null", "1234567"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.getSize(h)).toBe(1234567n)
      expect(yield* Nbd.pread(h, 7, 1234560)).toEqual(new Uint8Array(7))
      const error = yield* Effect.flip(Nbd.pread(h, 8, 1234560))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("out of bounds")
    })
  )

  it.live("-r: read-only, and writes are refused before anything is sent", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["-r", "memory", "1M"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.isReadOnly(h)).toBe(true)
      const before = yield* Nbd.stats(h)
      const error = yield* Effect.flip(Nbd.pwrite(h, new Uint8Array(512), 0))
      expect(error.errno).toBe("EPERM")
      expect((yield* Nbd.stats(h)).bytesSent).toBe(before.bytesSent)
      // With strict mode off the request goes to the server, whose refusal comes back typed.
      yield* Nbd.setStrictMode(h, 0)
      const served = yield* Effect.flip(Nbd.pwrite(h, new Uint8Array(512), 0))
      expect(served._tag).toBe("CommandError")
      expect(served.errno).toBe("EPERM")
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.pread(h, 512, 0)).toEqual(new Uint8Array(512))
    })
  )

  it.live("file dir=: optList returns both files, optGo selects each, a missing name fails ENOENT", () =>
    Effect.gen(function* () {
      const dir = yield* directoryWith({ "alpha.img": bytes(8192, 1), "beta.img": bytes(12288, 2) })
      const server = yield* nbdkit(["file", `dir=${dir}`])
      const list = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make({ optMode: true })
          yield* NodeNbd.connectUri(h, server.uri)
          expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
          return yield* Nbd.optList(h)
        })
      )
      expect(list.map((e) => e.name).sort()).toEqual(["alpha.img", "beta.img"])
      for (const [name, seed, size] of [
        ["alpha.img", 1, 8192],
        ["beta.img", 2, 12288]
      ] as const) {
        yield* Effect.scoped(
          Effect.gen(function* () {
            const h = yield* Nbd.make({ optMode: true })
            yield* NodeNbd.connectUri(h, server.uri)
            yield* Nbd.setExportName(h, name)
            yield* Nbd.optGo(h)
            expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
            expect(yield* Nbd.getSize(h)).toBe(BigInt(size))
            expect(yield* Nbd.pread(h, size, 0)).toEqual(bytes(size, seed))
          })
        )
      }
      // Option mode: the refusal leaves the handle negotiating, and another export can still be chosen.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make({ optMode: true })
          yield* NodeNbd.connectUri(h, server.uri)
          yield* Nbd.setExportName(h, "missing.img")
          const error = yield* Effect.flip(Nbd.optGo(h))
          expect(error.errno).toBe("ENOENT")
          expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
          yield* Nbd.setExportName(h, "alpha.img")
          yield* Nbd.optGo(h)
          expect(yield* Nbd.getSize(h)).toBe(8192n)
        })
      )
      // Without option mode a missing export kills the handle.
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUri(h, `nbd+unix:///missing.img?socket=${server.socket}`))
      expect(error.errno).toBe("ENOENT")
      expect(error.message).toContain("missing.img")
      const state = yield* Nbd.state(h)
      expect(HandleState.isDead(state)).toBe(true)
    })
  )

  it.live("option mode: optInfo, meta contexts, then optGo", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "2M"])
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.optListMetaContext(h, ["base:"])).toEqual(["base:allocation"])
      yield* Nbd.addMetaContext(h, "base:allocation")
      yield* Nbd.optInfo(h)
      expect(yield* Nbd.getSize(h)).toBe(2097152n)
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.optSetMetaContext(h)).toEqual(["base:allocation"])
      yield* Nbd.optGo(h)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      expect(yield* Nbd.getBlockSize(h, "payload")).toBeGreaterThanOrEqual(1024 * 1024)
    })
  )

  it.live("-o: oldstyle has no structured replies and is ready even in option mode", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["-o", "memory", "1M"])
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, server.uri)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getProtocol(h)).toBe("oldstyle")
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(false)
      expect(yield* Nbd.getSize(h)).toBe(1048576n)
      yield* Nbd.pwrite(h, bytes(1024, 3), 0)
      expect(yield* Nbd.pread(h, 1024, 0)).toEqual(bytes(1024, 3))
    })
  )

  it.live("--mask-handshake 0: newstyle; optList and optInfo fail ENOTSUP; optGo uses EXPORT_NAME", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--mask-handshake", "0", "memory", "1M"])
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, server.uri)
      expect(yield* Nbd.getProtocol(h)).toBe("newstyle")
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      expect((yield* Effect.flip(Nbd.optList(h))).errno).toBe("ENOTSUP")
      expect((yield* Effect.flip(Nbd.optInfo(h))).errno).toBe("ENOTSUP")
      yield* Nbd.optGo(h)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getSize(h)).toBe(1048576n)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(false)
      yield* Nbd.pwrite(h, bytes(512, 9), 512)
      expect(yield* Nbd.pread(h, 512, 512)).toEqual(bytes(512, 9))
    })
  )

  it.live("closing the scope sends NBD_CMD_DISC and fails pending commands with ENOTCONN", () =>
    Effect.gen(function* () {
      const dir = yield* directoryWith({})
      const log = Path.join(dir, "nbdkit.log")
      const server = yield* nbdkit(["--filter=log", "--filter=delay", "memory", "1M", `logfile=${log}`, "delay-read=3"])
      const command = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          yield* NodeNbd.connectUri(h, server.uri)
          return yield* Nbd.aioPread(h, 512, 0)
        })
      )
      const error = yield* Effect.flip(command.await)
      expect(error.errno).toBe("ENOTCONN")
      // The log filter records the client's disconnect request.
      yield* Effect.sleep("200 millis")
      expect(Fs.readFileSync(log, "utf8")).toMatch(/Disconnect/)
    })
  )

  it.live("commands in flight fail with ENOTCONN when the server is killed", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["--filter=delay", "memory", "1M", "delay-read=5"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      const commands = yield* Effect.forEach([0, 512, 1024], (offset) => Nbd.aioPread(h, 512, offset))
      yield* Effect.sleep("100 millis")
      yield* server.kill
      const started = Date.now()
      for (const c of commands) expect((yield* Effect.flip(c.await)).errno).toBe("ENOTCONN")
      expect(Date.now() - started).toBeLessThan(1000)
      const state = yield* Nbd.state(h)
      expect(HandleState.isClosed(state) || HandleState.isDead(state)).toBe(true)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    })
  )

  it.live("shutdown waits for pending commands, then the handle is closed", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      const write = yield* Nbd.aioPwrite(h, bytes(4096, 5), 0)
      yield* Nbd.shutdown(h)
      // The write gets the server's own answer, never ENOTCONN from the client. nbdkit answers a request it
      // had not yet run when NBD_CMD_DISC arrived with ESHUTDOWN (its worker threads check the connection's
      // status first), so either outcome is the server's.
      const outcome = yield* Effect.result(write.await)
      if (outcome._tag === "Failure") {
        expect(outcome.failure._tag).toBe("CommandError")
        expect(outcome.failure.errno).toBe("ESHUTDOWN")
      }
      expect(HandleState.isClosed(yield* Nbd.state(h))).toBe(true)
      const error = yield* Effect.flip(Nbd.pread(h, 512, 0))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("CLOSED")
    })
  )

  it.live("TLS require against a plaintext server fails cleanly and leaves the handle dead", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make({ tls: "require" })
      const error = yield* Effect.flip(NodeNbd.connectUri(h, server.uri))
      expect(error.errno).toBe("ENOTSUP")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )
})
