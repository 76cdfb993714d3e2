/**
 * The client half of the NBD wire codec: encoders for what a client sends and incremental decoders for
 * everything a server sends. Pure: bytes in, messages out; no I/O.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import {
  ByteQueue,
  ByteWriter,
  fromUtf8,
  putU16,
  putU32,
  putU64,
  u16,
  u32,
  u64,
  u64Small,
  utf8
} from "./internal/wire/bytes.js"
import type * as NbdError from "./NbdError.js"
import * as Protocol from "./Protocol.js"

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/**
 * The server sent something the protocol does not allow. Carries no errno, as libnbd sets none for
 * protocol garbage during the handshake; `errno` is "EPROTO" where libnbd attributes it to a command. Its
 * tag names the module, so it never meets `ServerCodec.DecodeError` under one name.
 *
 * @since 0.1.0
 * @category errors
 */
export class DecodeError extends Data.TaggedError("ClientCodecDecodeError")<{
  readonly message: string
  readonly errno: "" | "EPROTO"
}> {}

const fail = (message: string, errno: "" | "EPROTO" = ""): DecodeError => new DecodeError({ message, errno })

// ---------------------------------------------------------------------------------------------------------------
// Client encoders
// ---------------------------------------------------------------------------------------------------------------

/**
 * The client flags sent after a newstyle greeting.
 * @since 0.1.0
 * @category encoders
 */
export const encodeClientFlags = (flags: number): Uint8Array => new ByteWriter(4).u32(flags).finish()

/**
 * An option request: IHAVEOPT, the option code, the data's length and the data.
 * @since 0.1.0
 * @category encoders
 */
