/**
 * The server side of malformed-reply faults, `nth` and `disconnectAfter`: what goes on the wire, how the
 * configuration and the CLI take them. The client's handling of each kind is in
 * packages/node/test/client-malformed.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import * as Cli from "../src/internal/cli.js"
import * as Malformed from "../src/internal/malformed.js"
import { CMD_FLUSH, CMD_READ, handshakeSimple, RawClient, request, simpleReply } from "./raw.js"

const socketPath = (server: TestServer.Service): string => {
  if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
  return server.address.path
}

/** A raw client with simple replies on a fresh server; `f` runs with it, and the client is closed after. */
const withRawClient = <A>(config: TestServer.Config, f: (client: RawClient) => Promise<A>) =>
  Effect.gen(function* () {
    const server = yield* TestServer.make({ exports: [{ name: "", size: 1 << 20 }], ...config })
    return yield* Effect.promise(async () => {
      const client = await RawClient.connect(socketPath(server))
      await handshakeSimple(client)
      try {
        return await f(client)
      } finally {
        client.destroy()
      }
    })
  })

describe("malformed replies on the wire", () => {
  it.live("wrong-cookie answers the nth flush only, to the client's cookie with its bits inverted", () =>
    withRawClient(
      { structuredReplies: false, faults: [{ command: "flush", malformed: "wrong-cookie", nth: 2 }] },
      async (client) => {
        const cookies: Array<number> = []
        // A read in between: only flushes count for the flush fault.
        await client.write(request(CMD_FLUSH, 1, 0, 0))
        cookies.push((await simpleReply(client)).cookie)
        await client.write(request(CMD_READ, 2, 0, 512))
        cookies.push((await simpleReply(client)).cookie)
        await client.read(512)
        for (const cookie of [3, 4]) {
          await client.write(request(CMD_FLUSH, cookie, 0, 0))
          const h = await client.read(16)
          cookies.push(Number(h.readBigUInt64BE(8) & 0xffffffffn))
          expect(h.readUInt32BE(4)).toBe(0)
        }
        expect(cookies).toEqual([1, 2, ~3 >>> 0, 4])
      }
    )
  )

  it.live("two-dones without structured replies: two simple replies to one cookie", () =>
    withRawClient(
      { structuredReplies: false, faults: [{ command: "flush", malformed: "two-dones" }] },
      async (client) => {
        await client.write(request(CMD_FLUSH, 7, 0, 0))
        expect(await simpleReply(client)).toEqual({ error: 0, cookie: 7 })
        expect(await simpleReply(client)).toEqual({ error: 0, cookie: 7 })
      }
    )
  )

  it.live("kinds that need reply chunks leave a simple-reply connection served as usual", () =>
    withRawClient(
      {
        structuredReplies: false,
        faults: [
          { command: "flush", malformed: "error-zero" },
          { command: "read", malformed: "hole-over-data" }
        ]
      },
      async (client) => {
        await client.write(request(CMD_FLUSH, 1, 0, 0))
        expect(await simpleReply(client)).toEqual({ error: 0, cookie: 1 })
        await client.write(request(CMD_READ, 2, 0, 512))
        expect(await simpleReply(client)).toEqual({ error: 0, cookie: 2 })
        expect((await client.read(512)).every((b) => b === 0)).toBe(true)
      }
    )
  )

  it.live("disconnectAfter: the nth request gets no reply and the connection closes", () =>
    withRawClient({ structuredReplies: false, disconnectAfter: 3 }, async (client) => {
      for (const cookie of [1, 2]) {
        await client.write(request(CMD_FLUSH, cookie, 0, 0))
        expect(await simpleReply(client)).toEqual({ error: 0, cookie })
      }
      const before = client.received
      await client.write(request(CMD_FLUSH, 3, 0, 0))
      await client.waitClosed()
      expect(client.received).toBe(before)
    })
  )

  it.live("disconnectAfter: requests sent together with the nth still get the replies before it", () =>
    withRawClient({ structuredReplies: false, disconnectAfter: 3 }, async (client) => {
      // One write: the server decodes all four at once, answers the first two and dies at the third.
      await client.write(Buffer.concat([1, 2, 3, 4].map((cookie) => request(CMD_FLUSH, cookie, 0, 0))))
      expect(await simpleReply(client)).toEqual({ error: 0, cookie: 1 })
      expect(await simpleReply(client)).toEqual({ error: 0, cookie: 2 })
      const before = client.received
      await client.waitClosed()
      expect(client.received).toBe(before)
    })
  )

  it.live("the configuration refuses kinds on the wrong command and contradictory faults", () =>
    Effect.gen(function* () {
      const refused = (fault: TestServer.FaultConfig) =>
        Effect.flip(Effect.scoped(TestServer.make({ faults: [fault] })))
      const wrongCommand = yield* refused({ command: "flush", malformed: "hole-over-data" })
      expect(wrongCommand.message).toContain('malformed "hole-over-data" applies to read only')
      const notRead = yield* refused({ command: "read", malformed: "read-data-for-non-read" })
      expect(notRead.message).toContain("applies to commands other than read")
      const extents = yield* refused({ command: "read", malformed: "zero-length-extent" })
      expect(extents.message).toContain("applies to block-status only")
      const both = yield* refused({ command: "read", errno: "EIO", malformed: "error-zero" })
      expect(both.message).toContain("an errno or a malformed reply, not both")
      const when = yield* refused({ command: "read", errno: "EIO", rate: 0.5, nth: 2 })
      expect(when.message).toContain("by rate or on the nth command, not both")
      const unknown = yield* Effect.flip(
        Effect.scoped(TestServer.make({ faults: [{ command: "read", malformed: "bogus" as "no-done" }] }))
      )
      expect(unknown.reason).toBe("Config")
    })
  )
})

