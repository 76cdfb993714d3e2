/**
 * One client connection: the handshake (oldstyle, newstyle, fixed newstyle with every option) and the
 * transmission phase, with requests served concurrently and replies written by one writer.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Crypto from "node:crypto"
import type * as Net from "node:net"
import * as Tls from "node:tls"
import * as Backend from "../Backend.js"
import * as Faults from "./faults.js"
import * as Flow from "./flow.js"
import * as Malformed from "./malformed.js"
import * as ReplyWriter from "./replyWriter.js"
import * as Request from "./request.js"
import * as Inline from "./inline.js"

/** @internal */
export interface ResolvedExport {
  readonly name: string
  readonly description: string | undefined
  readonly size: bigint
  readonly readOnly: boolean
  readonly backend: Backend.Backend
  /** Served under any name no other export has, as nbdkit serves its plugin. */
  readonly anyName: boolean
  /**
   * The malformed-reply faults, server-wide then the export's own. Error and delay faults are filters over
   * the backend (internal/faults.ts).
   */
  readonly faults: ReadonlyArray<ResolvedFault>
}

/** @internal */
export interface ResolvedFault {
  readonly command: number
  /** A delay before the malformed reply. */
  readonly delayMs: number
  /** The malformed reply to send instead of (or besides) the correct one. */
  readonly malformed: Malformed.Kind
  readonly rate: number
  /** Fires on this request of its command on each connection only (1-based); 0 for every one, by `rate`. */
  readonly nth: number
}

/**
 * TLS as nbdkit offers it: "on" serves plaintext and TLS clients, "require" refuses every option but
 * NBD_OPT_STARTTLS and NBD_OPT_ABORT until TLS is active.
 * @internal
 */
export interface TlsSettings {
  readonly mode: "on" | "require"
  /** Options of the server side of `new tls.TLSSocket(socket, ...)` (which reads `pskCallback` too). */
  readonly options: Tls.TLSSocketOptions & Pick<Tls.TlsOptions, "pskCallback">
  /** With `--tls-verify-peer`: whether a client's certificate is acceptable. */
  readonly verifyPeer?: ((peer: Crypto.X509Certificate | undefined) => boolean) | undefined
}

/** @internal */
export interface Settings {
  readonly exports: ReadonlyArray<ResolvedExport>
  readonly protocol: "fixed-newstyle" | "newstyle" | "oldstyle"
  readonly structuredReplies: boolean
  readonly extendedHeaders: boolean
  readonly noZeroes: boolean
  readonly blockSize: ServerCodec.BlockSizes
  readonly outOfOrder: boolean
  readonly tls: TlsSettings | undefined
  /** How much one connection may owe before the server stops reading its requests. */
  readonly flow: Flow.Limits
  /** Drop the connection on receiving this transmission request (1-based, NBD_CMD_DISC aside); 0 for never. */
  readonly disconnectAfter: number
}

const { Cmd, CmdFlag, NbdErrno, Opt, Rep, TFlag } = Protocol
const DONE = Protocol.REPLY_FLAG_DONE
const BASE_ALLOCATION_ID = 1
const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** Write payloads up to this size that spanned socket chunks are copied into one reused buffer. */
const MAX_SCRATCH = 4 * 1024 * 1024

/**
 * The largest request payload read and discarded to refuse it with an error: over the maximum payload a
 * client must not send, a payload up to 32 MiB (the default maximum, which a server must not treat as an
 * attack) is consumed so that the connection stays usable; a larger one ends the connection at its header,
 * before any of it is read.
 */
const maxSkip = (maximum: number): number => Math.max(maximum, Protocol.Limits.DEFAULT_PAYLOAD_MAX)

/** Shared, never written: the zeroes of simple read replies over holes. */
const ZERO_BUFFER = new Uint8Array(1024 * 1024)
const EMPTY = new Uint8Array(0)

/** Serves a checked request, replying to `target` (the request itself, unless a fault readdresses it). */
type Operation = ((target: ServerCodec.ChunkTarget) => Effect.Effect<void>) & {
  /** The same served at once, with no fiber: a read or write on a backend that never waits (see inline.ts). */
  readonly inline?: (target: ServerCodec.ChunkTarget) => void
}

/** The transmission flags of an export, given what was negotiated. */
export const transmissionFlags = (exp: ResolvedExport, structured: boolean, extended: boolean): number => {
  const backend = exp.backend
  let flags = TFlag.HAS_FLAGS | TFlag.SEND_FLUSH | TFlag.SEND_FUA | TFlag.SEND_CACHE
  if (backend.canMultiConn !== false) flags |= TFlag.CAN_MULTI_CONN
  if (exp.readOnly) flags |= TFlag.READ_ONLY
  else {
    if (backend.canTrim !== false) flags |= TFlag.SEND_TRIM
    if (backend.canZero !== false) flags |= TFlag.SEND_WRITE_ZEROES | TFlag.SEND_FAST_ZERO
  }
  if (structured) flags |= TFlag.SEND_DF
  if (extended) flags |= TFlag.BLOCK_STATUS_PAYLOAD
  return flags
}

