/**
 * The client's handshake as a machine with no I/O: bytes received go in (`receive`), the messages it sends
 * go to the engine's queue, and `next` says what the driver must do now: wait for more bytes, upgrade the
 * transport to TLS, pause in option mode, enter the transmission phase, or give up with a typed error. It
 * makes every decision of the handshake in libnbd's order: greeting (oldstyle, newstyle, fixed newstyle),
 * client flags, STARTTLS by the TLS setting, EXTENDED_HEADERS, STRUCTURED_REPLY, the pause in option mode,
 * SET_META_CONTEXT, GO with its INFO requests (EXPORT_NAME when GO is not supported), NBD_OPT_ABORT on a
 * refusal, and libnbd's wording and errnos. What the server agreed to is kept in one `Agreement`.
 *
 * The steps are written as a generator, so each reads in the order of the protocol: a step that needs bytes
 * yields, and `next` resumes it when the driver has fed some. Nothing here waits, reads a clock or a socket.
 */
import * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import {
  acceptBlockSizes,
  type Agreement,
  emptyAgreement,
  type ExportInfo,
  exportInfo,
  normaliseFlags
} from "./agreement.js"
import {
  describeReply,
  notFixedNewstyle,
  optionErrorOf,
  plaintextAfterAck,
  protocolError,
  refusedWith,
  tlsUnavailable,
  unexpectedReply
} from "./optionErrors.js"

/** The settings the handshake reads, when it reads them (option mode may change them between options). */
export interface HandshakeSettings {
  readonly exportName: string
  readonly tls: "disable" | "allow" | "require"
  readonly requestStructuredReplies: boolean
  readonly requestExtendedHeaders: boolean
  readonly requestMetaContext: boolean
  readonly metaContexts: ReadonlyArray<string>
  readonly fullInfo: boolean
  readonly requestBlockSize: boolean
  readonly handshakeFlags: number
  readonly optMode: boolean
  readonly debug: boolean
}

/** How a handshake starts: whether it pauses in option mode, and whether the transport can do TLS. */
export interface HandshakeStart {
  readonly operation: string
  readonly optionMode: boolean
  readonly tlsAvailable: boolean
}

/** An export the server lists. */
export interface ExportEntry {
  readonly name: string
  readonly description: string
}

/** One option exchange begun in option mode. */
export type OptionRequest =
  | { readonly _tag: "Go" }
  | { readonly _tag: "Info" }
  | { readonly _tag: "List" }
  | { readonly _tag: "ListMetaContext"; readonly queries: ReadonlyArray<string> }
  | { readonly _tag: "SetMetaContext"; readonly queries: ReadonlyArray<string> }
  | { readonly _tag: "StructuredReply" }
  | { readonly _tag: "ExtendedHeaders" }
  | { readonly _tag: "StartTls" }

/** What each option exchange answers. */
export interface OptionResults {
  readonly Go: undefined
  readonly Info: undefined
  readonly List: ReadonlyArray<ExportEntry>
  readonly ListMetaContext: ReadonlyArray<string>
  readonly SetMetaContext: ReadonlyArray<string>
  readonly StructuredReply: boolean
  readonly ExtendedHeaders: boolean
  readonly StartTls: boolean
}

/** What the driver must do next. */
export type Step =
  /** Feed more bytes (`receive`), then ask again. */
  | { readonly _tag: "Read" }
  /** Upgrade the transport to TLS on the live connection, then call `tlsDone` and ask again. */
  | { readonly _tag: "StartTls" }
  /** Paused in option mode; `value` is what the option exchange that just ended answered. */
  | { readonly _tag: "Negotiating"; readonly value: OptionResults[keyof OptionResults] }
  /** The handshake is over: enter the transmission phase. */
  | { readonly _tag: "Done" }
  /**
   * The handshake (or one option exchange) failed. `close`: the handle ends Closed rather than Dead, as
   * libnbd's does when TLS is refused in option mode.
   */
  | { readonly _tag: "Failed"; readonly error: NbdError.NbdError; readonly close: boolean }

/** Where the machine is. */
export type Phase = "Idle" | "Handshaking" | "Upgrading" | "Negotiating" | "Option" | "Done" | "Failed" | "Aborted"

