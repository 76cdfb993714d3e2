import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Path from "node:path"
import { tempDir } from "./util/peers.js"

// A scripted fixed-newstyle server over a real Unix socket: it parses the client's options and answers each
// one, writing every answer in the pieces a test asks for, an event-loop turn apart, so the client's
// transport really receives them as separate reads into its reused buffer.

const NBDMAGIC = Buffer.from("NBDMAGIC")
const IHAVEOPT = Buffer.from("IHAVEOPT")
const REP_MAGIC = Buffer.from([0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9])
const OPT_EXPORT_NAME = 1
const OPT_GO = 7
const REP_ACK = 1
const REP_INFO = 3
const REP_ERR_UNSUP = 0x80000001
const EXPORT_SIZE = 1048576n
const EXPORT_FLAGS = 0x0001 | 0x0004 // HAS_FLAGS | SEND_FLUSH

const greeting = (): Buffer => {
  const b = Buffer.alloc(18)
  NBDMAGIC.copy(b, 0)
  IHAVEOPT.copy(b, 8)
  b.writeUInt16BE(0x0003, 16) // FIXED_NEWSTYLE | NO_ZEROES
  return b
}

const optionReply = (option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer => {
  const b = Buffer.alloc(20 + data.length)
  REP_MAGIC.copy(b, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(data.length, 16)
  data.copy(b, 20)
  return b
}

const infoExport = (): Buffer => {
  const b = Buffer.alloc(12)
  b.writeUInt16BE(0, 0) // NBD_INFO_EXPORT
  b.writeBigUInt64BE(EXPORT_SIZE, 2)
  b.writeUInt16BE(EXPORT_FLAGS, 10)
  return b
}

/** GO's successful answer: NBD_INFO_EXPORT, then ACK (52 bytes). */
const goReply = (): Buffer => Buffer.concat([optionReply(OPT_GO, REP_INFO, infoExport()), optionReply(OPT_GO, REP_ACK)])

/** EXPORT_NAME's answer with NO_ZEROES: size and flags (10 bytes). */
const exportNameReply = (): Buffer => {
  const b = Buffer.alloc(10)
  b.writeBigUInt64BE(EXPORT_SIZE, 0)
  b.writeUInt16BE(EXPORT_FLAGS, 8)
  return b
}

interface Script {
  /** Splits of the greeting: the byte positions after which a new write starts. */
  readonly greetingSplits?: ReadonlyArray<number>
  /** The answer to each option; `undefined` for options the script refuses with ERR_UNSUP. */
  readonly answer: (option: number) => { readonly bytes: Buffer; readonly splits?: ReadonlyArray<number> } | undefined
}

const writeInPieces = (socket: Net.Socket, bytes: Buffer, splits: ReadonlyArray<number> = []): void => {
  const cuts = [0, ...splits.filter((s) => s > 0 && s < bytes.length), bytes.length]
  cuts.slice(1).forEach((end, i) => {
    setTimeout(() => socket.writable && socket.write(bytes.subarray(cuts[i], end)), 3 * i)
  })
}

const scriptedServer = (script: Script): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "scripted.sock")
    const sockets = new Set<Net.Socket>()
    yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const server = Net.createServer((socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          writeInPieces(socket, greeting(), script.greetingSplits)
          let buffered = Buffer.alloc(0)
          let flagsRead = false
          socket.on("data", (chunk: Buffer) => {
            buffered = Buffer.concat([buffered, chunk])
            if (!flagsRead) {
              if (buffered.length < 4) return
              buffered = buffered.subarray(4)
              flagsRead = true
            }
            while (buffered.length >= 16) {
              const length = buffered.readUInt32BE(12)
              if (buffered.length < 16 + length) return
              const option = buffered.readUInt32BE(8)
              buffered = buffered.subarray(16 + length)
              const answer = script.answer(option)
              if (answer === undefined) socket.write(optionReply(option, REP_ERR_UNSUP))
              else writeInPieces(socket, answer.bytes, answer.splits)
            }
          })
        })
        server.listen(path, () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          for (const s of sockets) s.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return path
  })

const connectAndGetSize = (path: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUnix(h, path)
      return { size: yield* Nbd.getSize(h), canFlush: yield* Nbd.canFlush(h) }
    })
  )

describe("a handshake split across socket reads", () => {
  it.live("gives the whole stream's result whatever the split of the GO reply", () =>
    Effect.gen(function* () {
      for (let at = 1; at < 52; at++) {
        const path = yield* scriptedServer({
          answer: (option) => (option === OPT_GO ? { bytes: goReply(), splits: [at] } : undefined)
        })
        const result = yield* connectAndGetSize(path)
        expect({ at, ...result }).toEqual({ at, size: EXPORT_SIZE, canFlush: true })
      }
    })
  )

  it.live("gives the whole stream's result whatever the split of the greeting", () =>
    Effect.gen(function* () {
      for (let at = 1; at < 18; at++) {
        const path = yield* scriptedServer({
          greetingSplits: [at],
          answer: (option) => (option === OPT_GO ? { bytes: goReply() } : undefined)
        })
        const result = yield* connectAndGetSize(path)
        expect({ at, ...result }).toEqual({ at, size: EXPORT_SIZE, canFlush: true })
      }
    })
  )

  it.live("gives the whole stream's result delivered one byte per read", () =>
    Effect.gen(function* () {
      const every = (n: number) => Array.from({ length: n }, (_, i) => i + 1)
      const path = yield* scriptedServer({
        greetingSplits: every(18),
        answer: (option) => (option === OPT_GO ? { bytes: goReply(), splits: every(52) } : undefined)
      })
      expect(yield* connectAndGetSize(path)).toEqual({ size: EXPORT_SIZE, canFlush: true })
    })
  )
})

describe("a handshake that ends in garbage", () => {
  const garbage = Buffer.from("garbage after the last handshake message")

  const expectDeadAndCommandsFailAtOnce = (path: string) =>
    Effect.scoped(
      Effect.gen(function* () {
        const h = yield* Nbd.make()
        const connected = yield* Effect.result(NodeNbd.connectUnix(h, path))
        expect(connected._tag).toBe("Failure")
        const state = yield* Nbd.state(h)
        expect(HandleState.isDead(state)).toBe(true)
        // Nothing may bring it back: a command fails now rather than waiting on a dead connection.
        const read = yield* Effect.result(Effect.timeout(Nbd.pread(h, 512, 0), "2 seconds"))
        expect(read._tag).toBe("Failure")
        if (read._tag === "Failure") expect(read.failure._tag).not.toBe("TimeoutError")
        const command = yield* Effect.result(Nbd.aioFlush(h))
        expect(command._tag).toBe("Failure")
        expect(yield* Nbd.aioInFlight(h)).toBe(0)
        expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
      })
    )

  it.live("after GO's ACK leaves the handle dead and fails every later command at once", () =>
    Effect.gen(function* () {
      const path = yield* scriptedServer({
        answer: (option) => (option === OPT_GO ? { bytes: Buffer.concat([goReply(), garbage]) } : undefined)
      })
      yield* expectDeadAndCommandsFailAtOnce(path)
    })
  )

  it.live("after the EXPORT_NAME fallback's reply does the same", () =>
    Effect.gen(function* () {
      const path = yield* scriptedServer({
        answer: (option) =>
          option === OPT_EXPORT_NAME ? { bytes: Buffer.concat([exportNameReply(), garbage]) } : undefined
      })
      yield* expectDeadAndCommandsFailAtOnce(path)
    })
  )
})
