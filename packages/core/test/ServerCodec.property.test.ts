/**
 * Property tests of what a client sends, end to end through both halves of the codec: ClientCodec's encoders
 * against ServerCodec's decoder. Round trips of every message family, the same result whatever the chunking,
 * refusal of impossible lengths without allocating them, and decoding time linear in the bytes pushed.
 */
import * as ClientCodec from "@effect-nbd/core/ClientCodec"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { BOUND_MS, BYTES, bestOf3 } from "./util/linear.js"

const SEED = 0x5e4c0dec
const RUNS = 150

const toHex = (b: Uint8Array | undefined): string | undefined =>
  b === undefined ? undefined : Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex")

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))

/** A u64 as the 8 big-endian bytes a cookie is echoed as. */
const u64Hex = (v: bigint | number): string => BigInt(v).toString(16).padStart(16, "0")

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries: one record per message, with the bytes ClientCodec encodes and what the decoder must give back.
// ---------------------------------------------------------------------------------------------------------------

/** Strings whose UTF-8 is at most 4096 bytes, of any code points (the decoder's limit for names and queries). */
const name = fc.string({ unit: "grapheme", maxLength: 24 })

const u16 = fc.integer({ min: 0, max: 0xffff })
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })
/** Cookies as the client makes them: safe integers (it counts up from 1). */
const cookie = fc.maxSafeNat()
const data = (maxLength: number) => fc.uint8Array({ maxLength })

interface Expected {
  readonly bytes: Uint8Array
  /** The message, as `plain` renders a decoded one. */
  readonly message: unknown
}

const optionMessage = (option: number, payload: Uint8Array, body: unknown): Expected => ({
  bytes: ClientCodec.encodeOption(option, payload),
  message: { _tag: "Option", option, length: payload.length, data: toHex(payload), body }
})

const clientFlags: fc.Arbitrary<Expected> = u32.map((flags) => ({
  bytes: ClientCodec.encodeClientFlags(flags),
  message: { _tag: "ClientFlags", flags }
}))

const infoOption: fc.Arbitrary<Expected> = fc
  .record({
    option: fc.constantFrom(Protocol.Opt.INFO, Protocol.Opt.GO),
    name,
    infos: fc.array(u16, { maxLength: 8 })
  })
  .map(({ infos, name, option }) =>
    optionMessage(option, ClientCodec.encodeInfoRequest(name, infos), { _tag: "Info", name, infos })
  )

const metaContextOption: fc.Arbitrary<Expected> = fc
  .record({
    option: fc.constantFrom(Protocol.Opt.LIST_META_CONTEXT, Protocol.Opt.SET_META_CONTEXT),
    name,
    queries: fc.array(name, { maxLength: 6 })
  })
  .map(({ name, option, queries }) =>
    optionMessage(option, ClientCodec.encodeMetaContextRequest(name, queries), { _tag: "MetaContext", name, queries })
  )

const exportNameOption: fc.Arbitrary<Expected> = name.map((n) =>
  optionMessage(Protocol.Opt.EXPORT_NAME, ClientCodec.encodeString(n), { _tag: "ExportName", name: n })
)

/** Options without structured data (and unknown ones): the data comes back raw. */
const plainOption: fc.Arbitrary<Expected> = fc
  .record({
    option: fc.oneof(
      fc.constantFrom(
        Protocol.Opt.ABORT,
        Protocol.Opt.LIST,
        Protocol.Opt.STARTTLS,
        Protocol.Opt.STRUCTURED_REPLY,
        Protocol.Opt.EXTENDED_HEADERS
      ),
      fc.integer({ min: 12, max: 0xffffffff })
    ),
    payload: data(64)
  })
  .map(({ option, payload }) => optionMessage(option, payload, { _tag: "None" }))

const option = fc.oneof(infoOption, metaContextOption, exportNameOption, plainOption)

