/**
 * The server's wire behaviour seen by a hand-written client: the paths libnbd 1.14 cannot reach
 * (extended headers) and option edge cases.
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import { makeTlsCredentials } from "./helpers.js"

/** Option codes, short names for this test. */
const Opt = { GO: 7, LIST: 3, ABORT: 2, STARTTLS: 5, SR: 8, EH: 11, SET_META: 10, LIST_META: 9, INFO: 6 } as const

class RawClient {
  private buf = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  closed = false
  constructor(readonly sock: Net.Socket | Tls.TLSSocket) {
    sock.on("data", (d) => {
      this.buf = Buffer.concat([this.buf, d])
      this.wake()
    })
    sock.on("close", () => {
      this.closed = true
      this.wake()
    })
  }
  private wake() {
    const w = this.waiters
    this.waiters = []
    w.forEach((f) => f())
  }
  static connect(path: string) {
    return Effect.callback<RawClient>((resume) => {
      const sock = Net.createConnection({ path }, () => resume(Effect.succeed(new RawClient(sock))))
    })
  }
  read(n: number): Effect.Effect<Buffer> {
    return Effect.callback<Buffer>((resume) => {
      const attempt = () => {
        if (this.buf.length >= n) {
          const out = this.buf.subarray(0, n)
          this.buf = this.buf.subarray(n)
          resume(Effect.succeed(out))
        } else if (this.closed) resume(Effect.die(new Error(`closed with ${this.buf.length}/${n} bytes`)))
        else this.waiters.push(attempt)
      }
      attempt()
    })
  }
  waitClosed(): Effect.Effect<boolean> {
    return Effect.callback<boolean>((resume) => {
      const attempt = () => (this.closed ? resume(Effect.succeed(true)) : this.waiters.push(attempt))
      attempt()
    })
  }
  write(...parts: Array<Buffer>) {
    this.sock.write(Buffer.concat(parts))
  }
  option(option: number, data: Buffer = Buffer.alloc(0)) {
    const h = Buffer.alloc(16)
    h.write("IHAVEOPT", 0, "latin1")
    h.writeUInt32BE(option, 8)
    h.writeUInt32BE(data.length, 12)
    this.write(h, data)
  }
  /** Reads one option reply: [option, type, data]. */
  reply() {
    return Effect.gen({ self: this }, function* () {
      const h = yield* this.read(20)
      expect(h.readBigUInt64BE(0)).toBe(0x3e889045565a9n)
      const data = yield* this.read(h.readUInt32BE(16))
      return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data }
    })
  }
  handshake() {
    return Effect.gen({ self: this }, function* () {
      const greeting = yield* this.read(18)
      expect(greeting.subarray(0, 16).toString("latin1")).toBe("NBDMAGICIHAVEOPT")
      expect(greeting.readUInt16BE(16)).toBe(3)
      const flags = Buffer.alloc(4)
      flags.writeUInt32BE(3)
      this.write(flags)
    })
  }
}

const nameData = (name: string, tail: Buffer) => {
  const n = Buffer.from(name)
  const len = Buffer.alloc(4)
  len.writeUInt32BE(n.length)
  return Buffer.concat([len, n, tail])
}
const metaData = (name: string, queries: Array<string>) => {
  const count = Buffer.alloc(4)
  count.writeUInt32BE(queries.length)
  return nameData(
    name,
    Buffer.concat([
      count,
      ...queries.map((q) => {
        const l = Buffer.alloc(4)
        l.writeUInt32BE(Buffer.byteLength(q))
        return Buffer.concat([l, Buffer.from(q)])
      })
    ])
  )
}
const u16s = (...v: Array<number>) => {
  const b = Buffer.alloc(2 * v.length)
  v.forEach((x, i) => b.writeUInt16BE(x, 2 * i))
  return b
}

const extRequest = (flags: number, type: number, cookie: bigint, offset: bigint, length: bigint) => {
  const b = Buffer.alloc(32)
  b.writeUInt32BE(0x21e41c71, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  b.writeBigUInt64BE(cookie, 8)
  b.writeBigUInt64BE(offset, 16)
  b.writeBigUInt64BE(length, 24)
  return b
}

const withClient = <A, R>(config: TestServer.Config, f: (c: RawClient) => Effect.Effect<A, never, R>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* TestServer.make(config)
      const path = (server.address as { path: string }).path
      const client = yield* Effect.acquireRelease(RawClient.connect(path), (c) => Effect.sync(() => c.sock.destroy()))
      return yield* f(client)
    })
  )

