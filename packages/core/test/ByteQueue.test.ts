import { describe, expect, it } from "@effect/vitest"
import { ClientCodec, Protocol } from "@effect-nbd/core"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import { ByteQueue } from "../src/internal/wire/bytes.js"

/** A newstyle greeting and one option reply carrying `dataLength` bytes of an NBD_REP_SERVER payload. */
const handshakeStream = (dataLength: number): Uint8Array => {
  const out = new Uint8Array(18 + 20 + dataLength)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, Protocol.NBDMAGIC)
  view.setBigUint64(8, Protocol.IHAVEOPT)
  view.setUint16(16, 3)
  view.setBigUint64(18, Protocol.REP_MAGIC)
  view.setUint32(26, Protocol.Opt.LIST)
  view.setUint32(30, Protocol.Rep.SERVER)
  view.setUint32(34, dataLength)
  view.setUint32(38, 4) // name length
  out.set(new TextEncoder().encode("disk"), 42)
  for (let i = 46; i < out.length; i++) out[i] = 0x61 // the description: "aaa..."
  return out
}

describe("ByteQueue", () => {
  it("copies borrowed chunks: the caller may overwrite them once push returns", () => {
    const queue = new ByteQueue()
    const reused = new Uint8Array(4)
    for (let i = 0; i < 3; i++) {
      reused.fill(i + 1)
      queue.push(reused, true)
    }
    reused.fill(9)
    expect(Array.from(queue.take(12))).toEqual([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
  })

  it("hands out slices that later pushes never overwrite", () => {
    const queue = new ByteQueue()
    queue.push(Uint8Array.of(1, 2, 3), true)
    const first = queue.take(2)
    for (let i = 0; i < 100_000; i++) queue.push(Uint8Array.of(7), true)
    expect(Array.from(first)).toEqual([1, 2])
    expect(queue.available).toBe(100_001)
    expect(queue.take(1)[0]).toBe(3)
    expect(queue.take(100_000).every((b) => b === 7)).toBe(true)
  })

  it("keeps large owned chunks without copying", () => {
    const queue = new ByteQueue()
    const big = new Uint8Array(1 << 20).fill(5)
    queue.push(big)
    const out = queue.take(1 << 20)
    expect(out.buffer).toBe(big.buffer)
  })
})

describe("decoding a trickle, one byte per read, is linear in the bytes received", () => {
  // Complexity guards, not benchmarks: quadratic buffering took seconds at these sizes, linear takes
  // milliseconds, so a bound of a second separates them on any machine.
  it("the client's handshake decoder", () => {
    const stream = handshakeStream(200_000)
    const decoder = new ClientCodec.HandshakeDecoder()
    const reused = new Uint8Array(1)
    const started = performance.now()
    let greeting: unknown
    let reply: unknown
    for (const byte of stream) {
      reused[0] = byte
      decoder.push(reused)
      if (greeting === undefined) greeting = decoder.decodeGreeting()
      else if (reply === undefined) reply = decoder.decodeOptionReply(Protocol.Opt.LIST)
    }
    const elapsed = performance.now() - started
    expect(greeting).toEqual({ _tag: "Newstyle", handshakeFlags: 3 })
    expect(reply).toMatchObject({ _tag: "Server", name: "disk" })
    expect((reply as { description: string }).description.length).toBe(200_000 - 4 - 4)
    expect(elapsed).toBeLessThan(1000)
  })

  it("the server's request decoder", () => {
    const length = 200_000
    const header = new Uint8Array(28)
    const view = new DataView(header.buffer)
    view.setUint32(0, Protocol.REQUEST_MAGIC)
    view.setUint16(6, Protocol.Cmd.WRITE)
    view.setBigUint64(8, 1n)
    view.setUint32(24, length)
    const decoder = ServerCodec.makeDecoder({ phase: "transmission", maxPayload: 1 << 20 })
    const started = performance.now()
    let request: unknown
    const feed = (byte: number) => {
      decoder.push(Uint8Array.of(byte))
      request ??= decoder.next()
    }
    header.forEach(feed)
    for (let i = 0; i < length; i++) feed(i & 0xff)
    const elapsed = performance.now() - started
    expect(request).toMatchObject({ _tag: "Request", type: Protocol.Cmd.WRITE, length })
    const payload = (request as { payload: Uint8Array }).payload
    expect(payload.length).toBe(length)
    expect(payload.every((b, i) => b === (i & 0xff))).toBe(true)
    expect(elapsed).toBeLessThan(1000)
  })
})
