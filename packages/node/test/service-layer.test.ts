/**
 * The client as a service: the application module in ./app/backup.ts depends on the `NbdClient` tag only,
 * and runs unchanged against a real nbdkit process and against the in-process test server; only the layer
 * differs. What it wrote is then read back by libnbd's nbdsh, on a connection of its own.
 */
import { HandleState, Nbd, NbdClient, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { describe, expect, it, layer } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { backup, DIGEST_BYTES, marker, MARKER_OFFSET } from "./app/backup.js"
import { nbdkit, run, tempDir } from "./util/peers.js"

const SIZE = 64 * 1024 * 1024

/** Where the layer's server is, for the checks the test makes beside the application (not for the app). */
class PeerUri extends Context.Service<PeerUri, string>()("test/PeerUri") {}

/** A real nbdkit process, `nbdkit -U SOCK memory 64M`, for the layer's life; the client connects to its URI. */
const nbdkitLayer: Layer.Layer<NbdClient.NbdClient | PeerUri, NbdError.NbdError> = Layer.unwrap(
  Effect.map(nbdkit(["memory", String(SIZE)]), (peer) =>
    Layer.merge(NodeNbd.layer(peer.uri), Layer.succeed(PeerUri, peer.uri))
  )
)

/** `TestServer.layer` with a 64 MiB memory export, and the client on its URI. */
const testServerLayer: Layer.Layer<NbdClient.NbdClient | PeerUri, NbdError.NbdError | TestServer.TestServerError> =
  Layer.unwrap(
    Effect.map(TestServer.TestServer, (server) =>
      Layer.merge(NodeNbd.layer(server.uri), Layer.succeed(PeerUri, server.uri))
    )
  ).pipe(Layer.provide(TestServer.layer({ exports: [{ name: "", size: SIZE }] })))

/** What the first MiB must hold after a backup of `label` of a fresh (all zero) export. */
const expectedDigest = (label: string): string => {
  const head = new Uint8Array(DIGEST_BYTES)
  head.set(marker(label), MARKER_OFFSET)
  return createHash("sha256").update(head).digest("hex")
}

/** libnbd's view of the first MiB, through nbdsh on its own connection. */
const libnbdDigest = (uri: string): Effect.Effect<string> =>
  Effect.map(
    run("env", [
      `PATH=/usr/bin:${process.env["PATH"] ?? ""}`,
      "nbdsh",
      "-u",
      uri,
      "-c",
      `import hashlib; print(hashlib.sha256(h.pread(${DIGEST_BYTES}, 0)).hexdigest())`
    ]),
    (out) => out.trim()
  )

const peers = [
  ["nbdkit (a real process)", nbdkitLayer],
  ["TestServer.layer (in process)", testServerLayer]
] as const

describe("NbdClient: one application, the server swapped by its layer", () => {
  for (const [name, layer] of peers) {
    it.live(`backup runs against ${name}`, () =>
      Effect.gen(function* () {
        const report = yield* backup("nightly")
        expect(report).toEqual({ size: BigInt(SIZE), sha256: expectedDigest("nightly") })
        // The marker reached the server: libnbd reads the same bytes on a connection of its own.
        expect(yield* libnbdDigest(yield* PeerUri)).toBe(report.sha256)
      }).pipe(Effect.provide(layer))
    )
  }

  it.live("both layers give the same report for the same program", () =>
    Effect.gen(function* () {
      const reports = yield* Effect.forEach(peers, ([, layer]) => backup("weekly").pipe(Effect.provide(layer)))
      expect(reports[0]).toEqual(reports[1])
    })
  )
})

describe("NodeNbd.layer", () => {
  it.live("connects when built, hands out a Ready handle with the settings, and closes it when released", () =>
    Effect.gen(function* () {
      const handle = yield* Effect.scoped(
        Effect.gen(function* () {
          const server = yield* TestServer.make({ exports: [{ name: "disk", size: SIZE }] })
          const context = yield* Layer.build(NodeNbd.layer({ uri: server.uriFor("disk"), handleName: "backup" }))
          const h = Context.get(context, NbdClient.NbdClient)
          expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
          expect(yield* Nbd.getHandleName(h)).toBe("backup")
          expect(yield* Nbd.getExportName(h)).toBe("disk")
          return h
        })
      )
      expect(HandleState.isClosed(yield* Nbd.state(handle))).toBe(true)
    })
  )

  it.live("a server that is not there fails the layer with the connect's NbdError", () =>
    Effect.gen(function* () {
      const missing = Path.join(yield* tempDir, "no.sock")
      const error = yield* Effect.flip(Effect.scoped(Layer.build(NodeNbd.layer(`nbd+unix:///?socket=${missing}`))))
      expect(NbdError.isNbdError(error)).toBe(true)
      expect(error._tag).toBe("ConnectionError")
      expect(error.errno).toBe("ENOENT")
    }).pipe(Effect.scoped)
  )

  it.live("a bad setting or URI fails the layer before anything connects", () =>
    Effect.gen(function* () {
      const badSetting = yield* Effect.flip(
        Effect.scoped(Layer.build(NodeNbd.layer({ uri: "nbd+unix:///?socket=/x", handshakeFlags: 99 })))
      )
      expect(badSetting._tag).toBe("InvalidArgumentError")
      expect(badSetting.operation).toBe("nbd_create")
      const badUri = yield* Effect.flip(Effect.scoped(Layer.build(NodeNbd.layer("http://example.com/"))))
      expect(badUri._tag).toBe("InvalidArgumentError")
      expect(badUri.errno).toBe("EINVAL")
    })
  )

  it.live("layerConfig reads the URI and settings from Effect's Config", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "disk", size: SIZE }] })
      const provider = ConfigProvider.fromUnknown({ NBD_URI: server.uriFor("disk") })
      const layer = NodeNbd.layerConfig({ uri: Config.String("NBD_URI") })
      const size = yield* Effect.flatMap(NbdClient.NbdClient, Nbd.getSize).pipe(
        Effect.provide(layer),
        Effect.provideService(ConfigProvider.ConfigProvider, provider)
      )
      expect(size).toBe(BigInt(SIZE))
    }).pipe(Effect.scoped)
  )
})

