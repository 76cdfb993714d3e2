/**
 * The server's wire behaviour seen by a hand-written client: the paths libnbd 1.14 cannot reach
 * (extended headers) and option edge cases.
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import * as Net from "node:net"

/** Option codes, short names for this test. */
const Opt = { GO: 7, LIST: 3, ABORT: 2, STARTTLS: 5, SR: 8, EH: 11, SET_META: 10, LIST_META: 9, INFO: 6 } as const

class RawClient {
  private buf = Buffer.alloc(0)
  private waiters: Array<() => void> = []
  closed = false
  constructor(readonly sock: Net.Socket) {
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
    return Effect.async<RawClient>((resume) => {
      const sock = Net.createConnection({ path }, () => resume(Effect.succeed(new RawClient(sock))))
    })
  }
  read(n: number): Effect.Effect<Buffer> {
    return Effect.async<Buffer>((resume) => {
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
    return Effect.async<boolean>((resume) => {
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
    return Effect.gen(this, function* () {
      const h = yield* this.read(20)
      expect(h.readBigUInt64BE(0)).toBe(0x3e889045565a9n)
      const data = yield* this.read(h.readUInt32BE(16))
      return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data }
    })
  }
  handshake() {
    return Effect.gen(this, function* () {
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

const withClient = <A>(config: TestServer.Config, f: (c: RawClient) => Effect.Effect<A>) =>
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
