/**
 * The server half of the NBD wire codec: encoders for everything a server sends, and an incremental
 * decoder for everything a client sends. Pure: no I/O, no `node:` imports.
 *
 * Encoders return fresh `Uint8Array`s. Messages that carry bulk data (read replies) are split into a
 * small header and the data itself, so a writer can hand both to the socket without copying the data.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import { ByteQueue, fromUtf8, putU16, putU32, putU64, u16, u32, u64, u64Small, utf8 } from "./internal/wire/bytes.js"
import * as Protocol from "./Protocol.js"

// -----------------------------------------------------------------------------
// cookies
// -----------------------------------------------------------------------------

/**
 * A request's cookie ("handle"): a u64 as a bigint, or the 8 raw bytes the client sent (echoed verbatim).
 *
 * @since 0.1.0
 * @category models
 */
export type Cookie = bigint | Uint8Array

const putCookie = (b: Uint8Array, at: number, cookie: Cookie): void => {
  if (typeof cookie === "bigint") putU64(b, at, cookie)
  else {
    if (cookie.length !== 8) throw new RangeError(`a cookie has 8 bytes, got ${cookie.length}`)
    b.set(cookie, at)
  }
}

// -----------------------------------------------------------------------------
// handshake encoders
// -----------------------------------------------------------------------------

/**
 * The 152-byte oldstyle greeting: NBDMAGIC, the oldstyle magic, the export size, the flags as u32
 * (global flags 0 in the high half, transmission flags in the low half) and 124 zero bytes.
 *
 * @since 0.1.0
 * @category handshake
 */
export const oldstyleGreeting = (size: bigint | number, transmissionFlags: number): Uint8Array => {
  const b = new Uint8Array(152)
  putU64(b, 0, Protocol.NBDMAGIC)
  putU64(b, 8, Protocol.OLDSTYLE_MAGIC)
  putU64(b, 16, size)
  putU32(b, 24, transmissionFlags & 0xffff)
  return b
}

/**
 * The 18-byte newstyle greeting: NBDMAGIC, IHAVEOPT and the u16 handshake flags
 * (`FLAG_FIXED_NEWSTYLE`, `FLAG_NO_ZEROES`).
 *
 * @since 0.1.0
 * @category handshake
 */
export const newstyleGreeting = (handshakeFlags: number): Uint8Array => {
  const b = new Uint8Array(18)
  putU64(b, 0, Protocol.NBDMAGIC)
  putU64(b, 8, Protocol.IHAVEOPT)
  putU16(b, 16, handshakeFlags)
  return b
}

/**
 * A fixed-newstyle option reply: the reply magic, the option echoed, the reply type, the length and the data.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionReply = (option: number, type: number, data?: Uint8Array): Uint8Array => {
  const length = data === undefined ? 0 : data.length
  const b = new Uint8Array(20 + length)
  putU64(b, 0, Protocol.REP_MAGIC)
  putU32(b, 8, option)
  putU32(b, 12, type)
  putU32(b, 16, length)
  if (data !== undefined) b.set(data, 20)
  return b
}

/**
 * `NBD_REP_ACK` for an option.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionAck = (option: number): Uint8Array => optionReply(option, Protocol.Rep.ACK)

/**
 * `NBD_REP_SERVER`: an export's name and, optionally, its description (the rest of the payload).
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionServer = (option: number, name: string, description?: string): Uint8Array => {
  const n = utf8(name)
  const d = description === undefined ? new Uint8Array(0) : utf8(description)
  const data = new Uint8Array(4 + n.length + d.length)
  putU32(data, 0, n.length)
  data.set(n, 4)
  data.set(d, 4 + n.length)
  return optionReply(option, Protocol.Rep.SERVER, data)
}

/**
 * `NBD_REP_INFO` with `NBD_INFO_EXPORT`: the export size (u64) and transmission flags (u16); payload length 12.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionInfoExport = (option: number, size: bigint | number, transmissionFlags: number): Uint8Array => {
  const data = new Uint8Array(12)
  putU16(data, 0, Protocol.Info.EXPORT)
  putU64(data, 2, size)
  putU16(data, 10, transmissionFlags)
  return optionReply(option, Protocol.Rep.INFO, data)
}

const infoString = (option: number, info: number, s: string): Uint8Array => {
  const bytes = utf8(s)
  const data = new Uint8Array(2 + bytes.length)
  putU16(data, 0, info)
  data.set(bytes, 2)
  return optionReply(option, Protocol.Rep.INFO, data)
}

/**
 * `NBD_REP_INFO` with `NBD_INFO_NAME`: the canonical export name.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionInfoName = (option: number, name: string): Uint8Array => infoString(option, Protocol.Info.NAME, name)

/**
 * `NBD_REP_INFO` with `NBD_INFO_DESCRIPTION`: the export's description.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionInfoDescription = (option: number, description: string): Uint8Array =>
  infoString(option, Protocol.Info.DESCRIPTION, description)

/**
 * Block size constraints a server advertises: `Protocol.BlockSizes`, the shape the client decodes too.
 *
 * @since 0.1.0
 * @category models
 */
