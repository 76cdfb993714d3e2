/**
 * Property tests of what a server sends, end to end through both halves of the codec: ServerCodec's encoders
 * against ClientCodec's decoders. Round trips of every message family, the same result whatever the chunking
 * (through a reused Node Buffer, as the transport delivers reads), refusal of impossible lengths without
 * allocating them, and decoding time linear in the bytes pushed.
 */
import * as ClientCodec from "@effect-nbd/core/ClientCodec"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { BOUND_MS, BYTES, bestOf3 } from "./util/linear.js"

const SEED = 0xc11e47
const RUNS = 150

const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex")
const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))

const plainError = (e: ClientCodec.DecodeError) => ({ _tag: e._tag, message: e.message, errno: e.errno })
const plain = (r: unknown): unknown => (r instanceof ClientCodec.DecodeError ? plainError(r) : r)

// ---------------------------------------------------------------------------------------------------------------
// Delivery: cut a stream into chunks and hand each one over as the Node transport does, as a view of one
// reused Buffer that the next read overwrites.
// ---------------------------------------------------------------------------------------------------------------

/** Cut positions (taken modulo the stream's length + 1, sorted, deduplicated). */
const cuts = fc.array(fc.nat(), { maxLength: 40 })

const cut = (bytes: Uint8Array, at: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(at.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p))
    from = p
  }
  return out
}

const bytewise = (bytes: Uint8Array): Array<Uint8Array> =>
  Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)).flatMap((c) => [new Uint8Array(0), c])

/** Calls `push` with each chunk as a view of one reused Buffer, scribbled over as soon as `push` returns. */
const deliver = (chunks: ReadonlyArray<Uint8Array>, push: (chunk: Uint8Array) => boolean): void => {
  const size = chunks.reduce((m, c) => Math.max(m, c.length), 1)
  const scratch = Buffer.allocUnsafe(size)
  for (const chunk of chunks) {
    scratch.set(chunk, 0)
    const more = push(scratch.subarray(0, chunk.length))
    scratch.fill(0xa5)
    if (!more) return
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------------------------

const u16 = fc.integer({ min: 0, max: 0xffff })
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })
const text = fc.string({ unit: "grapheme", maxLength: 24 })
/** Error messages are cut at 4096 bytes by the encoder; keep them whole so they round trip. */
const message = fc.string({ unit: "grapheme", maxLength: 40 })
const option = fc.oneof(fc.constantFrom(...Object.values(Protocol.Opt)), u32)

/** One option reply: its bytes and what `decodeOptionReply` must return. */
interface Reply {
  readonly option: number
  readonly bytes: Uint8Array
  readonly decoded: ClientCodec.OptionReply
}

const errorTypes = fc.oneof(
  fc.constantFrom(
    Protocol.Rep.ERR_UNSUP,
    Protocol.Rep.ERR_POLICY,
    Protocol.Rep.ERR_INVALID,
    Protocol.Rep.ERR_PLATFORM,
    Protocol.Rep.ERR_TLS_REQD,
    Protocol.Rep.ERR_UNKNOWN,
    Protocol.Rep.ERR_SHUTDOWN,
    Protocol.Rep.ERR_BLOCK_SIZE_REQD,
    Protocol.Rep.ERR_TOO_BIG,
    Protocol.Rep.ERR_EXT_HEADER_REQD
  ),
  fc.integer({ min: 0x80000000, max: 0xffffffff })
)