const requestMessage = (
  extended: boolean,
  header: ClientCodec.RequestHeader,
  payload: Uint8Array | undefined
): Expected => ({
  bytes: ClientCodec.encodeRequest(header, extended, payload),
  message: {
    _tag: "Request",
    extended,
    flags: header.flags,
    type: header.type,
    cookie: u64Hex(header.cookie),
    offset: BigInt(header.offset).toString(),
    length: BigInt(header.length).toString(),
    // An empty payload decodes as none.
    payload: payload === undefined || payload.length === 0 ? undefined : toHex(payload),
    payloadDropped: false
  }
})

/** Compact requests: a write carries `length` bytes of payload, every other type none. */
const compactRequest: fc.Arbitrary<Expected> = fc.oneof(
  fc
    .record({ flags: u16, cookie, offset: u64, payload: data(600) })
    .map(({ cookie, flags, offset, payload }) =>
      requestMessage(false, { flags, type: Protocol.Cmd.WRITE, cookie, offset, length: payload.length }, payload)
    ),
  fc
    .record({
      flags: u16,
      type: u16.filter((t) => t !== Protocol.Cmd.WRITE),
      cookie,
      offset: u64,
      length: u32
    })
    .map((header) => requestMessage(false, header, undefined))
)

/**
 * Extended requests: a payload when PAYLOAD_LEN is set and on every write (qemu's client sends writes without
 * the flag), its length in the 64-bit length field; no payload otherwise.
 */
const extendedRequest: fc.Arbitrary<Expected> = fc.oneof(
  fc
    .record({ flags: u16, type: u16, cookie, offset: u64, payload: data(600) })
    .map(({ cookie, flags, offset, payload, type }) =>
      requestMessage(
        true,
        { flags: flags | Protocol.CmdFlag.PAYLOAD_LEN, type, cookie, offset, length: payload.length },
        payload
      )
    ),
  fc
    .record({ flags: u16.map((f) => f & ~Protocol.CmdFlag.PAYLOAD_LEN), cookie, offset: u64, payload: data(600) })
    .map(({ cookie, flags, offset, payload }) =>
      requestMessage(true, { flags, type: Protocol.Cmd.WRITE, cookie, offset, length: payload.length }, payload)
    ),
  fc
    .record({
      flags: u16.map((f) => f & ~Protocol.CmdFlag.PAYLOAD_LEN),
      type: u16.filter((t) => t !== Protocol.Cmd.WRITE),
      cookie,
      offset: u64,
      length: u64
    })
    .map((header) => requestMessage(true, header, undefined))
)

/** A whole client session: the flags, some options, then requests of one form. */
const session = fc.record({
  flags: clientFlags,
  options: fc.array(option, { maxLength: 6 }),
  extended: fc.boolean(),
  compact: fc.array(compactRequest, { maxLength: 6 }),
  ext: fc.array(extendedRequest, { maxLength: 6 })
})

type Session = typeof session extends fc.Arbitrary<infer A> ? A : never

const sessionOf = (s: Session) => {
  const requests = s.extended ? s.ext : s.compact
  const messages = [s.flags, ...s.options, ...requests]
  return {
    bytes: concat(messages.map((m) => m.bytes)),
    expected: messages.map((m) => m.message),
    options: s.options.length,
    extended: s.extended
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Driver: push chunks, pull messages, switch to transmission after the last option, as the server does.
// ---------------------------------------------------------------------------------------------------------------

const plain = (m: ServerCodec.ClientMessage | ServerCodec.DecodeError): unknown => {
  switch (m._tag) {
    case "ServerCodecDecodeError":
      return { _tag: "ServerCodecDecodeError", reason: m.reason }
    case "ClientFlags":
      return m
    case "Option":
      return { _tag: "Option", option: m.option, length: m.length, data: toHex(m.data), body: m.body }
    case "Request":
      return {
        _tag: "Request",
        extended: m.extended,
        flags: m.flags,
        type: m.type,
        cookie: toHex(m.cookie),
        offset: BigInt(m.offset).toString(),
        length: BigInt(m.length).toString(),
        payload: toHex(m.payload),
        payloadDropped: m.payloadDropped
      }
  }
}

const decodeChunks = (
  chunks: ReadonlyArray<Uint8Array>,
  options: number,
  extended: boolean,
  decoderOptions: ServerCodec.DecoderOptions = {}
) => {
  const decoder = ServerCodec.makeDecoder(decoderOptions)
  const out: Array<unknown> = []
  let optionsSeen = 0
  const pull = (): boolean => {
    for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
      out.push(plain(m))
      if (m._tag === "ServerCodecDecodeError") return false
      if (m._tag === "Option" && ++optionsSeen === options) decoder.startTransmission(extended)
      if (m._tag === "ClientFlags" && options === 0) decoder.startTransmission(extended)
    }
    return true
  }
  for (const chunk of chunks) {
    decoder.push(chunk)
    if (!pull()) break
  }
  return { messages: out, buffered: decoder.buffered }
}

/** Cuts `bytes` at the given positions (sorted, deduplicated); every chunk is a fresh copy. */
const cut = (bytes: Uint8Array, at: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(at.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.slice(from, p))
    from = p
  }
  return out
}