export type BlockSizes = Protocol.BlockSizes

/**
 * `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum payload (u32 each); payload length 14.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionInfoBlockSize = (option: number, sizes: BlockSizes): Uint8Array => {
  const data = new Uint8Array(14)
  putU16(data, 0, Protocol.Info.BLOCK_SIZE)
  putU32(data, 2, sizes.minimum)
  putU32(data, 6, sizes.preferred)
  putU32(data, 10, sizes.maximum)
  return optionReply(option, Protocol.Rep.INFO, data)
}

/**
 * `NBD_REP_META_CONTEXT`: a context id (0 in replies to LIST_META_CONTEXT) and its name.
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionMetaContext = (option: number, id: number, name: string): Uint8Array => {
  const n = utf8(name)
  const data = new Uint8Array(4 + n.length)
  putU32(data, 0, id)
  data.set(n, 4)
  return optionReply(option, Protocol.Rep.META_CONTEXT, data)
}

/**
 * An error reply (`Rep.ERR_*`) with an optional message for a person (at most 4096 bytes; longer is cut).
 *
 * @since 0.1.0
 * @category option replies
 */
export const optionError = (option: number, type: number, message?: string): Uint8Array => {
  if (message === undefined || message.length === 0) return optionReply(option, type)
  const m = utf8(message)
  return optionReply(
    option,
    type,
    m.length > Protocol.Limits.MAX_STRING ? m.subarray(0, Protocol.Limits.MAX_STRING) : m
  )
}

/**
 * The reply to `NBD_OPT_EXPORT_NAME` (no magic): export size u64, transmission flags u16 and 124 zero bytes,
 * omitted when both sides agreed on `NO_ZEROES`.
 *
 * @since 0.1.0
 * @category handshake
 */
export const exportNameReply = (size: bigint | number, transmissionFlags: number, noZeroes: boolean): Uint8Array => {
  const b = new Uint8Array(noZeroes ? 10 : 10 + Protocol.Limits.ZERO_PADDING)
  putU64(b, 0, size)
  putU16(b, 8, transmissionFlags)
  return b
}

// -----------------------------------------------------------------------------
// transmission encoders
// -----------------------------------------------------------------------------

