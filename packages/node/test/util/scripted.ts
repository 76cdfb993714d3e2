import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Path from "node:path"
import { tempDir } from "./peers.js"

// A scripted fixed-newstyle NBD server on a Unix socket, for tests of what a client does with answers no
// real server gives: structured replies and base:allocation (context id 1) are accepted, GO gives an export
// of `exportSize`, and every transmission request goes to the test's `onRequest`.

/** The context id the scripted server gives base:allocation. */
export const CONTEXT_ID = 1

/** Reply chunk flags and types the tests write by hand. */
export const Chunk = { DONE: 1, NONE: 0, BLOCK_STATUS: 5 } as const

export const optionReply = (option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer => {
  const b = Buffer.alloc(20 + data.length)
  b.writeBigUInt64BE(0x3e889045565a9n, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(data.length, 16)
  data.copy(b, 20)
  return b
}

const answerOption = (option: number, exportSize: bigint): Buffer => {
  switch (option) {
    case 8: // STRUCTURED_REPLY
      return optionReply(option, 1)
    case 10: {
      // SET_META_CONTEXT
      const data = Buffer.alloc(4 + 15)
      data.writeUInt32BE(CONTEXT_ID, 0)
      data.write("base:allocation", 4)
      return Buffer.concat([optionReply(option, 4, data), optionReply(option, 1)])
    }
    case 7: {
      // GO: NBD_INFO_EXPORT (HAS_FLAGS | SEND_FLUSH), then ACK
      const info = Buffer.alloc(12)
      info.writeBigUInt64BE(exportSize, 2)
      info.writeUInt16BE(0x0005, 10)
      return Buffer.concat([optionReply(option, 3, info), optionReply(option, 1)])
    }
    default:
      return optionReply(option, 0x80000001) // ERR_UNSUP
  }
}

/** A structured reply chunk: its 20-byte header and payload. */
export const chunk = (cookie: Buffer, type: number, flags: number, payload: Buffer): Buffer => {
  const b = Buffer.alloc(20)
  b.writeUInt32BE(0x668e33ef, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  cookie.copy(b, 8)
  b.writeUInt32BE(payload.length, 16)
  return Buffer.concat([b, payload])
}

export interface Request {
  readonly type: number
  readonly cookie: Buffer
  readonly offset: bigint
  readonly length: number
}

export interface Scripted {
  readonly path: string
  /** Resolves once every connection the server accepted has closed. */
  readonly allClosed: Effect.Effect<void>
  /** How many accepted connections the server still holds open. */
  readonly connections: () => number
}

export interface ScriptOptions {
  readonly exportSize?: bigint
  /** What to send for a request; nothing is sent when it returns undefined. NBD_CMD_DISC never reaches it. */
  readonly onRequest?: (request: Request, socket: Net.Socket) => Buffer | undefined
  /** Stop reading transmission requests: the client's writes back up once the socket buffers fill. */
  readonly stopReading?: boolean
  /** Keep the connection open after NBD_CMD_DISC and the client's FIN. */
  readonly ignoreDisconnect?: boolean
  /** Keep the connection open after NBD_CMD_DISC, until the client's FIN. */
  readonly closeOnFin?: boolean
}

export const scriptedServer = (options: ScriptOptions = {}): Effect.Effect<Scripted, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "scripted.sock")
    const sockets = new Set<Net.Socket>()
    let waiters: Array<() => void> = []
    const settle = () => {
      if (sockets.size > 0) return
      for (const w of waiters) w()
      waiters = []
    }
    const exportSize = options.exportSize ?? 1n << 30n
    yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
          sockets.add(socket)
          socket.on("error", () => {})
          socket.on("close", () => {
            sockets.delete(socket)
            settle()
          })
          const greeting = Buffer.alloc(18)
          greeting.write("NBDMAGICIHAVEOPT")
          greeting.writeUInt16BE(3, 16)
          socket.write(greeting)
          let buffered = Buffer.alloc(0)
          let phase: "flags" | "options" | "transmission" = "flags"
          const onData = (data: Buffer) => {
            buffered = Buffer.concat([buffered, data])
            while (true) {
              if (phase === "flags") {
                if (buffered.length < 4) return
                buffered = buffered.subarray(4)
                phase = "options"
              } else if (phase === "options") {
                if (buffered.length < 16) return
                const length = buffered.readUInt32BE(12)
                if (buffered.length < 16 + length) return
                const option = buffered.readUInt32BE(8)
                buffered = buffered.subarray(16 + length)
                socket.write(answerOption(option, exportSize))
                if (option === 7) {
                  phase = "transmission"
                  if (options.stopReading) return void socket.pause()
                }
              } else {
                if (buffered.length < 28) return
                const request: Request = {
                  type: buffered.readUInt16BE(6),
                  cookie: Buffer.from(buffered.subarray(8, 16)),
                  offset: buffered.readBigUInt64BE(16),
                  length: buffered.readUInt32BE(24)
                }
                const payload = request.type === 1 ? request.length : 0
                if (buffered.length < 28 + payload) return
                buffered = buffered.subarray(28 + payload)
                if (request.type === 2) {
                  if (!options.ignoreDisconnect && !options.closeOnFin) socket.end()
                  return
                }
                const answer = options.onRequest?.(request, socket)
                if (answer !== undefined) socket.write(answer)
              }
            }
          }
          socket.on("data", onData)
          socket.on("end", () => {
            if (!options.ignoreDisconnect) socket.end()
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
    const allClosed = Effect.callback<void>((resume) => {
      if (sockets.size === 0) return resume(Effect.void)
      waiters.push(() => resume(Effect.void))
    })
    return { path, allClosed, connections: () => sockets.size }
  })
