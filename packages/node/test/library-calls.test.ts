import { HandleState, Nbd, Transport } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Fs from "node:fs"
import * as Path from "node:path"

const server = (config: TestServer.Config = {}) =>
  TestServer.make({ exports: [{ name: "", size: 1024 * 1024 }], ...config }).pipe(Effect.orDie)

const filled = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte)
const allZero = (b: Uint8Array): boolean => b.every((x) => x === 0)

describe("pread_initialize", () => {
  it.live("on by default: the caller's buffer is zeroed even when the read fails its state check", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      expect(yield* Nbd.getPreadInitialize(h)).toBe(true)
      const buffer = filled(16, 0xff)
      const error = yield* Effect.flip(Nbd.pread(h, 16, 0, { buffer }))
      expect(error.errno).toBe("ENOTCONN")
      expect(allZero(buffer)).toBe(true)
      // aioPread too, even with a length that does not match the count: the state check comes before the
      // argument checks, as in libnbd's wrapper.
      const other = filled(8, 0xee)
      expect((yield* Effect.flip(Nbd.aioPread(h, 16, 0, { buffer: other }))).errno).toBe("ENOTCONN")
      expect(allZero(other)).toBe(true)
    })
  )

  it.live("a read the server fails leaves no old bytes behind", () =>
    Effect.gen(function* () {
      const s = yield* server({ exports: [{ name: "", size: 65536, faults: [{ command: "read", errno: "EIO" }] }] })
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, s.uri)
      const buffer = filled(4096, 0xab)
      const error = yield* Effect.flip(Nbd.pread(h, 4096, 0, { buffer }))
      expect(error._tag).toBe("CommandError")
      expect(error.errno).toBe("EIO")
      expect(allZero(buffer)).toBe(true)
    })
  )

  it.live("off: the buffer is left as it was", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* Nbd.setPreadInitialize(h, false)
      expect(yield* Nbd.getPreadInitialize(h)).toBe(false)
      const buffer = filled(16, 0xff)
      yield* Effect.flip(Nbd.pread(h, 16, 0, { buffer }))
      expect(buffer.every((x) => x === 0xff)).toBe(true)
      const fromSettings = yield* Nbd.make({ preadInitialize: false })
      yield* Effect.flip(Nbd.pread(fromSettings, 16, 0, { buffer }))
      expect(buffer.every((x) => x === 0xff)).toBe(true)
    })
  )
})

describe("what the library supports", () => {
  it.live("package name and version", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const pkg = JSON.parse(Fs.readFileSync(Path.resolve(__dirname, "../../core/package.json"), "utf8")) as {
        readonly version: string
      }
      expect(yield* Nbd.getPackageName(h)).toBe("effect-nbd")
      expect(yield* Nbd.getVersion(h)).toBe(pkg.version)
      expect(yield* Nbd.getVersion(h)).toMatch(/^\d+\.\d+\.\d+$/)
      // An upstream build: no packager's extra version.
      expect(yield* Nbd.getVersionExtra(h)).toBe("")
    })
  )

  it.live("URIs yes, vsock no; TLS where a transport can upgrade", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      expect(yield* Nbd.supportsUri(h)).toBe(true)
      expect(yield* Nbd.supportsVsock(h)).toBe(false)
      // The core alone has no TLS; a context whose transport can upgrade its connection has.
      expect(yield* Nbd.supportsTls(h)).toBe(false)
      const plain = Transport.make({})
      expect(yield* Nbd.supportsTls(h).pipe(Effect.provideService(Transport.Transport, plain))).toBe(false)
      const upgradable = Transport.make({ startTls: () => Effect.void })
      expect(yield* Nbd.supportsTls(h).pipe(Effect.provideService(Transport.Transport, upgradable))).toBe(true)
      expect(yield* NodeNbd.supportsTls(h)).toBe(true)
    })
  )
})

interface Logged {
  readonly message: string
  readonly level: string
  readonly handle: unknown
  readonly call: unknown
}

/** A logger that keeps what it receives, with the annotations debug messages carry. */
const recording = () => {
  const logged: Array<Logged> = []
  const logger = Logger.make<unknown, void>(({ fiber, logLevel, message }) => {
    const text = Array.isArray(message) ? message.join(" ") : String(message)
    const annotations = fiber.getRef(References.CurrentLogAnnotations)
    logged.push({ message: text, level: logLevel, handle: annotations["nbd.handle"], call: annotations["nbd.call"] })
  })
  return { logged, layer: Logger.layer([logger]) }
}