/**
 * A 16-byte simple reply: magic, error (0 on success) and cookie. A successful read's data follows it.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const simpleReply = (cookie: Cookie, error: number): Uint8Array => {
  const b = new Uint8Array(16)
  putU32(b, 0, Protocol.SIMPLE_REPLY_MAGIC)
  putU32(b, 4, error)
  putCookie(b, 8, cookie)
  return b
}

/**
 * Where a chunk goes: the reply form negotiated (`extended` headers or structured replies) and the request
 * it answers (its cookie, and its offset, which extended headers echo).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChunkTarget {
  readonly extended: boolean
  readonly cookie: Cookie
  readonly offset: number | bigint
}

/**
 * The header size of a chunk: 20 bytes for structured replies, 32 for extended headers.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const chunkHeaderSize = (extended: boolean): number => (extended ? 32 : 20)

const writeChunkHeader = (
  b: Uint8Array,
  target: ChunkTarget,
  flags: number,
  type: number,
  payloadLength: number | bigint
): number => {
  if (target.extended) {
    putU32(b, 0, Protocol.EXTENDED_REPLY_MAGIC)
    putU16(b, 4, flags)
    putU16(b, 6, type)
    putCookie(b, 8, target.cookie)
    putU64(b, 16, target.offset)
    putU64(b, 24, payloadLength)
    return 32
  }
  putU32(b, 0, Protocol.STRUCTURED_REPLY_MAGIC)
  putU16(b, 4, flags)
  putU16(b, 6, type)
  putCookie(b, 8, target.cookie)
  putU32(b, 16, Number(payloadLength))
  return 20
}

/**
 * The header of a structured (20-byte) or extended (32-byte) reply chunk, for a payload the caller appends.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const chunkHeader = (
  target: ChunkTarget,
  flags: number,
  type: number,
  payloadLength: number | bigint
): Uint8Array => {
  const b = new Uint8Array(chunkHeaderSize(target.extended))
  writeChunkHeader(b, target, flags, type, payloadLength)
  return b
}

/**
 * `NBD_REPLY_TYPE_NONE` with `DONE`: the final chunk of a reply with nothing more to say.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const noneChunk = (target: ChunkTarget): Uint8Array =>
  chunkHeader(target, Protocol.REPLY_FLAG_DONE, Protocol.ReplyType.NONE, 0)

/**
 * The header and data offset of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk; the `dataLength` bytes of data follow it.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const offsetDataHeader = (
  target: ChunkTarget,
  flags: number,
  dataOffset: number | bigint,
  dataLength: number
): Uint8Array => {
  const h = chunkHeaderSize(target.extended)
  const b = new Uint8Array(h + 8)
  writeChunkHeader(b, target, flags, Protocol.ReplyType.OFFSET_DATA, 8 + dataLength)
  putU64(b, h, dataOffset)
  return b
}

/**
 * A whole `NBD_REPLY_TYPE_OFFSET_DATA` chunk, as the header and the data (not copied).
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const offsetDataChunk = (
  target: ChunkTarget,
  flags: number,
  dataOffset: number | bigint,
  data: Uint8Array
): readonly [Uint8Array, Uint8Array] => [offsetDataHeader(target, flags, dataOffset, data.length), data]

/**
 * `NBD_REPLY_TYPE_OFFSET_HOLE`: `holeLength` bytes at `holeOffset` read as zeroes.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const offsetHoleChunk = (
  target: ChunkTarget,
  flags: number,
  holeOffset: number | bigint,
  holeLength: number
): Uint8Array => {
  const h = chunkHeaderSize(target.extended)
  const b = new Uint8Array(h + 12)
  writeChunkHeader(b, target, flags, Protocol.ReplyType.OFFSET_HOLE, 12)
  putU64(b, h, holeOffset)
  putU32(b, h + 8, holeLength)
  return b
}

/**
 * One block-status descriptor: a length and the context's status flags.
 *
 * @since 0.1.0
 * @category models
 */
export interface Extent {
  readonly length: number | bigint
  readonly flags: number
}

/**
 * A block-status chunk for one context: `NBD_REPLY_TYPE_BLOCK_STATUS` (32-bit descriptors) with structured
 * replies, `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (64-bit descriptors with a count) with extended headers.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const blockStatusChunk = (
  target: ChunkTarget,
  flags: number,
  contextId: number,
  extents: ReadonlyArray<Extent>
): Uint8Array => {
  const h = chunkHeaderSize(target.extended)
  if (target.extended) {
    const payload = 8 + 16 * extents.length
    const b = new Uint8Array(h + payload)
    writeChunkHeader(b, target, flags, Protocol.ReplyType.BLOCK_STATUS_EXT, payload)
    putU32(b, h, contextId)
    putU32(b, h + 4, extents.length)
    let at = h + 8
    for (const e of extents) {
      putU64(b, at, e.length)
      putU64(b, at + 8, e.flags >>> 0)
      at += 16
    }
    return b
  }
  const payload = 4 + 8 * extents.length
  const b = new Uint8Array(h + payload)
  writeChunkHeader(b, target, flags, Protocol.ReplyType.BLOCK_STATUS, payload)
  putU32(b, h, contextId)
  let at = h + 4
  for (const e of extents) {
    putU32(b, at, Number(e.length))
    putU32(b, at + 4, e.flags)
    at += 8
  }
  return b
}

const errorPayload = (message: string | undefined): Uint8Array => {
  if (message === undefined) return new Uint8Array(0)
  const m = utf8(message)
  return m.length > Protocol.Limits.MAX_STRING ? m.subarray(0, Protocol.Limits.MAX_STRING) : m
}

/**
 * `NBD_REPLY_TYPE_ERROR`: an error value (non-zero, `Protocol.NbdErrno`) and an optional message.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const errorChunk = (target: ChunkTarget, flags: number, error: number, message?: string): Uint8Array => {
  const m = errorPayload(message)
  const h = chunkHeaderSize(target.extended)
  const b = new Uint8Array(h + 6 + m.length)
  writeChunkHeader(b, target, flags, Protocol.ReplyType.ERROR, 6 + m.length)
  putU32(b, h, error)
  putU16(b, h + 4, m.length)
  b.set(m, h + 6)
  return b
}

/**
 * `NBD_REPLY_TYPE_ERROR_OFFSET`: an error value, an optional message and the offset where the error lies.
 *
 * @since 0.1.0
 * @category transmission replies
 */
