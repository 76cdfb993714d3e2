/**
 * The protocol engine with no socket and no Effect: commands issued, what it queues to send, the server's
 * replies fed as bytes (built with the server's own encoders), cut at every position, and the end of a
 * connection. Each command must settle exactly once, with its data where the caller asked for it.
 */
import { describe, expect, it } from "@effect/vitest"
import { NbdError, Protocol } from "@effect-nbd/core"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import type { Outcome } from "../src/internal/engine/completion.js"
import { END_OF_WRITES, frame, type Outgoing } from "../src/internal/engine/outbox.js"
import { concat } from "../src/internal/wire/bytes.js"
import { type Allocate, type CommandRequest, type Pending, release } from "../src/internal/engine/pending.js"
import { uninitialized } from "../src/internal/engine/uninitialized.js"
import { type EngineHost, type Stats, Transmission } from "../src/internal/engine/transmission.js"

type Mode = "simple" | "structured" | "extended"

const newStats = (): Stats => ({ bytesSent: 0, chunksSent: 0, bytesReceived: 0, chunksReceived: 0, reconnects: 0 })

/** An engine in the transmission phase, with every outcome recorded per cookie. */
const engineFor = (mode: Mode, adopt: EngineHost["adopt"] = () => false, allocate?: Allocate) => {
  const host: EngineHost = { stats: newStats(), adopt, allocate }
  const queued: Array<Outgoing> = []
  const engine = new Transmission(host, { queued: (item) => queued.push(item), handshakeBytes: () => {} })
  // What a handshake would have agreed to.
  engine.handshake.agreement.structuredReplies = mode !== "simple"
  engine.handshake.agreement.extendedHeaders = mode === "extended"
  expect(engine.startTransmission()).toBeUndefined()
  const outcomes = new Map<number, Array<Outcome>>()
  const issue = (command: CommandRequest, offset: number, count: number): Pending => {
    const pending = engine.issue(command, offset, count)
    const seen: Array<Outcome> = []
    outcomes.set(pending.cookie, seen)
    pending.completion.listen((outcome) => seen.push(outcome))
    return pending
  }
  return { engine, host, queued, outcomes, issue }
}

const read = (buffer?: Uint8Array): CommandRequest => ({
  operation: "nbd_pread",
  type: Protocol.Cmd.READ,
  flags: 0,
  buffer,
  fresh: buffer === undefined
})
const flush: CommandRequest = { operation: "nbd_flush", type: Protocol.Cmd.FLUSH, flags: 0 }
const write = (payload: Uint8Array, extended: boolean): CommandRequest => ({
  operation: "nbd_pwrite",
  type: Protocol.Cmd.WRITE,
  flags: extended ? Protocol.CmdFlag.PAYLOAD_LEN : 0,
  payload
})

const pattern = (n: number, seed: number): Uint8Array =>
  Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff)

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))

/** Feeds `bytes` cut at `cuts` (sorted positions), each piece a copy of its own. */
const feed = (engine: Transmission, bytes: Uint8Array, cuts: ReadonlyArray<number>) => {
  let from = 0
  for (const cut of [...cuts, bytes.length]) {
    const error = engine.receive(bytes.slice(from, cut))
    if (error !== undefined) return error
    from = cut
  }
  return undefined
}

