import { Nbd } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Effect from "effect/Effect"

// libnbd names the call that was made: nbd_pread fails as "nbd_pread", not as the aio call it is built on.

const server = (config: TestServer.Config = {}) =>
  TestServer.make({ exports: [{ name: "", size: 1024 * 1024 }], ...config }).pipe(Effect.orDie)

const operationOf = <A, R>(effect: Effect.Effect<A, NbdError.NbdError, R>): Effect.Effect<string, A, R> =>
  Effect.map(Effect.flip(effect), (e) => e.operation)

type Call = (h: Nbd.Handle) => Effect.Effect<unknown, NbdError.NbdError>

/** Every command call, with the name it must report. */
const commandCalls: ReadonlyArray<readonly [string, Call]> = [
  ["nbd_pread", (h) => Nbd.pread(h, 512, 0)],
  ["nbd_aio_pread", (h) => Nbd.aioPread(h, 512, 0)],
  ["nbd_pread_structured", (h) => Nbd.preadStructured(h, 512, 0)],
  ["nbd_aio_pread_structured", (h) => Nbd.aioPreadStructured(h, 512, 0)],
  ["nbd_pwrite", (h) => Nbd.pwrite(h, new Uint8Array(512), 0)],
  ["nbd_aio_pwrite", (h) => Nbd.aioPwrite(h, new Uint8Array(512), 0)],
  ["nbd_flush", (h) => Nbd.flush(h)],
  ["nbd_aio_flush", (h) => Nbd.aioFlush(h)],
  ["nbd_trim", (h) => Nbd.trim(h, 512, 0)],
  ["nbd_aio_trim", (h) => Nbd.aioTrim(h, 512, 0)],
  ["nbd_cache", (h) => Nbd.cache(h, 512, 0)],
  ["nbd_aio_cache", (h) => Nbd.aioCache(h, 512, 0)],
  ["nbd_zero", (h) => Nbd.zero(h, 512, 0)],
  ["nbd_aio_zero", (h) => Nbd.aioZero(h, 512, 0)],
  ["nbd_block_status", (h) => Nbd.blockStatus(h, 512, 0)],
  ["nbd_aio_block_status", (h) => Nbd.aioBlockStatus(h, 512, 0)],
  ["nbd_block_status_filter", (h) => Nbd.blockStatusFilter(h, 512, 0, ["base:allocation"])],
  ["nbd_aio_block_status_filter", (h) => Nbd.aioBlockStatusFilter(h, 512, 0, ["base:allocation"])]
]