export const errorOffsetChunk = (
  target: ChunkTarget,
  flags: number,
  error: number,
  offset: number | bigint,
  message?: string
): Uint8Array => {
  const m = errorPayload(message)
  const h = chunkHeaderSize(target.extended)
  const b = new Uint8Array(h + 14 + m.length)
  writeChunkHeader(b, target, flags, Protocol.ReplyType.ERROR_OFFSET, 14 + m.length)
  putU32(b, h, error)
  putU16(b, h + 4, m.length)
  b.set(m, h + 6)
  putU64(b, h + 6 + m.length, offset)
  return b
}

// -----------------------------------------------------------------------------
// decoder
// -----------------------------------------------------------------------------

/**
 * A client broke the protocol in a way the byte stream cannot recover from (bad magic, a length beyond
 * every limit): the server should drop the connection. Its tag names the module, so it never meets
 * `ClientCodec.DecodeError` under one name.
 *
 * @since 0.1.0
 * @category errors
 */
export class DecodeError extends Data.TaggedError("ServerCodecDecodeError")<{
  readonly reason: "BadMagic" | "TooLarge"
  readonly message: string
}> {}

/**
 * The client flags (u32) sent after the newstyle greeting.
 *
 * @since 0.1.0
 * @category messages
 */
export interface ClientFlags {
  readonly _tag: "ClientFlags"
  readonly flags: number
}

/**
 * The parsed data of an option request.
 *
 * - `None`: an option without structured data (ABORT, LIST, STARTTLS, STRUCTURED_REPLY, EXTENDED_HEADERS,
 *   unknown options); its raw data, if any, is on the request.
 * - `ExportName`: NBD_OPT_EXPORT_NAME's name.
 * - `Info`: NBD_OPT_INFO / NBD_OPT_GO: the export name and the info types requested.
 * - `MetaContext`: NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: the export name and the queries.
 * - `Invalid`: the data is malformed (reply `ERR_INVALID`, or drop the connection for EXPORT_NAME).
 * - `TooBig`: the data was longer than the decoder's limit and was skipped unread (reply `ERR_TOO_BIG`).
 *
 * @since 0.1.0
 * @category messages
 */
export type OptionBody =
  | { readonly _tag: "None" }
  | { readonly _tag: "ExportName"; readonly name: string }
  | { readonly _tag: "Info"; readonly name: string; readonly infos: ReadonlyArray<number> }
  | { readonly _tag: "MetaContext"; readonly name: string; readonly queries: ReadonlyArray<string> }
  | { readonly _tag: "Invalid"; readonly message: string }
  | { readonly _tag: "TooBig"; readonly message: string }

/**
 * An option request: `IHAVEOPT`, the option code, the data length and the data (undefined when it was skipped).
 *
 * @since 0.1.0
 * @category messages
 */
export interface OptionRequest {
  readonly _tag: "Option"
  readonly option: number
  readonly length: number
  readonly data: Uint8Array | undefined
  readonly body: OptionBody
}