/** A debug line the driver logs when debug is on, under the call that caused it. */
export interface DebugLine {
  readonly operation: string
  readonly message: string
}

/** Where the machine's messages go: the engine's queue. */
export interface HandshakeOutput {
  /** Queues a message. */
  readonly send: (bytes: Uint8Array) => void
  /** Queues the end of the write side. */
  readonly endWrites: () => void
  /** A whole message was decoded (libnbd counts it as a chunk received). */
  readonly received: () => void
}

const READ = { _tag: "Read" } as const satisfies Step
const START_TLS = { _tag: "StartTls" } as const satisfies Step
const DONE = { _tag: "Done" } as const satisfies Step

/** What a step yields: it needs bytes, or the TLS upgrade. */
type Need = typeof READ | typeof START_TLS

/** How the whole handshake, or one option exchange, ends. */
type Ended = { readonly _tag: "Negotiating"; readonly value: OptionResults[keyof OptionResults] } | typeof DONE

type Steps<A> = Generator<Need, A, void>

/** A failure inside a step, carried out of the generator to `next`, which turns it into a `Failed` step. */
class Stop {
  constructor(
    readonly error: NbdError.NbdError,
    readonly close = false
  ) {}
}

/** Errors that refuse one option exchange in option mode and leave the negotiation as it was. */
const refusals: ReadonlySet<NbdError.NbdError["_tag"]> = new Set([
  "OptionError",
  "InvalidStateError",
  "InvalidArgumentError",
  "UnsupportedError"
])

/**
 * One connection's handshake. `start` begins it; the driver then loops on `next`, feeding bytes while it
 * says `Read`. In option mode, `option` begins one exchange, and `next` runs it the same way.
 */
export class Handshake {
  readonly agreement: Agreement = emptyAgreement()
  private readonly decoder = new ClientCodec.HandshakeDecoder()
  private settings: HandshakeSettings | undefined = undefined
  private tlsAvailable = false
  private running: Steps<Ended> | undefined = undefined
  private phaseNow: Phase = "Idle"
  /** Set while a step waits for the TLS upgrade; cleared by `tlsDone`. */
  private upgrading = false
  private lines: Array<DebugLine> = []
  /** Bytes arrived since `next` last looked. */
  private fresh = false
  private failure: Step | undefined = undefined

  constructor(private readonly out: HandshakeOutput) {}

  /** Where the machine is. */
  get phase(): Phase {
    return this.upgrading ? "Upgrading" : this.phaseNow
  }

  /** Bytes buffered and not yet decoded. */
  get buffered(): number {
    return this.decoder.buffered
  }

  /** Whether bytes arrived since `next` last ran: a driver about to wait need not. */
  get unread(): boolean {
    return this.fresh
  }

  /** Bytes from the server, copied (a transport may reuse its buffer). */
  receive(chunk: Uint8Array): void {
    this.decoder.push(chunk)
    this.fresh = true
  }

  /** Whatever is buffered past the last handshake message: the first bytes of the transmission phase. */
  rest(): Uint8Array {
    return this.decoder.rest()
  }

  /** The debug lines gathered since the last call (none while debug is off). */
  takeDebugLines(): ReadonlyArray<DebugLine> {
    if (this.lines.length === 0) return this.lines
    const lines = this.lines
    this.lines = []
    return lines
  }

  /** Begins the handshake with these settings, read live from now on. */
  start(settings: HandshakeSettings, how: HandshakeStart): void {
    this.settings = settings
    this.tlsAvailable = how.tlsAvailable
    this.phaseNow = "Handshaking"
    this.running = this.handshake(how.operation, how.optionMode)
  }

  /** Begins one option exchange, while the handshake is paused in option mode. */
  option(operation: string, request: OptionRequest): void {
    if (this.phaseNow !== "Negotiating") {
      this.failure = {
        _tag: "Failed",
        error: new NbdError.InvalidStateError({
          errno: "EINVAL",
          operation,
          message: "the handshake is not waiting for an option"
        }),
        close: false
      }
      return
    }
    this.phaseNow = "Option"
    this.running = this.optionSteps(operation, request)
  }

  /** The transport finished its TLS handshake: the step that asked for it goes on. */
  tlsDone(): void {
    this.upgrading = false
  }

