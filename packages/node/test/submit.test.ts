import { Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Schedule from "effect/Schedule"
import * as commands from "../../core/src/internal/api/commands.js"
import type { Outcome } from "../../core/src/internal/engine/completion.js"
import type { HandleImpl } from "../../core/src/internal/session/handle.js"
import { noise } from "./util/bytes.js"
import { restartable } from "./util/peers.js"
import { Chunk, chunk, scriptedServer } from "./util/scripted.js"

// commands.submit, the one way a command is issued: what its caller is told, and when.

const KiB = 1024
/** NBD_REPLY_TYPE_OFFSET_DATA. */
const OFFSET_DATA = 1

const implOf = (h: Nbd.Handle): HandleImpl => h as unknown as HandleImpl

const readSpec = (offset: number, buffer: Uint8Array): commands.CommandSpec => ({
  operation: "nbd_aio_pread",
  type: 0,
  flags: 0,
  offset,
  count: buffer.length,
  buffer
})

/** Every outcome a submitted command reports, in order. */
const recorder = () => {
  const outcomes: Array<Outcome> = []
  return { outcomes, onOutcome: (outcome: Outcome) => void outcomes.push(outcome) }
}

const submitted = (result: commands.Submitted | NbdError.NbdError): commands.Submitted => {
  if (NbdError.isNbdError(result)) throw new Error(`submit refused: ${result.message}`)
  return result
}

/** Polls every millisecond, for at most `ms`, until `ready` holds. */
const until = (ready: () => boolean, ms = 5000) =>
  Effect.gen(function* () {
    for (let i = 0; i < ms && !ready(); i++) yield* Effect.sleep("1 millis")
  })

const quiet = Logger.layer([Logger.make(() => {})])

/** Every 20 ms for 10 seconds: long enough for a test to start the server again. */
const patient = Schedule.spaced("20 millis").pipe(Schedule.upTo({ duration: "10 seconds" }))

/** A handle on nbdkit's pattern that reconnects by `schedule`, whose server was just killed: it is reconnecting. */
const reconnecting = (schedule: Schedule.Schedule<unknown, NbdError.NbdError>) =>
  Effect.gen(function* () {
    const peer = yield* restartable(["pattern", "1M"])
    const h = yield* Nbd.make({ reconnect: schedule })
    yield* NodeNbd.connectUri(h, peer.uri)
    const impl = implOf(h)
    yield* peer.kill
    yield* until(() => impl.recovery !== undefined)
    return { h, impl, peer }
  })

describe("commands.submit", () => {
  it.live("settles once, with the data in the caller's buffer; a failed check is answered, not called back", () =>
    Effect.gen(function* () {
      const data = noise(64 * KiB, 5)
      const server = yield* TestServer.make({ exports: [{ name: "", size: 64 * KiB }] }).pipe(Effect.orDie)
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      yield* Nbd.pwrite(h, data, 0)
      const { onOutcome, outcomes } = recorder()
      const buffer = new Uint8Array(16 * KiB)
      const command = submitted(commands.submit(implOf(h), readSpec(16 * KiB, buffer), onOutcome))
      expect(command.cookie).toBeTypeOf("number")
      yield* until(() => outcomes.length > 0)
      // Another round trip on the same connection, so a second call back would have come by now.
      yield* Nbd.pread(h, 512, 0)
      expect(outcomes).toHaveLength(1)
      expect(outcomes[0]!.ok).toBe(true)
      expect(Buffer.compare(buffer, data.subarray(16 * KiB, 32 * KiB))).toBe(0)
      // Past the end: the check's error is the answer, and nothing is queued or called back.
      const refused = recorder()
      const error = commands.submit(implOf(h), readSpec(64 * KiB, new Uint8Array(512)), refused.onOutcome)
      expect(NbdError.isNbdError(error) && error.errno).toBe("EINVAL")
      yield* Nbd.pread(h, 512, 0)
      expect(refused.outcomes).toHaveLength(0)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    })
  )

  it.live("cancel: a late reply is read and dropped, the buffer is never written, the stream stays in step", () =>
    Effect.gen(function* () {
      const data = noise(8 * KiB, 7)
      const server = yield* TestServer.make({
        exports: [{ name: "", size: 64 * KiB }],
        faults: [{ command: "read", delayMs: 150, nth: 2 }]
      }).pipe(Effect.orDie)
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      yield* Nbd.pwrite(h, data, 0)
      // The first read is served at once, the second (ours) 150 ms later.
      yield* Nbd.pread(h, 512, 0)
      const { onOutcome, outcomes } = recorder()
      const buffer = new Uint8Array(8 * KiB).fill(0xaa)
      const command = submitted(commands.submit(implOf(h), readSpec(0, buffer), onOutcome))
      yield* Effect.sleep("20 millis")
      command.cancel()
      // The reply comes 150 ms after the request: it is still waited for, read, and dropped.
      expect(yield* Nbd.aioInFlight(h)).toBe(1)
      yield* Effect.sleep("300 millis")
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
      expect(outcomes).toHaveLength(0)
      expect(buffer.every((b) => b === 0xaa)).toBe(true)
      // The stream is in step: the next read gets its own data.
      expect(Buffer.compare(yield* Nbd.pread(h, 8 * KiB, 0), data)).toBe(0)
    })
  )

  it.live("an Nbd.pread interrupted while its data arrives in pieces: the rest of the data is never written", () =>
    Effect.gen(function* () {
      // A scripted server answers the first read with half its data, the rest only when the second read comes.
      const half = 32 * KiB
      const data = noise(2 * half, 3)
      let rest: (() => void) | undefined
      const server = yield* scriptedServer({
        onRequest: (request, socket) => {
          const payload = Buffer.concat([Buffer.alloc(8), data])
          const whole = chunk(request.cookie, OFFSET_DATA, Chunk.DONE, payload)
          if (rest === undefined) {
            const cut = whole.length - half
            rest = () => socket.write(whole.subarray(cut))
            return whole.subarray(0, cut)
          }
          rest()
          return whole
        }
      })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUnix(h, server.path)
      const buffer = new Uint8Array(2 * half)
      const fiber = yield* Effect.forkChild(Nbd.pread(h, 2 * half, 0, { buffer }))
      // Until the first half has landed in the caller's buffer.
      yield* Effect.suspend(() =>
        Buffer.compare(buffer.subarray(0, half), data.subarray(0, half)) === 0 ? Effect.void : Effect.fail("not yet")
      ).pipe(Effect.retry(Schedule.spaced("5 millis")), Effect.timeout("5 seconds"))
      yield* Fiber.interrupt(fiber)
      // The second read makes the server send the rest of the first reply, then its own: once it is back, the
      // first reply has been read whole.
      expect(Buffer.compare(yield* Nbd.pread(h, 2 * half, 0), data)).toBe(0)
      expect(buffer.subarray(half).every((b) => b === 0)).toBe(true)
    })
  )

  it.live("while the handle reconnects, a command waits and is queued on the new connection", () =>
    Effect.gen(function* () {
      const { h, impl, peer } = yield* reconnecting(patient)
      expect(impl.recovery).toBeDefined()
      const waiting = recorder()
      const buffer = new Uint8Array(4 * KiB)
      const command = submitted(commands.submit(impl, readSpec(8 * KiB, buffer), waiting.onOutcome))
      // Submitted during the reconnect: not queued yet, so no cookie.
      expect(command.cookie).toBeUndefined()
      // Another, cancelled before the reconnect ends: never queued, never called back.
      const dropped = recorder()
      submitted(commands.submit(impl, readSpec(0, new Uint8Array(4 * KiB)), dropped.onOutcome)).cancel()
      yield* peer.start
      yield* until(() => waiting.outcomes.length > 0, 10_000)
      expect(waiting.outcomes).toHaveLength(1)
      expect(waiting.outcomes[0]!.ok).toBe(true)
      expect(command.cookie).toBeTypeOf("number")
      // nbdkit's pattern: each 8-byte word holds its own offset, big-endian.
      expect(Buffer.from(buffer).readBigUInt64BE(0)).toBe(BigInt(8 * KiB))
      yield* Nbd.pread(h, 512, 0)
      expect(dropped.outcomes).toHaveLength(0)
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    }).pipe(Effect.provide(quiet))
  )

  it.live("a command cancelled by another's outcome as the reconnect ends is neither queued nor called back", () =>
    Effect.gen(function* () {
      const { h, impl, peer } = yield* reconnecting(patient)
      // Both wait for the reconnect. The first fails its checks once it ends (it reads past the export), and
      // its caller then stops waiting for the second, as a transfer does on its first error.
      const buffer = new Uint8Array(4 * KiB)
      const second = recorder()
      let other: commands.Submitted | undefined
      const first = recorder()
      submitted(
        commands.submit(impl, readSpec(2 * 1024 * KiB, new Uint8Array(512)), (outcome) => {
          first.onOutcome(outcome)
          other?.cancel()
        })
      )
      other = submitted(commands.submit(impl, readSpec(8 * KiB, buffer), second.onOutcome))
      yield* peer.start
      yield* until(() => first.outcomes.length > 0, 10_000)
      expect(first.outcomes).toHaveLength(1)
      expect(first.outcomes[0]!.ok).toBe(false)
      // A read after it: any reply to the cancelled one would have been read by then.
      yield* Nbd.pread(h, 512, 0)
      expect(second.outcomes).toHaveLength(0)
      expect(buffer.every((b) => b === 0)).toBe(true)
      expect(other.cookie).toBeUndefined()
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
    }).pipe(Effect.provide(quiet))
  )

  it.live("a reconnect that gives up fails the waiting command, under its own name", () =>
    Effect.gen(function* () {
      const { impl } = yield* reconnecting(
        Schedule.recurs(2).pipe(Schedule.addDelay(() => Effect.succeed("20 millis")))
      )
      const waiting = recorder()
      submitted(commands.submit(impl, readSpec(0, new Uint8Array(512)), waiting.onOutcome))
      yield* until(() => waiting.outcomes.length > 0)
      expect(waiting.outcomes).toHaveLength(1)
      const outcome = waiting.outcomes[0]!
      expect(outcome.ok).toBe(false)
      if (!outcome.ok) {
        expect(outcome.error.errno).toBe("ENOTCONN")
        expect(outcome.error.operation).toBe("nbd_aio_pread")
      }
    }).pipe(Effect.provide(quiet))
  )
})
