/**
 * Backpressure: a client that sends requests and never reads the replies must not grow the server without
 * limit. The server stops reading that connection while the replies it owes exceed a bound, serves other
 * clients meanwhile, and resumes once the client reads.
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import {
  CMD_FLUSH,
  CMD_READ,
  handshakeSimple,
  memoryInUse,
  patternBytes,
  RawClient,
  request,
  simpleReply,
  sleep
} from "./raw.js"

const MiB = 1024 * 1024

const socketPath = (server: TestServer.Service): string => {
  if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
  return server.address.path
}

/**
 * Samples memory until `progress` (and the memory peak) stop rising for `quietMs`, at most `maxMs`:
 * long enough for an unbounded server to show how much it would hold. Gives the largest growth over
 * `baseline`.
 */
const settle = async (baseline: number, progress: () => number, quietMs = 700, maxMs = 30_000): Promise<number> => {
  let peak = 0
  let last = { at: Date.now(), peak: 0, progress: progress() }
  const end = Date.now() + maxMs
  while (Date.now() < end) {
    await sleep(20)
    peak = Math.max(peak, memoryInUse() - baseline)
    const now = Date.now()
    if (peak > last.peak + 8 * MiB || progress() !== last.progress) last = { at: now, peak, progress: progress() }
    else if (now - last.at >= quietMs) break
  }
  return peak
}

/** A well-behaved client: connects, reads 4096 bytes at `offset`; gives how long that took and the data. */
const politeRead = async (path: string, offset: number): Promise<{ ms: number; data: Buffer }> => {
  const started = performance.now()
  const client = await RawClient.connect(path)
  await handshakeSimple(client)
  await client.write(request(CMD_READ, 1, offset, 4096))
  const reply = await simpleReply(client)
  if (reply.error !== 0) throw new Error(`read failed with ${reply.error}`)
  const data = await client.read(4096)
  const ms = performance.now() - started
  client.destroy()
  return { ms, data }
}

describe("backpressure", () => {
  it.live(
    "32 unread 32 MiB reads: memory stays bounded, another client is served, then every reply arrives intact",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer.make({ exports: [{ name: "", size: 1n << 30n, backend: "pattern" }] })
        const path = socketPath(server)
        const result = yield* Effect.promise(async () => {
          const greedy = await RawClient.connect(path)
          await handshakeSimple(greedy)
          greedy.hold()
          const baseline = memoryInUse()
          const count = 32
          const size = 32 * MiB
          await greedy.write(
            Buffer.concat(Array.from({ length: count }, (_, i) => request(CMD_READ, i + 1, i * size, size)))
          )
          const growth = await settle(baseline, () => 0)
          const polite = await politeRead(path, 8)
          greedy.release()
          const seen = new Set<number>()
          let intact = 0
          for (let i = 0; i < count; i++) {
            const reply = await simpleReply(greedy)
            const data = await greedy.read(size)
            seen.add(reply.cookie)
            if (reply.error === 0 && data.equals(patternBytes((reply.cookie - 1) * size, size))) intact++
          }
          greedy.destroy()
          return { growth, polite, seen: seen.size, intact }
        })
        // Unbounded, the server would hold all 1 GiB of replies.
        expect(result.growth).toBeLessThan(256 * MiB)
        expect(result.polite.ms).toBeLessThan(500)
        expect(result.polite.data.equals(patternBytes(8, 4096))).toBe(true)
        expect(result.seen).toBe(32)
        expect(result.intact).toBe(32)
      }),
    60_000
  )

  it.live(
    "300,000 unread flushes: the server stops reading, its memory stays bounded, and every flush is answered",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer.make({
          exports: [{ name: "", size: MiB }],
          backpressure: { maxReplyBytes: MiB }
        })
        const path = socketPath(server)
        const result = yield* Effect.promise(async () => {
          const greedy = await RawClient.connect(path)
          await handshakeSimple(greedy)
          greedy.hold()
          const total = 300_000
          const batch = 1000
          let written = 0
          const writeAll = (async () => {
            while (written < total) {
              const n = Math.min(batch, total - written)
              await greedy.write(
                Buffer.concat(Array.from({ length: n }, (_, i) => request(CMD_FLUSH, written + i + 1, 0, 0)))
              )
              written += n
            }
          })()
          const baseline = memoryInUse()
          const growth = await settle(baseline, () => written)
          const writtenWhileHeld = written
          const polite = await politeRead(path, 0)
          greedy.release()
          let ok = 0
          let cookieSum = 0
          for (let i = 0; i < total; i++) {
            const reply = await simpleReply(greedy)
            if (reply.error === 0) ok++
            cookieSum += reply.cookie
          }
          await writeAll
          greedy.destroy()
          return { growth, writtenWhileHeld, polite, ok, cookieSum, total }
        })
        // The server stopped reading: the client could not write everything while it did not read.
        expect(result.writtenWhileHeld).toBeLessThan(result.total)
        expect(result.growth).toBeLessThan(48 * MiB)
        expect(result.polite.ms).toBeLessThan(500)
        expect(result.ok).toBe(result.total)
        expect(result.cookieSum).toBe((result.total * (result.total + 1)) / 2)
      }),
    60_000
  )

  it.live("at most maxRequests requests are in service at once: delayed flushes are served in waves", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({
        exports: [{ name: "", size: MiB }],
        faults: [{ command: "flush", delayMs: 100 }],
        backpressure: { maxRequests: 4 }
      })
      const path = socketPath(server)
      const result = yield* Effect.promise(async () => {
        const client = await RawClient.connect(path)
        await handshakeSimple(client)
        const started = performance.now()
        await client.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => request(CMD_FLUSH, i + 1, 0, 0))))
        const cookies: Array<number> = []
        for (let i = 0; i < 20; i++) cookies.push((await simpleReply(client)).cookie)
        const ms = performance.now() - started
        client.destroy()
        return { ms, cookies }
      })
      // 20 requests, 4 at a time, 100 ms each: five waves. Without the cap all 20 finish in one.
      expect(result.ms).toBeGreaterThanOrEqual(450)
      expect(result.ms).toBeLessThan(5000)
      expect([...result.cookies].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    })
  )

  it.live("a client that half-closes while the server holds back still gets every reply", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({
        exports: [{ name: "", size: MiB }],
        faults: [{ command: "flush", delayMs: 20 }],
        backpressure: { maxRequests: 2 }
      })
      const path = socketPath(server)
      const cookies = yield* Effect.promise(async () => {
        const client = await RawClient.connect(path)
        await handshakeSimple(client)
        await client.write(Buffer.concat(Array.from({ length: 10 }, (_, i) => request(CMD_FLUSH, i + 1, 0, 0))))
        client.socket.end()
        const out: Array<number> = []
        for (let i = 0; i < 10; i++) out.push((await simpleReply(client)).cookie)
        await client.waitClosed()
        return out
      })
      expect([...cookies].sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1))
    })
  )
})
