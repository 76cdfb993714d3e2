/**
 * Records transcripts.json: real clients (libnbd's nbdsh, nbdinfo and nbdcopy, qemu-img and qemu-io, and
 * our own client) talk to the test server through a recording proxy, and what each connection's client
 * sent is cut into messages and stored.
 *
 * Regenerate (needs libnbd-bin, python3-libnbd and qemu-utils):
 *
 *   pnpm build && npx tsc -b packages/test-server/test/fuzz/tsconfig.fuzz.json &&
 *     node packages/test-server/build/fuzz/fuzz/record.js
 *
 * The clients are deterministic (cookies count up, payloads are fixed), so a re-recording differs only
 * where a client's version does.
 */
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { Nbd } from "@effect-nbd/core"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { serverConfig } from "./servers.js"
import {
  encodeTranscripts,
  type ServerKind,
  splitClientStream,
  type Transcript,
  transcriptsFile
} from "./transcript.js"

/** A proxy in front of `upstream` that keeps what each connection's client sent. */
const recordingProxy = (path: string, upstream: string) => {
  const streams: Array<Array<Buffer>> = []
  const open = new Set<Net.Socket>()
  const server = Net.createServer((client) => {
    const sent: Array<Buffer> = []
    streams.push(sent)
    const peer = Net.createConnection(upstream)
    open.add(client).add(peer)
    client.on("data", (d: Buffer) => {
      sent.push(Buffer.from(d))
      peer.write(d)
    })
    peer.on("data", (d: Buffer) => client.write(d))
    client.on("end", () => peer.end())
    peer.on("end", () => client.end())
    for (const s of [client, peer]) {
      s.on("error", () => {})
      s.on("close", () => {
        open.delete(s)
        client.destroy()
        peer.destroy()
      })
    }
  })
  return {
    listen: () => new Promise<void>((resolve) => server.listen(path, resolve)),
    /** The streams, once every connection has closed. */
    close: async (): Promise<Array<Buffer>> => {
      for (let i = 0; i < 200 && open.size > 0; i++) await new Promise((r) => setTimeout(r, 10))
      server.close()
      return streams.map((chunks) => Buffer.concat(chunks))
    }
  }
}

