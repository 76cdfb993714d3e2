/**
 * The handshake of one session: the client's flags, then every option of fixed newstyle (NBD_OPT_INFO and
 * NBD_OPT_GO, NBD_OPT_LIST, STARTTLS, structured replies, extended headers, meta contexts, ABORT) and the
 * bare NBD_OPT_EXPORT_NAME of plain newstyle. It holds what is negotiated; it performs no I/O and keeps no
 * phase of its own: its replies, the end of the connection, the start of TLS and of transmission go through
 * the session that owns it (`Host`).
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as Settings from "./settings.js"

const { Opt, Rep } = Protocol

/**
 * What the handshake asks of the session that owns it.
 * @internal
 */
export interface Host {
  readonly send: (out: ReadonlyArray<Uint8Array>) => void
  readonly close: (how: Settings.Ending) => void
  /** After the STARTTLS ACK: the session waits for TLS, upgrading the connection. */
  readonly startTls: () => void
  /** NBD_OPT_GO or NBD_OPT_EXPORT_NAME chose `exp`: transmission starts. Gives its transmission flags. */
  readonly enterTransmission: (exp: Settings.ResolvedExport) => number
}

/** The name NBD_INFO_NAME tells: nbdkit echoes the client's name for an export that takes any name. */
const canonicalName = (exp: Settings.ResolvedExport, requested: string): string =>
  exp.anyName && requested !== "" ? requested : exp.name

/** @internal */
export class Handshake {
  private fixed = false
  private clientNoZeroes = false
  private tls = false
  private structured = false
  private extended = false
  /** The export of the last successful SET_META_CONTEXT, if it selected base:allocation. */
  private metaExport: Settings.ResolvedExport | undefined = undefined

  constructor(
    readonly settings: Settings.Settings,
    private readonly host: Host
  ) {}

  /** What transmission on `exp` starts with. */
  negotiated(exp: Settings.ResolvedExport): Settings.Negotiated {
    return {
      structured: this.structured,
      extended: this.extended,
      blockStatus: this.structured && this.metaExport === exp
    }
  }

  /** Takes the client's flags: false when it sets one the server did not offer (the connection then ends). */
  clientFlags(flags: number): boolean {
    const settings = this.settings
    let offered = settings.noZeroes ? Protocol.FLAG_NO_ZEROES : 0
    if (settings.protocol === "fixed-newstyle") offered |= Protocol.FLAG_FIXED_NEWSTYLE
    if ((flags & ~offered) !== 0) return false
    this.fixed = (flags & Protocol.FLAG_C_FIXED_NEWSTYLE) !== 0
    this.clientNoZeroes = (flags & Protocol.FLAG_C_NO_ZEROES) !== 0
    return true
  }

  /** TLS is active: NBD_OPT_STARTTLS makes the server forget structured replies, extended headers and meta contexts. */
  tlsStarted(): void {
    this.tls = true
    this.structured = false
    this.extended = false
    this.metaExport = undefined
  }

  private reply(out: Uint8Array): void {
    this.host.send([out])
  }

  /** Answers an option, as the handshake stands. */
  option(request: ServerCodec.OptionRequest): void {
    const { body, option } = request
    const tlsRequired = this.settings.tls?.mode === "require" && !this.tls
    // NBD_OPT_EXPORT_NAME has no error reply: without the TLS it requires, the connection ends.
    if (option === Opt.EXPORT_NAME) return tlsRequired ? this.host.close("hard") : this.exportName(body)
    // Non-fixed newstyle knows nothing but NBD_OPT_EXPORT_NAME: there is no way to refuse an option.
    if (!this.fixed) return this.host.close("hard")
    if (tlsRequired && option !== Opt.STARTTLS && option !== Opt.ABORT)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS"))
    if (body._tag === "TooBig") return this.reply(ServerCodec.optionError(option, Rep.ERR_TOO_BIG, body.message))
    if (body._tag === "Invalid") return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, body.message))
    const hasData = request.length !== 0
    switch (option) {
      case Opt.ABORT:
        this.reply(ServerCodec.optionAck(option))
        return this.host.close("graceful")
      case Opt.LIST: {
        if (hasData) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "NBD_OPT_LIST takes no data"))
        const out = this.settings.exports.map((e) => ServerCodec.optionServer(option, e.name, e.description))
        out.push(ServerCodec.optionAck(option))
        return this.host.send(out)
      }
      case Opt.STARTTLS:
        if (hasData)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "NBD_OPT_STARTTLS takes no data"))
        if (this.settings.tls === undefined)
          return this.reply(ServerCodec.optionError(option, Rep.ERR_UNSUP, "TLS is not configured on this server"))
        if (this.tls) return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "TLS is already active"))
        this.reply(ServerCodec.optionAck(option))
        return this.host.startTls()
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
    if (body._tag !== "ExportName" || this.extended) return this.host.close("hard")
    const exp = Settings.findExport(this.settings, body.name)
    if (exp === undefined) return this.host.close("hard")
    const flags = this.host.enterTransmission(exp)
    this.reply(ServerCodec.exportNameReply(exp.size, flags, this.clientNoZeroes))
  }

  private infoOrGo(option: number, name: string, infos: ReadonlyArray<number>): void {
    const exp = Settings.findExport(this.settings, name)
    if (exp === undefined)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_UNKNOWN, `export '${name}' does not exist`))
    const out: Array<Uint8Array> = [
      ServerCodec.optionInfoExport(option, exp.size, Settings.transmissionFlags(exp, this.structured, this.extended))
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
    this.host.send(out)
    if (option === Opt.GO) this.host.enterTransmission(exp)
  }

  private metaContext(option: number, name: string, queries: ReadonlyArray<string>): void {
    const set = option === Opt.SET_META_CONTEXT
    // SET replaces the selection, even when it fails.
    if (set) this.metaExport = undefined
    if (!this.structured)
      return this.reply(ServerCodec.optionError(option, Rep.ERR_INVALID, "structured replies must be negotiated first"))
    const exp = Settings.findExport(this.settings, name)
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
      out.push(
        ServerCodec.optionMetaContext(option, set ? Settings.BASE_ALLOCATION_ID : 0, Protocol.CONTEXT_BASE_ALLOCATION)
      )
      if (set) this.metaExport = exp
    }
    out.push(ServerCodec.optionAck(option))
    this.host.send(out)
  }
}
