import { HandleState, Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Path from "node:path"
import { nbdkit, tempDir } from "./util/peers.js"

/** A hostile server on a Unix socket: `onConnection` decides what each client gets. */
const rawServer = (onConnection: (socket: Net.Socket) => void): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "raw.sock")
    yield* Effect.acquireRelease(
      Effect.callback<Net.Server>((resume) => {
        const server = Net.createServer(onConnection)
        server.listen(path, () => resume(Effect.succeed(server)))
      }),
      (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
    )
    return path
  })

describe("client errors", () => {
  it.live("pread before connect fails ENOTCONN naming the created state", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(Nbd.pread(h, 512, 0))
      expect(NbdError.isNbdError(error)).toBe(true)
      expect(error._tag).toBe("InvalidStateError")
      expect(error.errno).toBe("ENOTCONN")
      expect(error.message).toBe("invalid state: START: the handle must be connected with the server")
      expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
      const info = yield* Effect.flip(Nbd.getSize(h))
      expect(info.errno).toBe("ENOTCONN")
    })
  )

  it.live("a server that closes before its greeting leaves the handle dead with a protocol error", () =>
    Effect.gen(function* () {
      const path = yield* rawServer((socket) => socket.end())
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, path))
      expect(error._tag).toBe("ProtocolError")
      expect(error.errno).toBe("")
      expect(error.message).toContain("server disconnected unexpectedly")
      const state = yield* Nbd.state(h)
      expect(HandleState.isDead(state)).toBe(true)
      if (state._tag === "Dead") expect(state.error).toEqual(error)
    })
  )

  it.live("a server that sends garbage leaves the handle dead with a protocol error", () =>
    Effect.gen(function* () {
      const path = yield* rawServer((socket) => socket.write("HTTP/1.1 400 Bad Request\r\n\r\n"))
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, path))
      expect(error._tag).toBe("ProtocolError")
      expect(error.message).toContain("did not send expected NBD magic")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("a server that stalls mid-greeting: waiting can time out while the handle stays connecting", () =>
    Effect.gen(function* () {
      const path = yield* rawServer((socket) => socket.write("NBDMAG"))
      const h = yield* Nbd.make()
      yield* NodeNbd.aioConnectUnix(h, path)
      expect(HandleState.isConnecting(yield* Nbd.state(h))).toBe(true)
      const result = yield* Effect.timeout(Nbd.awaitConnected(h), "300 millis").pipe(Effect.result)
      expect(result._tag).toBe("Failure")
      expect(HandleState.isConnecting(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("an impossible option reply length is refused without allocating it", () =>
    Effect.gen(function* () {
      const path = yield* rawServer((socket) => {
        const greeting = Buffer.alloc(18)
        greeting.write("NBDMAGIC", 0, "latin1")
        greeting.write("IHAVEOPT", 8, "latin1")
        greeting.writeUInt16BE(3, 16)
        socket.write(greeting)
        socket.once("data", () => {
          // Reply to NBD_OPT_EXTENDED_HEADERS with a 4 GiB payload length.
          const reply = Buffer.alloc(20)
          reply.writeBigUInt64BE(0x3e889045565a9n, 0)
          reply.writeUInt32BE(11, 8)
          reply.writeUInt32BE(1, 12)
          reply.writeUInt32BE(0xffffffff, 16)
          socket.write(reply)
        })
      })
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, path))
      expect(error._tag).toBe("ProtocolError")
      expect(error.message).toContain("too large")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("connecting to a missing Unix socket fails with the socket's error", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, Path.join(dir, "nothing-here.sock")))
      expect(error._tag).toBe("ConnectionError")
      expect(error.errno).toBe("ENOENT")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("a refused TCP port fails with ECONNREFUSED", () =>
    Effect.gen(function* () {
      const port = yield* Effect.callback<number>((resume) => {
        const server = Net.createServer().listen(0, "127.0.0.1", () => {
          const { port } = server.address() as Net.AddressInfo
          server.close(() => resume(Effect.succeed(port)))
        })
      })
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectTcp(h, "127.0.0.1", port))
      expect(error.errno).toBe("ECONNREFUSED")
    })
  )

  it.live("a handle connects once: a second connect fails", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, server.uri)
      const error = yield* Effect.flip(NodeNbd.connectUri(h, server.uri))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("the handle must be newly created")
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("settings refuse bad values and the wrong state with libnbd's errno", () =>
    Effect.gen(function* () {
      const server = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make()
      expect((yield* Effect.flip(Nbd.setExportName(h, "x".repeat(4097)))).errno).toBe("ENAMETOOLONG")
      expect((yield* Effect.flip(Nbd.setHandshakeFlags(h, 4))).errno).toBe("EINVAL")
      expect((yield* Effect.flip(Nbd.setStrictMode(h, 0x80))).errno).toBe("EINVAL")
      yield* NodeNbd.connectUri(h, server.uri)
      const late = yield* Effect.flip(Nbd.setOptMode(h, true))
      expect(late.errno).toBe("EINVAL")
      expect(late.message).toContain("READY")
      expect((yield* Effect.flip(Nbd.pread(h, 0, 0))).message).toBe("count cannot be 0")
      expect((yield* Effect.flip(Nbd.pread(h, 65 * 1024 * 1024, 0))).errno).toBe("EINVAL")
      yield* Nbd.setStrictMode(h, 0)
      expect((yield* Effect.flip(Nbd.pread(h, 65 * 1024 * 1024, 0))).errno).toBe("ERANGE")
      expect((yield* Effect.flip(Nbd.pread(h, 512, -1))).errno).toBe("EINVAL")
    })
  )

  it.live("a bad URI fails with EINVAL and the reason", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUri(h, "http://example.invalid/"))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toContain("scheme")
      expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
    })
  )
})