describe("TestServer wire behaviour", () => {
  it.live("extended headers: write with PAYLOAD_LEN, read back, BLOCK_STATUS_EXT, DISC flushes replies", () =>
    withClient({ exports: [{ name: "", size: 1n << 40n }] }, (c) =>
      Effect.gen(function* () {
        yield* c.handshake()
        c.option(Opt.EH)
        expect(yield* c.reply()).toMatchObject({ option: Opt.EH, type: 1 })
        c.option(Opt.SR)
        expect((yield* c.reply()).type).toBe(0x8000000a) // ERR_EXT_HEADER_REQD
        c.option(Opt.SET_META, metaData("", ["base:allocation", "x-unknown:foo"]))
        const meta = yield* c.reply()
        expect(meta.type).toBe(4)
        expect(meta.data.readUInt32BE(0)).toBe(1)
        expect(meta.data.subarray(4).toString()).toBe("base:allocation")
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.GO, nameData("", u16s(0)))
        const info = yield* c.reply()
        expect(info.type).toBe(3)
        expect(info.data.readUInt16BE(0)).toBe(0)
        expect(info.data.readBigUInt64BE(2)).toBe(1n << 40n)
        let next = yield* c.reply()
        while (next.type === 3) next = yield* c.reply()
        expect(next.type).toBe(1)

        // write "abc" at 2^39 with PAYLOAD_LEN, then read it, then block status over 8 GiB, then DISC
        c.write(extRequest(0x20, 1, 1n, 1n << 39n, 3n), Buffer.from("abc"))
        c.write(extRequest(0, 0, 2n, 1n << 39n, 4n))
        c.write(extRequest(0, 7, 3n, (1n << 39n) - (4n << 30n), 8n << 30n))
        c.write(extRequest(0, 2, 4n, 0n, 0n))
        const seen = new Map<bigint, Buffer>()
        for (let i = 0; i < 3; i++) {
          const h = yield* c.read(32)
          expect(h.readUInt32BE(0)).toBe(0x6e8a278c)
          expect(h.readUInt16BE(4) & 1).toBe(1) // DONE
          const payload = yield* c.read(Number(h.readBigUInt64BE(24)))
          seen.set(h.readBigUInt64BE(8), Buffer.concat([h, payload]))
        }
        const write = seen.get(1n)!
        expect(write.readUInt16BE(6)).toBe(0) // NONE
        expect(write.readBigUInt64BE(16)).toBe(1n << 39n)
        const read = seen.get(2n)!
        expect(read.readUInt16BE(6)).toBe(1) // OFFSET_DATA
        expect(read.readBigUInt64BE(32)).toBe(1n << 39n)
        expect(read.subarray(40).toString("latin1")).toBe("abc\0")
        const bs = seen.get(3n)!
        expect(bs.readUInt16BE(6)).toBe(6) // BLOCK_STATUS_EXT
        expect(bs.readUInt32BE(32)).toBe(1) // context id
        expect(bs.readUInt32BE(36)).toBe(3) // descriptors
        const extents = [0, 1, 2].map((i) => [bs.readBigUInt64BE(40 + 16 * i), bs.readBigUInt64BE(48 + 16 * i)])
        expect(extents).toEqual([
          [4n << 30n, 3n],
          [65536n, 0n],
          [(4n << 30n) - 65536n, 3n]
        ])
        expect(yield* c.waitClosed()).toBe(true)
      })
    )
  )

  it.live("option edge cases: LIST with data, STARTTLS, unknown options, meta context rules, INFO, ABORT", () =>
    withClient({ exports: [{ name: "a", size: 4096, description: "disk a" }], extendedHeaders: false }, (c) =>
      Effect.gen(function* () {
        yield* c.handshake()
        c.option(Opt.LIST, Buffer.from("x"))
        expect((yield* c.reply()).type).toBe(0x80000003)
        c.option(Opt.LIST)
        const server = yield* c.reply()
        expect(server.type).toBe(2)
        expect(server.data.readUInt32BE(0)).toBe(1)
        expect(server.data.subarray(4).toString()).toBe("adisk a")
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.STARTTLS)
        expect((yield* c.reply()).type).toBe(0x80000001)
        c.option(99)
        expect(yield* c.reply()).toMatchObject({ option: 99, type: 0x80000001 })
        c.option(Opt.EH)
        expect((yield* c.reply()).type).toBe(0x80000001) // disabled
        c.option(Opt.SET_META, metaData("a", ["base:allocation"]))
        expect((yield* c.reply()).type).toBe(0x80000003) // needs structured replies
        c.option(Opt.SR)
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.SR)
        expect((yield* c.reply()).type).toBe(0x80000003) // repeated
        c.option(Opt.LIST_META, metaData("a", []))
        const listed = yield* c.reply()
        expect(listed.type).toBe(4)
        expect(listed.data.readUInt32BE(0)).toBe(0)
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.LIST_META, metaData("a", ["base:"]))
        expect((yield* c.reply()).type).toBe(4)
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.LIST_META, metaData("a", ["qemu:dirty-bitmap:x"]))
        expect((yield* c.reply()).type).toBe(1)
        c.option(Opt.SET_META, metaData("nosuch", ["base:allocation"]))
        expect((yield* c.reply()).type).toBe(0x80000006)
        c.option(Opt.INFO, nameData("nosuch", u16s(0)))
        const unknown = yield* c.reply()
        expect(unknown.type).toBe(0x80000006)
        expect(unknown.data.toString()).toContain("nosuch")
        c.option(Opt.INFO, nameData("a", u16s(3, 2, 1, 3)))
        const infos: Array<Buffer> = []
        for (let r = yield* c.reply(); r.type === 3; r = yield* c.reply()) infos.push(r.data)
        expect(infos.map((d) => d.readUInt16BE(0))).toEqual([0, 2, 1, 3])
        expect(infos[1]!.subarray(2).toString()).toBe("disk a")
        expect(infos[2]!.subarray(2).toString()).toBe("a")
        expect([infos[3]!.readUInt32BE(2), infos[3]!.readUInt32BE(6), infos[3]!.readUInt32BE(10)]).toEqual([
          1,
          4096,
          32 << 20
        ])
        c.option(Opt.INFO, Buffer.from([0, 0, 0, 9, 1]))
        expect((yield* c.reply()).type).toBe(0x80000003) // malformed
        c.option(Opt.ABORT)
        expect((yield* c.reply()).type).toBe(1)
        expect(yield* c.waitClosed()).toBe(true)
      })
    )
  )

  it.live("NBD_OPT_LIST is answered in full each time it is sent in one handshake, and GO still follows", () =>
    withClient(
      {
        exports: [
          { name: "a", size: 4096, description: "disk a" },
          { name: "b", size: 8192 }
        ]
      },
      (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          const list = () =>
            Effect.gen(function* () {
              c.option(Opt.LIST)
              const names: Array<string> = []
              for (let r = yield* c.reply(); r.type !== 1; r = yield* c.reply()) {
                expect(r).toMatchObject({ option: Opt.LIST, type: 2 })
                names.push(r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString())
              }
              return names
            })
          expect(yield* list()).toEqual(["a", "b"])
          expect(yield* list()).toEqual(["a", "b"])
          c.option(Opt.SR)
          expect((yield* c.reply()).type).toBe(1)
          expect(yield* list()).toEqual(["a", "b"])
          c.option(Opt.GO, nameData("b", u16s(0)))
          const info = yield* c.reply()
          expect(info.type).toBe(3)
          expect(info.data.readBigUInt64BE(2)).toBe(8192n)
          while ((yield* c.reply()).type !== 1);
        })
    )
  )

  it.live("an oversized option is refused with ERR_TOO_BIG and the connection stays usable", () =>
    withClient({}, (c) =>
      Effect.gen(function* () {
        yield* c.handshake()
        c.option(Opt.GO, Buffer.alloc(100_000))
        expect((yield* c.reply()).type).toBe(0x80000009)
        c.option(Opt.LIST)
        expect((yield* c.reply()).type).toBe(2)
      })
    )
  )

  it.live("bad request magic drops the connection", () =>
    withClient({ protocol: "oldstyle" }, (c) =>
      Effect.gen(function* () {
        const greeting = yield* c.read(152)
        expect(greeting.readBigUInt64BE(16)).toBe(1n << 30n)
        c.write(Buffer.alloc(28, 0xff))
        expect(yield* c.waitClosed()).toBe(true)
      })
    )
  )
})