export const encodeOption = (option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array =>
  new ByteWriter(16 + data.length).u64(Protocol.IHAVEOPT).u32(option).u32(data.length).bytes(data).finish()

/**
 * The data of NBD_OPT_INFO and NBD_OPT_GO: the export name and the info types requested.
 * @since 0.1.0
 * @category encoders
 */
export const encodeInfoRequest = (exportName: string, infos: ReadonlyArray<number>): Uint8Array => {
  const w = new ByteWriter().lenString(exportName).u16(infos.length)
  for (const info of infos) w.u16(info)
  return w.finish()
}

/**
 * The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: the export name and the queries.
 * @since 0.1.0
 * @category encoders
 */
export const encodeMetaContextRequest = (exportName: string, queries: ReadonlyArray<string>): Uint8Array => {
  const w = new ByteWriter().lenString(exportName).u32(queries.length)
  for (const query of queries) w.lenString(query)
  return w.finish()
}

/**
 * A transmission request's header fields.
 * @since 0.1.0
 * @category models
 */
export interface RequestHeader {
  readonly flags: number
  readonly type: number
  readonly cookie: number
  readonly offset: bigint | number
  readonly length: bigint | number
}

/**
 * Writes a request header into `out` at `at`: 28 bytes in compact form, 32 with extended headers.
 * Returns the header size.
 * @since 0.1.0
 * @category encoders
 */
export const writeRequestHeader = (out: Uint8Array, at: number, req: RequestHeader, extended: boolean): number => {
  // Byte by byte, without a DataView or BigInt for number fields: this runs once per command.
  putU32(out, at, extended ? Protocol.EXTENDED_REQUEST_MAGIC : Protocol.REQUEST_MAGIC)
  putU16(out, at + 4, req.flags)
  putU16(out, at + 6, req.type)
  putU32(out, at + 8, Math.floor(req.cookie / 0x100000000))
  putU32(out, at + 12, req.cookie >>> 0)
  putU64(out, at + 16, req.offset)
  if (extended) putU64(out, at + 24, req.length)
  else putU32(out, at + 24, Number(req.length))
  return extended ? 32 : 28
}

/**
 * A request as one byte array: header and, when given, the payload after it.
 * @since 0.1.0
 * @category encoders
 */
export const encodeRequest = (req: RequestHeader, extended: boolean, payload?: Uint8Array): Uint8Array => {
  const size = extended ? 32 : 28
  const out = new Uint8Array(size + (payload?.length ?? 0))
  writeRequestHeader(out, 0, req, extended)
  if (payload) out.set(payload, size)
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Handshake decoding
// ---------------------------------------------------------------------------------------------------------------

/**
 * The first message of a server.
 * @since 0.1.0
 * @category models
 */
export type Greeting =
  | {
      readonly _tag: "Oldstyle"
      readonly size: bigint
      readonly globalFlags: number
      readonly transmissionFlags: number
    }
  | { readonly _tag: "Newstyle"; readonly handshakeFlags: number }

/**
 * An NBD_REP_INFO payload.
 * @since 0.1.0
 * @category models
 */
export type InfoReply =
  | { readonly _tag: "Export"; readonly size: bigint; readonly transmissionFlags: number }
  | { readonly _tag: "Name"; readonly name: string }
  | { readonly _tag: "Description"; readonly description: string }
  | ({ readonly _tag: "BlockSize" } & Protocol.BlockSizes)
  | { readonly _tag: "Unknown"; readonly infoType: number }

/**
 * A decoded fixed-newstyle option reply.
 * @since 0.1.0
 * @category models
 */
export type OptionReply =
  | { readonly _tag: "Ack"; readonly option: number }
  | { readonly _tag: "Server"; readonly option: number; readonly name: string; readonly description: string }
  | { readonly _tag: "Info"; readonly option: number; readonly info: InfoReply }
  | { readonly _tag: "MetaContext"; readonly option: number; readonly id: number; readonly name: string }
  | { readonly _tag: "Error"; readonly option: number; readonly type: number; readonly message: string }

/**
 * The reply to NBD_OPT_EXPORT_NAME.
 * @since 0.1.0
 * @category models
 */
export interface ExportNameReply {
  readonly size: bigint
  readonly transmissionFlags: number
}

const checkString = (b: Uint8Array, what: string): string | DecodeError =>
  b.length > Protocol.Limits.MAX_STRING ? fail(`handshake: ${what} is longer than 4096 bytes`) : fromUtf8(b)

/**
 * Decodes the payload of an option reply of a known type.
 * @since 0.1.0
 * @category decoders
 */
export const decodeOptionReply = (option: number, type: number, data: Uint8Array): OptionReply | DecodeError => {
  switch (type) {
    case Protocol.Rep.ACK:
      if (data.length !== 0) return fail("handshake: invalid option reply length for ACK")
      return { _tag: "Ack", option }
    case Protocol.Rep.SERVER: {
      if (data.length < 4) return fail("handshake: invalid option reply length for NBD_REP_SERVER")
      const nameLength = u32(data, 0)
      if (nameLength > data.length - 4 || nameLength > Protocol.Limits.MAX_STRING)
        return fail("handshake: invalid export name length in NBD_REP_SERVER")
      const name = fromUtf8(data.subarray(4, 4 + nameLength))
      const description = fromUtf8(data.subarray(4 + nameLength))
      return { _tag: "Server", option, name, description }
    }
    case Protocol.Rep.INFO: {
      const info = decodeInfo(data)
      return info instanceof DecodeError ? info : { _tag: "Info", option, info }
    }
    case Protocol.Rep.META_CONTEXT: {
      if (data.length <= 4 || data.length > 4 + Protocol.Limits.MAX_STRING)
        return fail("handshake: invalid option reply length for NBD_REP_META_CONTEXT")
      return { _tag: "MetaContext", option, id: u32(data, 0), name: fromUtf8(data.subarray(4)) }
    }
    default: {
      if (!Protocol.isErrorReply(type)) return fail(`handshake: unexpected option reply type ${type}`)
      const message = checkString(data, "error message")
      return message instanceof DecodeError ? message : { _tag: "Error", option, type, message }
    }
  }
}

const decodeInfo = (data: Uint8Array): InfoReply | DecodeError => {
  if (data.length < 2) return fail("handshake: invalid option reply length for NBD_REP_INFO")
  const infoType = u16(data, 0)
  switch (infoType) {
    case Protocol.Info.EXPORT:
      if (data.length !== 12) return fail("handshake: invalid NBD_INFO_EXPORT length")
      return { _tag: "Export", size: u64(data, 2), transmissionFlags: u16(data, 10) }
    case Protocol.Info.NAME:
    case Protocol.Info.DESCRIPTION: {
      if (data.length > 2 + Protocol.Limits.MAX_STRING) return fail("handshake: invalid NBD_INFO_NAME length")
      const text = fromUtf8(data.subarray(2))
      return infoType === Protocol.Info.NAME ? { _tag: "Name", name: text } : { _tag: "Description", description: text }
    }
    case Protocol.Info.BLOCK_SIZE:
      if (data.length !== 14) return fail("handshake: invalid NBD_INFO_BLOCK_SIZE length")
      return { _tag: "BlockSize", minimum: u32(data, 2), preferred: u32(data, 6), maximum: u32(data, 10) }
    default:
      return { _tag: "Unknown", infoType }
  }
}

/**
 * An incremental decoder for the handshake phase. Push bytes as they arrive, in chunks of any size; each
 * `decode*` method returns `undefined` until the whole message is buffered, then the message or a
 * `DecodeError`. Bytes after the last message stay buffered (`rest` hands them to the transmission decoder).
 *
 * @since 0.1.0
 * @category decoders
 */
export class HandshakeDecoder {
  private readonly queue = new ByteQueue()
  private pendingGreeting: "Oldstyle" | "Newstyle" | undefined
  private pendingReply: { readonly option: number; readonly type: number; readonly length: number } | undefined

  /** Bytes buffered and not yet decoded. */
  get buffered(): number {
    return this.queue.available
  }

  /** Copies the bytes: a transport may reuse its read buffer once this returns. */
  push(chunk: Uint8Array): void {
    this.queue.push(chunk, true)
  }

  /** The greeting: 18 bytes from a newstyle server, 152 from an oldstyle one. */
  decodeGreeting(): Greeting | DecodeError | undefined {
    if (this.pendingGreeting === undefined) {
      if (this.queue.available < Protocol.Sizes.GREETING_PREFIX) return undefined
      const prefix = this.queue.take(Protocol.Sizes.GREETING_PREFIX)
      if (u64(prefix, 0) !== Protocol.NBDMAGIC) return fail("handshake: server did not send expected NBD magic")
      const version = u64(prefix, 8)
      if (version === Protocol.IHAVEOPT) this.pendingGreeting = "Newstyle"
      else if (version === Protocol.OLDSTYLE_MAGIC) this.pendingGreeting = "Oldstyle"
      else return fail("handshake: server is not either an oldstyle or fixed newstyle NBD server")
    }
    if (this.pendingGreeting === "Newstyle") {
      if (this.queue.available < Protocol.Sizes.NEWSTYLE_FLAGS) return undefined
      this.pendingGreeting = undefined
      return { _tag: "Newstyle", handshakeFlags: u16(this.queue.take(2), 0) }
    }
    if (this.queue.available < Protocol.Sizes.OLDSTYLE_REST) return undefined
    this.pendingGreeting = undefined
    const rest = this.queue.take(Protocol.Sizes.OLDSTYLE_REST)
    return { _tag: "Oldstyle", size: u64(rest, 0), globalFlags: u16(rest, 8), transmissionFlags: u16(rest, 10) }
  }

  /** One option reply; `expectedOption` is the option the client sent, which the reply must echo. */
  decodeOptionReply(expectedOption: number): OptionReply | DecodeError | undefined {
    if (this.pendingReply === undefined) {
      if (this.queue.available < Protocol.Sizes.OPTION_REPLY_HEADER) return undefined
      const header = this.queue.take(Protocol.Sizes.OPTION_REPLY_HEADER)
      const option = u32(header, 8)
      if (u64(header, 0) !== Protocol.REP_MAGIC || option !== expectedOption)
        return fail("handshake: invalid option reply magic or option")
      const type = u32(header, 12)
      const length = u32(header, 16)
      if (length > Protocol.Limits.MAX_OPTION_REPLY) return fail("handshake: option reply is too large")
      if (Protocol.isErrorReply(type) && length > Protocol.Limits.MAX_STRING)
        return fail("handshake: option error reply is too long")
      this.pendingReply = { option, type, length }
    }
    const { length, option, type } = this.pendingReply
    if (this.queue.available < length) return undefined
    this.pendingReply = undefined
    return decodeOptionReply(option, type, this.queue.take(length))
  }

  /** The reply to NBD_OPT_EXPORT_NAME: 10 bytes, then 124 zeroes unless NO_ZEROES was agreed. */
  decodeExportNameReply(noZeroes: boolean): ExportNameReply | undefined {
    const size = Protocol.Sizes.EXPORT_NAME_REPLY + (noZeroes ? 0 : Protocol.Limits.ZERO_PADDING)
    if (this.queue.available < size) return undefined
    const reply = this.queue.take(size)
    return { size: u64(reply, 0), transmissionFlags: u16(reply, 8) }
  }

  /** Whatever is buffered past the last decoded message. */
  rest(): Uint8Array {
    return this.queue.drain()
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Transmission decoding
// ---------------------------------------------------------------------------------------------------------------

/**
 * Which reply headers the negotiated mode permits.
 * @since 0.1.0
 * @category models
 */
export type ReplyMode = "simple" | "structured" | "extended"

/**
 * The header of a structured or extended reply chunk. `offset` is only sent in extended chunks.
 * @since 0.1.0
 * @category models
 */
export interface ChunkHeader {
  readonly cookie: number | undefined
  readonly flags: number
  readonly type: number
  readonly offset: bigint | undefined
  readonly length: number
}

/**
 * Where the data of a read reply goes: the decoder copies it straight into `buffer`
 * from `at`; `undefined` means read the bytes and drop them.
 * @since 0.1.0
 * @category models
 */
export interface DataTarget {
  readonly buffer: Uint8Array
  readonly at: number
  /**
   * Whose data it is. Once the owner is `cancelled` (its caller stopped waiting), the rest of the data is
   * read and dropped: the decoder looks before every piece it copies, so a payload that arrives in several
   * pieces never writes into `buffer` after the cancel.
   * @since 1.0.0
   */
  readonly owner?: { readonly cancelled: boolean } | undefined
}

/**
 * What the transmission decoder tells its owner. It needs the owner to say how long a simple reply's
 * data is (only the request knows) and where read data goes, so payloads are copied exactly once.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplySink {
  /**
   * A simple reply arrived. Return how many data bytes follow it and where to put them (0 when none
   * follow), or a `DecodeError` when the stream cannot be kept in sync.
   */
  readonly simpleReply: (
    cookie: number | undefined,
    error: number
  ) => { readonly length: number; readonly target: DataTarget | undefined } | DecodeError
  /** The data of a simple read reply has all been copied. */
  readonly simpleDataDone: (cookie: number | undefined) => void
  /**
   * An OFFSET_DATA chunk begins: `length` data bytes at `offset` follow. Return where to copy them,
   * `undefined` to drop them, or a `DecodeError` to stop.
   */
  readonly dataChunk: (header: ChunkHeader, offset: bigint, length: number) => DataTarget | undefined | DecodeError
  /** The data of the OFFSET_DATA chunk has all been copied. */
  readonly dataChunkDone: (header: ChunkHeader) => DecodeError | void
  /** Any other chunk, with its whole payload. */
  readonly chunk: (header: ChunkHeader, payload: Uint8Array) => DecodeError | void
}

const enum Phase {
  Header,
  SimpleData,
  ChunkOffset,
  ChunkData,
  ChunkPayload,
  Failed
}

/**
 * An incremental decoder for the transmission phase: simple, structured and extended replies, in chunks
 * of any size. Read data is copied once, from the incoming chunk into the buffer the sink names.
 *
 * @since 0.1.0
 * @category decoders
 */
export class ReplyDecoder {
  private phase = Phase.Header
  private readonly header = new Uint8Array(32)
  private headerFill = 0
  private headerSize = 0
  private chunkHeader: ChunkHeader | undefined
  private simpleCookie: number | undefined
  /** Where the data being read goes, and where in it the next byte lands. */
  private targetBuffer: Uint8Array | undefined = undefined
  private targetAt = 0
  private targetOwner: DataTarget["owner"] = undefined
  /** The offset of an OFFSET_DATA chunk, gathered here rather than in a new array per reply. */
  private readonly offsetBytes = new Uint8Array(8)
  private remaining = 0
  private payload: Uint8Array = new Uint8Array(0)
  private payloadFill = 0
  private error: DecodeError | undefined

  constructor(
    private readonly sink: ReplySink,
    private mode: ReplyMode
  ) {}

  /** The first fatal error, once the stream has lost sync. */
  get failure(): DecodeError | undefined {
    return this.error
  }

  /** True between replies: no partial message is buffered. */
  get idle(): boolean {
    return this.phase === Phase.Header && this.headerFill === 0
  }

  setMode(mode: ReplyMode): void {
    this.mode = mode
  }

  /** Feeds bytes; returns the fatal error if the stream can no longer be followed. */
  push(chunk: Uint8Array): DecodeError | undefined {
    let at = 0
    while (at < chunk.length && this.phase !== Phase.Failed) {
      switch (this.phase) {
        case Phase.Header:
          at = this.readHeader(chunk, at)
          break
        case Phase.SimpleData:
        case Phase.ChunkData:
          at = this.copyData(chunk, at)
          break
        case Phase.ChunkOffset:
        case Phase.ChunkPayload:
          at = this.fillPayload(chunk, at)
          break
      }
    }
    return this.error
  }

  private stop(error: DecodeError): number {
    this.error = error
    this.phase = Phase.Failed
    return Number.MAX_SAFE_INTEGER
  }

  private readHeader(chunk: Uint8Array, at: number): number {
    // Parse straight from the chunk when the whole header is in it; otherwise gather it.
    if (this.headerFill === 0 && chunk.length - at >= 4) {
      const size = this.headerSizeFor(u32(chunk, at))
      if (size instanceof DecodeError) return this.stop(size)
      if (chunk.length - at >= size) return this.onHeader(chunk, at, size) ?? at + size
    }
    if (this.headerFill < 4) {
      const step = Math.min(4 - this.headerFill, chunk.length - at)
      this.header.set(chunk.subarray(at, at + step), this.headerFill)
      this.headerFill += step
      at += step
      if (this.headerFill < 4) return at
      const size = this.headerSizeFor(u32(this.header, 0))
      if (size instanceof DecodeError) return this.stop(size)
      this.headerSize = size
    }
    const step = Math.min(this.headerSize - this.headerFill, chunk.length - at)
    this.header.set(chunk.subarray(at, at + step), this.headerFill)
    this.headerFill += step
    at += step
    if (this.headerFill < this.headerSize) return at
    this.headerFill = 0
    return this.onHeader(this.header, 0, this.headerSize) ?? at
  }

  private headerSizeFor(magic: number): number | DecodeError {
    switch (magic) {
      case Protocol.SIMPLE_REPLY_MAGIC:
        if (this.mode !== "extended") return Protocol.Sizes.SIMPLE_REPLY
        break
      case Protocol.STRUCTURED_REPLY_MAGIC:
        if (this.mode === "structured") return Protocol.Sizes.STRUCTURED_REPLY
        break
      case Protocol.EXTENDED_REPLY_MAGIC:
        if (this.mode === "extended") return Protocol.Sizes.EXTENDED_REPLY
        break
    }
    return fail(`invalid or unexpected reply magic 0x${magic.toString(16).padStart(8, "0")}`)
  }

  /** Handles a complete header; returns a position only when it stopped the decoder. */
  private onHeader(b: Uint8Array, at: number, size: number): number | undefined {
    const cookie = u64Small(b, at + 8)
    if (size === Protocol.Sizes.SIMPLE_REPLY) {
      const answer = this.sink.simpleReply(cookie, u32(b, at + 4))
      if (answer instanceof DecodeError) return this.stop(answer)
      if (answer.length > 0) {
        this.phase = Phase.SimpleData
        this.simpleCookie = cookie
        this.aim(answer.target)
        this.remaining = answer.length
        this.chunkHeader = undefined
      }
      return undefined
    }
    const extended = size === Protocol.Sizes.EXTENDED_REPLY
    const length = extended ? u64Small(b, at + 24) : u32(b, at + 16)
    if (length === undefined || length > Protocol.Limits.MAX_CHUNK_PAYLOAD)
      return this.stop(fail("server sent a reply chunk larger than 64 MiB"))
    const header: ChunkHeader = {
      cookie,
      flags: u16(b, at + 4),
      type: u16(b, at + 6),
      offset: extended ? u64(b, at + 16) : undefined,
      length
    }
    this.chunkHeader = header
    if (header.type === Protocol.ReplyType.OFFSET_DATA && length >= 8) {
      this.phase = Phase.ChunkOffset
      this.payload = this.offsetBytes
      this.payloadFill = 0
      return undefined
    }
    if (length === 0) return this.deliverChunk(header, new Uint8Array(0))
    this.phase = Phase.ChunkPayload
    this.payload = new Uint8Array(length)
    this.payloadFill = 0
    return undefined
  }

  private deliverChunk(header: ChunkHeader, payload: Uint8Array): number | undefined {
    this.phase = Phase.Header
    const result = this.sink.chunk(header, payload)
    return result instanceof DecodeError ? this.stop(result) : undefined
  }

  private fillPayload(chunk: Uint8Array, at: number): number {
    const step = Math.min(this.payload.length - this.payloadFill, chunk.length - at)
    // A few bytes (an offset, an error code) are copied one by one, with no view made for them.
    if (step <= 16) for (let i = 0; i < step; i++) this.payload[this.payloadFill + i] = chunk[at + i]!
    else this.payload.set(chunk.subarray(at, at + step), this.payloadFill)
    this.payloadFill += step
    at += step
    if (this.payloadFill < this.payload.length) return at
    const header = this.chunkHeader!
    if (this.phase === Phase.ChunkPayload) return this.deliverChunk(header, this.payload) ?? at
    // OFFSET_DATA: the offset is in; the data follows.
    const dataLength = header.length - 8
    const target = this.sink.dataChunk(header, u64(this.payload, 0), dataLength)
    if (target instanceof DecodeError) return this.stop(target)
    this.aim(target)
    this.remaining = dataLength
    this.phase = Phase.ChunkData
    if (dataLength === 0) return this.finishData() ?? at
    return at
  }

  private aim(target: DataTarget | undefined): void {
    this.targetBuffer = target?.buffer
    this.targetAt = target?.at ?? 0
    this.targetOwner = target?.owner
  }

  private copyData(chunk: Uint8Array, at: number): number {
    const step = Math.min(this.remaining, chunk.length - at)
    const buffer = this.targetBuffer
    if (buffer !== undefined && this.targetOwner?.cancelled !== true) {
      buffer.set(step === chunk.length ? chunk : chunk.subarray(at, at + step), this.targetAt)
      this.targetAt += step
    }
    this.remaining -= step
    at += step
    if (this.remaining > 0) return at
    return this.finishData() ?? at
  }

  private finishData(): number | undefined {
    this.phase = Phase.Header
    this.targetBuffer = undefined
    this.targetOwner = undefined
    if (this.chunkHeader === undefined) {
      this.sink.simpleDataDone(this.simpleCookie)
      return undefined
    }
    const result = this.sink.dataChunkDone(this.chunkHeader)
    return result instanceof DecodeError ? this.stop(result) : undefined
  }
}

/**
 * Parses the payload of an ERROR or ERROR_OFFSET chunk.
 * @since 0.1.0
 * @category decoders
 */
export const decodeErrorChunk = (
  type: number,
  payload: Uint8Array
): { readonly error: number; readonly message: string; readonly offset: bigint | undefined } | DecodeError => {
  if (payload.length < 6) return fail("server sent an error chunk that is too short", "EPROTO")
  const error = u32(payload, 0)
  const messageLength = u16(payload, 4)
  const tail = type === Protocol.ReplyType.ERROR_OFFSET ? 8 : 0
  if (6 + messageLength + tail > payload.length)
    return fail("server sent an error chunk with an inconsistent length", "EPROTO")
  return {
    error,
    message: fromUtf8(payload.subarray(6, 6 + messageLength)),
    offset: tail ? u64(payload, 6 + messageLength) : undefined
  }
}

/**
 * A block-status extent: its length and its flags in the context.
 * @since 0.1.0
 * @category models
 */
export interface Extent {
  readonly length: bigint
  readonly flags: number
}

/**
 * The extents one meta context reported for one block-status command, starting at the request's offset.
 * @since 0.2.0
 * @category models
 */
export interface BlockStatusEntry {
  readonly context: string
  readonly offset: bigint
  readonly extents: ReadonlyArray<Extent>
}

/**
 * One chunk of a structured read, as libnbd's chunk callback sees it: data, a hole (reads as zeroes), or an
 * error at an offset.
 * @since 0.2.0
 * @category models
 */
export type ReadChunk =
  | { readonly _tag: "Data"; readonly offset: number; readonly length: number }
  | { readonly _tag: "Hole"; readonly offset: number; readonly length: number }
  | { readonly _tag: "Error"; readonly offset: number; readonly errno: NbdError.Errno; readonly message: string }

/**
 * Parses a BLOCK_STATUS (compact) or BLOCK_STATUS_EXT chunk payload into its context id and extents.
 * @since 0.1.0
 * @category decoders
 */
export const decodeBlockStatus = (
  type: number,
  payload: Uint8Array
): { readonly contextId: number; readonly extents: ReadonlyArray<Extent> } | DecodeError => {
  const extended = type === Protocol.ReplyType.BLOCK_STATUS_EXT
  const head = extended ? 8 : 4
  const size = extended ? 16 : 8
  if (payload.length < head + size || (payload.length - head) % size !== 0)
    return fail("server sent a block status chunk with an invalid length", "EPROTO")
  const count = (payload.length - head) / size
  if (extended && u32(payload, 4) !== count)
    return fail("server sent a block status chunk whose descriptor count does not match its length", "EPROTO")
  const extents: Array<Extent> = []
  for (let i = 0, at = head; i < count; i++, at += size) {
    extents.push(
      extended
        ? { length: u64(payload, at), flags: Number(u64(payload, at + 8) & 0xffffffffn) }
        : { length: BigInt(u32(payload, at)), flags: u32(payload, at + 4) }
    )
  }
  return { contextId: u32(payload, 0), extents }
}

/**
 * Encodes a string as UTF-8; a helper for callers building option data by hand.
 * @since 0.1.0
 * @category encoders
 */
export const encodeString = (s: string): Uint8Array => utf8(s)
