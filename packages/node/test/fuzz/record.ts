/**
 * Records the transcripts under packages/core/test/transcripts/: for each peer, runs the session (session.ts) through a
 * recording proxy on a Unix socket between our client and the server, and writes every exchange (each client
 * message and the bytes the server sent back before the next one) as hex JSON, with what the session returned.
 *
 * Regenerate (needs nbdkit and qemu-nbd; our test server runs in-process):
 *
 *   pnpm build && npx tsc -b packages/node/test/fuzz/tsconfig.fuzz.json && node packages/node/build/fuzz/fuzz/record.js
 *
 * The client is deterministic (cookies count up from 1, the session writes a fixed pattern), so a
 * re-recording differs only where a server's own answers do.
 */
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { nbdkit, qemuNbd, tempDir } from "../util/peers.js"
import { formatJson } from "./hostile-server.js"
import * as Session from "./session.js"
import { ClientSplitter, encodeTranscript, type Exchange, type Transcript, transcriptsDirectory } from "./transcript.js"

interface Recorder {
  readonly path: string
  /** The exchanges of the one connection, once it has closed on both sides. */
  readonly exchanges: Effect.Effect<ReadonlyArray<Exchange>>
}

/**
 * A proxy on `path` that forwards one connection to `upstream` and records it. The client's bytes are cut into
 * messages; the server's bytes belong to the last client message received before them (our client waits for
 * each answer before it sends again, so nothing is misattributed).
 */
const recorder = (dir: string, upstream: string): Effect.Effect<Recorder, never, Scope.Scope> =>
  Effect.gen(function* () {
    const path = Path.join(dir, "proxy.sock")
    const exchanges: Array<{ client: Uint8Array; server: Array<Buffer> }> = [{ client: new Uint8Array(0), server: [] }]
    let closed = 0
    let finished: (() => void) | undefined
    const server = Net.createServer((client) => {
      const peer = Net.createConnection(upstream)
      let splitter: ClientSplitter | undefined
      const close = () => {
        closed += 1
        if (closed === 2) finished?.()
      }
      peer.on("data", (data) => {
        exchanges[exchanges.length - 1]!.server.push(Buffer.from(data))
        client.write(data)
      })
      client.on("data", (data) => {
        splitter ??= new ClientSplitter(ClientSplitter.isOldstyle(Buffer.concat(exchanges[0]!.server)))
        for (const message of splitter.push(data)) exchanges.push({ client: message, server: [] })
        peer.write(data)
      })
      client.on("end", () => peer.end())
      peer.on("end", () => client.end())
      client.on("error", () => peer.destroy())
      peer.on("error", () => client.destroy())
      client.on("close", close)
      peer.on("close", close)
    })
    yield* Effect.acquireRelease(
      Effect.callback<void>((resume) => {
        server.listen(path, () => resume(Effect.void))
      }),
      () => Effect.sync(() => server.close())
    )
    return {
      path,
      exchanges: Effect.callback<ReadonlyArray<Exchange>>((resume) => {
        const result = () =>
          resume(Effect.succeed(exchanges.map((e) => ({ client: e.client, server: Buffer.concat(e.server) }))))
        if (closed === 2) result()
        else finished = result
      })
    }
  })

/** A peer: its name, a description for the transcript, and where it listens once started. */
interface Peer {
  readonly name: string
  readonly peer: string
  readonly start: Effect.Effect<string, never, Scope.Scope>
}

const MiB = "1M"

const nbdkitPeer = (name: string, args: ReadonlyArray<string>): Peer => ({
  name,
  peer: `nbdkit 1.32: nbdkit ${args.join(" ")}`,
  start: Effect.map(nbdkit(args), (p) => p.socket)
})

/** A sparse 1 MiB raw image with 4 KiB of data at 2 KiB, so block status has both kinds of extent. */
const rawImage = Effect.gen(function* () {
  const dir = yield* tempDir
  const image = Path.join(dir, "disk.raw")
  Fs.writeFileSync(image, new Uint8Array(0))
  Fs.truncateSync(image, Session.EXPORT_SIZE)
  const fd = Fs.openSync(image, "r+")
  Fs.writeSync(fd, new Uint8Array(4096).fill(0xab), 0, 4096, 2048)
  Fs.closeSync(fd)
  return image
})

const testServerPeer = (name: string, config: TestServer.Config, what: string): Peer => ({
  name,
  peer: `effect-nbd test server: ${what}`,
  start: Effect.gen(function* () {
    const dir = yield* tempDir
    const path = Path.join(dir, "server.sock")
    yield* Effect.orDie(
      TestServer.make({ ...config, listen: { _tag: "Unix", path }, exports: [{ name: "", size: Session.EXPORT_SIZE }] })
    )
    return path
  })
})

const peers: ReadonlyArray<Peer> = [
  nbdkitPeer("nbdkit-memory", ["memory", MiB]),
  nbdkitPeer("nbdkit-memory-no-sr", ["--no-sr", "memory", MiB]),
  nbdkitPeer("nbdkit-oldstyle", ["-o", "memory", MiB]),
  nbdkitPeer("nbdkit-newstyle-not-fixed", ["--mask-handshake=0", "memory", MiB]),
  {
    name: "qemu-nbd-raw",
    peer: "qemu-nbd 7.2: qemu-nbd --format=raw disk.raw (sparse, 1 MiB, 4 KiB of data at 2 KiB)",
    start: Effect.gen(function* () {
      const image = yield* rawImage
      return (yield* qemuNbd(image, ["--format=raw"])).socket
    })
  },
  testServerPeer("testserver-extended", {}, "memory 1 MiB, extended headers on (the default)"),
  testServerPeer(
    "testserver-extended-out-of-order",
    { outOfOrder: true },
    "memory 1 MiB, extended headers on, reads split into reordered chunks"
  )
]

/** Records one peer's transcript. */
const record = (peer: Peer): Effect.Effect<Transcript> =>
  Effect.scoped(
    Effect.gen(function* () {
      const upstream = yield* peer.start
      const dir = yield* tempDir
      const proxy = yield* recorder(dir, upstream)
      const result = yield* Effect.scoped(Session.run(proxy.path))
      const exchanges = yield* proxy.exchanges
      return { name: peer.name, peer: peer.peer, exchanges, result }
    })
  )

const write = (t: Transcript): Effect.Effect<string> =>
  Effect.promise(async () => {
    const file = Path.join(transcriptsDirectory(), `${t.name}.json`)
    Fs.mkdirSync(Path.dirname(file), { recursive: true })
    Fs.writeFileSync(file, await formatJson(file, encodeTranscript(t)))
    return file
  })

const main = Effect.gen(function* () {
  const only = process.argv.slice(2)
  for (const peer of peers) {
    if (only.length > 0 && !only.includes(peer.name)) continue
    const t = yield* record(peer)
    const file = yield* write(t)
    yield* Effect.log(
      `${peer.name}: ${t.exchanges.length} exchanges, ${Session.outcomeOf(t.result as Session.SessionResult)} -> ${file}`
    )
  }
})

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