const compactRequest = (flags: number, type: number, cookie: bigint, offset: bigint, length: number) => {
  const b = Buffer.alloc(28)
  b.writeUInt32BE(0x25609513, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  b.writeBigUInt64BE(cookie, 8)
  b.writeBigUInt64BE(offset, 16)
  b.writeUInt32BE(length, 24)
  return b
}

/** A block-status filter payload: the effect length, then the context ids. */
const filterPayload = (effectLength: bigint, ...ids: Array<number>) => {
  const b = Buffer.alloc(8 + 4 * ids.length)
  b.writeBigUInt64BE(effectLength, 0)
  ids.forEach((id, i) => b.writeUInt32BE(id, 8 + 4 * i))
  return b
}

const Cmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, ZERO: 6, BLOCK_STATUS: 7 } as const
const Flag = { FUA: 1, REQ_ONE: 8, PAYLOAD_LEN: 0x20 } as const
const NBD_EINVAL = 22
const BLOCK_STATUS_PAYLOAD = 0x1000

interface Chunk {
  readonly cookie: bigint
  readonly flags: number
  readonly type: number
  readonly offset: bigint
  readonly payload: Buffer
}

/** Reads one extended reply chunk. */
const extendedChunk = (c: RawClient) =>
  Effect.gen(function* () {
    const h = yield* c.read(32)
    expect(h.readUInt32BE(0)).toBe(0x6e8a278c)
    const payload = yield* c.read(Number(h.readBigUInt64BE(24)))
    return {
      cookie: h.readBigUInt64BE(8),
      flags: h.readUInt16BE(4),
      type: h.readUInt16BE(6),
      offset: h.readBigUInt64BE(16),
      payload
    } satisfies Chunk
  })

/** Reads one simple reply or structured chunk (without extended headers): [cookie, error or type, payload]. */
const compactReply = (c: RawClient) =>
  Effect.gen(function* () {
    const magic = (yield* c.read(4)).readUInt32BE(0)
    if (magic === 0x67446698) {
      const rest = yield* c.read(12)
      return {
        simple: true,
        error: rest.readUInt32BE(0),
        cookie: rest.readBigUInt64BE(4),
        type: 0,
        payload: Buffer.alloc(0)
      }
    }
    expect(magic).toBe(0x668e33ef)
    const rest = yield* c.read(16)
    const payload = yield* c.read(rest.readUInt32BE(12))
    return { simple: false, error: 0, cookie: rest.readBigUInt64BE(4), type: rest.readUInt16BE(2), payload }
  })

/** The error value of an error chunk (type 0x8001). */
const chunkError = (chunk: Chunk) => {
  expect(chunk.type).toBe(0x8001)
  expect(chunk.flags & 1).toBe(1)
  return chunk.payload.readUInt32BE(0)
}

/**
 * Negotiates for the transmission phase: extended headers (or structured replies only), base:allocation on
 * the export, then NBD_OPT_GO. Gives the transmission flags.
 */
const enter = (c: RawClient, name: string, options: { extended?: boolean; meta?: boolean } = {}) =>
  Effect.andThen(c.handshake(), enterNegotiated(c, name, options))