/** The replies of a server to: a read of 4 KiB at 8192 (cookie 1), a flush (2) and a read of 600 bytes at 0 (3). */
const replies = (mode: Mode, first: Uint8Array, third: Uint8Array): Uint8Array => {
  if (mode === "simple")
    return concat([
      ServerCodec.simpleReply(2n, 0),
      ServerCodec.simpleReply(1n, 0),
      first,
      ServerCodec.simpleReply(3n, 0),
      third
    ])
  const extended = mode === "extended"
  const target = (cookie: bigint, offset: number): ServerCodec.ChunkTarget => ({ extended, cookie, offset })
  return concat([
    // Out of order, in pieces: the first read in two data chunks, the last a data chunk and a hole.
    ...ServerCodec.offsetDataChunk(target(1n, 8192), 0, 8192 + 1000, first.subarray(1000)),
    ServerCodec.noneChunk(target(2n, 0)),
    ...ServerCodec.offsetDataChunk(target(3n, 0), 0, 0, third.subarray(0, 100)),
    ...ServerCodec.offsetDataChunk(target(1n, 8192), Protocol.REPLY_FLAG_DONE, 8192, first.subarray(0, 1000)),
    ServerCodec.offsetHoleChunk(target(3n, 0), Protocol.REPLY_FLAG_DONE, 100, 500)
  ])
}