/** The export a name selects: an exact match, else the first export for "", else one that takes any name. */
export const findExport = (settings: Settings, name: string): ResolvedExport | undefined =>
  settings.exports.find((e) => e.name === name) ??
  (name === "" ? settings.exports[0] : settings.exports.find((e) => e.anyName))

/** The name NBD_INFO_NAME tells: nbdkit echoes the client's name for an export that takes any name. */
const canonicalName = (exp: ResolvedExport, requested: string): string =>
  exp.anyName && requested !== "" ? requested : exp.name

type Ending = "graceful" | "hard"

class Session {
  private phase: "flags" | "options" | "starttls" | "transmission" | "closing" = "flags"
  private readonly decoder: ServerCodec.Decoder
  private fixed = false
  private clientNoZeroes = false
  private structured = false
  private extended = false
  /** The export of the last successful SET_META_CONTEXT, if it selected base:allocation. */
  private metaExport: ResolvedExport | undefined = undefined
  private exp: ResolvedExport | undefined = undefined
  private blockStatus = false
  private flags = 0
  private tls = false
  /** The decode loop is running: a resume from inside it must not start a second one. */
  private decoding = false
  /** The client half-closed: once every request it sent is decoded, the session ends gracefully. */
  private clientDone = false
  /** Transmission requests received. */
  private requests = 0
  /** Requests of each command that reached the faults, for faults on the nth one. */
  private readonly served = new Map<number, number>()
  /**
   * The export's writes are all served inline (a backend that never waits, no fault on writes, replies in
   * order): each is done before the next request is decoded, so their payloads can share `scratch`.
   */
  private inlineWrite: Inline.SyncWrite | undefined = undefined
  private scratch: Uint8Array | undefined = undefined

  constructor(
    readonly settings: Settings,
    readonly flow: Flow.Flow,
    readonly send: (out: ReadonlyArray<Uint8Array>) => void,
    /** Runs a request's service concurrently; `cost` is what it holds until answered. */
    readonly fork: (effect: Effect.Effect<void>, cost: number) => void,
    readonly end: (how: Ending) => void,
    /** After the STARTTLS ACK: upgrades the connection, giving it the bytes already received. */
    readonly startTls: (received: Uint8Array) => void
  ) {
    this.decoder = ServerCodec.makeDecoder({
      phase: settings.protocol === "oldstyle" ? "transmission" : "newstyle",
      maxPayload: settings.blockSize.maximum,
      maxSkip: maxSkip(settings.blockSize.maximum),
      payloadBuffer: (length) => this.payloadBuffer(length)
    })
  }

  /** Where a payload that spanned socket chunks is copied: the shared scratch while writes are inline. */
  private payloadBuffer(length: number): Uint8Array | undefined {
    if (this.inlineWrite === undefined || length > MAX_SCRATCH) return undefined
    if (this.scratch === undefined || this.scratch.length < length) this.scratch = new Uint8Array(length)
    return this.scratch
  }

  start(): void {
    const settings = this.settings
    if (settings.protocol === "oldstyle") {
      const exp = settings.exports[0]!
      this.enterTransmission(exp)
      this.send([ServerCodec.oldstyleGreeting(exp.size, this.flags)])
      return
    }
    let flags = settings.noZeroes ? Protocol.FLAG_NO_ZEROES : 0
    if (settings.protocol === "fixed-newstyle") flags |= Protocol.FLAG_FIXED_NEWSTYLE
    this.send([ServerCodec.newstyleGreeting(flags)])
  }

  receive(chunk: Uint8Array): void {
    if (this.phase === "closing") return
    if (chunk.length > 0) this.decoder.push(chunk)
    if (this.decoding) return
    this.decoding = true
    try {
      this.decode()
    } finally {
      this.decoding = false
    }
  }

  /** The flow has drained after a pause: decode what is buffered, then read again. */
  resume(): void {
    this.receive(EMPTY)
  }

  /** The client sent its FIN: end once what it sent before is decoded (some may wait behind a pause). */
  clientEnded(): void {
    if (this.phase === "starttls") return this.close("graceful")
    this.clientDone = true
    this.receive(EMPTY)
  }