/** `enter` after the client flags (e.g. after STARTTLS). */
const enterNegotiated = (c: RawClient, name: string, options: { extended?: boolean; meta?: boolean } = {}) =>
  Effect.gen(function* () {
    c.option(options.extended === false ? Opt.SR : Opt.EH)
    expect((yield* c.reply()).type).toBe(1)
    if (options.meta !== false) {
      c.option(Opt.SET_META, metaData(name, ["base:allocation"]))
      expect((yield* c.reply()).type).toBe(4)
      expect((yield* c.reply()).type).toBe(1)
    }
    c.option(Opt.GO, nameData(name, u16s(0)))
    let flags = -1
    for (let r = yield* c.reply(); r.type !== 1; r = yield* c.reply()) {
      expect(r.type).toBe(3)
      if (r.data.readUInt16BE(0) === 0) flags = r.data.readUInt16BE(10)
    }
    return flags
  })

describe("block-status filter (NBD_CMD_FLAG_PAYLOAD_LEN on NBD_CMD_BLOCK_STATUS)", () => {
  it.live("advertised with extended headers only, in NBD_OPT_INFO and NBD_OPT_GO", () =>
    Effect.gen(function* () {
      const eh = yield* withClient({}, (c) => enter(c, ""))
      expect(eh & BLOCK_STATUS_PAYLOAD).toBe(BLOCK_STATUS_PAYLOAD)
      const sr = yield* withClient({}, (c) => enter(c, "", { extended: false }))
      expect(sr & BLOCK_STATUS_PAYLOAD).toBe(0)
      const info = yield* withClient({}, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.INFO, nameData("", u16s(0)))
          const before = (yield* c.reply()).data.readUInt16BE(10)
          while ((yield* c.reply()).type !== 1);
          c.option(Opt.EH)
          expect((yield* c.reply()).type).toBe(1)
          c.option(Opt.INFO, nameData("", u16s(0)))
          const after = (yield* c.reply()).data.readUInt16BE(10)
          return [before, after] as const
        })
      )
      expect(info[0] & BLOCK_STATUS_PAYLOAD).toBe(0)
      expect(info[1] & BLOCK_STATUS_PAYLOAD).toBe(BLOCK_STATUS_PAYLOAD)
    })
  )

  it.live(
    "answers the listed context with the effect length; bad filters fail EINVAL and keep the stream in sync",
    () =>
      withClient({ exports: [{ name: "d", size: 1 << 20 }] }, (c) =>
        Effect.gen(function* () {
          yield* enter(c, "d")
          c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 1n, 65536n, 4096n), Buffer.alloc(4096, 7))
          expect((yield* extendedChunk(c)).type).toBe(0)

          const bs = (cookie: bigint, flags: number, offset: bigint, payload: Buffer) =>
            c.write(
              extRequest(flags | Flag.PAYLOAD_LEN, Cmd.BLOCK_STATUS, cookie, offset, BigInt(payload.length)),
              payload
            )
          const descriptors = (chunk: Chunk) => {
            expect(chunk.type).toBe(6) // BLOCK_STATUS_EXT
            expect(chunk.flags & 1).toBe(1)
            expect(chunk.payload.readUInt32BE(0)).toBe(1) // base:allocation
            const n = chunk.payload.readUInt32BE(4)
            return Array.from({ length: n }, (_, i) => [
              chunk.payload.readBigUInt64BE(8 + 16 * i),
              chunk.payload.readBigUInt64BE(16 + 16 * i)
            ])
          }

          bs(2n, 0, 0n, filterPayload(1n << 20n, 1))
          const all = yield* extendedChunk(c)
          expect(all.cookie).toBe(2n)
          expect(all.offset).toBe(0n)
          expect(descriptors(all)).toEqual([
            [65536n, 3n],
            [65536n, 0n],
            [(1n << 20n) - 131072n, 3n]
          ])
          // the effect length, not the request length, bounds the answer; REQ_ONE still applies
          bs(3n, 0, 0n, filterPayload(100000n, 1))
          expect(descriptors(yield* extendedChunk(c))).toEqual([
            [65536n, 3n],
            [34464n, 0n]
          ])
          bs(4n, Flag.REQ_ONE, 65536n, filterPayload(1n << 19n, 1))
          expect(descriptors(yield* extendedChunk(c))).toEqual([[65536n, 0n]])

          // unknown id, duplicate id, no ids, a payload that is not 8 + 4n bytes, an effect length of 0,
          // beyond the end: each EINVAL, payload consumed
          bs(5n, 0, 0n, filterPayload(4096n, 2))
          bs(6n, 0, 0n, filterPayload(4096n, 1, 1))
          bs(7n, 0, 0n, filterPayload(4096n))
          bs(8n, 0, 0n, Buffer.concat([filterPayload(4096n, 1), Buffer.from([0, 0])]))
          bs(9n, 0, 0n, filterPayload(0n, 1))
          bs(10n, 0, 4096n, filterPayload(1n << 20n, 1))
          for (let cookie = 5n; cookie <= 10n; cookie++) {
            const chunk = yield* extendedChunk(c)
            expect(chunk.cookie).toBe(cookie)
            expect(chunkError(chunk)).toBe(NBD_EINVAL)
          }
          // PAYLOAD_LEN with length 0: no payload at all
          c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.BLOCK_STATUS, 11n, 0n, 0n))
          expect(chunkError(yield* extendedChunk(c))).toBe(NBD_EINVAL)
          // still in sync: a plain block status and a read
          c.write(extRequest(0, Cmd.BLOCK_STATUS, 12n, 65536n, 4096n))
          expect(descriptors(yield* extendedChunk(c))).toEqual([[4096n, 0n]])
          c.write(extRequest(0, Cmd.READ, 13n, 65536n, 2n))
          const read = yield* extendedChunk(c)
          expect(read.cookie).toBe(13n)
          expect(read.payload.subarray(8)).toEqual(Buffer.from([7, 7]))
        })
      )
  )

  it.live("without a negotiated context every id is unknown: EINVAL", () =>
    withClient({}, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "", { meta: false })
        const payload = filterPayload(4096n, 1)
        c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.BLOCK_STATUS, 1n, 0n, BigInt(payload.length)), payload)
        expect(chunkError(yield* extendedChunk(c))).toBe(NBD_EINVAL)
        c.write(extRequest(0, Cmd.FLUSH, 2n, 0n, 0n))
        expect((yield* extendedChunk(c)).type).toBe(0)
      })
    )
  )
})