describe("the engine, fed bytes with no socket", () => {
  for (const mode of ["simple", "structured", "extended"] as const) {
    it(`${mode}: replies cut at every position settle each command once, data in the caller's buffer`, () => {
      const first = pattern(4096, 7)
      const third = new Uint8Array(600)
      third.set(pattern(100, 3))
      // In simple mode the 600 bytes come as data; in the others the last 500 are a hole, read as zeroes.
      const bytes = replies(mode, first, third)
      // Checked by hand and reported once: an expect per cut would cost more than the engine's work.
      const wrong: Array<string> = []
      for (let cut = 0; cut <= bytes.length; cut++) {
        const { engine, outcomes, issue } = engineFor(mode)
        const into = new Uint8Array(4096).fill(0xee)
        issue(read(into), 8192, 4096)
        issue(flush, 0, 0)
        const fresh = issue(read(), 0, 600)
        const error = feed(engine, bytes, [cut])
        const [a, b, c] = [1, 2, 3].map((cookie) => outcomes.get(cookie) ?? [])
        const settledOnce = a!.length === 1 && b!.length === 1 && c!.length === 1
        const values = settledOnce && a![0]!.ok && b![0]!.ok && c![0]!.ok
        const right =
          error === undefined &&
          values &&
          (a![0] as { value: unknown }).value === into &&
          (b![0] as { value: unknown }).value === undefined &&
          (c![0] as { value: unknown }).value === fresh.buffer &&
          sameBytes(into, first) &&
          sameBytes(fresh.buffer!, third) &&
          engine.inFlight === 0 &&
          engine.pending.size === 0
        if (!right) wrong.push(`cut at ${cut}: ${error?.message ?? JSON.stringify([...outcomes.values()])}`)
      }
      expect(wrong).toEqual([])
    })
  }

  it("a reply one byte at a time, and the counters of what it took", () => {
    const { engine, host, outcomes, issue } = engineFor("structured")
    const first = pattern(4096, 1)
    issue(read(), 8192, 4096)
    issue(flush, 0, 0)
    issue(read(), 0, 600)
    const bytes = replies("structured", first, new Uint8Array(600))
    expect(
      feed(
        engine,
        bytes,
        Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)
      )
    ).toBeUndefined()
    expect([...outcomes.values()].map((o) => o.length)).toEqual([1, 1, 1])
    expect(host.stats.bytesReceived).toBe(bytes.length)
    expect(host.stats.chunksReceived).toBe(5)
    expect(host.stats.chunksSent).toBe(3)
  })

  it("a caller that stopped waiting: its late data is read and dropped, the stream stays in step", () => {
    const { engine, outcomes, issue } = engineFor("structured")
    const into = new Uint8Array(4096)
    const gaveUp = issue(read(into), 8192, 4096)
    issue(flush, 0, 0)
    issue(read(), 0, 600)
    gaveUp.buffer = undefined
    gaveUp.cancelled = true
    expect(feed(engine, replies("structured", pattern(4096, 9), new Uint8Array(600)), [])).toBeUndefined()
    expect(into).toEqual(new Uint8Array(4096))
    expect(outcomes.get(2)).toEqual([{ ok: true, value: undefined }])
    expect(outcomes.get(3)![0]!.ok).toBe(true)
  })

  for (const mode of ["simple", "structured", "extended"] as const)
    it(`${mode}: a caller that stops waiting in the middle of its data: the rest is dropped, never written`, () => {
      const data = pattern(4096, 5)
      const header = (cookie: bigint): ReadonlyArray<Uint8Array> =>
        mode === "simple"
          ? [ServerCodec.simpleReply(cookie, 0), data]
          : ServerCodec.offsetDataChunk(
              { extended: mode === "extended", cookie, offset: 0 },
              Protocol.REPLY_FLAG_DONE,
              0,
              data
            )
      const bytes = concat([...header(1n), ...header(2n)])
      const payloadStart = bytes.length / 2 - data.length
      const wrong: Array<string> = []
      // Cancelled after every cut inside the first reply's data, and once before any of it arrived.
      for (let cut = payloadStart; cut < bytes.length / 2; cut++) {
        const { engine, outcomes, issue } = engineFor(mode)
        const into = new Uint8Array(4096)
        const gaveUp = issue(read(into), 0, 4096)
        const next = new Uint8Array(4096)
        issue(read(next), 0, 4096)
        expect(engine.receive(bytes.slice(0, cut))).toBeUndefined()
        const before = into.slice()
        release(gaveUp)
        expect(engine.receive(bytes.slice(cut))).toBeUndefined()
        const right =
          sameBytes(into, before) &&
          sameBytes(into.subarray(0, cut - payloadStart), data.subarray(0, cut - payloadStart)) &&
          sameBytes(next, data) &&
          outcomes.get(2)?.[0]?.ok === true &&
          engine.pending.size === 0
        if (!right) wrong.push(`cut at ${cut}`)
      }
      expect(wrong).toEqual([])
    })

  it("a server error fails that command only, with the server's errno", () => {
    const { engine, outcomes, issue } = engineFor("structured")
    issue(read(), 0, 512)
    issue(flush, 0, 0)
    const target = { extended: false, cookie: 1n, offset: 0 }
    const bytes = concat([
      ServerCodec.errorChunk(target, Protocol.REPLY_FLAG_DONE, Protocol.NbdErrno.EIO, "bad sector"),
      ServerCodec.noneChunk({ ...target, cookie: 2n })
    ])
    expect(feed(engine, bytes, [])).toBeUndefined()
    const failure = outcomes.get(1)![0]!
    expect(failure.ok).toBe(false)
    if (!failure.ok) {
      expect(failure.error._tag).toBe("CommandError")
      expect(failure.error.errno).toBe("EIO")
      expect(failure.error.message).toMatch(/bad sector/)
    }
    expect(outcomes.get(2)).toEqual([{ ok: true, value: undefined }])
  })

  it("a malformed reply is a decode error for the driver; ending the connection then settles the rest once", () => {
    const { engine, outcomes, issue } = engineFor("structured")
    issue(read(), 0, 512)
    issue(flush, 0, 0)
    const garbage = new Uint8Array(20).fill(0x5a)
    const error = engine.receive(garbage)
    expect(error?._tag).toBe("ClientCodecDecodeError")
    engine.end(undefined)
    engine.end(undefined)
    for (const cookie of [1, 2]) {
      const seen = outcomes.get(cookie)!
      expect(seen).toHaveLength(1)
      expect(seen[0]!.ok).toBe(false)
      if (!seen[0]!.ok) {
        expect(seen[0]!.error).toBeInstanceOf(NbdError.ConnectionError)
        expect(seen[0]!.error.errno).toBe("ENOTCONN")
      }
    }
    expect(engine.inFlight).toBe(0)
  })

  it("a host that adopts the waiting commands keeps them unsettled, for a reconnect to replay", () => {
    const adopted: Array<Pending> = []
    const { engine, outcomes, issue } = engineFor("structured", (_error, waiting) => {
      adopted.push(...waiting)
      return true
    })
    issue(read(), 0, 512)
    issue(flush, 0, 0)
    engine.end(undefined)
    expect(adopted.map((p) => p.cookie)).toEqual([1, 2])
    expect([...outcomes.values()].every((o) => o.length === 0)).toBe(true)
    // A new engine continues the cookies and sends them again.
    const fresh = new Transmission(
      { stats: newStats(), adopt: () => false },
      { queued: () => {}, handshakeBytes: () => {} },
      engine.cookieFloor
    )
    fresh.handshake.agreement.structuredReplies = true
    expect(fresh.startTransmission()).toBeUndefined()
    for (const p of adopted) fresh.replay(p)
    expect(fresh.takeCookie()).toBe(3)
    const target = { extended: false, cookie: 2n, offset: 0 }
    expect(fresh.receive(ServerCodec.noneChunk(target))).toBeUndefined()
    expect(outcomes.get(2)).toEqual([{ ok: true, value: undefined }])
    expect(fresh.inFlight).toBe(1)
  })

  it("frames requests: small ones joined, a large payload alone and never copied, abandoned ones skipped", () => {
    for (const extended of [false, true]) {
      const { engine, issue, queued } = engineFor(extended ? "extended" : "structured")
      const small = pattern(100, 1)
      const large = pattern(256 * 1024, 2)
      issue(flush, 0, 0)
      issue(write(small, extended), 0, small.length)
      const skipped = issue(flush, 0, 0)
      issue(write(large, extended), 4096, large.length)
      issue(flush, 0, 0)
      skipped.abandoned = true
      engine.endWrites()
      expect(queued).toEqual(engine.queue)
      const header = extended ? 32 : 28
      const first = frame(engine.queue, 0)
      expect(first.chunks).toHaveLength(2)
      expect(first.chunks[0]!.length).toBe(header * 3 + small.length)
      expect(first.chunks[1]).toBe(large)
      const second = frame(engine.queue, first.next)
      expect(second.chunks.map((c) => c.length)).toEqual([header])
      expect(second.end).toBe(true)
      expect(engine.queue[second.next - 1]).toBe(END_OF_WRITES)
      expect(skipped.sent).toBe(false)
      // What a request says: the cookie the engine gave it, its offset and length.
      const view = new DataView(first.chunks[0]!.buffer, first.chunks[0]!.byteOffset)
      expect(view.getUint32(0)).toBe(extended ? Protocol.EXTENDED_REQUEST_MAGIC : Protocol.REQUEST_MAGIC)
      expect(view.getBigUint64(8)).toBe(1n)
    }
  })

  // A fiber waiting on a command resumes as soon as the command settles, in the engine's own step: whatever it
  // reads of the engine then must already be true.
  it("a connection's end settles the books before any listener hears of it", () => {
    const { engine, issue } = engineFor("structured")
    const first = issue(read(), 0, 512)
    issue(flush, 0, 0)
    const seenInFlight: Array<number> = []
    first.completion.listen(() => seenInFlight.push(engine.inFlight))
    engine.end(undefined)
    expect(seenInFlight).toEqual([0])
  })

  it("after NBD_CMD_DISC no command may follow, and the write side ends after it", () => {
    const { engine, queued } = engineFor("structured")
    expect(engine.disconnect()).toBe(1)
    expect(engine.disconnect()).toBeUndefined()
    expect(engine.disconnectRequested).toBe(true)
    expect(queued.at(-1)).toBe(END_OF_WRITES)
    expect(engine.writesEnding).toBe(true)
  })
})