describe("NbdClient.layerFrom and layerSocket: any transport builds the service", () => {
  it.live("layerFrom with nbdkit as a subprocess (nbdkit -s) runs the same program", () =>
    Effect.gen(function* () {
      const layer = NbdClient.layerFrom((h) =>
        NodeNbd.connectCommand(h, ["nbdkit", "-s", "--exit-with-parent", "memory", String(SIZE)])
      )
      expect(yield* backup("subprocess").pipe(Effect.provide(layer))).toEqual({
        size: BigInt(SIZE),
        sha256: expectedDigest("subprocess")
      })
    })
  )

  it.live("layerSocket on @effect/platform-node's own socket layer, to the test server", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: SIZE }] })
      const path = server.address._tag === "Unix" ? server.address.path : ""
      const layer = NbdClient.layerSocket().pipe(Layer.provide(NodeSocket.layerNet({ path })))
      expect((yield* backup("socket").pipe(Effect.provide(layer))).sha256).toBe(expectedDigest("socket"))
    }).pipe(Effect.scoped)
  )

  it.live("a connect that does not connect fails the layer instead of handing out a Created handle", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(NbdClient.layerFrom(() => Effect.void))))
      expect(error._tag).toBe("InvalidStateError")
      expect(error.errno).toBe("ENOTCONN")
    })
  )
})

/** Two services that each take the client: two places in one layer graph that need the same layer. */
class Reader extends Context.Service<Reader, Nbd.Handle>()("test/Reader") {}
class Writer extends Context.Service<Writer, Nbd.Handle>()("test/Writer") {}