const bytewise = (bytes: Uint8Array): Array<Uint8Array> => Array.from(bytes, (_, i) => bytes.slice(i, i + 1))

const cuts = fc.array(fc.nat(), { maxLength: 40 })

// ---------------------------------------------------------------------------------------------------------------
// Round trips and split invariance
// ---------------------------------------------------------------------------------------------------------------

describe("ClientCodec encoders → ServerCodec decoder", () => {
  const roundTrip = (arbitrary: fc.Arbitrary<Expected>, decoderOptions: ServerCodec.DecoderOptions) =>
    fc.assert(
      fc.property(arbitrary, (m) => {
        const decoder = ServerCodec.makeDecoder(decoderOptions)
        decoder.push(m.bytes.slice())
        const first = decoder.next()
        expect(first && plain(first)).toEqual(m.message)
        expect(decoder.next()).toBeUndefined()
        expect(decoder.buffered).toBe(0)
      }),
      { seed: SEED, numRuns: RUNS }
    )

  it("client flags", () => roundTrip(clientFlags, {}))
  it("NBD_OPT_INFO and NBD_OPT_GO: export name and info requests", () => roundTrip(infoOption, { phase: "options" }))
  it("NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: export name and queries", () =>
    roundTrip(metaContextOption, { phase: "options" }))
  it("NBD_OPT_EXPORT_NAME", () => roundTrip(exportNameOption, { phase: "options" }))
  it("options without structured data, known and unknown, with any data", () =>
    roundTrip(plainOption, { phase: "options" }))
  it("compact requests, writes with their payloads", () =>
    roundTrip(compactRequest, { phase: "transmission", extended: false }))
  it("extended requests, with a payload when PAYLOAD_LEN is set or on a write, and 64-bit lengths", () =>
    roundTrip(extendedRequest, { phase: "transmission", extended: true }))

  it("a whole session decodes to its messages, in order, whole and in any split", () =>
    fc.assert(
      fc.property(session, cuts, (s, at) => {
        const { bytes, expected, extended, options } = sessionOf(s)
        const whole = decodeChunks([bytes.slice()], options, extended)
        expect(whole).toEqual({ messages: expected, buffered: 0 })
        expect(decodeChunks(cut(bytes, at), options, extended)).toEqual(whole)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a whole session one byte at a time, with empty chunks between, decodes exactly as whole", () =>
    fc.assert(
      fc.property(session, (s) => {
        const { bytes, expected, extended, options } = sessionOf(s)
        const chunks = bytewise(bytes).flatMap((c) => [new Uint8Array(0), c])
        expect(decodeChunks(chunks, options, extended)).toEqual({ messages: expected, buffered: 0 })
      }),
      { seed: SEED, numRuns: 40 }
    ))

  it("garbage after a session: the same messages and the same verdict on the garbage, in any split", () =>
    fc.assert(
      fc.property(session, data(80), cuts, (s, garbage, at) => {
        const { bytes, extended, options } = sessionOf(s)
        const stream = concat([bytes, garbage])
        const whole = decodeChunks([stream.slice()], options, extended)
        expect(decodeChunks(cut(stream, at), options, extended)).toEqual(whole)
      }),
      { seed: SEED, numRuns: RUNS }
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Lengths beyond the limits
// ---------------------------------------------------------------------------------------------------------------

/** The bytes held by ArrayBuffers (Buffers included): an allocation of an announced length would show here. */
const arrayBufferBytes = (): number => process.memoryUsage().arrayBuffers

const MiB = 1024 * 1024

describe("ServerCodec decoder refuses impossible lengths without allocating them", () => {
  const header = (option: number, length: number): Uint8Array => {
    const b = ClientCodec.encodeOption(option)
    new DataView(b.buffer).setUint32(12, length)
    return b
  }

  it("option data beyond the limit is reported TooBig at once, skipped unbuffered, and decoding goes on", () =>
    fc.assert(
      fc.property(
        fc.integer({ min: ServerCodec.DEFAULT_MAX_OPTION_LENGTH + 1, max: 0xffffffff }),
        fc.integer({ min: 1, max: 4096 }),
        (length, junk) => {
          const decoder = ServerCodec.makeDecoder({ phase: "options" })
          const before = arrayBufferBytes()
          decoder.push(header(Protocol.Opt.GO, length))
          const m = decoder.next()
          expect(m).toMatchObject({ _tag: "Option", option: Protocol.Opt.GO, length, data: undefined })
          expect((m as ServerCodec.OptionRequest).body._tag).toBe("TooBig")
          decoder.push(new Uint8Array(Math.min(junk, length)))
          expect(decoder.next()).toBeUndefined()
          expect(decoder.buffered).toBe(0)
          expect(arrayBufferBytes() - before).toBeLessThan(MiB)
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a skipped option is followed by the next option, however the skipped bytes arrive", () =>
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3000 }), cuts, (extra, at) => {
        const limit = 1000
        const skipped = concat([header(Protocol.Opt.LIST, limit + extra), new Uint8Array(limit + extra).fill(7)])
        const next = ClientCodec.encodeOption(Protocol.Opt.ABORT)
        const result = decodeChunks(cut(concat([skipped, next]), at), 99, false, {
          phase: "options",
          maxOptionLength: limit
        })
        expect(result.messages).toEqual([
          {
            _tag: "Option",
            option: Protocol.Opt.LIST,
            length: limit + extra,
            data: undefined,
            body: { _tag: "TooBig", message: expect.any(String) }
          },
          { _tag: "Option", option: Protocol.Opt.ABORT, length: 0, data: "", body: { _tag: "None" } }
        ])
        expect(result.buffered).toBe(0)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("option data beyond the skip limit fails the stream at once", () =>
    fc.assert(
      fc.property(fc.integer({ min: MiB + 1, max: 0xffffffff }), (length) => {
        const decoder = ServerCodec.makeDecoder({ phase: "options", maxSkip: MiB })
        const before = arrayBufferBytes()
        decoder.push(header(Protocol.Opt.SET_META_CONTEXT, length))
        expect(decoder.next()).toMatchObject({ _tag: "ServerCodecDecodeError", reason: "TooLarge" })
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  const writeHeader = (extended: boolean, length: bigint | number, flags = 0): Uint8Array =>
    ClientCodec.encodeRequest({ flags, type: Protocol.Cmd.WRITE, cookie: 1, offset: 0, length }, extended)

  it("a compact write payload of 2^31 bytes is dropped at once and never buffered", () => {
    const decoder = ServerCodec.makeDecoder({ phase: "transmission" })
    const junk = new Uint8Array(64 * 1024)
    const before = arrayBufferBytes()
    decoder.push(writeHeader(false, 2 ** 31))
    expect(decoder.next()).toMatchObject({ _tag: "Request", length: 2 ** 31, payload: undefined, payloadDropped: true })
    for (let i = 0; i < 64; i++) decoder.push(junk)
    expect(decoder.next()).toBeUndefined()
    expect(decoder.buffered).toBe(0)
    expect(arrayBufferBytes() - before).toBeLessThan(MiB)
  })

  it("every compact write payload beyond the payload limit is dropped at once", () =>
    fc.assert(
      fc.property(fc.integer({ min: Protocol.Limits.DEFAULT_PAYLOAD_MAX + 1, max: 0xffffffff }), (length) => {
        const decoder = ServerCodec.makeDecoder({ phase: "transmission" })
        const before = arrayBufferBytes()
        decoder.push(writeHeader(false, length))
        expect(decoder.next()).toMatchObject({ _tag: "Request", length, payloadDropped: true })
        expect(decoder.buffered).toBe(0)
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("an extended payload of more than 2^32 - 1 bytes fails the stream at once", () =>
    fc.assert(
      fc.property(fc.bigInt({ min: 1n << 32n, max: (1n << 64n) - 1n }), (length) => {
        const decoder = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
        const before = arrayBufferBytes()
        decoder.push(writeHeader(true, length, Protocol.CmdFlag.PAYLOAD_LEN))
        expect(decoder.next()).toMatchObject({ _tag: "ServerCodecDecodeError", reason: "TooLarge" })
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("an extended payload beyond the payload limit is dropped at once; a length without PAYLOAD_LEN is no payload", () =>
    fc.assert(
      fc.property(fc.integer({ min: Protocol.Limits.DEFAULT_PAYLOAD_MAX + 1, max: 0xffffffff }), u64, (length, l) => {
        const decoder = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
        const before = arrayBufferBytes()
        decoder.push(writeHeader(true, length, Protocol.CmdFlag.PAYLOAD_LEN))
        expect(decoder.next()).toMatchObject({ _tag: "Request", payloadDropped: true })
        expect(decoder.buffered).toBe(0)
        const read = ClientCodec.encodeRequest(
          { flags: 0, type: Protocol.Cmd.READ, cookie: 2, offset: 0, length: l },
          true
        )
        const fresh = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
        fresh.push(read)
        expect(fresh.next()).toMatchObject({ _tag: "Request", payload: undefined, payloadDropped: false })
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Linear time
// ---------------------------------------------------------------------------------------------------------------

describe("ServerCodec decoder time is linear in the bytes pushed, one byte at a time", () => {
  const timeBytewise = (bytes: Uint8Array, options: ServerCodec.DecoderOptions, expectedMessages: number) =>
    bestOf3((tick) => {
      const decoder = ServerCodec.makeDecoder(options)
      let messages = 0
      for (let i = 0; i < bytes.length; i++) {
        decoder.push(bytes.subarray(i, i + 1))
        for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
          if (m._tag === "ServerCodecDecodeError") throw new Error(m.message)
          messages++
        }
        tick()
      }
      expect(messages).toBe(expectedMessages)
    })

  it(`one write request of ${BYTES} bytes`, () => {
    const payload = new Uint8Array(BYTES - 28).map((_, i) => i & 0xff)
    const bytes = ClientCodec.encodeRequest(
      { flags: 0, type: Protocol.Cmd.WRITE, cookie: 1, offset: 0, length: payload.length },
      false,
      payload
    )
    expect(timeBytewise(bytes, { phase: "transmission" }, 1)).toBeLessThan(BOUND_MS)
  })

  it(`one option of ${BYTES} bytes`, () => {
    const bytes = ClientCodec.encodeOption(Protocol.Opt.LIST, new Uint8Array(BYTES - 16))
    expect(timeBytewise(bytes, { phase: "options", maxOptionLength: BYTES }, 1)).toBeLessThan(BOUND_MS)
  })

  it(`${BYTES} bytes of small requests`, () => {
    const count = Math.floor(BYTES / 28)
    const bytes = concat(
      Array.from({ length: count }, (_, i) =>
        ClientCodec.encodeRequest({ flags: 0, type: Protocol.Cmd.READ, cookie: i + 1, offset: 0, length: 512 }, false)
      )
    )
    expect(timeBytewise(bytes, { phase: "transmission" }, count)).toBeLessThan(BOUND_MS)
  })
})
