/**
 * The transmission phase of one session, on the export the handshake chose: each request is checked (flags,
 * bounds, block sizes, payloads), matched against the export's malformed-reply faults, and served by the
 * backend, in a fiber the session forks, or inline when the backend never waits. It performs no I/O: the
 * replies (built by replies.ts) and the end of the connection go through the session that owns it (`Host`).
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import type * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Backend from "../../Backend.js"
import * as Faults from "../faults.js"
import * as Flow from "../flow.js"
import * as Malformed from "../malformed.js"
import * as Request from "../request.js"
import * as Replies from "./replies.js"
import * as Settings from "./settings.js"

const { Cmd, CmdFlag, NbdErrno } = Protocol
const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** Write payloads up to this size that spanned socket chunks are copied into one reused buffer. */
const MAX_SCRATCH = 4 * 1024 * 1024

/** Serves a checked request, replying to `target` (the request itself, unless a fault readdresses it). */
type Operation = ((target: ServerCodec.ChunkTarget) => Effect.Effect<void>) & {
  /** The same served at once, with no fiber: a read or write on a backend that never waits (see `Backend.Read`). */
  readonly inline?: (target: ServerCodec.ChunkTarget) => void
}

/**
 * What the transmission phase asks of the session that owns it.
 * @internal
 */
export interface Host {
  readonly send: (out: ReadonlyArray<Uint8Array>) => void
  /** Runs a request's service concurrently; `cost` is what it holds until answered. */
  readonly fork: (effect: Effect.Effect<void>, cost: number) => void
  readonly close: (how: Settings.Ending) => void
}

/** @internal */
export class Transmission {
  /** The transmission flags the client was told. */
  readonly flags: number
  private readonly structured: boolean
  private readonly extended: boolean
  private readonly blockStatus: boolean
  /** The form of replies. */
  private readonly replies: Replies.Form
  /** Transmission requests received. */
  private requests = 0
  /** Requests of each command that reached the faults, for faults on the nth one. */
  private readonly served = new Map<number, number>()
  /**
   * The export's writes are all served inline (a backend that never waits, no fault on writes, replies in
   * order): each is done before the next request is decoded, so their payloads can share `scratch`.
   */
  private readonly inlineWrite: Backend.Write["now"]
  private scratch: Uint8Array | undefined = undefined

  constructor(
    readonly settings: Settings.Settings,
    readonly exp: Settings.ResolvedExport,
    negotiated: Settings.Negotiated,
    private readonly host: Host
  ) {
    this.structured = negotiated.structured
    this.extended = negotiated.extended
    this.blockStatus = negotiated.blockStatus
    this.replies = { structured: this.structured, extended: this.extended, outOfOrder: settings.outOfOrder }
    this.flags = Settings.transmissionFlags(exp, this.structured, this.extended)
    const now = exp.backend.write.now
    const faulted = exp.faults.some((fault) => fault.command === Cmd.WRITE)
    this.inlineWrite = now !== undefined && !faulted && !settings.outOfOrder ? now : undefined
  }

  /** Where a payload that spanned socket chunks is copied: the shared scratch while writes are inline. */
  payloadBuffer(length: number): Uint8Array | undefined {
    if (this.inlineWrite === undefined || length > MAX_SCRATCH) return undefined
    if (this.scratch === undefined || this.scratch.length < length) this.scratch = new Uint8Array(length)
    return this.scratch
  }

  private reply(out: Uint8Array): void {
    this.host.send([out])
  }

  private error(target: ServerCodec.ChunkTarget, errno: number, message: string): void {
    this.reply(Replies.error(this.replies, target, errno, message))
  }

  private ok(target: ServerCodec.ChunkTarget): void {
    this.reply(Replies.ok(this.replies, target))
  }

  private readReply(
    target: ServerCodec.ChunkTarget,
    flags: number,
    offset: number,
    length: number,
    chunks: ReadonlyArray<Backend.ReadChunk>
  ): void {
    this.host.send(Replies.read(this.replies, target, flags, offset, length, chunks))
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

  /** Checks a request and serves it: inline, or in a fiber the session forks; or refuses it with an error. */
  request(request: ServerCodec.Request): void {
    const { flags, type } = request
    const exp = this.exp
    if (type === Cmd.DISC) return this.host.close("graceful")
    this.requests += 1
    // As if the server died: no reply to this request nor to any still in service.
    if (this.requests === this.settings.disconnectAfter) return this.host.close("hard")
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
    this.host.fork(Effect.provideService(delayed, Request.currentRequest, new Request.Served(ordinal)), cost)
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
      return Effect.andThen(
        operation(request),
        Effect.sync(() => this.reply(Malformed.secondDone(target, mode)))
      )
    const out = Malformed.replacement(kind, target, mode)
    if (out === undefined) return operation(request)
    return Effect.andThen(
      Faults.passFilters(backend, request, length),
      Effect.sync(() => this.host.send(out))
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
      if (id !== Settings.BASE_ALLOCATION_ID || !this.blockStatus) return `metadata context id ${id} was not negotiated`
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
  private operation(
    request: ServerCodec.Request,
    exp: Settings.ResolvedExport,
    length: number | bigint
  ): Operation | undefined {
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
              onSuccess: (extents) => this.reply(Replies.blockStatus(target, flags, length, extents))
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
    const now = backend.read.now
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
    const failure = Cause.findErrorOption(cause)
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
}