  /**
   * Sends NBD_OPT_ABORT and ends the write side: libnbd does not wait for the server's ACK. The handshake
   * is over.
   */
  abort(): void {
    this.out.send(ClientCodec.encodeOption(Protocol.Opt.ABORT))
    this.out.endWrites()
    this.running = undefined
    this.phaseNow = "Aborted"
  }

  /** What the driver must do now; runs the current step as far as the bytes buffered allow. */
  next(): Step {
    this.fresh = false
    const failure = this.failure
    if (failure !== undefined) {
      this.failure = undefined
      return failure
    }
    if (this.upgrading) return START_TLS
    const running = this.running
    if (running === undefined) return this.idle()
    try {
      const result = running.next()
      if (!result.done) {
        if (result.value === START_TLS) this.upgrading = true
        return result.value
      }
      this.running = undefined
      this.phaseNow = result.value === DONE ? "Done" : "Negotiating"
      return result.value
    } catch (cause) {
      if (!(cause instanceof Stop)) throw cause
      this.running = undefined
      this.phaseNow = this.phaseNow === "Option" && refusals.has(cause.error._tag) ? "Negotiating" : "Failed"
      return { _tag: "Failed", error: cause.error, close: cause.close }
    }
  }

  /** `next` with nothing running: the phase says it. */
  private idle(): Step {
    switch (this.phaseNow) {
      case "Done":
        return DONE
      case "Negotiating":
        return { _tag: "Negotiating", value: undefined }
      default:
        return {
          _tag: "Failed",
          error: protocolError("handshake", `handshake: nothing to do in phase ${this.phaseNow}`),
          close: false
        }
    }
  }

  private get s(): HandshakeSettings {
    return this.settings!
  }

  private debug(operation: string, message: () => string): void {
    if (this.settings?.debug === true) this.lines.push({ operation, message: message() })
  }