/**
 * A transmission request, compact (28-byte header) or extended (32-byte header).
 *
 * `offset` and `length` are numbers when they fit in 53 bits, else bigints. `cookie` is the 8 raw bytes,
 * to echo in the reply. `payload` holds the write data (with or without `PAYLOAD_LEN` on an extended write)
 * or any other payload an extended request announced with `PAYLOAD_LEN`; when the payload was larger than the decoder's `maxPayload` it is skipped unread,
 * `payload` is undefined and `payloadDropped` is true: reply with an error (EINVAL or EOVERFLOW) or drop
 * the connection.
 *
 * @since 0.1.0
 * @category messages
 */
export interface Request {
  readonly _tag: "Request"
  readonly extended: boolean
  readonly flags: number
  readonly type: number
  readonly cookie: Uint8Array
  readonly offset: number | bigint
  readonly length: number | bigint
  readonly payload: Uint8Array | undefined
  readonly payloadDropped: boolean
}

/**
 * Everything a client sends.
 *
 * @since 0.1.0
 * @category messages
 */
export type ClientMessage = ClientFlags | OptionRequest | Request

/**
 * Where the decoder starts: `"newstyle"` expects the client flags then options; `"options"` expects options
 * (after the client flags); `"transmission"` expects requests (after NBD_OPT_GO, or at once for oldstyle).
 *
 * @since 0.1.0
 * @category models
 */
export type DecoderPhase = "newstyle" | "options" | "transmission"

/**
 * Limits and the starting phase of a decoder.
 *
 * @since 0.1.0
 * @category models
 */
export interface DecoderOptions {
  readonly phase?: DecoderPhase
  /** Extended requests (32-byte headers) in the transmission phase. Default false. */
  readonly extended?: boolean
  /** Option data beyond this is skipped and reported `TooBig`. Default 65536. */
  readonly maxOptionLength?: number
  /** Request payloads beyond this are skipped and reported `payloadDropped`. Default 32 MiB. */
  readonly maxPayload?: number
  /** Payloads beyond this are not even skipped: the stream is refused with a `DecodeError`. Default 2^32 - 1. */
  readonly maxSkip?: number
  /**
   * Asked for each request payload of `length` bytes: where to copy it should it span pushed chunks, a buffer
   * of at least `length` bytes whose start the request's `payload` then views, or undefined for a new one. A
   * caller that reuses one buffer must be done with each payload before the next call to `next`. A payload
   * the decoder already holds in one piece is a view of it, never copied.
   *
   * @since 0.2.0
   */
  readonly payloadBuffer?: (length: number) => Uint8Array | undefined
}

/**
 * The default limit on option data: 64 KiB.
 *
 * @since 0.1.0
 * @category limits
 */
export const DEFAULT_MAX_OPTION_LENGTH = 65536

/**
 * An incremental decoder of what a client sends. Push chunks of any size with `push`, then pull messages
 * with `next` until it returns undefined (more bytes needed). A `DecodeError` is final.
 *
 * Switch phases between messages: `startOptions` is implied after the client flags; call
 * `startTransmission` once NBD_OPT_GO or NBD_OPT_EXPORT_NAME succeeded.
 *
 * @since 0.1.0
 * @category decoder
 */
export class Decoder {
  private readonly queue = new ByteQueue()
  private phase: DecoderPhase
  private extended: boolean
  private readonly maxOptionLength: number
  private readonly maxPayload: number
  private readonly maxSkip: number
  private readonly payloadBuffer: ((length: number) => Uint8Array | undefined) | undefined
  private skipping = 0
  private failed: DecodeError | undefined = undefined
  /** A header whose payload has not fully arrived. */
  private pendingOption: { option: number; length: number } | undefined = undefined
  private pendingRequest: Omit<Request, "payload"> | undefined = undefined
  private pendingPayload = 0

  constructor(options: DecoderOptions = {}) {
    this.phase = options.phase ?? "newstyle"
    this.extended = options.extended ?? false
    this.maxOptionLength = options.maxOptionLength ?? DEFAULT_MAX_OPTION_LENGTH
    this.maxPayload = options.maxPayload ?? Protocol.Limits.DEFAULT_PAYLOAD_MAX
    this.maxSkip = options.maxSkip ?? 0xffffffff
    this.payloadBuffer = options.payloadBuffer
  }