describe("too-many-extents", () => {
  /** The descriptors of a compact BLOCK_STATUS chunk (20-byte header, context id, then length/flags pairs). */
  const descriptors = (chunk: Uint8Array): Array<number> => {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length)
    const out: Array<number> = []
    for (let at = 24; at < chunk.length; at += 8) out.push(view.getUint32(at))
    return out
  }
  const reply = (length: number) =>
    Malformed.replacement(
      "too-many-extents",
      { chunk: { extended: false, cookie: new Uint8Array(8), offset: 0 }, type: 7, offset: 0, length },
      "structured"
    )![0]!

  it("sends one 1-byte descriptor more than a small range has bytes", () => {
    const lengths = descriptors(reply(4096))
    expect(lengths).toHaveLength(4097)
    expect(lengths.every((l) => l === 1)).toBe(true)
  })

  it("stays small and quick for a large range: 65537 descriptors, the last running past it", () => {
    // A regression of the fuzz (regressions/timeout-2457e6629198.json): 2^20 descriptors per reply
    // stalled the server for half a second each, long enough for a connection to miss its bound.
    const started = performance.now()
    const lengths = descriptors(reply(16 << 20))
    expect(performance.now() - started).toBeLessThan(200)
    expect(lengths).toHaveLength(65537)
    expect(lengths.reduce((a, b) => a + b, 0)).toBe((16 << 20) + 1)
  })
})

describe("the CLI's malformed replies, #N, --disconnect-after and backpressure bounds", () => {
  const config = (args: ReadonlyArray<string>) => {
    const parsed = Cli.parse(args)
    if (parsed._tag !== "Serve") throw new Error(`not Serve: ${parsed._tag}`)
    return parsed.options.config
  }

  it("--malformed, #N and the new bounds parse into the configuration", () => {
    const c = config([
      "--malformed",
      "read:no-done:#2",
      "--fault",
      "flush:EIO:#3",
      "--export",
      "a=1M",
      "--malformed",
      "block-status:huge-extent:50%",
      "--delay",
      "write:10:#1",
      "--disconnect-after",
      "5",
      "--max-reply-bytes",
      "8M",
      "--max-requests",
      "16"
    ])
    expect(c.faults).toEqual([
      { command: "read", malformed: "no-done", nth: 2 },
      { command: "flush", errno: "EIO", nth: 3 }
    ])
    expect(c.exports?.[0]?.faults).toEqual([
      { command: "block-status", malformed: "huge-extent", rate: 0.5 },
      { command: "write", delayMs: 10, nth: 1 }
    ])
    expect(c.disconnectAfter).toBe(5)
    expect(c.backpressure).toEqual({ maxReplyBytes: 8 << 20, maxRequests: 16 })
    expect(config([]).disconnectAfter).toBeUndefined()
    expect(config([]).backpressure).toBeUndefined()
  })

  it("bad specifications are one-line errors", () => {
    for (const [args, message] of [
      [["--malformed", "read"], /COMMAND:KIND/],
      [["--malformed", "read:bogus"], /unknown kind "bogus"/],
      [["--malformed", "flush:hole-over-data"], /applies to read only/],
      [["--malformed", "read:no-done:#0"], /invalid #N/],
      [["--fault", "read:EIO:#x"], /invalid rate "#x"/],
      [["--disconnect-after", "0"], /--disconnect-after/],
      [["--max-requests", "many"], /--max-requests/],
      [["--max-reply-bytes", "0"], /--max-reply-bytes/]
    ] as const) {
      expect(() => Cli.parse(args), args.join(" ")).toThrow(message)
      try {
        Cli.parse(args)
      } catch (error) {
        expect(String((error as Error).message).split("\n")).toHaveLength(1)
      }
    }
  })
})

describe("unaligned-extents", () => {
  /** The (length, flags) pairs of a compact BLOCK_STATUS chunk (20-byte header, context id, then pairs). */
  const pairs = (length: number): Array<readonly [number, number]> => {
    const chunk = Malformed.replacement(
      "unaligned-extents",
      { chunk: { extended: false, cookie: new Uint8Array(8), offset: 0 }, type: 7, offset: 0, length },
      "structured"
    )![0]!
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.length)
    const out: Array<readonly [number, number]> = []
    for (let at = 24; at < chunk.length; at += 8) out.push([view.getUint32(at), view.getUint32(at + 4)])
    return out
  }

  it("covers the request exactly with lengths no block size above 1 divides", () => {
    expect(pairs(65536)).toEqual([
      [1, 0],
      [65534, 3],
      [1, 0]
    ])
    expect(pairs(2)).toEqual([
      [1, 0],
      [1, 3]
    ])
    expect(pairs(1)).toEqual([[1, 0]])
  })

  it.live("applies to block-status only", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Effect.scoped(TestServer.make({ faults: [{ command: "read", malformed: "unaligned-extents" }] }))
      )
      expect(error.message).toContain("applies to block-status only")
    })
  )
})