  /** Waits for one whole message; a malformed one fails the handshake. */
  private *read<A>(decode: () => A | ClientCodec.DecodeError | undefined): Steps<A> {
    while (true) {
      const result = decode()
      if (result instanceof ClientCodec.DecodeError)
        throw new Stop(
          new NbdError.ProtocolError({ errno: result.errno, operation: "handshake", message: result.message })
        )
      if (result !== undefined) {
        this.out.received()
        return result
      }
      yield READ
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // The handshake, in libnbd's order
  // -------------------------------------------------------------------------------------------------------------

  private *handshake(operation: string, optionMode: boolean): Steps<Ended> {
    const greeting = yield* this.read(() => this.decoder.decodeGreeting())
    const a = this.agreement
    if (greeting._tag === "Oldstyle") {
      if (this.s.tls === "require") throw new Stop(tlsUnavailable(operation, "server is oldstyle"))
      if (greeting.globalFlags !== 0)
        throw new Stop(protocolError(operation, "handshake: oldstyle server should not set gflags"))
      a.protocol = "oldstyle"
      a.handshakeFlags = 0
      this.setExportInfo(operation, exportInfo(greeting.size, greeting.transmissionFlags))
      return DONE
    }
    const flags = greeting.handshakeFlags & this.s.handshakeFlags
    const fixed = (flags & Protocol.FLAG_FIXED_NEWSTYLE) !== 0
    a.handshakeFlags = flags
    a.protocol = fixed ? "newstyle-fixed" : "newstyle"
    if (!fixed && this.s.tls === "require")
      throw new Stop(tlsUnavailable(operation, "server is not using fixed newstyle"))
    this.out.send(ClientCodec.encodeClientFlags(flags))
    if (!fixed) {
      if (optionMode) return { _tag: "Negotiating", value: undefined }
      yield* this.exportName(operation)
      return DONE
    }
    yield* this.tlsStep(operation)
    if (this.s.requestStructuredReplies && this.s.requestExtendedHeaders)
      yield* this.negotiateFeature(Protocol.Opt.EXTENDED_HEADERS, "handshake")
    if (this.s.requestStructuredReplies && !a.structuredReplies)
      yield* this.negotiateFeature(Protocol.Opt.STRUCTURED_REPLY, "handshake")
    if (optionMode) return { _tag: "Negotiating", value: undefined }
    try {
      return yield* this.goOrInfo(operation, Protocol.Opt.GO)
    } catch (cause) {
      // A refusal of GO: tell the server we are leaving, as libnbd does.
      if (cause instanceof Stop && cause.error._tag === "OptionError") this.abort()
      throw cause
    }
  }

  /**
   * The STARTTLS step (fixed newstyle, tls != disable). Without a TLS-capable transport "allow" goes on in
   * plaintext without asking and "require" fails; a refusal is fatal only for "require". Either failure sends
   * NBD_OPT_ABORT and nothing else in plaintext.
   */
  private *tlsStep(operation: string): Steps<void> {
    const mode = this.s.tls
    if (mode === "disable") return
    if (!this.tlsAvailable) {
      if (mode === "allow") return
      this.abort()
      throw new Stop(tlsUnavailable(operation, "TLS is not available on this transport"))
    }
    const accepted = yield* this.starttls(operation)
    if (!accepted && mode === "require") {
      this.abort()
      // libnbd ends in CLOSED rather than DEAD when option mode was asked for.
      throw new Stop(tlsUnavailable(operation, "server refused TLS"), this.s.optMode)
    }
  }

  /** Sends an option and collects its replies up to the final ACK or error. */
  private *exchange(
    option: number,
    data: Uint8Array | undefined,
    operation: string
  ): Steps<{ readonly replies: ReadonlyArray<ClientCodec.OptionReply>; readonly final: ClientCodec.OptionReply }> {
    const name = Protocol.optionName(option)
    this.debug(operation, () => `sending option ${name} (${data?.length ?? 0} bytes of data)`)
    this.out.send(ClientCodec.encodeOption(option, data))
    const replies: Array<ClientCodec.OptionReply> = []
    while (true) {
      const reply = yield* this.read(() => this.decoder.decodeOptionReply(option))
      this.debug(operation, () => `received reply ${describeReply(reply)} to ${name}`)
      if (reply._tag === "Ack" || reply._tag === "Error") return { replies, final: reply }
      replies.push(reply)
    }
  }

  /** NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS: true when the server agreed. */
  private *negotiateFeature(
    option: typeof Protocol.Opt.STRUCTURED_REPLY | typeof Protocol.Opt.EXTENDED_HEADERS,
    operation: string
  ): Steps<boolean> {
    const { final, replies } = yield* this.exchange(option, undefined, operation)
    if (replies.length > 0 || final._tag !== "Ack") return false
    if (option === Protocol.Opt.EXTENDED_HEADERS) this.agreement.extendedHeaders = true
    this.agreement.structuredReplies = true
    return true
  }

  /**
   * NBD_OPT_STARTTLS: false when the server refused; true once it accepted and the driver finished the TLS
   * handshake on the live connection. What was negotiated in plaintext (structured replies, extended headers,
   * meta contexts, export info) is forgotten, as the server forgets it.
   */
  private *starttls(operation: string): Steps<boolean> {
    const { final, replies } = yield* this.exchange(Protocol.Opt.STARTTLS, undefined, operation)
    if (replies.length > 0) throw new Stop(unexpectedReply(operation, Protocol.Opt.STARTTLS))
    if (final._tag !== "Ack") return false
    const a = this.agreement
    if (a.tlsNegotiated)
      throw new Stop(
        new NbdError.ProtocolError({
          errno: "EPROTO",
          operation,
          message: "handshake: server accepted NBD_OPT_STARTTLS on a connection already using TLS"
        })
      )
    // The server speaks next only after our ClientHello: bytes already here were injected in plaintext.
    if (this.decoder.buffered > 0) throw new Stop(plaintextAfterAck(operation))
    yield START_TLS
    // Bytes read by the plaintext reader before the switch would otherwise be taken as encrypted replies.
    if (this.decoder.buffered > 0) throw new Stop(plaintextAfterAck(operation))
    a.tlsNegotiated = true
    a.structuredReplies = false
    a.extendedHeaders = false
    a.metaContexts = undefined
    a.metaValid = false
    a.info = undefined
    return true
  }

  /** Forgets the negotiated contexts before a SET replaces them (libnbd empties its list and clears meta_valid). */
  private resetMetaContexts(): void {
    this.agreement.metaContexts = new Map()
    this.agreement.metaValid = false
  }

  /**
   * NBD_OPT_SET_META_CONTEXT or NBD_OPT_LIST_META_CONTEXT with the given queries; returns the context names
   * in the server's order. LIST is stateless (its replies may all carry id 0, as qemu-nbd's do); SET replaces
   * the negotiated contexts and makes them valid once the server acknowledges.
   */
  private *metaContextExchange(
    operation: string,
    option: typeof Protocol.Opt.SET_META_CONTEXT | typeof Protocol.Opt.LIST_META_CONTEXT,
    queries: ReadonlyArray<string>
  ): Steps<ReadonlyArray<string>> {
    const set = option === Protocol.Opt.SET_META_CONTEXT
    if (set) this.resetMetaContexts()
    const data = ClientCodec.encodeMetaContextRequest(this.s.exportName, queries)
    const { final, replies } = yield* this.exchange(option, data, operation)
    const names: Array<string> = []
    const contexts = new Map<number, string>()
    for (const reply of replies) {
      if (reply._tag !== "MetaContext") throw new Stop(unexpectedReply(operation, option))
      names.push(reply.name)
      contexts.set(reply.id, reply.name)
    }
    if (set) this.agreement.metaContexts = contexts
    if (final._tag === "Error") throw new Stop(refusedWith(optionErrorOf(this.s.exportName, operation, final)))
    if (set) this.agreement.metaValid = true
    return names
  }

  /** NBD_OPT_INFO or NBD_OPT_GO with the info requests the settings ask for; answers the final reply. */
  private *infoExchange(
    operation: string,
    option: typeof Protocol.Opt.INFO | typeof Protocol.Opt.GO
  ): Steps<ClientCodec.OptionReply> {
    const infos: Array<number> = []
    if (this.s.requestBlockSize) infos.push(Protocol.Info.BLOCK_SIZE)
    if (this.s.fullInfo) infos.push(Protocol.Info.NAME, Protocol.Info.DESCRIPTION)
    const data = ClientCodec.encodeInfoRequest(this.s.exportName, infos)
    const { final, replies } = yield* this.exchange(option, data, operation)
    if (final._tag !== "Ack") return final
    const info = exportInfo(-1n, 0)
    for (const reply of replies) {
      if (reply._tag !== "Info") throw new Stop(unexpectedReply(operation, option))
      const i = reply.info
      switch (i._tag) {
        case "Export":
          info.size = i.size
          info.flags = i.transmissionFlags
          break
        case "BlockSize":
          info.blockSizes = acceptBlockSizes(i)
          break
        case "Name":
          info.canonicalName = i.name
          break
        case "Description":
          info.description = i.description
          break
        case "Unknown":
          break
      }
    }
    if (info.size < 0n) throw new Stop(protocolError(operation, "handshake: server did not send export info"))
    this.setExportInfo(operation, info)
    return final
  }

  private setExportInfo(operation: string, info: ExportInfo): void {
    if (info.flags === 0)
      throw new Stop(
        new NbdError.ProtocolError({
          errno: "EINVAL",
          operation,
          message: "handshake: invalid eflags == 0 from server"
        })
      )
    const a = this.agreement
    info.flags = normaliseFlags(a, info.flags)
    a.info = info
    // No SET was due (no structured replies, or no contexts added): "none negotiated" is then a valid answer.
    if (this.s.requestMetaContext && (!a.structuredReplies || this.s.metaContexts.length === 0)) a.metaValid = true
  }

  /** NBD_OPT_EXPORT_NAME: no error path; a server without the export closes the connection. */
  private *exportName(operation: string): Steps<void> {
    if (this.agreement.extendedHeaders)
      throw new Stop(
        new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "server does not support NBD_OPT_GO, which extended headers require"
        })
      )
    this.out.send(ClientCodec.encodeOption(Protocol.Opt.EXPORT_NAME, ClientCodec.encodeString(this.s.exportName)))
    const noZeroes = ((this.agreement.handshakeFlags ?? 0) & Protocol.FLAG_NO_ZEROES) !== 0
    const reply = yield* this.read(() => this.decoder.decodeExportNameReply(noZeroes))
    this.setExportInfo(operation, exportInfo(reply.size, reply.transmissionFlags))
  }