describe("bad requests", () => {
  it.live("extended headers: unknown commands and flags fail EINVAL after their payload is consumed", () =>
    withClient({ blockSize: { minimum: 1, preferred: 4096, maximum: 65536 } }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "")
        c.write(extRequest(Flag.PAYLOAD_LEN, 42, 1n, 0n, 5n), Buffer.from("junk!")) // unknown command with a payload
        c.write(extRequest(0x40, Cmd.READ, 2n, 0n, 512n)) // unknown flag
        c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.READ, 3n, 0n, 3n), Buffer.from("abc")) // READ takes no payload
        c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 4n, 0n, 65537n), Buffer.alloc(65537, 1)) // above the maximum
        c.write(extRequest(0x40, Cmd.WRITE, 5n, 0n, 16n), Buffer.alloc(16, 2)) // its payload follows all the same
        c.write(extRequest(0, Cmd.READ, 6n, 0n, 65537n)) // a read above the maximum
        c.write(extRequest(0, Cmd.FLUSH, 7n, 1n, 0n)) // flush with an offset
        c.write(extRequest(0, Cmd.TRIM, 8n, 0n, 0n)) // length 0
        const errors = new Map<bigint, number>()
        for (let i = 0; i < 8; i++) {
          const chunk = yield* extendedChunk(c)
          errors.set(chunk.cookie, chunkError(chunk))
        }
        expect([...errors.entries()].sort(([a], [b]) => Number(a - b))).toEqual([
          [1n, NBD_EINVAL],
          [2n, NBD_EINVAL],
          [3n, NBD_EINVAL],
          [4n, NBD_EINVAL],
          [5n, NBD_EINVAL],
          [6n, 75], // EOVERFLOW
          [7n, NBD_EINVAL],
          [8n, NBD_EINVAL]
        ])
        // nothing was written, and the stream is in sync
        c.write(extRequest(0, Cmd.READ, 9n, 0n, 4n))
        const read = yield* extendedChunk(c)
        expect(read.cookie).toBe(9n)
        expect(read.type).toBe(2) // OFFSET_HOLE: still unwritten
      })
    )
  )

  it.live("compact requests: PAYLOAD_LEN is invalid and nothing but a write's payload is read", () =>
    withClient({ extendedHeaders: false, blockSize: { minimum: 1, preferred: 4096, maximum: 65536 } }, (c) =>
      Effect.gen(function* () {
        const flags = yield* enter(c, "", { extended: false })
        expect(flags & BLOCK_STATUS_PAYLOAD).toBe(0)
        c.write(compactRequest(Flag.PAYLOAD_LEN, Cmd.BLOCK_STATUS, 1n, 0n, 12)) // no payload follows
        c.write(compactRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 2n, 0n, 3), Buffer.from("abc")) // payload consumed
        c.write(compactRequest(0, Cmd.WRITE, 3n, 0n, 65537), Buffer.alloc(65537, 1)) // oversized, skipped
        c.write(compactRequest(0, 9, 4n, 0n, 100)) // unknown command: no payload follows
        c.write(compactRequest(0, Cmd.READ, 5n, 0n, 2))
        const replies = new Map<bigint, { error: number; type: number }>()
        for (let i = 0; i < 4; i++) {
          const r = yield* compactReply(c)
          replies.set(r.cookie, { error: r.simple ? r.error : r.payload.readUInt32BE(0), type: r.type })
        }
        for (const cookie of [1n, 2n, 3n, 4n]) expect(replies.get(cookie)?.error, String(cookie)).toBe(NBD_EINVAL)
        const read = yield* compactReply(c)
        expect(read.cookie).toBe(5n)
        expect(read.type).toBe(2) // OFFSET_HOLE: the invalid writes wrote nothing
      })
    )
  )
})

/** A 4 KiB page of one byte value: as request headers its bytes have no valid magic. */
const page = (byte: number) => Buffer.alloc(4096, byte)

/** Reads the chunks of one extended reply up to its DONE chunk: its cookie, error (0 if none) and data. */
const extendedReply = (c: RawClient) =>
  Effect.gen(function* () {
    const data: Array<Buffer> = []
    for (;;) {
      const chunk = yield* extendedChunk(c)
      if (chunk.type >= 0x8000) return { cookie: chunk.cookie, error: chunkError(chunk), data: Buffer.alloc(0) }
      if (chunk.type === 1) data.push(chunk.payload.subarray(8)) // OFFSET_DATA
      if ((chunk.flags & 1) !== 0) return { cookie: chunk.cookie, error: 0, data: Buffer.concat(data) }
    }
  })