  private decode(): void {
    for (;;) {
      // Backpressure: owing too much, read no further; the bytes wait in the decoder and the socket.
      if (this.flow.full) return this.flow.pause()
      const message = this.decoder.next()
      if (message === undefined) {
        if (this.clientDone) this.close("graceful")
        return
      }
      switch (message._tag) {
        case "ServerCodecDecodeError":
          return this.close("hard")
        case "ClientFlags":
          this.clientFlags(message.flags)
          break
        case "Option":
          this.option(message)
          break
        case "Request":
          this.request(message)
          break
      }
      if (this.closing() || this.phase === "starttls") return
    }
  }

  /**
   * TLS is active: the handshake's options start afresh (NBD_OPT_STARTTLS makes the server forget structured
   * replies, extended headers and meta contexts).
   */
  tlsStarted(): void {
    if (this.phase !== "starttls") return
    this.tls = true
    this.structured = false
    this.extended = false
    this.metaExport = undefined
    this.phase = "options"
  }

  private closing(): boolean {
    return this.phase === "closing"
  }

  private close(how: Ending): void {
    this.phase = "closing"
    this.end(how)
  }

  private enterTransmission(exp: ResolvedExport): void {
    this.exp = exp
    this.flags = transmissionFlags(exp, this.structured, this.extended)
    this.blockStatus = this.structured && this.metaExport === exp
    const now = Inline.syncWrites.get(exp.backend.write)
    const faulted = exp.faults.some((fault) => fault.command === Cmd.WRITE)
    this.inlineWrite = now !== undefined && !faulted && !this.settings.outOfOrder ? now : undefined
    this.phase = "transmission"
    this.decoder.startTransmission(this.extended)
  }

  // ---------------------------------------------------------------------------
  // handshake
  // ---------------------------------------------------------------------------

  private clientFlags(flags: number): void {
    const settings = this.settings
    let offered = settings.noZeroes ? Protocol.FLAG_NO_ZEROES : 0
    if (settings.protocol === "fixed-newstyle") offered |= Protocol.FLAG_FIXED_NEWSTYLE
    if ((flags & ~offered) !== 0) return this.close("hard")
    this.fixed = (flags & Protocol.FLAG_C_FIXED_NEWSTYLE) !== 0
    this.clientNoZeroes = (flags & Protocol.FLAG_C_NO_ZEROES) !== 0
    this.phase = "options"
  }

  private reply(out: Uint8Array): void {
    this.send([out])
  }