  /**
   * SET_META_CONTEXT when asked for, then INFO or GO. A refusal of INFO/GO fails (the caller decides whether
   * it is fatal); GO's ERR_UNSUP falls back to EXPORT_NAME.
   */
  private *goOrInfo(operation: string, option: typeof Protocol.Opt.INFO | typeof Protocol.Opt.GO): Steps<Ended> {
    const a = this.agreement
    if (a.protocol === "newstyle") {
      if (option === Protocol.Opt.INFO) throw new Stop(notFixedNewstyle(operation))
      yield* this.exportName(operation)
      return DONE
    }
    const contexts = this.s.metaContexts
    if (this.s.requestMetaContext) this.resetMetaContexts()
    if (this.s.requestMetaContext && a.structuredReplies && contexts.length > 0) {
      // A refusal leaves no contexts negotiated; the connection goes on, as with libnbd, and the answer
      // "none" is valid only if the server named none before refusing.
      try {
        yield* this.metaContextExchange(operation, Protocol.Opt.SET_META_CONTEXT, contexts)
      } catch (cause) {
        if (!(cause instanceof Stop) || cause.error._tag !== "OptionError") throw cause
        a.metaValid = (a.metaContexts?.size ?? 0) === 0
      }
    }
    const final = yield* this.infoExchange(operation, option)
    if (final._tag === "Ack") return option === Protocol.Opt.GO ? DONE : { _tag: "Negotiating", value: undefined }
    if (final._tag === "Error" && final.type === Protocol.Rep.ERR_UNSUP && option === Protocol.Opt.GO) {
      yield* this.exportName(operation)
      return DONE
    }
    a.metaValid = false
    throw new Stop(
      final._tag === "Error"
        ? refusedWith(optionErrorOf(this.s.exportName, operation, final))
        : protocolError(operation, "unexpected reply")
    )
  }