/** Reads one reply without extended headers (simple, or one structured chunk): cookie, error, read data. */
const compactFullReply = (c: RawClient) =>
  Effect.map(compactReply(c), (r) => ({
    cookie: r.cookie,
    error: r.simple ? r.error : r.type >= 0x8000 ? r.payload.readUInt32BE(0) : 0,
    data: r.type === 1 ? r.payload.subarray(8) : Buffer.alloc(0) // OFFSET_DATA
  }))

const NBD_EPERM = 1
const NBD_ENOSPC = 28
const MiB = 1024 * 1024

describe("write payloads (NBD_CMD_FLAG_PAYLOAD_LEN optional on writes)", () => {
  it.live("extended headers: a write without PAYLOAD_LEN carries its payload, as qemu's client sends it", () =>
    withClient({ exports: [{ name: "", size: 65536 }] }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "")
        c.write(extRequest(0, Cmd.WRITE, 1n, 8192n, 4096n), page(0x5a))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 1n, error: 0 })
        c.write(extRequest(Flag.FUA, Cmd.WRITE, 2n, 12288n, 4096n), page(0x6b))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 2n, error: 0 })
        c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 3n, 16384n, 4096n), page(0x7c))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 3n, error: 0 })
        c.write(extRequest(0, Cmd.READ, 4n, 8192n, 12288n))
        const read = yield* extendedReply(c)
        expect(read.cookie).toBe(4n)
        expect(read.data.equals(Buffer.concat([page(0x5a), page(0x6b), page(0x7c)]))).toBe(true)
      })
    )
  )

  it.live("extended headers: refused writes, with and without PAYLOAD_LEN, consume their payload", () =>
    withClient({ exports: [{ name: "", size: 65536 }] }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "")
        c.write(extRequest(0, Cmd.WRITE, 1n, 0n, 4096n), page(0x11))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 1n, error: 0 })
        for (const payloadLen of [0, Flag.PAYLOAD_LEN]) {
          c.write(extRequest(payloadLen, Cmd.WRITE, 2n, 65536n, 4096n), page(0xee)) // beyond the end
          expect(yield* extendedReply(c)).toMatchObject({ cookie: 2n, error: NBD_ENOSPC })
          c.write(extRequest(payloadLen | 0x40, Cmd.WRITE, 3n, 0n, 4096n), page(0xee)) // unknown flag
          expect(yield* extendedReply(c)).toMatchObject({ cookie: 3n, error: NBD_EINVAL })
          c.write(extRequest(0, Cmd.READ, 4n, 0n, 4096n))
          const read = yield* extendedReply(c)
          expect(read).toMatchObject({ cookie: 4n, error: 0 })
          expect(read.data.equals(page(0x11))).toBe(true)
        }
      })
    )
  )

  it.live("extended headers: a write to a read-only export fails EPERM after its payload", () =>
    withClient({ exports: [{ name: "", size: 65536, readOnly: true }] }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "")
        c.write(extRequest(0, Cmd.WRITE, 1n, 0n, 4096n), page(0xee))
        c.write(extRequest(0, Cmd.READ, 2n, 0n, 4096n))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 1n, error: NBD_EPERM })
        const read = yield* extendedReply(c)
        expect(read).toMatchObject({ cookie: 2n, error: 0 })
        expect(read.data.length === 0 || read.data.equals(page(0))).toBe(true)
      })
    )
  )

  it.live("compact requests: a refused write consumes its payload and a read after it is answered", () =>
    withClient({ exports: [{ name: "", size: 65536 }], extendedHeaders: false }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "", { extended: false })
        c.write(compactRequest(0, Cmd.WRITE, 1n, 0n, 4096), page(0x22))
        expect(yield* compactFullReply(c)).toMatchObject({ cookie: 1n, error: 0 })
        c.write(compactRequest(0, Cmd.WRITE, 2n, 65536n, 4096), page(0xee)) // beyond the end
        c.write(compactRequest(0x40, Cmd.WRITE, 3n, 0n, 4096), page(0xee)) // unknown flag
        c.write(compactRequest(0, Cmd.READ, 4n, 0n, 4096))
        expect(yield* compactFullReply(c)).toMatchObject({ cookie: 2n, error: NBD_ENOSPC })
        expect(yield* compactFullReply(c)).toMatchObject({ cookie: 3n, error: NBD_EINVAL })
        const read = yield* compactFullReply(c)
        expect(read).toMatchObject({ cookie: 4n, error: 0 })
        expect(read.data.equals(page(0x22))).toBe(true)
      })
    )
  )

  it.live("a write over the maximum payload, up to 32 MiB, is consumed and refused; the connection goes on", () =>
    withClient({ blockSize: { minimum: 1, preferred: 4096, maximum: 65536 } }, (c) =>
      Effect.gen(function* () {
        yield* enter(c, "")
        c.write(extRequest(0, Cmd.WRITE, 1n, 0n, BigInt(MiB)), Buffer.alloc(MiB, 0xee))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 1n, error: NBD_EINVAL })
        c.write(extRequest(0, Cmd.READ, 2n, 0n, 4096n))
        expect(yield* extendedReply(c)).toMatchObject({ cookie: 2n, error: 0 })
      })
    )
  )

  for (const extended of [true, false])
    it.live(
      `${extended ? "extended" : "compact"} headers: a write over both the maximum payload and 32 MiB ends the connection at its header`,
      () =>
        withClient({ extendedHeaders: extended }, (c) =>
          Effect.gen(function* () {
            yield* enter(c, "", { extended })
            const length = 32 * MiB + 4096
            // Only the header is sent: the server must not wait for the payload to refuse it.
            c.write(
              extended ? extRequest(0, Cmd.WRITE, 1n, 0n, BigInt(length)) : compactRequest(0, Cmd.WRITE, 1n, 0n, length)
            )
            expect(yield* c.waitClosed()).toBe(true)
            // No reply came: a hard disconnect.
            const after = yield* Effect.exit(c.read(1))
            expect(after._tag).toBe("Failure")
          })
        )
    )
})