describe("NodeNbd.layer held once and provided in several places: one handle per provide", () => {
  it.live("a program that provides the layer inside another that provides it gets a handle of its own", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: SIZE }] })
      const client = NodeNbd.layer(server.uri)
      yield* Effect.gen(function* () {
        const outer = yield* NbdClient.NbdClient
        const inner = yield* Effect.provide(NbdClient.NbdClient, client)
        expect(inner).not.toBe(outer)
        // The inner provide's handle closed with it; the outer one lives on until its own provide ends.
        expect(HandleState.isClosed(yield* Nbd.state(inner))).toBe(true)
        expect(HandleState.isReady(yield* Nbd.state(outer))).toBe(true)
      }).pipe(Effect.provide(client))
    })
  )

  it.live("programs that provide the layer one after the other each get their own handle", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: SIZE }] })
      const client = NodeNbd.layer(server.uri)
      const first = yield* Effect.provide(NbdClient.NbdClient, client)
      const second = yield* Effect.provide(NbdClient.NbdClient, client)
      expect(second).not.toBe(first)
      expect(HandleState.isClosed(yield* Nbd.state(first))).toBe(true)
      expect(HandleState.isClosed(yield* Nbd.state(second))).toBe(true)
    })
  )

  it.live("the layers of one composition that need it share one handle", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: SIZE }] })
      const client = NodeNbd.layer(server.uri)
      const app = Layer.mergeAll(
        Layer.effect(Reader, NbdClient.NbdClient).pipe(Layer.provide(client)),
        Layer.effect(Writer, NbdClient.NbdClient).pipe(Layer.provide(client))
      )
      const [reader, writer] = yield* Effect.provide(Effect.all([Reader, Writer]), app)
      expect(reader).toBe(writer)
    })
  )

  it.live("a layer built with layerConfig is one handle per provide too", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: SIZE }] })
      const client = NodeNbd.layerConfig({ uri: Config.succeed(server.uri) })
      yield* Effect.gen(function* () {
        const outer = yield* NbdClient.NbdClient
        expect(yield* Effect.provide(NbdClient.NbdClient, client)).not.toBe(outer)
      }).pipe(Effect.provide(client))
    })
  )
})

/** A server on a socket whose name is known up front, so the client's layer is one value for the whole block. */
const blockSocket = `${Fs.mkdtempSync(Path.join(Os.tmpdir(), "service-layer-"))}/nbd.sock`
const blockClient = NodeNbd.layer(`nbd+unix:///?socket=${blockSocket}`)
const blockHandles: Array<Nbd.Handle> = []

describe("@effect/vitest's layer: one handle shared by the block's tests, on purpose", () => {
  layer(
    Layer.provideMerge(
      blockClient,
      TestServer.layer({ listen: { _tag: "Unix", path: blockSocket }, exports: [{ name: "", size: SIZE }] })
    ),
    // Live clock: a handle's close waits on real time.
    { excludeTestServices: true }
  )((it) => {
    it.effect("the first test gets the block's handle, connected", () =>
      Effect.gen(function* () {
        const h = yield* NbdClient.NbdClient
        blockHandles.push(h)
        expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      })
    )

    it.effect("the next test gets the same handle, still connected", () =>
      Effect.gen(function* () {
        const h = yield* NbdClient.NbdClient
        expect(blockHandles[0]).toBeDefined()
        expect(h).toBe(blockHandles[0])
        expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      })
    )

    it.effect("a test that provides the same layer itself gets a handle of its own", () =>
      Effect.gen(function* () {
        const shared = yield* NbdClient.NbdClient
        const own = yield* Effect.provide(NbdClient.NbdClient, blockClient)
        expect(own).not.toBe(shared)
        expect(HandleState.isClosed(yield* Nbd.state(own))).toBe(true)
        expect(HandleState.isReady(yield* Nbd.state(shared))).toBe(true)
      })
    )
  })
})