  /** Bytes received and not yet decoded. */
  get buffered(): number {
    return this.queue.available
  }

  /** The current phase. */
  get currentPhase(): DecoderPhase {
    return this.phase
  }

  /** Adds received bytes. */
  push(chunk: Uint8Array): void {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, chunk.length)
      this.skipping -= n
      if (n === chunk.length) return
      chunk = chunk.subarray(n)
    }
    this.queue.push(chunk)
  }

  /**
   * Removes and gives the bytes received but not decoded yet, e.g. to hand them to a TLS layer after
   * NBD_OPT_STARTTLS. Call it between messages: a message whose header was decoded but whose data has not
   * all arrived is dropped.
   */
  takeBuffered(): Uint8Array {
    this.pendingOption = undefined
    this.pendingRequest = undefined
    this.pendingPayload = 0
    return this.queue.drain()
  }

  /** Decodes requests from now on (compact, or extended when `extended`). */
  startTransmission(extended: boolean): void {
    this.phase = "transmission"
    this.extended = extended
  }

  /** Decodes options from now on. */
  startOptions(): void {
    this.phase = "options"
  }

  /** The next message, undefined when more bytes are needed, or the `DecodeError` that ended the stream. */
  next(): ClientMessage | DecodeError | undefined {
    if (this.failed !== undefined) return this.failed
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, this.queue.available)
      this.queue.skip(n)
      this.skipping -= n
      if (this.skipping > 0) return undefined
    }
    switch (this.phase) {
      case "newstyle": {
        if (this.queue.available < 4) return undefined
        const flags = u32(this.queue.take(4), 0)
        this.phase = "options"
        return { _tag: "ClientFlags", flags }
      }
      case "options":
        return this.nextOption()
      case "transmission":
        return this.nextRequest()
    }
  }

  private fail(reason: DecodeError["reason"], message: string): DecodeError {
    this.failed = new DecodeError({ reason, message })
    return this.failed
  }

  private skip(n: number): void {
    const now = Math.min(n, this.queue.available)
    this.queue.skip(now)
    this.skipping = n - now
  }

  private nextOption(): OptionRequest | DecodeError | undefined {
    let pending = this.pendingOption
    if (pending === undefined) {
      if (this.queue.available < 16) return undefined
      const h = this.queue.take(16)
      const magic = u64(h, 0)
      if (magic !== Protocol.IHAVEOPT)
        return this.fail("BadMagic", `option request with bad magic 0x${magic.toString(16)}`)
      const option = u32(h, 8)
      const length = u32(h, 12)
      if (length > this.maxOptionLength) {
        if (length > this.maxSkip)
          return this.fail("TooLarge", `option ${option} with ${length} bytes of data is too large`)
        this.skip(length)
        return {
          _tag: "Option",
          option,
          length,
          data: undefined,
          body: { _tag: "TooBig", message: `option data of ${length} bytes exceeds ${this.maxOptionLength}` }
        }
      }
      pending = { option, length }
      this.pendingOption = pending
    }
    if (this.queue.available < pending.length) return undefined
    this.pendingOption = undefined
    const data = this.queue.take(pending.length)
    return {
      _tag: "Option",
      option: pending.option,
      length: pending.length,
      data,
      body: parseOption(pending.option, data)
    }
  }

  private nextRequest(): Request | DecodeError | undefined {
    let pending = this.pendingRequest
    if (pending === undefined) {
      const size = this.extended ? 32 : 28
      if (this.queue.available < size) return undefined
      const h = this.queue.take(size)
      const magic = u32(h, 0)
      const flags = u16(h, 4)
      const type = u16(h, 6)
      const cookie = h.slice(8, 16)
      const offset = u64Small(h, 16) ?? u64(h, 16)
      let length: number | bigint
      let payloadLength: number | bigint = 0
      if (this.extended) {
        if (magic !== Protocol.EXTENDED_REQUEST_MAGIC)
          return this.fail("BadMagic", `extended request with bad magic 0x${magic.toString(16)}`)
        length = u64Small(h, 24) ?? u64(h, 24)
        // A write's length is its payload's, PAYLOAD_LEN or not: qemu's client leaves the flag off, and
        // qemu's server reads the payload either way.
        if ((flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0 || type === Protocol.Cmd.WRITE) payloadLength = length
      } else {
        if (magic !== Protocol.REQUEST_MAGIC)
          return this.fail("BadMagic", `request with bad magic 0x${magic.toString(16)}`)
        length = u32(h, 24)
        if (type === Protocol.Cmd.WRITE) payloadLength = length
      }
      const header = { _tag: "Request" as const, extended: this.extended, flags, type, cookie, offset, length }
      if (payloadLength === 0) return { ...header, payload: undefined, payloadDropped: false }
      if (typeof payloadLength === "bigint" || payloadLength > this.maxPayload) {
        if (typeof payloadLength === "bigint" || payloadLength > this.maxSkip)
          return this.fail("TooLarge", `request payload of ${payloadLength} bytes is too large`)
        this.skip(payloadLength)
        return { ...header, payload: undefined, payloadDropped: true }
      }
      pending = { ...header, payloadDropped: false }
      this.pendingRequest = pending
      this.pendingPayload = payloadLength
    }
    if (this.queue.available < this.pendingPayload) return undefined
    this.pendingRequest = undefined
    const length = this.pendingPayload
    const payload = this.queue.take(length, this.payloadBuffer?.(length))
    return { ...pending, payload }
  }
}