describe("each call names itself", () => {
  it.live("commands refused by their state check", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      for (const [name, run] of commandCalls) expect(yield* operationOf(run(h)), name).toBe(name)
    })
  )

  it.live("commands the server fails", () =>
    Effect.gen(function* () {
      const s = yield* server({
        exports: [
          {
            name: "",
            size: 1024 * 1024,
            faults: [
              { command: "read", errno: "EIO" },
              { command: "write", errno: "EIO" },
              { command: "flush", errno: "EIO" }
            ]
          }
        ]
      })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      const served = commandCalls.filter(([name]) => /pread|pwrite|flush/.test(name))
      expect(served).toHaveLength(8)
      for (const [name, run] of served) {
        const error = yield* Effect.flip(Effect.flatMap(run(h), (r) => (isCommand(r) ? r.await : Effect.succeed(r))))
        expect(error._tag, name).toBe("CommandError")
        expect(error.operation, name).toBe(name)
      }
    })
  )

  it.live("connect calls, refused because the handle is already connected", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const tcp = yield* server({ listen: { _tag: "Tcp" } })
      const port = tcp.address._tag === "Tcp" ? tcp.address.port : 0
      const path = s.address._tag === "Unix" ? s.address.path : ""
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      const socket = NodeSocket.layerNet({ path })
      // The socket layers can also fail with a SocketError, which these calls never reach.
      const calls: ReadonlyArray<readonly [string, Effect.Effect<void, unknown>]> = [
        ["nbd_connect_uri", NodeNbd.connectUri(h, s.uri)],
        ["nbd_aio_connect_uri", NodeNbd.aioConnectUri(h, s.uri)],
        ["nbd_connect_unix", NodeNbd.connectUnix(h, path)],
        ["nbd_aio_connect_unix", NodeNbd.aioConnectUnix(h, path)],
        ["nbd_connect_tcp", NodeNbd.connectTcp(h, "127.0.0.1", port)],
        ["nbd_aio_connect_tcp", NodeNbd.aioConnectTcp(h, "127.0.0.1", port)],
        ["nbd_connect_command", NodeNbd.connectCommand(h, ["true"])],
        ["nbd_aio_connect_command", NodeNbd.aioConnectCommand(h, ["true"])],
        ["nbd_connect_systemd_socket_activation", NodeNbd.connectSystemdSocketActivation(h, ["true"])],
        ["nbd_aio_connect_systemd_socket_activation", NodeNbd.aioConnectSystemdSocketActivation(h, ["true"])],
        ["nbd_connect_socket", Nbd.connectSocket(h).pipe(Effect.provide(socket))],
        ["nbd_aio_connect_socket", Nbd.aioConnectSocket(h).pipe(Effect.provide(socket))]
      ]
      for (const [name, connect] of calls) {
        const error = (yield* Effect.flip(connect)) as NbdError.NbdError
        expect(error.operation, name).toBe(name)
        expect(error.message, name).toBe("invalid state: READY: the handle must be newly created")
      }
    })
  )

  it.live("connect calls' argument checks and handshake failures", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const fresh = Nbd.make()
      expect(yield* operationOf(Effect.flatMap(fresh, (h) => NodeNbd.connectFd(h, 987654)))).toBe("nbd_connect_socket")
      expect(yield* operationOf(Effect.flatMap(fresh, (h) => NodeNbd.aioConnectFd(h, 987654)))).toBe(
        "nbd_aio_connect_socket"
      )
      expect(yield* operationOf(Effect.flatMap(fresh, (h) => NodeNbd.connectCommand(h, [])))).toBe(
        "nbd_connect_command"
      )
      expect(
        yield* operationOf(Effect.flatMap(fresh, (h) => NodeNbd.connectTcp(h, "localhost", "no-such-service")))
      ).toBe("nbd_connect_tcp")
      expect(yield* operationOf(Effect.flatMap(fresh, (h) => NodeNbd.aioConnectUri(h, "nbd://h/%zz")))).toBe(
        "nbd_aio_connect_uri"
      )
      // The server refusing the export fails the blocking connect under its own name.
      const missing = yield* Effect.flip(
        Effect.flatMap(fresh, (h) => NodeNbd.connectUri(h, s.uriFor("no-such-export")))
      )
      expect(missing.errno).toBe("ENOENT")
      expect(missing.operation).toBe("nbd_connect_uri")
      const viaUnix = yield* Effect.flip(
        Effect.flatMap(Nbd.make({ exportName: "no-such-export" }), (h) =>
          NodeNbd.connectUnix(h, s.address._tag === "Unix" ? s.address.path : "")
        )
      )
      expect(viaUnix.operation).toBe("nbd_connect_unix")
    })
  )

  it.live("shutdown in option mode names itself", () =>
    Effect.gen(function* () {
      const s = yield* server({ protocol: "newstyle" })
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, s.uri)
      const error = yield* Effect.flip(Nbd.shutdown(h))
      expect(error.operation).toBe("nbd_shutdown")
      expect((yield* Effect.flip(Nbd.optAbort(h))).operation).toBe("nbd_opt_abort")
    })
  )
})

const isCommand = (u: unknown): u is Nbd.Command<unknown> =>
  typeof u === "object" && u !== null && "cookie" in u && "await" in u