describe("fault injection", () => {
  it.live("per export: errors and delays by command kind, added to the server-wide faults", () =>
    Effect.gen(function* () {
      const config: TestServer.Config = {
        exports: [
          { name: "slow", size: 1 << 20, faults: [{ command: "read", delayMs: 300 }] },
          {
            name: "bad",
            size: 1 << 20,
            faults: [
              { command: "write", errno: "ENOSPC" },
              { command: "read", errno: "EIO", rate: 0 }
            ]
          },
          { name: "plain", size: 1 << 20 }
        ],
        faults: [{ command: "flush", errno: "EIO" }]
      }
      // "slow": the delayed read does not hold up the write behind it
      yield* withClient(config, (c) =>
        Effect.gen(function* () {
          yield* enter(c, "slow")
          const start = Date.now()
          c.write(extRequest(0, Cmd.READ, 1n, 0n, 512n))
          c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 2n, 1n << 19n, 4n), Buffer.from("fast"))
          const first = yield* extendedChunk(c)
          const firstAt = Date.now() - start
          const second = yield* extendedChunk(c)
          const secondAt = Date.now() - start
          expect(first.cookie).toBe(2n)
          expect(first.type).toBe(0)
          expect(firstAt).toBeLessThan(250)
          expect(second.cookie).toBe(1n)
          expect(second.type).toBe(2) // the read, served after its delay
          expect(secondAt).toBeGreaterThanOrEqual(290)
          c.write(extRequest(0, Cmd.FLUSH, 3n, 0n, 0n))
          expect(chunkError(yield* extendedChunk(c))).toBe(5) // the server-wide fault
        })
      )
      // "bad": writes fail ENOSPC, reads never fail (rate 0)
      yield* withClient(config, (c) =>
        Effect.gen(function* () {
          yield* enter(c, "bad")
          c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 1n, 0n, 2n), Buffer.from("no"))
          expect(chunkError(yield* extendedChunk(c))).toBe(28)
          for (let i = 0; i < 20; i++) {
            c.write(extRequest(0, Cmd.READ, 2n, 0n, 2n))
            expect((yield* extendedChunk(c)).type).toBe(2)
          }
        })
      )
      // "plain": only the server-wide flush fault
      yield* withClient(config, (c) =>
        Effect.gen(function* () {
          yield* enter(c, "plain")
          c.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 1n, 0n, 2n), Buffer.from("ok"))
          expect((yield* extendedChunk(c)).type).toBe(0)
          c.write(extRequest(0, Cmd.FLUSH, 2n, 0n, 0n))
          expect(chunkError(yield* extendedChunk(c))).toBe(5)
        })
      )
    })
  )

  it.live("a delay and an error together: the error comes after the delay; server checks come first", () =>
    withClient(
      { faults: [{ command: "trim", delayMs: 200, errno: "EIO" }], structuredReplies: false, extendedHeaders: false },
      (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.GO, nameData("", u16s(0)))
          while ((yield* c.reply()).type !== 1);
          const start = Date.now()
          c.write(compactRequest(0, Cmd.TRIM, 1n, 0n, 4096))
          c.write(compactRequest(0, Cmd.TRIM, 2n, 1n << 40n, 4096)) // out of bounds: refused at once
          const first = yield* compactReply(c)
          expect(first).toMatchObject({ simple: true, cookie: 2n, error: NBD_EINVAL })
          expect(Date.now() - start).toBeLessThan(150)
          const second = yield* compactReply(c)
          expect(second).toMatchObject({ simple: true, cookie: 1n, error: 5 })
          expect(Date.now() - start).toBeGreaterThanOrEqual(190)
        })
    )
  )

  it.live("invalid faults are refused", () =>
    Effect.gen(function* () {
      for (const faults of [
        [{ command: "read" }],
        [{ command: "read", errno: "EIO", rate: 2 }],
        [{ command: "read", delayMs: -1 }],
        [{ command: "nope", errno: "EIO" }]
      ]) {
        const error = yield* Effect.flip(Effect.scoped(TestServer.make({ faults } as unknown as TestServer.Config)))
        expect(error.reason).toBe("Config")
      }
    })
  )
})