const run = (file: string, args: ReadonlyArray<string>): Promise<void> =>
  new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ""}` } },
      (error, _o, stderr) => (error ? reject(new Error(`${file} ${args.join(" ")}: ${stderr}`)) : resolve())
    )
  })

/** nbdsh: connect with base:allocation, then every command the export supports, then a clean shutdown. */
const nbdshSession = (uri: string) =>
  run("nbdsh", [
    "-c",
    [
      "h.add_meta_context('base:allocation')",
      `h.connect_uri(${JSON.stringify(uri)})`,
      "ro = h.is_read_only()",
      "None if ro else h.pwrite(b'\\x5a' * 4096, 0, nbd.CMD_FLAG_FUA if h.can_fua() else 0)",
      "h.pread(4096, 0)",
      "h.pread(512, 65536)",
      "h.flush() if h.can_flush() else None",
      "h.trim(4096, 8192) if h.can_trim() and not ro else None",
      "h.zero(4096, 16384) if h.can_zero() and not ro else None",
      "h.cache(4096, 0) if h.can_cache() else None",
      "def f(ctx, off, entries, err):\n  return 0",
      "h.block_status(65536, 0, f) if h.can_meta_context('base:allocation') else None",
      "h.block_status(65536, 0, f, nbd.CMD_FLAG_REQ_ONE) if h.can_meta_context('base:allocation') else None",
      "h.shutdown()"
    ].join("\n")
  ])

/** Our client: extended headers when offered, pipelined commands, block status, a clean shutdown. */
const ourSession = (socket: string) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
        yield* Nbd.connectSocket(h).pipe(Effect.provide(NodeSocket.layerNet({ path: socket })))
        const data = new Uint8Array(8192).map((_, i) => (i * 7) & 0xff)
        yield* Nbd.pwrite(h, data, 4096)
        const reads = yield* Effect.forEach([0, 1, 2, 3], (i) => Nbd.aioPread(h, 4096, i * 4096))
        yield* Effect.forEach(reads, (c) => c.await)
        yield* Nbd.flush(h)
        yield* Nbd.trim(h, 4096, 65536)
        yield* Nbd.zero(h, 4096, 131072)
        if (yield* Nbd.getStructuredRepliesNegotiated(h)) yield* Nbd.blockStatus(h, 1024 * 1024, 0)
        yield* Nbd.shutdown(h)
      })
    )
  )

interface Recording {
  readonly name: string
  readonly client: string
  readonly server: ServerKind
  /** Runs the client against the proxy; `uri` names the default export. */
  readonly session: (proxy: { readonly socket: string; readonly uri: (exportName: string) => string }) => Promise<void>
}

const recordings: ReadonlyArray<Recording> = [
  { name: "ours-extended", client: "effect-nbd", server: "extended", session: (p) => ourSession(p.socket) },
  { name: "ours-structured", client: "effect-nbd", server: "structured", session: (p) => ourSession(p.socket) },
  { name: "ours-simple", client: "effect-nbd", server: "simple", session: (p) => ourSession(p.socket) },
  { name: "nbdsh-structured", client: "nbdsh (libnbd)", server: "extended", session: (p) => nbdshSession(p.uri("")) },
  { name: "nbdsh-simple", client: "nbdsh (libnbd)", server: "simple", session: (p) => nbdshSession(p.uri("")) },
  { name: "nbdsh-oldstyle", client: "nbdsh (libnbd)", server: "oldstyle", session: (p) => nbdshSession(p.uri("")) },
  { name: "nbdsh-newstyle", client: "nbdsh (libnbd)", server: "newstyle", session: (p) => nbdshSession(p.uri("")) },
  {
    name: "nbdsh-faults",
    client: "nbdsh (libnbd), faults tolerated",
    server: "faults",
    session: (p) => nbdshSession(p.uri("")).catch(() => {})
  },
  {
    name: "nbdinfo-json",
    client: "nbdinfo --json",
    server: "structured",
    session: (p) => run("nbdinfo", ["--json", p.uri("")])
  },
  {
    name: "nbdinfo-list",
    client: "nbdinfo --list",
    server: "extended",
    session: (p) => run("nbdinfo", ["--list", p.uri("")])
  },
  {
    name: "nbdinfo-map",
    client: "nbdinfo --map",
    server: "structured",
    session: (p) => run("nbdinfo", ["--map", p.uri("")])
  },
  {
    name: "nbdcopy-pattern",
    client: "nbdcopy --connections=1 to null:",
    server: "extended",
    session: (p) => run("nbdcopy", ["--connections=1", "--request-size=65536", p.uri("tiny"), "null:"])
  },
  {
    name: "qemu-img-info",
    client: "qemu-img info",
    server: "structured",
    session: (p) => run("qemu-img", ["info", "--image-opts", `driver=nbd,path=${p.socket},export=pattern`])
  },
  {
    name: "qemu-io",
    client: "qemu-io reads, a write, a discard",
    server: "extended",
    session: (p) =>
      run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "read 0 4k",
        "-c",
        "write -P 0x61 4k 4k",
        "-c",
        "discard 64k 64k",
        "-c",
        "flush",
        `nbd+unix:///?socket=${p.socket}`
      ])
  }
]

const record = async (r: Recording): Promise<Array<Transcript>> => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-record-"))
  try {
    return await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const server = yield* TestServer.make({ ...serverConfig(r.server), listen: { _tag: "Unix" } })
          if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
          const socket = Path.join(dir, "proxy.sock")
          const proxy = recordingProxy(socket, server.address.path)
          return yield* Effect.promise(async () => {
            await proxy.listen()
            await r.session({ socket, uri: (name) => `nbd+unix:///${name}?socket=${socket}` })
            const streams = await proxy.close()
            return streams
              .filter((s) => s.length > 0)
              .map((s, i) => ({
                name: streams.length > 1 ? `${r.name}-${i + 1}` : r.name,
                client: r.client,
                server: r.server,
                messages: splitClientStream(s, {
                  oldstyle: r.server === "oldstyle",
                  extendedOffered: r.server === "extended" || r.server === "faults"
                })
              }))
          })
        })
      )
    )
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

const main = async (): Promise<void> => {
  const transcripts: Array<Transcript> = []
  for (const r of recordings) {
    const got = await record(r)
    for (const t of got) console.log(`${t.name}: ${t.messages.length} messages`)
    transcripts.push(...got)
  }
  const file = transcriptsFile()
  const prettier = await import("prettier")
  const options = (await prettier.resolveConfig(file)) ?? {}
  Fs.writeFileSync(
    file,
    await prettier.format(JSON.stringify(encodeTranscripts(transcripts)), { ...options, parser: "json" })
  )
  console.log(`wrote ${transcripts.length} transcripts to ${file}`)
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