const optionReply: fc.Arbitrary<Reply> = fc.oneof(
  option.map((o): Reply => ({ option: o, bytes: ServerCodec.optionAck(o), decoded: { _tag: "Ack", option: o } })),
  fc
    .record({ o: option, name: text, description: fc.option(text, { nil: undefined }) })
    .map(({ description, name, o }): Reply => ({
      option: o,
      bytes: ServerCodec.optionServer(o, name, description),
      decoded: { _tag: "Server", option: o, name, description: description ?? "" }
    })),
  fc.record({ o: option, size: u64, flags: u16 }).map(({ flags, o, size }): Reply => ({
    option: o,
    bytes: ServerCodec.optionInfoExport(o, size, flags),
    decoded: { _tag: "Info", option: o, info: { _tag: "Export", size, transmissionFlags: flags } }
  })),
  fc.record({ o: option, name: text }).map(({ name, o }): Reply => ({
    option: o,
    bytes: ServerCodec.optionInfoName(o, name),
    decoded: { _tag: "Info", option: o, info: { _tag: "Name", name } }
  })),
  fc.record({ o: option, description: text }).map(({ description, o }): Reply => ({
    option: o,
    bytes: ServerCodec.optionInfoDescription(o, description),
    decoded: { _tag: "Info", option: o, info: { _tag: "Description", description } }
  })),
  fc.record({ o: option, minimum: u32, preferred: u32, maximum: u32 }).map(({ o, ...sizes }): Reply => ({
    option: o,
    bytes: ServerCodec.optionInfoBlockSize(o, sizes),
    decoded: { _tag: "Info", option: o, info: { _tag: "BlockSize", ...sizes } }
  })),
  fc
    .record({ o: option, infoType: fc.integer({ min: 4, max: 0xffff }), data: fc.uint8Array({ maxLength: 64 }) })
    .map(({ data, infoType, o }): Reply => {
      const payload = new Uint8Array(2 + data.length)
      new DataView(payload.buffer).setUint16(0, infoType)
      payload.set(data, 2)
      return {
        option: o,
        bytes: ServerCodec.optionReply(o, Protocol.Rep.INFO, payload),
        decoded: { _tag: "Info", option: o, info: { _tag: "Unknown", infoType } }
      }
    }),
  fc.record({ o: option, id: u32, name: text.filter((s) => s.length > 0) }).map(({ id, name, o }): Reply => ({
    option: o,
    bytes: ServerCodec.optionMetaContext(o, id, name),
    decoded: { _tag: "MetaContext", option: o, id, name }
  })),
  fc.record({ o: option, type: errorTypes, message }).map(({ message, o, type }): Reply => ({
    option: o,
    bytes: ServerCodec.optionError(o, type, message),
    decoded: { _tag: "Error", option: o, type, message }
  }))
)

const greeting = fc.oneof(
  u16.map((handshakeFlags) => ({
    bytes: ServerCodec.newstyleGreeting(handshakeFlags),
    decoded: { _tag: "Newstyle", handshakeFlags } as ClientCodec.Greeting
  })),
  fc.record({ size: u64, flags: u16 }).map(({ flags, size }) => ({
    bytes: ServerCodec.oldstyleGreeting(size, flags),
    decoded: { _tag: "Oldstyle", size, globalFlags: 0, transmissionFlags: flags } as ClientCodec.Greeting
  }))
)

const exportNameReply = fc.record({ size: u64, flags: u16, noZeroes: fc.boolean() }).map((r) => ({
  ...r,
  bytes: ServerCodec.exportNameReply(r.size, r.flags, r.noZeroes),
  decoded: { size: r.size, transmissionFlags: r.flags }
}))

// ---------------------------------------------------------------------------------------------------------------
// The handshake decoder
// ---------------------------------------------------------------------------------------------------------------

type Step =
  | { readonly _tag: "Greeting" }
  | { readonly _tag: "Reply"; readonly option: number }
  | { readonly _tag: "ExportName"; readonly noZeroes: boolean }

const decodeStep = (d: ClientCodec.HandshakeDecoder, step: Step) =>
  step._tag === "Greeting"
    ? d.decodeGreeting()
    : step._tag === "Reply"
      ? d.decodeOptionReply(step.option)
      : d.decodeExportNameReply(step.noZeroes)

/** Pushes the chunks, decoding each expected message as soon as it is complete; stops at the first error. */
const runHandshake = (chunks: ReadonlyArray<Uint8Array>, steps: ReadonlyArray<Step>) => {
  const decoder = new ClientCodec.HandshakeDecoder()
  const results: Array<unknown> = []
  let next = 0
  let failed = false
  deliver(chunks, (chunk) => {
    decoder.push(chunk)
    while (!failed && next < steps.length) {
      const r = decodeStep(decoder, steps[next]!)
      if (r === undefined) break
      results.push(plain(r))
      next++
      failed = r instanceof ClientCodec.DecodeError
    }
    return true
  })
  return { results, rest: toHex(decoder.rest()) }
}

/** A handshake: a greeting, option replies, and maybe an export-name reply, as one byte stream. */
const handshake = fc
  .record({
    greeting: greeting.filter((g) => g.decoded._tag === "Newstyle"),
    replies: fc.array(optionReply, { maxLength: 8 }),
    exportName: fc.option(exportNameReply, { nil: undefined })
  })
  .map(({ exportName, greeting, replies }) => {
    const steps: Array<Step> = [
      { _tag: "Greeting" },
      ...replies.map((r): Step => ({ _tag: "Reply", option: r.option }))
    ]
    const parts = [greeting.bytes, ...replies.map((r) => r.bytes)]
    const decoded: Array<unknown> = [greeting.decoded, ...replies.map((r) => r.decoded)]
    if (exportName !== undefined) {
      steps.push({ _tag: "ExportName", noZeroes: exportName.noZeroes })
      parts.push(exportName.bytes)
      decoded.push(exportName.decoded)
    }
    return { steps, bytes: concat(parts), decoded }
  })

