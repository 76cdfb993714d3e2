/**
 * The server's request decoding is linear in the bytes received, whatever the chunking: a client that
 * trickles a large message one byte at a time costs the server nothing more than one that sends it whole,
 * and does not hold up other clients.
 */
import { describe, expect, it } from "@effect/vitest"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { CMD_READ, CMD_WRITE, handshakeSimple, option, RawClient, request, simpleReply } from "./raw.js"

const SIZE = 200_000

const payload = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff
  return out
}

/** Pushes `bytes` one at a time, pulling messages after each push as the server does. */
const trickle = (decoder: ServerCodec.Decoder, bytes: Uint8Array): { ms: number; messages: Array<unknown> } => {
  const messages: Array<unknown> = []
  const started = performance.now()
  for (let i = 0; i < bytes.length; i++) {
    decoder.push(bytes.subarray(i, i + 1))
    for (let m = decoder.next(); m !== undefined; m = decoder.next()) messages.push(m)
  }
  return { ms: performance.now() - started, messages }
}

describe("linear decoding", () => {
  it("a 200,000-byte option pushed one byte at a time decodes in linear time", () => {
    const data = payload(SIZE)
    const bytes = Buffer.concat([option(6, data.length), data])
    const decoder = ServerCodec.makeDecoder({ phase: "options", maxOptionLength: SIZE })
    const { messages, ms } = trickle(decoder, bytes)
    // Linear: a few ms. Quadratic buffering took seconds for 100,000 bytes.
    expect(ms).toBeLessThan(1000)
    expect(messages).toHaveLength(1)
    const message = messages[0] as ServerCodec.OptionRequest
    expect(message.option).toBe(6)
    expect(Buffer.from(message.data!).equals(data)).toBe(true)
  })

  it("a write with a 200,000-byte payload pushed one byte at a time decodes in linear time", () => {
    const data = payload(SIZE)
    const bytes = Buffer.concat([request(CMD_WRITE, 9, 4096, data.length), data, request(CMD_READ, 10, 0, 512)])
    const decoder = ServerCodec.makeDecoder({ phase: "transmission" })
    const { messages, ms } = trickle(decoder, bytes)
    expect(ms).toBeLessThan(1000)
    expect(messages).toHaveLength(2)
    const write = messages[0] as ServerCodec.Request
    expect(write.type).toBe(CMD_WRITE)
    expect(write.offset).toBe(4096)
    expect(Buffer.from(write.payload!).equals(data)).toBe(true)
    expect((messages[1] as ServerCodec.Request).type).toBe(CMD_READ)
  })

  it.live(
    "a 100,000-byte write trickled one byte per socket write: the server stays responsive and stores it",
    () =>
      Effect.gen(function* () {
        const server = yield* TestServer.make({ exports: [{ name: "", size: 1 << 20 }] })
        if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
        const path = server.address.path
        const data = payload(100_000)
        const result = yield* Effect.promise(async () => {
          const slow = await RawClient.connect(path)
          await handshakeSimple(slow)
          const lag = monitorEventLoopDelay({ resolution: 10 })
          lag.enable()
          await slow.write(request(CMD_WRITE, 1, 8192, data.length))
          for (let i = 0; i < data.length; i++) {
            slow.socket.write(data.subarray(i, i + 1))
            // Let each byte leave as its own segment.
            if (i % 16 === 15) await new Promise((resolve) => setImmediate(resolve))
          }
          // Another client, at the moment the last byte goes: served at once.
          const started = performance.now()
          const other = await RawClient.connect(path)
          await handshakeSimple(other)
          await other.write(request(CMD_READ, 1, 0, 512))
          const otherReply = await simpleReply(other)
          await other.read(512)
          const otherMs = performance.now() - started
          const written = await simpleReply(slow)
          lag.disable()
          await slow.write(request(CMD_READ, 2, 8192, data.length))
          const readBack = await simpleReply(slow)
          const stored = await slow.read(data.length)
          slow.destroy()
          other.destroy()
          return { otherMs, otherReply, written, readBack, stored, maxLagMs: lag.max / 1e6 }
        })
        expect(result.otherReply.error).toBe(0)
        expect(result.otherMs).toBeLessThan(500)
        expect(result.maxLagMs).toBeLessThan(500)
        expect(result.written).toEqual({ error: 0, cookie: 1 })
        expect(result.readBack).toEqual({ error: 0, cookie: 2 })
        expect(result.stored.equals(data)).toBe(true)
      }),
    60_000
  )
})