  /** NBD_OPT_LIST: the exports the server offers. */
  private *list(operation: string): Steps<ReadonlyArray<ExportEntry>> {
    const { final, replies } = yield* this.exchange(Protocol.Opt.LIST, undefined, operation)
    if (final._tag === "Error")
      throw new Stop(
        new NbdError.OptionError({ ...optionErrorOf(this.s.exportName, operation, final), errno: "ENOTSUP" })
      )
    const entries: Array<ExportEntry> = []
    for (const reply of replies) {
      if (reply._tag !== "Server") throw new Stop(unexpectedReply(operation, Protocol.Opt.LIST))
      entries.push({ name: reply.name, description: reply.description })
    }
    return entries
  }

  // -------------------------------------------------------------------------------------------------------------
  // Option mode: one exchange at a time
  // -------------------------------------------------------------------------------------------------------------

  private *optionSteps(operation: string, request: OptionRequest): Steps<Ended> {
    const paused = (value: OptionResults[keyof OptionResults]): Ended => ({ _tag: "Negotiating", value })
    // Every option but GO needs fixed newstyle (GO falls back to EXPORT_NAME, which plain newstyle has).
    if (request._tag !== "Go" && this.agreement.protocol === "newstyle") throw new Stop(notFixedNewstyle(operation))
    switch (request._tag) {
      case "Go":
        return yield* this.goOrInfo(operation, Protocol.Opt.GO)
      case "Info":
        return yield* this.goOrInfo(operation, Protocol.Opt.INFO)
      case "List":
        return paused(yield* this.list(operation))
      case "ListMetaContext":
        return paused(yield* this.metaContextExchange(operation, Protocol.Opt.LIST_META_CONTEXT, request.queries))
      case "SetMetaContext":
        if (!this.agreement.structuredReplies)
          throw new Stop(
            new NbdError.UnsupportedError({ errno: "ENOTSUP", operation, message: "server lacks structured replies" })
          )
        return paused(yield* this.metaContextExchange(operation, Protocol.Opt.SET_META_CONTEXT, request.queries))
      case "StructuredReply":
        return paused(yield* this.negotiateFeature(Protocol.Opt.STRUCTURED_REPLY, operation))
      case "ExtendedHeaders":
        return paused(yield* this.negotiateFeature(Protocol.Opt.EXTENDED_HEADERS, operation))
      case "StartTls":
        if (!this.tlsAvailable)
          throw new Stop(
            new NbdError.UnsupportedError({
              errno: "ENOTSUP",
              operation,
              message: "TLS is not available on this transport"
            })
          )
        return paused(yield* this.starttls(operation))
    }
  }
}