  private option(request: ServerCodec.OptionRequest): void {
    const { body, option } = request
    const tlsRequired = this.settings.tls?.mode === "require" && !this.tls
    // NBD_OPT_EXPORT_NAME has no error reply: without the TLS it requires, the connection ends.
    if (option === Opt.EXPORT_NAME) return tlsRequired ? this.close("hard") : this.exportName(body)
    // Non-fixed newstyle knows nothing but NBD_OPT_EXPORT_NAME: there is no way to refuse an option.
    if (!this.fixed) return this.close("hard")
    if (tlsRequired && option !== Opt.STARTTLS && option !== Opt.ABORT)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS"))
    if (body._tag === "TooBig") return this.reply(ServerCodec.optionError(option, Rep.ERR_TOO_BIG, body.message))
    if (body._tag === "Invalid") return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, body.message))
    const hasData = request.length !== 0
    switch (option) {
      case Opt.ABORT:
        this.reply(ServerCodec.optionAck(option))
        return this.close("graceful")
      case Opt.LIST: {
        if (hasData) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "NBD_OPT_LIST takes no data"))
        const out = this.settings.exports.map((e) => ServerCodec.optionServer(option, e.name, e.description))
        out.push(ServerCodec.optionAck(option))
        return this.send(out)
      }
      case Opt.STARTTLS:
        if (hasData)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "NBD_OPT_STARTTLS takes no data"))
        if (this.settings.tls === undefined)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_UNSUP, "TLS is not configured on this server"))
        if (this.tls) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "TLS is already active"))
        this.reply(ServerCodec.optionAck(option))
        this.phase = "starttls"
        return this.startTls(this.decoder.takeBuffered())
      case Opt.INFO:
      case Opt.GO:
        if (body._tag !== "Info") return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID))
        return this.infoOrGo(option, body.name, body.infos)
      case Opt.STRUCTURED_REPLY:
        if (hasData) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "option takes no data"))
        if (!this.settings.structuredReplies)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_UNSUP, "structured replies are disabled"))
        if (this.extended)
          return this.reply(
            ServerCodec.optionError(option, Rep.ERR_EXT_HEADER_REQD, "extended headers are already negotiated")
          )
        if (this.structured)
          return this.reply(
            ServerCodec.optionError(option, Rep.ERR_INVALID, "structured replies are already negotiated")
          )
        this.structured = true
        return this.reply(ServerCodec.optionAck(option))
      case Opt.EXTENDED_HEADERS:
        if (hasData) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "option takes no data"))
        if (!this.settings.extendedHeaders || !this.settings.structuredReplies)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_UNSUP, "extended headers are disabled"))
        if (this.extended)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "extended headers are already negotiated"))
        this.extended = true
        this.structured = true
        return this.reply(ServerCodec.optionAck(option))
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        if (body._tag !== "MetaContext") return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID))
        return this.metaContext(option, body.name, body.queries)
      default:
        return this.reply(
          ServerCodec.optionError(option, Rep.ERR_UNSUP, `${Protocol.optionName(option)} is not supported`)
        )
    }
  }

  private exportName(body: ServerCodec.OptionBody): void {
    // NBD_OPT_EXPORT_NAME has no error reply: anything wrong ends the connection.
    if (body._tag !== "ExportName" || this.extended) return this.close("hard")
    const exp = findExport(this.settings, body.name)
    if (exp === undefined) return this.close("hard")
    this.enterTransmission(exp)
    this.reply(ServerCodec.exportNameReply(exp.size, this.flags, this.clientNoZeroes))
  }

  private infoOrGo(option: number, name: string, infos: ReadonlyArray<number>): void {
    const exp = findExport(this.settings, name)
    if (exp === undefined)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_UNKNOWN, `export '${name}' does not exist`))
    const out: Array<Uint8Array> = [
      ServerCodec.optionInfoExport(option, exp.size, transmissionFlags(exp, this.structured, this.extended))
    ]
    let blockSizeSent = false
    for (const info of infos) {
      switch (info) {
        case Protocol.Info.NAME:
          out.push(ServerCodec.optionInfoName(option, canonicalName(exp, name)))
          break
        case Protocol.Info.DESCRIPTION:
          if (exp.description !== undefined) out.push(ServerCodec.optionInfoDescription(option, exp.description))
          break
        case Protocol.Info.BLOCK_SIZE:
          if (!blockSizeSent)
            out.push(ServerCodec.optionInfoBlockSize(option, exp.backend.blockSize ?? this.settings.blockSize))
          blockSizeSent = true
          break
      }
    }
    if (!blockSizeSent)
      out.push(ServerCodec.optionInfoBlockSize(option, exp.backend.blockSize ?? this.settings.blockSize))
    out.push(ServerCodec.optionAck(option))
    this.send(out)
    if (option === Opt.GO) this.enterTransmission(exp)
  }

  private metaContext(option: number, name: string, queries: ReadonlyArray<string>): void {
    const set = option === Opt.SET_META_CONTEXT
    // SET replaces the selection, even when it fails.
    if (set) this.metaExport = undefined
    if (!this.structured)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "structured replies must be negotiated first"))
    const exp = findExport(this.settings, name)
    if (exp === undefined)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_UNKNOWN, `export '${name}' does not exist`))
    let match = false
    if (set) match = queries.includes(Protocol.CONTEXT_BASE_ALLOCATION)
    else
      match =
        queries.length === 0 ||
        queries.some((q) => q === Protocol.CONTEXT_BASE_ALLOCATION || q === Protocol.NAMESPACE_BASE)
    const out: Array<Uint8Array> = []
    if (match) {
      out.push(ServerCodec.optionMetaContext(option, set ? BASE_ALLOCATION_ID : 0, Protocol.CONTEXT_BASE_ALLOCATION))
      if (set) this.metaExport = exp
    }
    out.push(ServerCodec.optionAck(option))
    this.send(out)
  }

  // ---------------------------------------------------------------------------
  // transmission
  // ---------------------------------------------------------------------------

  private error(target: ServerCodec.ChunkTarget, errno: number, message: string): void {
    if (this.structured) this.reply(ServerCodec.errorChunk(target, DONE, errno, message))
    else this.reply(ServerCodec.simpleReply(target.cookie, errno))
  }

  private ok(target: ServerCodec.ChunkTarget): void {
    if (this.extended) this.reply(ServerCodec.noneChunk(target))
    else this.reply(ServerCodec.simpleReply(target.cookie, 0))
  }

  private get mode(): Malformed.Mode {
    return this.extended ? "extended" : this.structured ? "structured" : "simple"
  }

  private allowedFlags(type: number): number {
    let allowed = CmdFlag.FUA
    switch (type) {
      case Cmd.READ:
        if (this.structured) allowed |= CmdFlag.DF
        break
      case Cmd.WRITE:
        if (this.extended) allowed |= CmdFlag.PAYLOAD_LEN
        break
      case Cmd.WRITE_ZEROES:
        allowed |= CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO
        break
      case Cmd.BLOCK_STATUS:
        allowed |= CmdFlag.REQ_ONE
        if (this.extended) allowed |= CmdFlag.PAYLOAD_LEN
        break
    }
    return allowed
  }

  private request(request: ServerCodec.Request): void {
    const { flags, type } = request
    const exp = this.exp!
    if (type === Cmd.DISC) return this.close("graceful")
    this.requests += 1
    // As if the server died: no reply to this request nor to any still in service.
    if (this.requests === this.settings.disconnectAfter) return this.close("hard")
    if (request.payloadDropped)
      return this.error(request, NbdErrno.EINVAL, "request payload exceeds the maximum payload size")
    if (type > Cmd.BLOCK_STATUS) return this.error(request, NbdErrno.EINVAL, `unknown command ${type}`)
    const writes = type === Cmd.WRITE || type === Cmd.TRIM || type === Cmd.WRITE_ZEROES
    if (writes && exp.readOnly) return this.error(request, NbdErrno.EPERM, "the export is read-only")
    if ((flags & ~this.allowedFlags(type)) !== 0)
      return this.error(request, NbdErrno.EINVAL, `flags 0x${flags.toString(16)} are not valid for this command`)
    let length = request.length
    if (type === Cmd.BLOCK_STATUS && (flags & CmdFlag.PAYLOAD_LEN) !== 0) {
      // The block-status filter: effect length u64, then the context ids (u32 each).
      const filtered = this.blockStatusFilter(request.payload)
      if (typeof filtered === "string") return this.error(request, NbdErrno.EINVAL, filtered)
      length = filtered
    } else if (request.payload !== undefined && type !== Cmd.WRITE)
      return this.error(request, NbdErrno.EINVAL, "this command takes no payload")

    const operation = this.operation(request, exp, length)
    if (operation === undefined) return

    // The request's number among those of its command: error and delay filters read it (their `nth`), and
    // the malformed faults here. Their delays add up and the first malformed kind wins. No timer unless a
    // delay fires.
    const ordinal = (this.served.get(type) ?? 0) + 1
    this.served.set(type, ordinal)
    let delayMs = 0
    let malformed: Malformed.Kind | undefined
    for (const fault of exp.faults) {
      if (fault.command !== type) continue
      if (fault.nth > 0 ? fault.nth !== ordinal : fault.rate < 1 && !(Math.random() < fault.rate)) continue
      delayMs += fault.delayMs
      malformed ??= fault.malformed
    }
    // A read or write with no fault to apply, on a backend that never waits: served here, with no fiber.
    if (malformed === undefined && delayMs === 0 && operation.inline !== undefined) return operation.inline(request)
    const served =
      malformed !== undefined
        ? this.malformedReply(malformed, request, Number(length), operation, exp.backend)
        : operation(request)
    const cost = Flow.requestCost(type, length, request.payload)
    const delayed = delayMs > 0 ? Effect.delay(served, Duration.millis(delayMs)) : served
    this.fork(Effect.locally(delayed, Request.currentRequest, { ordinal }), cost)
  }

  /** Serves a request with the malformed reply a fault asked for. */
  private malformedReply(
    kind: Malformed.Kind,
    request: ServerCodec.Request,
    length: number,
    operation: Operation,
    backend: Backend.Backend
  ): Effect.Effect<void> {
    const mode = this.mode
    if (Malformed.readdresses(kind, mode))
      return operation(
        kind === "wrong-cookie"
          ? { ...request, cookie: Malformed.wrongCookie(request.cookie) }
          : { ...request, offset: Malformed.wrongOffset(request.offset) }
      )
    const target: Malformed.Target = { chunk: request, type: request.type, offset: Number(request.offset), length }
    if (kind === "two-dones")
      return Effect.zipRight(
        operation(request),
        Effect.sync(() => this.reply(Malformed.secondDone(target, mode)))
      )
    const out = Malformed.replacement(kind, target, mode)
    if (out === undefined) return operation(request)
    return Effect.zipRight(
      Faults.passFilters(backend, request, length),
      Effect.sync(() => this.send(out))
    )
  }

  /** Checks a block-status filter payload: gives its effect length, or why it is invalid. */
  private blockStatusFilter(payload: Uint8Array | undefined): number | bigint | string {
    if (payload === undefined || payload.length < 8 || (payload.length - 8) % 4 !== 0)
      return "a block-status payload is an effect length and context ids (8 + 4n bytes)"
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
    const count = (payload.length - 8) / 4
    if (count === 0) return "the block-status filter lists no context"
    const seen = new Set<number>()
    for (let i = 0; i < count; i++) {
      const id = view.getUint32(8 + 4 * i)
      // One context exists: base:allocation, when SET_META_CONTEXT selected it for this export.
      if (id !== BASE_ALLOCATION_ID || !this.blockStatus) return `metadata context id ${id} was not negotiated`
      if (seen.has(id)) return `metadata context id ${id} is listed twice`
      seen.add(id)
    }
    const length = view.getBigUint64(0)
    return length <= BigInt(MAX_SAFE) ? Number(length) : length
  }

  /**
   * Checks a request against the export and gives what serves it (and replies), or undefined when it was
   * refused (the error reply is already sent).
   */
  private operation(request: ServerCodec.Request, exp: ResolvedExport, length: number | bigint): Operation | undefined {
    const { flags, offset, type } = request
    if (type === Cmd.FLUSH) {
      if (offset !== 0 || length !== 0)
        return void this.error(request, NbdErrno.EINVAL, "flush takes offset and length 0")
      return (target) => this.complete(target, exp.backend.flush)
    }
    if (length === 0 || length === 0n) return void this.error(request, NbdErrno.EINVAL, "request length is 0")
    // Bounds: within the export, and addressable with numbers.
    if (typeof offset !== "number" || typeof length !== "number" || offset + length > MAX_SAFE) {
      if (BigInt(offset) + BigInt(length) > exp.size) return void this.outOfBounds(request)
      return void this.error(request, NbdErrno.EOVERFLOW, "the test server cannot address offsets beyond 2^53")
    }
    if (offset + length > exp.size) return void this.outOfBounds(request)
    // A client must respect the advertised minimum block size; refuse what does not, as nbdkit's policy does.
    const blockSize = exp.backend.blockSize ?? this.settings.blockSize
    const minimum = blockSize.minimum
    if (minimum > 1 && (offset % minimum !== 0 || length % minimum !== 0))
      return void this.error(
        request,
        NbdErrno.EINVAL,
        `request is not aligned to the ${minimum}-byte minimum block size`
      )
    const backend = exp.backend
    switch (type) {
      case Cmd.READ:
        if (length > blockSize.maximum)
          return void this.error(request, NbdErrno.EOVERFLOW, "read exceeds the maximum payload size")
        return this.readOperation(backend, flags, offset, length)
      case Cmd.WRITE:
        if (length > blockSize.maximum)
          return void this.error(request, NbdErrno.EOVERFLOW, "write exceeds the maximum payload size")
        return this.writeOperation(backend, flags, offset, request.payload!)
      case Cmd.TRIM:
        if (backend.canTrim === false)
          return void this.error(request, NbdErrno.EINVAL, "trim is not supported on this export")
        return (target) => this.complete(target, backend.trim(offset, length))
      case Cmd.WRITE_ZEROES:
        if (backend.canZero === false)
          return void this.error(request, NbdErrno.EINVAL, "write zeroes is not supported on this export")
        return (target) => this.complete(target, backend.zero(offset, length, (flags & CmdFlag.NO_HOLE) === 0))
      case Cmd.CACHE:
        return (target) => this.complete(target, backend.cache(offset, length))
      case Cmd.BLOCK_STATUS:
        if (!this.blockStatus)
          return void this.error(request, NbdErrno.EINVAL, "no meta context was negotiated for block status")
        return (target) =>
          backend.extents(offset, length).pipe(
            Effect.matchCause({
              onFailure: (cause) => this.failure(target, cause),
              onSuccess: (extents) => this.blockStatusReply(target, flags, length, extents)
            })
          )
    }
    return void this.error(request, NbdErrno.EINVAL, `unknown command ${type}`)
  }

  private outOfBounds(request: ServerCodec.Request): void {
    const errno = request.type === Cmd.WRITE || request.type === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL
    this.error(request, errno, "request lies beyond the end of the export")
  }

  /** A read, which a backend that never waits (memory, null) lets the server answer inline. */
  private readOperation(backend: Backend.Backend, flags: number, offset: number, length: number): Operation {
    const served: Operation = (target) =>
      backend.read(offset, length).pipe(
        Effect.matchCause({
          onFailure: (cause) => this.failure(target, cause),
          onSuccess: (chunks) => this.readReply(target, flags, offset, length, chunks)
        })
      )
    const now = Inline.syncReads.get(backend.read)
    // Out of order, replies must wait to be reordered by the writer: those go through a fiber as before.
    if (now === undefined || this.settings.outOfOrder) return served
    return Object.assign(served, {
      inline: (target: ServerCodec.ChunkTarget) => this.readReply(target, flags, offset, length, now(offset, length))
    })
  }

  /**
   * A write, served inline when the export's writes all are (then its payload may be the shared scratch,
   * which must not be kept).
   */
  private writeOperation(backend: Backend.Backend, flags: number, offset: number, payload: Uint8Array): Operation {
    const served: Operation = (target) =>
      this.complete(target, backend.write(offset, payload, (flags & CmdFlag.FUA) !== 0))
    const now = this.inlineWrite
    if (now === undefined) return served
    return Object.assign(served, {
      inline: (target: ServerCodec.ChunkTarget) => {
        now(offset, payload)
        this.ok(target)
      }
    })
  }

  private failure(target: ServerCodec.ChunkTarget, cause: Cause.Cause<Backend.BackendError>): void {
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure)) this.error(target, Protocol.wireOfErrno(failure.value.errno), failure.value.message)
    else this.error(target, NbdErrno.EIO, "internal error in the backend")
  }

  private complete(
    target: ServerCodec.ChunkTarget,
    effect: Effect.Effect<void, Backend.BackendError>
  ): Effect.Effect<void> {
    return Effect.matchCause(effect, {
      onFailure: (cause) => this.failure(target, cause),
      onSuccess: () => this.ok(target)
    })
  }

  private readReply(
    target: ServerCodec.ChunkTarget,
    flags: number,
    offset: number,
    length: number,
    chunks: ReadonlyArray<Backend.ReadChunk>
  ): void {
    if (!this.structured) {
      const out: Array<Uint8Array> = [ServerCodec.simpleReply(target.cookie, 0)]
      pushBytes(out, chunks)
      return this.send(out)
    }
    const df = (flags & CmdFlag.DF) !== 0
    const holes = !df && chunks.some(Backend.isZeroes)
    if (!holes) {
      if (this.settings.outOfOrder && !df && length > 1) {
        // Two data chunks, the second half first: exercises a client's reassembly.
        const half = Math.floor(length / 2)
        const first: Array<Uint8Array> = []
        const second: Array<Uint8Array> = []
        pushBytes(first, sliceChunks(chunks, 0, half))
        pushBytes(second, sliceChunks(chunks, half, length))
        return this.send([
          ServerCodec.offsetDataHeader(target, 0, offset + half, length - half),
          ...second,
          ServerCodec.offsetDataHeader(target, DONE, offset, half),
          ...first
        ])
      }
      const out: Array<Uint8Array> = [ServerCodec.offsetDataHeader(target, DONE, offset, length)]
      pushBytes(out, chunks)
      return this.send(out)
    }
    // Data runs as OFFSET_DATA, zero runs as OFFSET_HOLE; the last chunk carries DONE.
    const out: Array<Uint8Array> = []
    let at = offset
    let index = 0
    while (index < chunks.length) {
      const chunk = chunks[index]!
      if (Backend.isZeroes(chunk)) {
        const last = index === chunks.length - 1
        out.push(ServerCodec.offsetHoleChunk(target, last ? DONE : 0, at, chunk.length))
        at += chunk.length
        index++
        continue
      }
      let runLength = 0
      let end = index
      while (end < chunks.length) {
        const c = chunks[end]!
        if (Backend.isZeroes(c)) break
        runLength += c.length
        end++
      }
      out.push(ServerCodec.offsetDataHeader(target, end === chunks.length ? DONE : 0, at, runLength))
      for (let i = index; i < end; i++) out.push(chunks[i] as Uint8Array)
      at += runLength
      index = end
    }
    this.send(out)
  }

  private blockStatusReply(
    target: ServerCodec.ChunkTarget,
    flags: number,
    length: number,
    extents: ReadonlyArray<Backend.Extent>
  ): void {
    const reqOne = (flags & CmdFlag.REQ_ONE) !== 0
    const out: Array<ServerCodec.Extent> = []
    let covered = 0
    for (const e of extents) {
      if (e.length <= 0) continue
      const l = Math.min(e.length, length - covered)
      if (l <= 0) break
      out.push({ length: l, flags: e.flags })
      covered += l
      if (reqOne || out.length >= Protocol.Limits.MAX_BLOCK_STATUS_DESCRIPTORS) break
    }
    if (out.length === 0) out.push({ length, flags: 0 })
    this.reply(ServerCodec.blockStatusChunk(target, DONE, BASE_ALLOCATION_ID, out))
  }
}