describe("debug messages through Effect's logger", () => {
  it.live("calls, state changes, options and commands, annotated with the handle and the call", () => {
    const { layer, logged } = recording()
    return Effect.gen(function* () {
      const s = yield* server()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make({ handleName: "dbg", metaContexts: ["base:allocation"] })
          expect(yield* Nbd.getDebug(h)).toBe(false)
          yield* NodeNbd.connectUri(h, s.uri)
          yield* Nbd.pread(h, 512, 0)
          // Nothing is logged while debug is off.
          expect(logged).toEqual([])
          yield* Nbd.setDebug(h, true)
          expect(yield* Nbd.getDebug(h)).toBe(true)
          yield* Nbd.pwrite(h, filled(512, 1), 0)
          yield* Nbd.pread(h, 512, 0)
          yield* Effect.flip(Nbd.pread(h, 512, 1024 * 1024))
          yield* Nbd.shutdown(h)
        })
      )
      const h2 = yield* Nbd.make({ handleName: "dbg2", debug: true, optMode: true })
      yield* NodeNbd.connectUri(h2, s.uri)
      yield* Nbd.optList(h2)
      yield* Nbd.optGo(h2)
      yield* Nbd.shutdown(h2)
      // The state watcher logs from its own fiber: let it catch up (at most 5 seconds on a loaded machine).
      for (
        let i = 0;
        i < 100 && !logged.some((l) => l.handle === "dbg2" && l.message === "state: Ready -> Closed");
        i++
      )
        yield* Effect.sleep("50 millis")
      expect(logged.every((l) => l.level === "Debug")).toBe(true)
      const of = (handle: string, call: string) =>
        logged.filter((l) => l.handle === handle && l.call === call).map((l) => l.message)
      // Each call, with its arguments and its result.
      expect(of("dbg", "nbd_pwrite")).toContain("enter: count=512 offset=0 flags=0x0")
      expect(of("dbg", "nbd_pwrite")).toContain("leave: ret=ok")
      expect(of("dbg", "nbd_pread")).toContain("leave: ret=<512 bytes>")
      expect(of("dbg", "nbd_pread").some((m) => m.startsWith("leave: error=nbd_pread: request out of bounds"))).toBe(
        true
      )
      // Each command sent and its reply.
      expect(of("dbg", "nbd_pwrite").some((m) => /^sending write cookie=\d+ offset=0 count=512/.test(m))).toBe(true)
      expect(of("dbg", "nbd_pread").some((m) => /^received reply to read cookie=\d+: success$/.test(m))).toBe(true)
      expect(of("dbg", "nbd_shutdown").some((m) => m.startsWith("sending disconnect cookie="))).toBe(true)
      // State changes.
      expect(of("dbg", "state")).toContain("state: Ready -> Closed")
      expect(of("dbg2", "state")).toEqual([
        "state: Created -> Connecting",
        "state: Connecting -> Negotiating",
        "state: Negotiating -> Connecting",
        "state: Connecting -> Negotiating",
        "state: Negotiating -> Connecting",
        "state: Connecting -> Ready",
        "state: Ready -> Closed"
      ])
      // Options sent and their replies, from the handshake and from option mode.
      expect(of("dbg2", "handshake")).toContain("sending option NBD_OPT_EXTENDED_HEADERS (0 bytes of data)")
      expect(of("dbg2", "handshake")).toContain("received reply Ack to NBD_OPT_EXTENDED_HEADERS")
      expect(of("dbg2", "nbd_opt_list")).toEqual([
        "enter",
        "sending option NBD_OPT_LIST (0 bytes of data)",
        "received reply Server to NBD_OPT_LIST",
        "received reply Ack to NBD_OPT_LIST",
        "leave: ret=<object>"
      ])
      expect(of("dbg2", "nbd_opt_go").some((m) => m.startsWith("sending option NBD_OPT_GO"))).toBe(true)
      expect(of("dbg2", "nbd_opt_go")).toContain("received reply Ack to NBD_OPT_GO")
      expect(HandleState.isClosed(yield* Nbd.state(h2))).toBe(true)
    }).pipe(Effect.provide(layer), Effect.provideService(References.MinimumLogLevel, "Debug"))
  })
})