describe("TLS (NBD_OPT_STARTTLS)", () => {
  const credentials = Effect.flatMap(
    Effect.acquireRelease(
      Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-tls-"))),
      (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
    ),
    makeTlsCredentials
  )

  /** STARTTLS, then the client side of TLS on the same socket: a RawClient over it. */
  const starttls = (c: RawClient, ca: Buffer) =>
    Effect.gen(function* () {
      c.option(Opt.STARTTLS)
      expect(yield* c.reply()).toMatchObject({ option: Opt.STARTTLS, type: 1 })
      const secure = yield* Effect.callback<Tls.TLSSocket>((resume) => {
        const s = Tls.connect({ socket: c.sock, ca, servername: "localhost" }, () => resume(Effect.succeed(s)))
        s.on("error", (e) => resume(Effect.die(e)))
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => secure.destroy()))
      return new RawClient(secure)
    })

  it.live("require: options before TLS fail ERR_TLS_REQD, then everything works over TLS from scratch", () =>
    Effect.gen(function* () {
      const { ca, pki } = yield* credentials
      yield* withClient({ tls: "require", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          for (const option of [Opt.LIST, Opt.SR, Opt.EH, Opt.INFO, Opt.GO, Opt.LIST_META, 99]) {
            c.option(option, option === Opt.GO || option === Opt.INFO ? nameData("", u16s(0)) : Buffer.alloc(0))
            expect(yield* c.reply()).toMatchObject({ option, type: 0x80000005 }) // ERR_TLS_REQD
          }
          c.option(Opt.STARTTLS, Buffer.from("x"))
          expect((yield* c.reply()).type).toBe(0x80000003) // STARTTLS takes no data
          const s = yield* starttls(c, ca)
          s.option(Opt.STARTTLS)
          expect((yield* s.reply()).type).toBe(0x80000003) // twice: ERR_INVALID
          s.option(Opt.LIST)
          expect((yield* s.reply()).type).toBe(2)
          expect((yield* s.reply()).type).toBe(1)
          const flags = yield* enterNegotiated(s, "")
          expect(flags & BLOCK_STATUS_PAYLOAD).toBe(BLOCK_STATUS_PAYLOAD)
          s.write(extRequest(Flag.PAYLOAD_LEN, Cmd.WRITE, 1n, 4096n, 5n), Buffer.from("tls!!"))
          expect((yield* extendedChunk(s)).type).toBe(0)
          s.write(extRequest(0, Cmd.READ, 2n, 4096n, 5n))
          expect((yield* extendedChunk(s)).payload.subarray(8).toString()).toBe("tls!!")
          s.write(extRequest(0, Cmd.DISC, 3n, 0n, 0n))
          expect(yield* s.waitClosed()).toBe(true)
        })
      )
    })
  )

  it.live("require: NBD_OPT_EXPORT_NAME before TLS closes the connection; ABORT is answered", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      yield* withClient({ tls: "require", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(1, Buffer.from(""))
          expect(yield* c.waitClosed()).toBe(true)
        })
      )
      yield* withClient({ tls: "require", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.ABORT)
          expect((yield* c.reply()).type).toBe(1)
          expect(yield* c.waitClosed()).toBe(true)
        })
      )
    })
  )

  it.live("on: STARTTLS makes the server forget structured replies, extended headers and meta contexts", () =>
    Effect.gen(function* () {
      const { ca, pki } = yield* credentials
      yield* withClient({ tls: "on", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.EH)
          expect((yield* c.reply()).type).toBe(1)
          c.option(Opt.SET_META, metaData("", ["base:allocation"]))
          expect((yield* c.reply()).type).toBe(4)
          expect((yield* c.reply()).type).toBe(1)
          const s = yield* starttls(c, ca)
          // no structured replies any more: meta contexts need them first, and SR is not "already negotiated"
          s.option(Opt.SET_META, metaData("", ["base:allocation"]))
          expect((yield* s.reply()).type).toBe(0x80000003)
          s.option(Opt.GO, nameData("", u16s(0)))
          let flags = -1
          for (let r = yield* s.reply(); r.type !== 1; r = yield* s.reply())
            if (r.data.readUInt16BE(0) === 0) flags = r.data.readUInt16BE(10)
          expect(flags & 0x80).toBe(0) // no DF: no structured replies
          s.write(compactRequest(0, Cmd.READ, 7n, 0n, 4))
          const reply = yield* compactReply(s)
          expect(reply).toMatchObject({ simple: true, cookie: 7n, error: 0 })
          expect(yield* s.read(4)).toEqual(Buffer.alloc(4))
        })
      )
    })
  )

  it.live("a client that does not speak TLS after the ACK is dropped", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      yield* withClient({ tls: "on", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.STARTTLS)
          expect((yield* c.reply()).type).toBe(1)
          c.option(Opt.LIST)
          expect(yield* c.waitClosed()).toBe(true)
        })
      )
    })
  )

  it.live("without TLS configured STARTTLS is unsupported; bad TLS configurations are refused", () =>
    Effect.gen(function* () {
      const { pki, psk } = yield* credentials
      const dir = Path.dirname(psk)
      const bad = Path.join(dir, "bad.psk")
      Fs.writeFileSync(bad, "alice\n")
      for (const config of [
        { tls: "require" },
        { tls: "on", tlsCertificates: pki, protocol: "oldstyle" },
        { tls: "on", tlsCertificates: Path.join(dir, "nosuch") },
        { tls: "require", tlsPsk: bad },
        { tls: "require", tlsPsk: Path.join(dir, "nosuch.psk") },
        { tls: "maybe", tlsCertificates: pki }
      ]) {
        const error = yield* Effect.flip(Effect.scoped(TestServer.make(config as TestServer.Config)))
        expect(error.reason, JSON.stringify(config)).toBe("Config")
      }
      // off ignores credentials
      yield* withClient({ tls: "off", tlsCertificates: pki }, (c) =>
        Effect.gen(function* () {
          yield* c.handshake()
          c.option(Opt.STARTTLS)
          expect((yield* c.reply()).type).toBe(0x80000001)
        })
      )
    })
  )
})