const pushZeroes = (out: Array<Uint8Array>, length: number): void => {
  while (length > 0) {
    const n = Math.min(length, ZERO_BUFFER.length)
    out.push(ZERO_BUFFER.subarray(0, n))
    length -= n
  }
}

const pushBytes = (out: Array<Uint8Array>, chunks: ReadonlyArray<Backend.ReadChunk>): void => {
  for (const c of chunks) {
    if (Backend.isZeroes(c)) pushZeroes(out, c.length)
    else out.push(c)
  }
}

const sliceChunks = (chunks: ReadonlyArray<Backend.ReadChunk>, from: number, to: number): Array<Backend.ReadChunk> => {
  const out: Array<Backend.ReadChunk> = []
  let at = 0
  for (const c of chunks) {
    const len = Backend.isZeroes(c) ? c.length : c.length
    const start = Math.max(from, at)
    const end = Math.min(to, at + len)
    if (start < end) {
      out.push(Backend.isZeroes(c) ? Backend.zeroes(end - start) : c.subarray(start - at, end - at))
    }
    at += len
  }
  return out
}

/** The socket a connection reads and writes: the accepted one, then its TLS layer after STARTTLS. */
interface Io {
  socket: Net.Socket
}

/**
 * Serves one connection until the client leaves, the protocol is broken, or the scope closes.
 * @internal
 */