/**
 * Makes a decoder.
 *
 * @since 0.1.0
 * @category decoder
 */
export const makeDecoder = (options?: DecoderOptions): Decoder => new Decoder(options)

const invalid = (message: string): OptionBody => ({ _tag: "Invalid", message })

/**
 * Parses an option's data: the export name of EXPORT_NAME, the name and info types of INFO/GO, the name and
 * queries of LIST/SET_META_CONTEXT. Other options give `None`.
 *
 * @since 0.1.0
 * @category decoder
 */
export const parseOption = (option: number, data: Uint8Array): OptionBody => {
  switch (option) {
    case Protocol.Opt.EXPORT_NAME: {
      if (data.length > Protocol.Limits.MAX_STRING) return invalid("export name too long")
      return { _tag: "ExportName", name: fromUtf8(data) }
    }
    case Protocol.Opt.INFO:
    case Protocol.Opt.GO: {
      if (data.length < 6) return invalid("option data too short")
      const nameLength = u32(data, 0)
      if (nameLength > Protocol.Limits.MAX_STRING) return invalid("export name too long")
      if (4 + nameLength + 2 > data.length) return invalid("export name length exceeds the option data")
      const name = fromUtf8(data.subarray(4, 4 + nameLength))
      const count = u16(data, 4 + nameLength)
      if (4 + nameLength + 2 + 2 * count !== data.length)
        return invalid("number of info requests does not match the option length")
      const infos: Array<number> = []
      for (let i = 0, at = 6 + nameLength; i < count; i++, at += 2) infos.push(u16(data, at))
      return { _tag: "Info", name, infos }
    }
    case Protocol.Opt.LIST_META_CONTEXT:
    case Protocol.Opt.SET_META_CONTEXT: {
      if (data.length < 8) return invalid("option data too short")
      const nameLength = u32(data, 0)
      if (nameLength > Protocol.Limits.MAX_STRING) return invalid("export name too long")
      if (4 + nameLength + 4 > data.length) return invalid("export name length exceeds the option data")
      const name = fromUtf8(data.subarray(4, 4 + nameLength))
      const count = u32(data, 4 + nameLength)
      let at = 8 + nameLength
      const queries: Array<string> = []
      for (let i = 0; i < count; i++) {
        if (at + 4 > data.length) return invalid("number of queries does not match the option length")
        const length = u32(data, at)
        at += 4
        if (length > Protocol.Limits.MAX_STRING) return invalid("query too long")
        if (at + length > data.length) return invalid("query length exceeds the option data")
        queries.push(fromUtf8(data.subarray(at, at + length)))
        at += length
      }
      if (at !== data.length) return invalid("trailing bytes after the queries")
      return { _tag: "MetaContext", name, queries }
    }
    default:
      return { _tag: "None" }
  }
}