describe("ServerCodec encoders → ClientCodec handshake decoder", () => {
  it("greetings, newstyle and oldstyle", () =>
    fc.assert(
      fc.property(greeting, (g) => {
        expect(runHandshake([g.bytes], [{ _tag: "Greeting" }])).toEqual({ results: [g.decoded], rest: "" })
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("every option reply type: ACK, SERVER, each INFO, META_CONTEXT and errors", () =>
    fc.assert(
      fc.property(optionReply, (r) => {
        expect(runHandshake([r.bytes], [{ _tag: "Reply", option: r.option }])).toEqual({
          results: [r.decoded],
          rest: ""
        })
      }),
      { seed: SEED, numRuns: 4 * RUNS }
    ))

  it("a reply that echoes another option is refused", () =>
    fc.assert(
      fc.property(optionReply, u32, (r, other) => {
        fc.pre(other !== r.option)
        const { results } = runHandshake([r.bytes], [{ _tag: "Reply", option: other }])
        expect(results).toEqual([
          { _tag: "ClientCodecDecodeError", errno: "", message: "handshake: invalid option reply magic or option" }
        ])
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("the export-name reply, with and without the 124 zero bytes", () =>
    fc.assert(
      fc.property(exportNameReply, (r) => {
        expect(runHandshake([r.bytes], [{ _tag: "ExportName", noZeroes: r.noZeroes }])).toEqual({
          results: [r.decoded],
          rest: ""
        })
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a handshake decodes to its messages in order, in any split through a reused buffer", () =>
    fc.assert(
      fc.property(handshake, cuts, (h, at) => {
        const whole = runHandshake([h.bytes], h.steps)
        expect(whole).toEqual({ results: h.decoded, rest: "" })
        expect(runHandshake(cut(h.bytes, at), h.steps)).toEqual(whole)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a handshake one byte at a time, with empty reads between, decodes exactly as whole", () =>
    fc.assert(
      fc.property(handshake, (h) => {
        expect(runHandshake(bytewise(h.bytes), h.steps)).toEqual({ results: h.decoded, rest: "" })
      }),
      { seed: SEED, numRuns: 40 }
    ))

  it("an oldstyle greeting split anywhere gives the same size and flags", () =>
    fc.assert(
      fc.property(
        greeting.filter((g) => g.decoded._tag === "Oldstyle"),
        cuts,
        (g, at) => {
          expect(runHandshake(cut(g.bytes, at), [{ _tag: "Greeting" }])).toEqual({ results: [g.decoded], rest: "" })
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("any bytes after the handshake are handed on intact, and any stream gets one verdict, in any split", () =>
    fc.assert(
      fc.property(handshake, fc.uint8Array({ maxLength: 100 }), cuts, (h, tail, at) => {
        const stream = concat([h.bytes, tail])
        const whole = runHandshake([stream], h.steps)
        expect(whole).toEqual({ results: h.decoded, rest: toHex(tail) })
        expect(runHandshake(cut(stream, at), h.steps)).toEqual(whole)
        // And a stream that is garbage from some point on: the same verdict whatever the split.
        const garbled = concat([h.bytes.subarray(0, at[0] ?? 0), tail])
        expect(runHandshake(cut(garbled, at), h.steps)).toEqual(runHandshake([garbled], h.steps))
      }),
      { seed: SEED, numRuns: RUNS }
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// The reply decoder
// ---------------------------------------------------------------------------------------------------------------

/** What a recording sink saw, in order. */
type Event =
  | { readonly _tag: "Simple"; readonly cookie: number | undefined; readonly error: number; readonly data: string }
  | { readonly _tag: "Data"; readonly header: ClientCodec.ChunkHeader; readonly offset: bigint; readonly data: string }
  | { readonly _tag: "Chunk"; readonly header: ClientCodec.ChunkHeader; readonly payload: string }

/** One reply message: its bytes, how much data the owner expects after it if simple, and the event it makes. */
interface ReplyMessage {
  readonly bytes: Uint8Array
  readonly simpleData: number
  readonly event: Event
}

/**
 * A sink that records everything and, for a simple reply, answers with the data length of the next simple
 * message in the script (only the owner, which knows the request, can say). Read data is copied into fresh
 * buffers, as the connection copies it into the caller's.
 */
const recordingSink = (simpleLengths: ReadonlyArray<number>) => {
  const events: Array<Event> = []
  let simple = 0
  let data: Uint8Array = new Uint8Array(0)
  let pending:
    { cookie: number | undefined; error: number } | { header: ClientCodec.ChunkHeader; offset: bigint } | undefined
  const sink: ClientCodec.ReplySink = {
    simpleReply: (cookie, error) => {
      const length = simpleLengths[simple++] ?? 0
      if (length === 0) {
        events.push({ _tag: "Simple", cookie, error, data: "" })
        return { length: 0, target: undefined }
      }
      data = new Uint8Array(length)
      pending = { cookie, error }
      return { length, target: { buffer: data, at: 0 } }
    },
    simpleDataDone: (cookie) => {
      const p = pending as { cookie: number | undefined; error: number }
      expect(cookie).toBe(p.cookie)
      events.push({ _tag: "Simple", cookie, error: p.error, data: toHex(data) })
    },
    dataChunk: (header, offset, length) => {
      data = new Uint8Array(length)
      pending = { header, offset }
      return { buffer: data, at: 0 }
    },
    dataChunkDone: (header) => {
      const p = pending as { header: ClientCodec.ChunkHeader; offset: bigint }
      expect(header).toEqual(p.header)
      events.push({ _tag: "Data", header, offset: p.offset, data: toHex(data) })
    },
    chunk: (header, payload) => {
      events.push({ _tag: "Chunk", header, payload: toHex(payload) })
    }
  }
  return { sink, events }
}

const runReplies = (chunks: ReadonlyArray<Uint8Array>, mode: ClientCodec.ReplyMode, script: ReadonlyArray<number>) => {
  const { events, sink } = recordingSink(script)
  const decoder = new ClientCodec.ReplyDecoder(sink, mode)
  let failure: unknown = undefined
  deliver(chunks, (chunk) => {
    const error = decoder.push(chunk)
    if (error !== undefined) failure = plainError(error)
    return error === undefined
  })
  return { events, failure, idle: decoder.idle }
}

/** Cookies up to 2^64 - 1; the decoder gives `undefined` for those beyond 2^53 (never ours). */
const cookie = fc.oneof(fc.maxSafeNat(), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }))
const cookieNumber = (c: number | bigint): number | undefined =>
  typeof c === "number" ? c : c < 1n << 53n ? Number(c) : undefined
const cookieBig = (c: number | bigint): bigint => BigInt(c)

const simpleMessage: fc.Arbitrary<ReplyMessage> = fc
  .record({ cookie, error: u32, data: fc.uint8Array({ maxLength: 300 }) })
  .map(({ cookie, data, error }) => ({
    bytes: concat([ServerCodec.simpleReply(cookieBig(cookie), error), data]),
    simpleData: data.length,
    event: { _tag: "Simple", cookie: cookieNumber(cookie), error, data: toHex(data) }
  }))

const chunkHeaderOf = (
  extended: boolean,
  c: number | bigint,
  requestOffset: bigint,
  flags: number,
  type: number,
  length: number
): ClientCodec.ChunkHeader => ({
  cookie: cookieNumber(c),
  flags,
  type,
  offset: extended ? requestOffset : undefined,
  length
})

/** Every chunk type, in structured (20-byte header) or extended (32-byte header) form. */
const chunkMessage = (extended: boolean): fc.Arbitrary<ReplyMessage> => {
  const target = fc.record({ cookie, offset: u64 })
  const mk = (t: { cookie: number | bigint; offset: bigint }) => ({
    target: { extended, cookie: cookieBig(t.cookie), offset: t.offset },
    header: (flags: number, type: number, length: number) =>
      chunkHeaderOf(extended, t.cookie, t.offset, flags, type, length)
  })
  const headerSize = extended ? 32 : 20
  const chunk = (bytes: Uint8Array, header: ClientCodec.ChunkHeader): ReplyMessage => ({
    bytes,
    simpleData: 0,
    event: { _tag: "Chunk", header, payload: toHex(bytes.subarray(headerSize)) }
  })
  const extents = fc.array(fc.record({ length: extended ? u64 : u32, flags: u32 }), { minLength: 1, maxLength: 12 })
  return fc.oneof(
    target.map((t) => {
      const { header, target } = mk(t)
      return chunk(ServerCodec.noneChunk(target), header(Protocol.REPLY_FLAG_DONE, Protocol.ReplyType.NONE, 0))
    }),
    fc
      .record({ t: target, flags: u16, offset: u64, data: fc.uint8Array({ maxLength: 300 }) })
      .map((r): ReplyMessage => {
        const { header, target } = mk(r.t)
        const [head, data] = ServerCodec.offsetDataChunk(target, r.flags, r.offset, r.data)
        return {
          bytes: concat([head, data]),
          simpleData: 0,
          event: {
            _tag: "Data",
            header: header(r.flags, Protocol.ReplyType.OFFSET_DATA, 8 + r.data.length),
            offset: r.offset,
            data: toHex(r.data)
          }
        }
      }),
    fc.record({ t: target, flags: u16, offset: u64, length: u32 }).map((r) => {
      const { header, target } = mk(r.t)
      return chunk(
        ServerCodec.offsetHoleChunk(target, r.flags, r.offset, r.length),
        header(r.flags, Protocol.ReplyType.OFFSET_HOLE, 12)
      )
    }),
    fc.record({ t: target, flags: u16, context: u32, extents }).map((r) => {
      const { header, target } = mk(r.t)
      const type = extended ? Protocol.ReplyType.BLOCK_STATUS_EXT : Protocol.ReplyType.BLOCK_STATUS
      const length = extended ? 8 + 16 * r.extents.length : 4 + 8 * r.extents.length
      return chunk(ServerCodec.blockStatusChunk(target, r.flags, r.context, r.extents), header(r.flags, type, length))
    }),
    fc.record({ t: target, flags: u16, error: u32, message }).map((r) => {
      const { header, target } = mk(r.t)
      const bytes = ServerCodec.errorChunk(target, r.flags, r.error, r.message)
      return chunk(bytes, header(r.flags, Protocol.ReplyType.ERROR, bytes.length - headerSize))
    }),
    fc.record({ t: target, flags: u16, error: u32, offset: u64, message }).map((r) => {
      const { header, target } = mk(r.t)
      const bytes = ServerCodec.errorOffsetChunk(target, r.flags, r.error, r.offset, r.message)
      return chunk(bytes, header(r.flags, Protocol.ReplyType.ERROR_OFFSET, bytes.length - headerSize))
    }),
    fc
      .record({
        t: target,
        flags: u16,
        type: u16.filter((t) => ![0, 1, 2, 5, 6, 0x8001, 0x8002].includes(t)),
        payload: fc.uint8Array({ maxLength: 64 })
      })
      .map((r) => {
        const { header, target } = mk(r.t)
        const bytes = concat([ServerCodec.chunkHeader(target, r.flags, r.type, r.payload.length), r.payload])
        return chunk(bytes, header(r.flags, r.type, r.payload.length))
      })
  )
}

const replyStream = (mode: ClientCodec.ReplyMode) => {
  const messages =
    mode === "simple"
      ? simpleMessage
      : mode === "structured"
        ? fc.oneof(simpleMessage, chunkMessage(false))
        : chunkMessage(true)
  return fc.array(messages, { maxLength: 10 }).map((ms) => ({
    bytes: concat(ms.map((m) => m.bytes)),
    script: ms.filter((m) => m.event._tag === "Simple").map((m) => m.simpleData),
    events: ms.map((m) => m.event)
  }))
}

const modes: ReadonlyArray<ClientCodec.ReplyMode> = ["simple", "structured", "extended"]

describe("ServerCodec encoders → ClientCodec reply decoder", () => {
  for (const mode of modes) {
    it(`${mode} replies decode to their messages, whole and in any split through a reused buffer`, () =>
      fc.assert(
        fc.property(replyStream(mode), cuts, (s, at) => {
          const whole = runReplies([s.bytes], mode, s.script)
          expect(whole).toEqual({ events: s.events, failure: undefined, idle: true })
          expect(runReplies(cut(s.bytes, at), mode, s.script)).toEqual(whole)
        }),
        { seed: SEED, numRuns: RUNS }
      ))

    it(`${mode} replies one byte at a time decode exactly as whole`, () =>
      fc.assert(
        fc.property(replyStream(mode), (s) => {
          expect(runReplies(bytewise(s.bytes), mode, s.script)).toEqual({
            events: s.events,
            failure: undefined,
            idle: true
          })
        }),
        { seed: SEED, numRuns: 30 }
      ))

    it(`${mode}: a stream with garbage after valid replies gets the same verdict in any split`, () =>
      fc.assert(
        fc.property(replyStream(mode), fc.uint8Array({ minLength: 1, maxLength: 100 }), cuts, (s, garbage, at) => {
          const stream = concat([s.bytes, garbage])
          const script = [...s.script, 0, 0, 0, 0]
          expect(runReplies(cut(stream, at), mode, script)).toEqual(runReplies([stream], mode, script))
        }),
        { seed: SEED, numRuns: RUNS }
      ))
  }

  it("block-status payloads parse back to their context and extents, compact and extended", () =>
    fc.assert(
      fc.property(
        fc.boolean(),
        u32,
        fc.array(fc.record({ length: u32, flags: u32 }), { minLength: 1, maxLength: 20 }),
        (extended, context, extents) => {
          const target = { extended, cookie: 1n, offset: 0 }
          const bytes = ServerCodec.blockStatusChunk(target, 0, context, extents)
          const type = extended ? Protocol.ReplyType.BLOCK_STATUS_EXT : Protocol.ReplyType.BLOCK_STATUS
          const payload = bytes.subarray(ServerCodec.chunkHeaderSize(extended))
          expect(ClientCodec.decodeBlockStatus(type, payload)).toEqual({
            contextId: context,
            extents: extents.map((e) => ({ length: BigInt(e.length), flags: e.flags }))
          })
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("64-bit extent lengths survive extended block status", () =>
    fc.assert(
      fc.property(
        u32,
        fc.array(fc.record({ length: u64, flags: u32 }), { minLength: 1, maxLength: 20 }),
        (c, extents) => {
          const bytes = ServerCodec.blockStatusChunk({ extended: true, cookie: 1n, offset: 0 }, 0, c, extents)
          expect(ClientCodec.decodeBlockStatus(Protocol.ReplyType.BLOCK_STATUS_EXT, bytes.subarray(32))).toEqual({
            contextId: c,
            extents
          })
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("error chunks parse back to their error, message and offset", () =>
    fc.assert(
      fc.property(fc.boolean(), u32, message, fc.option(u64, { nil: undefined }), (extended, error, m, offset) => {
        const target = { extended, cookie: 1n, offset: 0 }
        const bytes =
          offset === undefined
            ? ServerCodec.errorChunk(target, 0, error, m)
            : ServerCodec.errorOffsetChunk(target, 0, error, offset, m)
        const type = offset === undefined ? Protocol.ReplyType.ERROR : Protocol.ReplyType.ERROR_OFFSET
        expect(ClientCodec.decodeErrorChunk(type, bytes.subarray(ServerCodec.chunkHeaderSize(extended)))).toEqual({
          error,
          message: m,
          offset
        })
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a handshake and the first replies arriving in the same reads: rest() hands the replies on intact", () =>
    fc.assert(
      fc.property(handshake, replyStream("structured"), cuts, (h, s, at) => {
        const stream = concat([h.bytes, s.bytes])
        const run = (chunks: ReadonlyArray<Uint8Array>) => {
          const decoder = new ClientCodec.HandshakeDecoder()
          const { events, sink } = recordingSink(s.script)
          let replies: ClientCodec.ReplyDecoder | undefined
          let next = 0
          const results: Array<unknown> = []
          deliver(chunks, (chunk) => {
            if (replies !== undefined) return replies.push(chunk) === undefined
            decoder.push(chunk)
            while (next < h.steps.length) {
              const r = decodeStep(decoder, h.steps[next]!)
              if (r === undefined) return true
              results.push(plain(r))
              next++
            }
            replies = new ClientCodec.ReplyDecoder(sink, "structured")
            return replies.push(decoder.rest()) === undefined
          })
          return { results, events }
        }
        expect(run(cut(stream, at))).toEqual({ results: h.decoded, events: s.events })
      }),
      { seed: SEED, numRuns: RUNS }
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Lengths beyond the limits
// ---------------------------------------------------------------------------------------------------------------

const MiB = 1024 * 1024

/** The bytes held by ArrayBuffers (Buffers included): an allocation of an announced length would show here. */
const arrayBufferBytes = (): number => process.memoryUsage().arrayBuffers

describe("ClientCodec decoders refuse impossible lengths at once, without allocating them", () => {
  const optionReplyHeader = (option: number, type: number, length: number): Uint8Array => {
    const b = ServerCodec.optionReply(option, type)
    new DataView(b.buffer).setUint32(16, length)
    return b
  }

  it("an option reply announcing more than 64 MiB, up to 4 GiB", () =>
    fc.assert(
      fc.property(
        option,
        fc.constantFrom(...Object.values(Protocol.Rep)),
        fc.integer({ min: Protocol.Limits.MAX_OPTION_REPLY + 1, max: 0xffffffff }),
        (o, type, length) => {
          const decoder = new ClientCodec.HandshakeDecoder()
          const before = arrayBufferBytes()
          decoder.push(optionReplyHeader(o, type, length))
          expect(decoder.decodeOptionReply(o)).toBeInstanceOf(ClientCodec.DecodeError)
          expect(arrayBufferBytes() - before).toBeLessThan(MiB)
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("an option error reply announcing a message longer than 4096 bytes", () =>
    fc.assert(
      fc.property(option, errorTypes, fc.integer({ min: 4097, max: 0xffffffff }), (o, type, length) => {
        const decoder = new ClientCodec.HandshakeDecoder()
        const before = arrayBufferBytes()
        decoder.push(optionReplyHeader(o, type, length))
        expect(decoder.decodeOptionReply(o)).toBeInstanceOf(ClientCodec.DecodeError)
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("an option reply header of 4 GiB - 1 arriving one byte at a time", () => {
    const decoder = new ClientCodec.HandshakeDecoder()
    const header = optionReplyHeader(Protocol.Opt.GO, Protocol.Rep.INFO, 0xffffffff)
    const before = arrayBufferBytes()
    let result: ClientCodec.OptionReply | ClientCodec.DecodeError | undefined
    for (let i = 0; i < header.length && result === undefined; i++) {
      decoder.push(header.subarray(i, i + 1))
      result = decoder.decodeOptionReply(Protocol.Opt.GO)
    }
    expect(plain(result)).toEqual({
      _tag: "ClientCodecDecodeError",
      errno: "",
      message: "handshake: option reply is too large"
    })
    expect(arrayBufferBytes() - before).toBeLessThan(MiB)
  })

  const sink: ClientCodec.ReplySink = {
    simpleReply: () => ({ length: 0, target: undefined }),
    simpleDataDone: () => {},
    dataChunk: () => undefined,
    dataChunkDone: () => {},
    chunk: () => {}
  }

  it("a structured chunk announcing more than 64 MiB + 8, up to 2^32 - 1, of any type", () =>
    fc.assert(
      fc.property(u16, u16, fc.integer({ min: Protocol.Limits.MAX_CHUNK_PAYLOAD + 1, max: 0xffffffff }), (f, t, l) => {
        const decoder = new ClientCodec.ReplyDecoder(sink, "structured")
        const before = arrayBufferBytes()
        const error = decoder.push(ServerCodec.chunkHeader({ extended: false, cookie: 1n, offset: 0 }, f, t, l))
        expect(error).toBeInstanceOf(ClientCodec.DecodeError)
        expect(decoder.push(new Uint8Array(100))).toBe(error)
        expect(arrayBufferBytes() - before).toBeLessThan(MiB)
      }),
      { seed: SEED, numRuns: RUNS }
    ))

  it("an extended chunk announcing more than 64 MiB + 8, up to 2^64 - 1, split anywhere", () =>
    fc.assert(
      fc.property(
        u16,
        u16,
        fc.bigInt({ min: BigInt(Protocol.Limits.MAX_CHUNK_PAYLOAD + 1), max: (1n << 64n) - 1n }),
        cuts,
        (f, t, l, at) => {
          const decoder = new ClientCodec.ReplyDecoder(sink, "extended")
          const before = arrayBufferBytes()
          const header = ServerCodec.chunkHeader({ extended: true, cookie: 1n, offset: 0 }, f, t, l)
          const errors: Array<unknown> = []
          deliver(cut(header, at), (chunk) => {
            const e = decoder.push(chunk)
            if (e !== undefined) errors.push(plainError(e))
            return e === undefined
          })
          expect(errors).toEqual([
            { _tag: "ClientCodecDecodeError", errno: "", message: "server sent a reply chunk larger than 64 MiB" }
          ])
          expect(arrayBufferBytes() - before).toBeLessThan(MiB)
        }
      ),
      { seed: SEED, numRuns: RUNS }
    ))

  it("a reply magic the mode does not allow fails at once", () =>
    fc.assert(
      fc.property(fc.constantFrom(...modes), u32, (mode, magic) => {
        const allowed =
          mode === "simple"
            ? [Protocol.SIMPLE_REPLY_MAGIC]
            : mode === "structured"
              ? [Protocol.SIMPLE_REPLY_MAGIC, Protocol.STRUCTURED_REPLY_MAGIC]
              : [Protocol.EXTENDED_REPLY_MAGIC]
        fc.pre(!allowed.includes(magic))
        const decoder = new ClientCodec.ReplyDecoder(sink, mode)
        const b = new Uint8Array(4)
        new DataView(b.buffer).setUint32(0, magic)
        expect(decoder.push(b)).toBeInstanceOf(ClientCodec.DecodeError)
      }),
      { seed: SEED, numRuns: RUNS }
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Linear time
// ---------------------------------------------------------------------------------------------------------------

/** Pushes `bytes` one at a time through a one-byte reused Buffer, calling `pull` after each push. */
const trickle = (bytes: Uint8Array, push: (chunk: Uint8Array) => void, pull: () => void, tick: () => void): void => {
  const scratch = Buffer.allocUnsafe(1)
  for (let i = 0; i < bytes.length; i++) {
    scratch[0] = bytes[i]!
    push(scratch)
    scratch[0] = 0xa5
    pull()
    tick()
  }
}

describe("ClientCodec decoder time is linear in the bytes pushed, one byte at a time through a reused buffer", () => {
  const timeHandshake = (bytes: Uint8Array, steps: ReadonlyArray<Step>) =>
    bestOf3((tick) => {
      const decoder = new ClientCodec.HandshakeDecoder()
      let next = 0
      trickle(
        bytes,
        (chunk) => decoder.push(chunk),
        () => {
          for (let r = decodeStep(decoder, steps[next]!); r !== undefined; r = decodeStep(decoder, steps[next]!)) {
            if (r instanceof ClientCodec.DecodeError) throw r
            if (++next === steps.length) return
          }
        },
        tick
      )
      expect(next).toBe(steps.length)
    })

  it(`one option reply of ${BYTES} bytes`, () => {
    const bytes = ServerCodec.optionServer(Protocol.Opt.LIST, "disk", "d".repeat(BYTES - 28))
    expect(bytes.length).toBe(BYTES)
    expect(timeHandshake(bytes, [{ _tag: "Reply", option: Protocol.Opt.LIST }])).toBeLessThan(BOUND_MS)
  })

  it(`${BYTES} bytes of small option replies`, () => {
    const count = BYTES / 20
    const bytes = concat(Array.from({ length: count }, () => ServerCodec.optionAck(Protocol.Opt.LIST)))
    const steps = Array.from({ length: count }, (): Step => ({ _tag: "Reply", option: Protocol.Opt.LIST }))
    expect(timeHandshake(bytes, steps)).toBeLessThan(BOUND_MS)
  })

  const timeReplies = (bytes: Uint8Array, mode: ClientCodec.ReplyMode, n: number) =>
    bestOf3((tick) => {
      const { events, sink } = recordingSink([])
      const decoder = new ClientCodec.ReplyDecoder(sink, mode)
      trickle(
        bytes,
        (chunk) => {
          const error = decoder.push(chunk)
          if (error !== undefined) throw error
        },
        () => {},
        tick
      )
      expect(events.length).toBe(n)
    })

  it(`one read chunk of ${BYTES} bytes`, () => {
    const [head, data] = ServerCodec.offsetDataChunk(
      { extended: true, cookie: 1n, offset: 0 },
      1,
      0,
      new Uint8Array(BYTES - 40)
    )
    expect(timeReplies(concat([head, data]), "extended", 1)).toBeLessThan(BOUND_MS)
  })

  it(`one block-status chunk of ${BYTES} bytes`, () => {
    const extents = Array.from({ length: (BYTES - 24) / 8 }, (_, i) => ({ length: 512, flags: i & 3 }))
    const bytes = ServerCodec.blockStatusChunk({ extended: false, cookie: 1n, offset: 0 }, 1, 1, extents)
    expect(timeReplies(bytes, "structured", 1)).toBeLessThan(BOUND_MS)
  })

  it(`${BYTES} bytes of simple replies`, () => {
    const count = BYTES / 16
    const bytes = concat(Array.from({ length: count }, (_, i) => ServerCodec.simpleReply(BigInt(i + 1), 0)))
    expect(timeReplies(bytes, "simple", count)).toBeLessThan(BOUND_MS)
  })
})