export const serve = (settings: Settings, conn: Net.Socket): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const requests = yield* FiberSet.make<void, never>()
    const runRequest = yield* FiberSet.runtime(requests)<never>()
    const ending = yield* Deferred.make<Ending>()
    const closed = yield* Deferred.make<void>()
    const io: Io = { socket: conn }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        io.socket.removeAllListeners("data")
        if (!io.socket.destroyed) io.socket.destroy()
        if (!conn.destroyed) conn.destroy()
      })
    )

    const end = (how: Ending): void => {
      Deferred.unsafeDone(ending, Effect.succeed(how))
    }
    const flow = new Flow.Flow(
      settings.flow,
      () => io.socket.pause(),
      () => {
        if (io.socket.destroyed) return
        io.socket.resume()
        session.resume()
      }
    )
    const writer = new ReplyWriter.ReplyWriter(() => io.socket, flow, settings.outOfOrder)
    yield* Effect.addFinalizer(() => Effect.sync(() => writer.close()))
    const send = (out: ReadonlyArray<Uint8Array>): void => {
      flow.queued(Flow.replyCost(out))
      writer.push(out)
    }
    const fork = (effect: Effect.Effect<void>, cost: number): void => {
      flow.startService(cost)
      void runRequest(
        Effect.ensuring(
          effect,
          Effect.sync(() => flow.endService(cost))
        )
      )
    }
    const onData = (chunk: Buffer): void =>
      session.receive(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length))
    const listen = (socket: Net.Socket): void => {
      socket.on("data", onData)
      socket.on("end", () => session.clientEnded())
      socket.on("error", () => end("hard"))
      socket.on("close", () => {
        end("hard")
        Deferred.unsafeDone(closed, Effect.void)
      })
    }

    const startTls = (received: Uint8Array): void => {
      const tls = settings.tls!
      // Nothing more is read in plaintext: what already arrived goes back to the socket for the TLS layer.
      conn.off("data", onData)
      conn.pause()
      if (received.length > 0) conn.unshift(Buffer.from(received))
      void runRequest(
        Effect.gen(function* () {
          // The ACK goes out in plaintext first.
          const flushed = yield* Deferred.make<void>()
          writer.push(flushed)
          yield* Deferred.await(flushed)
          if (conn.writableLength > 0)
            yield* Effect.async<void>((resume) => {
              conn.write(new Uint8Array(0), () => resume(Effect.void))
            })
          if (conn.destroyed) return
          const secure = new Tls.TLSSocket(conn, { ...tls.options, isServer: true })
          // A TLSSocket made directly asks for the peer's certificate (and fails a peer without one) but
          // does not act on its verification: check it against the CA before the client is heard (the
          // handshake ends before any data is read).
          const verify = tls.verifyPeer
          if (verify !== undefined)
            secure.once("secure", () => {
              if (!verify(secure.getPeerX509Certificate())) secure.destroy()
            })
          io.socket = secure
          listen(secure)
          session.tlsStarted()
        })
      )
    }

    const session = new Session(settings, flow, send, fork, end, startTls)
    listen(conn)

    session.start()

    const how = yield* Deferred.await(ending)
    if (how === "hard") return
    // A soft disconnect: finish the requests in flight, flush their replies, then close.
    io.socket.removeAllListeners("data")
    yield* Effect.raceFirst(
      Effect.gen(function* () {
        yield* FiberSet.awaitEmpty(requests)
        const flushed = yield* Deferred.make<void>()
        writer.push(flushed)
        yield* Deferred.await(flushed)
        yield* Effect.async<void>((resume) => {
          io.socket.end(() => resume(Effect.void))
        })
      }),
      Deferred.await(closed)
    )
  })