/**
 * Stands for memory that was not cleared: every byte 0xee, as if another read's data were still in it. Counts
 * what it gave.
 */
const staleMemory = () => {
  const given: Array<Uint8Array> = []
  const allocate: Allocate = (count) => {
    const buffer = new Uint8Array(count).fill(0xee)
    given.push(buffer)
    return buffer
  }
  return { allocate, given }
}

const outcomeOf = (outcomes: Map<number, Array<Outcome>>, cookie: number): Outcome => {
  const seen = outcomes.get(cookie) ?? []
  expect(seen).toHaveLength(1)
  return seen[0]!
}

const valueOf = (outcome: Outcome): Uint8Array => {
  expect(outcome.ok).toBe(true)
  return (outcome as { value: Uint8Array }).value
}

describe("fresh read buffers: the caller owns them, and they never show old memory", () => {
  for (const mode of ["simple", "structured", "extended"] as const) {
    it(`${mode}: one reply that covers the read fills uncleared memory, every byte the server's`, () => {
      const stale = staleMemory()
      const { engine, outcomes, issue } = engineFor(mode, undefined, stale.allocate)
      issue(read(), 4096, 4096)
      const data = pattern(4096, 5)
      const target = { extended: mode === "extended", cookie: 1n, offset: 4096 }
      const bytes =
        mode === "simple"
          ? concat([ServerCodec.simpleReply(1n, 0), data])
          : concat(ServerCodec.offsetDataChunk(target, Protocol.REPLY_FLAG_DONE, 4096, data))
      // Cut inside the data too: the buffer is made once, when the data starts.
      expect(feed(engine, bytes, [bytes.length - 4000, bytes.length - 100])).toBeUndefined()
      const value = valueOf(outcomeOf(outcomes, 1))
      expect(stale.given).toHaveLength(1)
      expect(value).toBe(stale.given[0])
      expect(sameBytes(value, data)).toBe(true)
    })
  }

  it("chunks that add up to the count without covering it (a duplicate) leave zeroes, never old memory", () => {
    const stale = staleMemory()
    const { engine, outcomes, issue } = engineFor("structured", undefined, stale.allocate)
    issue(read(), 0, 4096)
    const half = pattern(2048, 9)
    const target = { extended: false, cookie: 1n, offset: 0 }
    const bytes = concat([
      ...ServerCodec.offsetDataChunk(target, 0, 0, half),
      ...ServerCodec.offsetDataChunk(target, Protocol.REPLY_FLAG_DONE, 0, half)
    ])
    expect(feed(engine, bytes, [])).toBeUndefined()
    const value = valueOf(outcomeOf(outcomes, 1))
    expect(stale.given).toHaveLength(0)
    expect(sameBytes(value.subarray(0, 2048), half)).toBe(true)
    expect(value.subarray(2048)).toEqual(new Uint8Array(2048))
  })

  it("more data after a reply that covered the read fails it: no buffer reaches the caller", () => {
    const stale = staleMemory()
    const { engine, outcomes, issue } = engineFor("structured", undefined, stale.allocate)
    issue(read(), 0, 4096)
    const target = { extended: false, cookie: 1n, offset: 0 }
    const bytes = concat([
      ...ServerCodec.offsetDataChunk(target, 0, 0, pattern(4096, 1)),
      ServerCodec.offsetHoleChunk(target, Protocol.REPLY_FLAG_DONE, 0, 512)
    ])
    expect(feed(engine, bytes, [])).toBeUndefined()
    const outcome = outcomeOf(outcomes, 1)
    expect(outcome.ok).toBe(false)
    if (!outcome.ok) expect(outcome.error.errno).toBe("EPROTO")
  })

  it("a short reply, an error after the data, or a lost connection mid-data give the caller no buffer", () => {
    const { engine, outcomes, issue } = engineFor("structured", undefined, staleMemory().allocate)
    issue(read(), 0, 4096)
    issue(read(), 4096, 4096)
    issue(read(), 8192, 4096)
    const at = (cookie: bigint, offset: number) => ({ extended: false, cookie, offset })
    const bytes = concat([
      ...ServerCodec.offsetDataChunk(at(1n, 0), Protocol.REPLY_FLAG_DONE, 0, pattern(2048, 1)),
      ...ServerCodec.offsetDataChunk(at(2n, 4096), 0, 4096, pattern(4096, 2)),
      ServerCodec.errorChunk(at(2n, 4096), Protocol.REPLY_FLAG_DONE, Protocol.NbdErrno.EIO, "bad sector"),
      ...ServerCodec.offsetDataChunk(at(3n, 8192), Protocol.REPLY_FLAG_DONE, 8192, pattern(4096, 3))
    ])
    // The third read's data is cut off halfway, and the connection ends.
    expect(feed(engine, bytes.subarray(0, bytes.length - 2048), [])).toBeUndefined()
    engine.end(undefined)
    expect([1, 2, 3].map((cookie) => outcomeOf(outcomes, cookie).ok)).toEqual([false, false, false])
  })

  it("a read replayed after a lost connection gets a new buffer: nothing of the first attempt's memory shows", () => {
    const stale = staleMemory()
    const adopted: Array<Pending> = []
    const { engine, outcomes, issue } = engineFor(
      "structured",
      (_error, waiting) => {
        adopted.push(...waiting)
        return true
      },
      stale.allocate
    )
    issue(read(), 0, 4096)
    const target = { extended: false, cookie: 1n, offset: 0 }
    // The first server starts a reply that covers the read, then the connection is lost halfway.
    const first = concat(ServerCodec.offsetDataChunk(target, Protocol.REPLY_FLAG_DONE, 0, pattern(4096, 4)))
    expect(feed(engine, first.subarray(0, first.length - 2048), [])).toBeUndefined()
    engine.end(undefined)
    expect(stale.given).toHaveLength(1)
    const next = new Transmission(
      { stats: newStats(), adopt: () => false, allocate: stale.allocate },
      { queued: () => {}, handshakeBytes: () => {} },
      engine.cookieFloor
    )
    next.handshake.agreement.structuredReplies = true
    expect(next.startTransmission()).toBeUndefined()
    for (const p of adopted) next.replay(p)
    // The second server sends the first half twice: the count adds up, the second half is never written.
    const half = pattern(2048, 6)
    const again = concat([
      ...ServerCodec.offsetDataChunk(target, 0, 0, half),
      ...ServerCodec.offsetDataChunk(target, Protocol.REPLY_FLAG_DONE, 0, half)
    ])
    expect(feed(next, again, [])).toBeUndefined()
    const value = valueOf(outcomeOf(outcomes, 1))
    expect(value).not.toBe(stale.given[0])
    expect(sameBytes(value.subarray(0, 2048), half)).toBe(true)
    expect(value.subarray(2048)).toEqual(new Uint8Array(2048))
  })

  it("uncleared memory is a plain Uint8Array with memory of its own, shared with no other buffer", () => {
    for (const count of [1, 100, 4095, 4096, 65536, 262144]) {
      const a = uninitialized(count)
      const b = uninitialized(count)
      for (const buffer of [a, b]) {
        expect(buffer.constructor).toBe(Uint8Array)
        expect([buffer.length, buffer.byteOffset, buffer.buffer.byteLength]).toEqual([count, 0, count])
      }
      expect(a.buffer).not.toBe(b.buffer)
    }
  })

  it("by default a fresh read's buffer is the read's alone: its memory is exactly its bytes", () => {
    const { engine, outcomes, issue } = engineFor("simple")
    issue(read(), 0, 100)
    issue(read(), 100, 100)
    const bytes = concat([
      ServerCodec.simpleReply(1n, 0),
      pattern(100, 1),
      ServerCodec.simpleReply(2n, 0),
      pattern(100, 2)
    ])
    expect(feed(engine, bytes, [])).toBeUndefined()
    const [a, b] = [1, 2].map((cookie) => valueOf(outcomeOf(outcomes, cookie)))
    expect(a!.buffer).not.toBe(b!.buffer)
    expect([a!.buffer.byteLength, b!.buffer.byteLength]).toEqual([100, 100])
    expect(sameBytes(a!, pattern(100, 1)) && sameBytes(b!, pattern(100, 2))).toBe(true)
  })
})
