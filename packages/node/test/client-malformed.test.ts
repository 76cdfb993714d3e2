/**
 * The client against every malformed reply the test server can send on demand (its `malformed` faults and
 * `disconnectAfter`). Each outcome is libnbd's: where the stream stays in sync the command fails EPROTO
 * and the handle stays usable; where it cannot (data outside the request, a chunk too long, an unknown
 * cookie in a simple reply) the connection dies and every pending command fails ENOTCONN. Nothing hangs:
 * every wait is bounded, and a bound that runs out fails the test as "hung".
 */
import { HandleState, Nbd, NbdCopy, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"

const KiB = 1024
const MiB = 1024 * KiB
const EXPORT_SIZE = MiB

type Mode = "extended" | "structured" | "simple"

const modeConfig: Record<Mode, TestServer.Config> = {
  extended: {},
  structured: { extendedHeaders: false },
  simple: { structuredReplies: false, extendedHeaders: false }
}

/** A handle connected to a test server in `mode`, with base:allocation where replies can carry it. */
const connect = (mode: Mode, config: TestServer.Config) =>
  Effect.gen(function* () {
    const server = yield* TestServer.make({
      exports: [{ name: "", size: EXPORT_SIZE }],
      ...modeConfig[mode],
      ...config
    }).pipe(Effect.orDie)
    const h = yield* Nbd.make(mode === "simple" ? {} : { metaContexts: ["base:allocation"] })
    yield* NodeNbd.connectUri(h, server.uri)
    return h
  })

const HUNG = "hung" as const

/** The outcome of `effect` within a few seconds, or "hung". */
const settle = <A, E>(effect: Effect.Effect<A, E>, seconds = 5) =>
  Effect.result(effect).pipe(
    Effect.timeoutOrElse({ duration: `${seconds} seconds`, orElse: () => Effect.fail(HUNG) }),
    Effect.catch(() => Effect.succeed<typeof HUNG>(HUNG))
  )

/** Asserts that the outcome is a typed NbdError with `errno`; gives the error. */
const expectFailure = (
  outcome: Result.Result<unknown, NbdError.NbdError> | typeof HUNG,
  errno: string
): NbdError.NbdError => {
  expect(outcome, "the command hung").not.toBe(HUNG)
  if (outcome === HUNG || Result.isSuccess(outcome)) {
    expect.fail(`expected a failure with ${errno}, got ${outcome === HUNG ? HUNG : "success"}`)
  }
  expect(NbdError.isNbdError(outcome.failure)).toBe(true)
  expect(outcome.failure.errno, outcome.failure.message).toBe(errno)
  return outcome.failure
}

/** Asserts that the outcome is a success; gives its value. */
const expectSuccess = <A>(outcome: Result.Result<A, NbdError.NbdError> | typeof HUNG): A => {
  expect(outcome, "the command hung").not.toBe(HUNG)
  if (outcome === HUNG || Result.isFailure(outcome))
    expect.fail(`expected success, got ${outcome === HUNG ? HUNG : outcome.failure.message}`)
  return outcome.success
}

/** The handle still serves commands: a write and a read back, then a flush. */
const stillUsable = (h: Nbd.Handle) =>
  Effect.gen(function* () {
    const data = new Uint8Array(4096).map((_, i) => (i * 7 + 1) & 0xff)
    expectSuccess(yield* settle(Nbd.pwrite(h, data, 8192)))
    const back = expectSuccess(yield* settle(Nbd.pread(h, 4096, 8192)))
    expect(Buffer.from(back).equals(data)).toBe(true)
    expectSuccess(yield* settle(Nbd.flush(h)))
    expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    expect(yield* Nbd.aioInFlight(h)).toBe(0)
  })

/** The connection is gone: the handle is Dead or Closed, nothing is in flight, and new commands fail at once. */
const connectionGone = (h: Nbd.Handle) =>
  Effect.gen(function* () {
    const state = yield* Nbd.state(h)
    expect(HandleState.isDead(state) || HandleState.isClosed(state), `state ${state._tag}`).toBe(true)
    expect(yield* Nbd.aioInFlight(h)).toBe(0)
    const late = yield* settle(Nbd.pread(h, 512, 0), 1)
    expect(late).not.toBe(HUNG)
    if (late !== HUNG) expect(Result.isFailure(late) && NbdError.isNbdError(late.failure)).toBe(true)
  })

/** Watches a queued command without waiting for it: join the fiber for its outcome. */
const watch = <A>(command: Nbd.Command<A>) => Effect.forkChild(command.await)

/** Waits, at most `ms`, until the state satisfies `p`. */
const waitForState = (h: Nbd.Handle, p: (s: HandleState.HandleState) => boolean, ms = 2000) =>
  Effect.gen(function* () {
    const end = Date.now() + ms
    while (Date.now() < end) {
      if (p(yield* Nbd.state(h))) return true
      yield* Effect.sleep("10 millis")
    }
    return p(yield* Nbd.state(h))
  })

const chunked: ReadonlyArray<Mode> = ["extended", "structured"]

describe("malformed replies: the command fails EPROTO and the handle stays usable", () => {
  for (const mode of chunked) {
    it.live(`${mode}: read data for a flush and for a write`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [
            { command: "flush", malformed: "read-data-for-non-read", nth: 1 },
            { command: "write", malformed: "read-data-for-non-read", nth: 1 }
          ]
        })
        expectFailure(yield* settle(Nbd.flush(h)), "EPROTO")
        expectFailure(yield* settle(Nbd.pwrite(h, new Uint8Array(512), 0)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: a hole over data already sent`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, { faults: [{ command: "read", malformed: "hole-over-data", nth: 2 }] })
        expectSuccess(yield* settle(Nbd.pread(h, 4096, 0)))
        expectFailure(yield* settle(Nbd.pread(h, 4096, 4096)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: an error chunk whose error is 0, for a read and for a flush`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [
            { command: "read", malformed: "error-zero", nth: 1 },
            { command: "flush", malformed: "error-zero", nth: 1 }
          ]
        })
        expectFailure(yield* settle(Nbd.pread(h, 4096, 0)), "EPROTO")
        expectFailure(yield* settle(Nbd.flush(h)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: a block-status extent near 2^32 bytes, past the end of the export`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, { faults: [{ command: "block-status", malformed: "huge-extent", nth: 1 }] })
        expectFailure(yield* settle(Nbd.blockStatus(h, 64 * KiB, 0)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: block-status extents past the requested range, mid-export and at its end`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [{ command: "block-status", malformed: "extents-past-request", rate: 1 }]
        })
        expectFailure(yield* settle(Nbd.blockStatus(h, 64 * KiB, 0)), "EPROTO")
        expectFailure(yield* settle(Nbd.blockStatus(h, 64 * KiB, EXPORT_SIZE - 64 * KiB)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: more block-status descriptors than the range has bytes`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [{ command: "block-status", malformed: "too-many-extents", nth: 1 }]
        })
        expectFailure(yield* settle(Nbd.blockStatus(h, 4096, 0)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: a zero-length first extent`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [{ command: "block-status", malformed: "zero-length-extent", nth: 1 }]
        })
        expectFailure(yield* settle(Nbd.blockStatus(h, 64 * KiB, 0)), "EPROTO")
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: a zero-length extent after progress ends the list, as libnbd does`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [{ command: "block-status", malformed: "non-advancing-extent", nth: 1 }]
        })
        const entries = expectSuccess(yield* settle(Nbd.blockStatus(h, 64 * KiB, 0)))
        expect(entries).toEqual([{ context: "base:allocation", offset: 0n, extents: [{ length: 32768n, flags: 0 }] }])
        yield* stillUsable(h)
      })
    )

    it.live(`${mode}: a second final reply to a finished command is ignored`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [
            { command: "flush", malformed: "two-dones", nth: 1 },
            { command: "read", malformed: "two-dones", nth: 1 }
          ]
        })
        expectSuccess(yield* settle(Nbd.flush(h)))
        expectSuccess(yield* settle(Nbd.pread(h, 4096, 0)))
        yield* stillUsable(h)
      })
    )
  }

  // libnbd treats a chunk whose offset is not the request's as unexpected: it skips the payload, fails the
  // command with EPROTO and, the chunk having DONE, retires it.
  it.live("extended: a NONE chunk that echoes the wrong offset, for a flush", () =>
    Effect.gen(function* () {
      const h = yield* connect("extended", { faults: [{ command: "flush", malformed: "wrong-offset", nth: 2 }] })
      expectSuccess(yield* settle(Nbd.flush(h)))
      expectFailure(yield* settle(Nbd.flush(h)), "EPROTO")
      yield* stillUsable(h)
    })
  )

  it.live("extended: an OFFSET_DATA chunk that echoes the wrong offset, for a read", () =>
    Effect.gen(function* () {
      const h = yield* connect("extended", { faults: [{ command: "read", malformed: "wrong-offset", nth: 1 }] })
      expectFailure(yield* settle(Nbd.pread(h, 4096, 4096)), "EPROTO")
      yield* stillUsable(h)
    })
  )
})

describe("malformed replies the stream cannot survive: the connection dies, every pending command fails", () => {
  for (const mode of chunked) {
    it.live(`${mode}: read data outside the request`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [
            { command: "read", malformed: "data-outside-request", nth: 1 },
            { command: "flush", delayMs: 2000 }
          ]
        })
        const started = Date.now()
        const flush = yield* watch(yield* Nbd.aioFlush(h))
        const read = yield* settle(Nbd.pread(h, 4096, 0))
        expectFailure(read, "ENOTCONN")
        // The flush was waiting: it fails with the connection, long before the server would answer it.
        expectFailure(yield* settle(Fiber.join(flush)), "ENOTCONN")
        expect(Date.now() - started).toBeLessThan(1500)
        const state = yield* Nbd.state(h)
        expect(HandleState.isDead(state)).toBe(true)
        if (state._tag === "Dead") expect(state.error.errno).toBe("EPROTO")
        yield* connectionGone(h)
      })
    )

    it.live(`${mode}: a chunk longer than the protocol allows`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          faults: [
            { command: "read", malformed: "chunk-too-long", nth: 1 },
            { command: "flush", delayMs: 2000 }
          ]
        })
        const flush = yield* watch(yield* Nbd.aioFlush(h))
        expectFailure(yield* settle(Nbd.pread(h, 4096, 0)), "ENOTCONN")
        expectFailure(yield* settle(Fiber.join(flush)), "ENOTCONN")
        expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
        yield* connectionGone(h)
      })
    )
  }

  it.live("simple: a reply to a cookie no request used", () =>
    Effect.gen(function* () {
      const h = yield* connect("simple", { faults: [{ command: "flush", malformed: "wrong-cookie", nth: 2 }] })
      expectSuccess(yield* settle(Nbd.flush(h)))
      // Without structured replies the data length of an unknown reply is unknowable: libnbd gives up.
      expectFailure(yield* settle(Nbd.flush(h)), "ENOTCONN")
      const state = yield* Nbd.state(h)
      expect(HandleState.isDead(state)).toBe(true)
      if (state._tag === "Dead") expect(state.error.errno).toBe("EPROTO")
      yield* connectionGone(h)
    })
  )

  it.live("simple: a second successful reply to a finished command", () =>
    Effect.gen(function* () {
      const h = yield* connect("simple", { faults: [{ command: "flush", malformed: "two-dones", nth: 1 }] })
      expectSuccess(yield* settle(Nbd.flush(h)))
      expect(yield* waitForState(h, HandleState.isDead)).toBe(true)
      yield* connectionGone(h)
    })
  )
})

describe("replies that never finish a command: it waits, the handle serves others, and it fails when the connection ends", () => {
  const cases: ReadonlyArray<{
    readonly mode: Mode
    readonly kind: TestServer.MalformedReply
    readonly command: "read" | "flush" | "block-status"
  }> = [
    { mode: "extended", kind: "wrong-cookie", command: "read" },
    { mode: "structured", kind: "wrong-cookie", command: "read" },
    { mode: "extended", kind: "no-done", command: "read" },
    { mode: "structured", kind: "no-done", command: "read" },
    { mode: "extended", kind: "no-done", command: "flush" },
    { mode: "structured", kind: "no-done", command: "block-status" }
  ]
  for (const { command, kind, mode } of cases) {
    it.live(`${mode}: ${kind} on a ${command}`, () =>
      Effect.gen(function* () {
        // The third request makes the server drop the connection.
        const h = yield* connect(mode, { faults: [{ command, malformed: kind, nth: 1 }], disconnectAfter: 3 })
        const issued =
          command === "read"
            ? yield* Nbd.aioPread(h, 4096, 0)
            : command === "flush"
              ? yield* Nbd.aioFlush(h)
              : yield* Nbd.aioBlockStatus(h, 64 * KiB, 0)
        const stuck = yield* watch(issued as Nbd.Command<unknown>)
        // The stream is in sync: another command is served while the first waits.
        const other = yield* settle(command === "read" ? Nbd.pwrite(h, new Uint8Array(512), 0) : Nbd.pread(h, 512, 0))
        expectSuccess(other)
        yield* Effect.sleep("200 millis")
        expect(stuck.pollUnsafe()).toBeUndefined()
        expect(yield* Nbd.aioInFlight(h)).toBe(1)
        // The third request ends the connection: both it and the waiting command fail, at once.
        expectFailure(yield* settle(Nbd.pread(h, 512, 0)), "ENOTCONN")
        expectFailure(yield* settle(Fiber.join(stuck)), "ENOTCONN")
        yield* connectionGone(h)
      })
    )
  }
})

describe("disconnectAfter", () => {
  it.live("the server drops the connection on the nth request; earlier ones were served", () =>
    Effect.gen(function* () {
      const h = yield* connect("extended", { disconnectAfter: 3 })
      expectSuccess(yield* settle(Nbd.pwrite(h, new Uint8Array(4096).fill(9), 0)))
      const back = expectSuccess(yield* settle(Nbd.pread(h, 4096, 0)))
      expect(back.every((b) => b === 9)).toBe(true)
      expectFailure(yield* settle(Nbd.flush(h)), "ENOTCONN")
      yield* connectionGone(h)
    })
  )

  it.live("pipelined commands: those the server dropped fail ENOTCONN, none waits", () =>
    Effect.gen(function* () {
      const h = yield* connect("structured", { disconnectAfter: 3 })
      const fibers = yield* Effect.forEach([0, 1, 2, 3, 4, 5, 6, 7], (i) =>
        Effect.flatMap(Nbd.aioPread(h, 4096, i * 4096), watch)
      )
      const outcomes = yield* Effect.forEach(fibers, (f) => settle(Fiber.join(f)))
      for (const [i, outcome] of outcomes.entries()) {
        expect(outcome, `command ${i + 1} hung`).not.toBe(HUNG)
        // The first two may have been answered before the third arrived; from the third on, none is.
        if (i >= 2) expectFailure(outcome, "ENOTCONN")
        else if (outcome !== HUNG && Result.isFailure(outcome)) expect(outcome.failure.errno).toBe("ENOTCONN")
      }
      yield* connectionGone(h)
    })
  )

  it.live("each connection is counted on its own: a new handle is served again", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: EXPORT_SIZE }], disconnectAfter: 2 }).pipe(
        Effect.orDie
      )
      for (let round = 0; round < 3; round++) {
        const served = yield* Effect.scoped(
          Effect.gen(function* () {
            const h = yield* Nbd.make()
            yield* NodeNbd.connectUri(h, server.uri)
            expectSuccess(yield* settle(Nbd.pread(h, 512, 0)))
            expectFailure(yield* settle(Nbd.pread(h, 512, 0)), "ENOTCONN")
            return true
          })
        )
        expect(served).toBe(true)
      }
    })
  )
})

// doc/proto.md (2025-06): extent lengths SHOULD, no longer MUST, be multiples of the minimum block size, and
// a client must accept extents that are not.
describe("unaligned block-status extents, under a minimum block size of 512", () => {
  const blockSize = { minimum: 512, preferred: 4096, maximum: 32 * MiB }

  for (const mode of chunked) {
    it.live(`${mode}: accepted as the server sent them, in strict mode, and the handle stays usable`, () =>
      Effect.gen(function* () {
        const h = yield* connect(mode, {
          blockSize,
          faults: [{ command: "block-status", malformed: "unaligned-extents" }]
        })
        expect(yield* Nbd.getBlockSize(h, "minimum")).toBe(512)
        expect(yield* Nbd.getStrictMode(h)).toBe(Nbd.Strict.MASK)
        const entries = expectSuccess(yield* settle(Nbd.blockStatus(h, 64 * KiB, 4096)))
        expect(entries).toEqual([
          {
            context: "base:allocation",
            offset: 4096n,
            extents: [
              { length: 1n, flags: 0 },
              { length: BigInt(64 * KiB - 2), flags: 3 },
              { length: 1n, flags: 0 }
            ]
          }
        ])
        yield* stillUsable(h)
      })
    )
  }

  it.live("NbdCopy from such a source reads whole blocks: the partly zero blocks are copied as data", () =>
    Effect.gen(function* () {
      const source = yield* connect("extended", {
        blockSize,
        faults: [{ command: "block-status", malformed: "unaligned-extents" }]
      })
      // Data in the first block only: the map's 1-byte data extent lies inside it.
      const first = new Uint8Array(512).map((_, i) => (i % 251) + 1)
      yield* Nbd.pwrite(source, first, 0)
      const destination = yield* connect("extended", {})
      yield* Nbd.pwrite(destination, new Uint8Array(EXPORT_SIZE).fill(0xff), 0)
      const result = expectSuccess(yield* settle(NbdCopy.copy(source, destination, { requestSize: 64 * KiB })))
      expect(result.zeroBytes).toBeGreaterThan(0n)
      const expected = new Uint8Array(EXPORT_SIZE)
      expected.set(first)
      const copied = yield* Nbd.pread(destination, EXPORT_SIZE, 0)
      expect(Buffer.from(copied).equals(Buffer.from(expected))).toBe(true)
    })
  )
})
