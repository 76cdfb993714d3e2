import * as Effect from "effect/Effect"
import * as ClientCodec from "../../ClientCodec.js"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import type * as Transport from "../../Transport.js"
import type { Connection } from "./connection.js"
import * as debug from "../api/debug.js"
import type { ExportInfo, HandleImpl } from "./handle.js"
import { acceptBlockSizes, normaliseFlags, tlsSettings } from "./handle.js"

const protocolError = (operation: string, message: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "", operation, message })

const escape = (s: string): string =>
  s.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

/** libnbd's errno and wording for an option error reply (handle_reply_error). */
export const optionErrorOf = (
  h: HandleImpl,
  operation: string,
  reply: { readonly option: number; readonly type: number; readonly message: string }
): NbdError.OptionError => {
  const [errno, text] = ((): [NbdError.Errno, string] => {
    switch (reply.type) {
      case Protocol.Rep.ERR_UNSUP:
        return ["ENOTSUP", "the operation is not supported by the server"]
      case Protocol.Rep.ERR_POLICY:
        return ["", "server policy prevents the operation"]
      case Protocol.Rep.ERR_PLATFORM:
        return ["", "the operation is not supported by the server platform"]
      case Protocol.Rep.ERR_INVALID:
        return ["EINVAL", "the server rejected this operation as invalid"]
      case Protocol.Rep.ERR_TOO_BIG:
        return ["EINVAL", "the operation is too large to process"]
      case Protocol.Rep.ERR_TLS_REQD:
        return ["ENOTSUP", "the server requires TLS encryption first"]
      case Protocol.Rep.ERR_UNKNOWN:
        return ["ENOENT", `the server has no export named '${h.settings.exportName}'`]
      case Protocol.Rep.ERR_SHUTDOWN:
        return ["ESHUTDOWN", "the server is shutting down"]
      case Protocol.Rep.ERR_BLOCK_SIZE_REQD:
        return ["EINVAL", "the server requires specific block sizes"]
      case Protocol.Rep.ERR_EXT_HEADER_REQD:
        return ["EINVAL", "the server requires extended headers"]
      default:
        return ["", `handshake: unknown reply from the server: 0x${reply.type.toString(16)}`]
    }
  })()
  return new NbdError.OptionError({
    errno,
    operation,
    option: reply.option,
    replyType: reply.type,
    message: `${Protocol.optionName(reply.option)}: ${text}${reply.message ? `: ${escape(reply.message)}` : ""}`
  })
}

const sendOption = (conn: Connection, option: number, data?: Uint8Array): void =>
  conn.engine.send(ClientCodec.encodeOption(option, data))

const readReply = (conn: Connection, option: number) =>
  conn.awaitMessage(() => conn.engine.handshake.decodeOptionReply(option))

/** Sends an option and collects its replies up to the final ACK or error, logging each when debug is on. */
export const exchange = (
  h: HandleImpl,
  conn: Connection,
  option: number,
  data: Uint8Array | undefined,
  operation: string
): Effect.Effect<
  { readonly replies: ReadonlyArray<ClientCodec.OptionReply>; readonly final: ClientCodec.OptionReply },
  NbdError.NbdError
> =>
  Effect.gen(function* () {
    const name = Protocol.optionName(option)
    yield* debug.log(h, operation, () => `sending option ${name} (${data?.length ?? 0} bytes of data)`)
    sendOption(conn, option, data)
    const replies: Array<ClientCodec.OptionReply> = []
    while (true) {
      const reply = yield* readReply(conn, option)
      yield* debug.log(h, operation, () => `received reply ${describeReply(reply)} to ${name}`)
      if (reply._tag === "Ack" || reply._tag === "Error") return { replies, final: reply }
      replies.push(reply)
    }
  })

const describeReply = (reply: ClientCodec.OptionReply): string =>
  reply._tag === "Error"
    ? `Error 0x${reply.type.toString(16)}${reply.message ? `: ${escape(reply.message)}` : ""}`
    : reply._tag === "MetaContext"
      ? `MetaContext ${reply.id} ${escape(reply.name)}`
      : reply._tag

/** NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS: true when the server agreed. */
export const negotiateFeature = (
  h: HandleImpl,
  conn: Connection,
  option: typeof Protocol.Opt.STRUCTURED_REPLY | typeof Protocol.Opt.EXTENDED_HEADERS,
  operation = "handshake"
): Effect.Effect<boolean, NbdError.NbdError> =>
  Effect.map(exchange(h, conn, option, undefined, operation), ({ final, replies }) => {
    if (replies.length > 0 || final._tag !== "Ack") return false
    if (option === Protocol.Opt.EXTENDED_HEADERS) h.extendedHeaders = true
    h.structuredReplies = true
    return true
  })

/**
 * NBD_OPT_SET_META_CONTEXT or NBD_OPT_LIST_META_CONTEXT with the given queries; returns the context names in
 * the server's order. LIST is stateless (its replies may all carry id 0, as qemu-nbd's do); SET replaces the
 * negotiated contexts and makes them valid once the server acknowledges.
 */
export const metaContextExchange = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  option: typeof Protocol.Opt.SET_META_CONTEXT | typeof Protocol.Opt.LIST_META_CONTEXT,
  queries: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<string>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const set = option === Protocol.Opt.SET_META_CONTEXT
    if (set) resetMetaContexts(h)
    const data = ClientCodec.encodeMetaContextRequest(h.settings.exportName, queries)
    const { final, replies } = yield* exchange(h, conn, option, data, operation)
    const names: Array<string> = []
    const contexts = new Map<number, string>()
    for (const reply of replies) {
      if (reply._tag !== "MetaContext")
        return yield* Effect.fail(
          protocolError(operation, `handshake: unexpected option reply type to ${Protocol.optionName(option)}`)
        )
      names.push(reply.name)
      contexts.set(reply.id, reply.name)
    }
    if (set) h.metaContexts = contexts
    if (final._tag === "Error") {
      const error = optionErrorOf(h, operation, final)
      return yield* Effect.fail(error.errno === "" ? new NbdError.OptionError({ ...error, errno: "ENOTSUP" }) : error)
    }
    if (set) h.metaValid = true
    return names
  })

/** Forgets the negotiated contexts before a SET replaces them (libnbd empties its list and clears meta_valid). */
const resetMetaContexts = (h: HandleImpl): void => {
  h.metaContexts = new Map()
  h.metaValid = false
}

/** NBD_OPT_INFO or NBD_OPT_GO with the info requests the settings ask for. */
const infoExchange = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  option: typeof Protocol.Opt.INFO | typeof Protocol.Opt.GO
): Effect.Effect<ClientCodec.OptionReply, NbdError.NbdError> =>
  Effect.gen(function* () {
    const infos: Array<number> = []
    if (h.settings.requestBlockSize) infos.push(Protocol.Info.BLOCK_SIZE)
    if (h.settings.fullInfo) infos.push(Protocol.Info.NAME, Protocol.Info.DESCRIPTION)
    const data = ClientCodec.encodeInfoRequest(h.settings.exportName, infos)
    const { final, replies } = yield* exchange(h, conn, option, data, operation)
    if (final._tag !== "Ack") return final
    const info: ExportInfo = {
      size: -1n,
      flags: 0,
      blockSizes: undefined,
      canonicalName: undefined,
      description: undefined
    }
    for (const reply of replies) {
      if (reply._tag !== "Info")
        return yield* Effect.fail(
          protocolError(operation, `handshake: unexpected option reply type to ${Protocol.optionName(option)}`)
        )
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
    if (info.size < 0n)
      return yield* Effect.fail(protocolError(operation, "handshake: server did not send export info"))
    yield* setExportInfo(h, operation, info)
    return final
  })

const setExportInfo = (h: HandleImpl, operation: string, info: ExportInfo): Effect.Effect<void, NbdError.NbdError> => {
  if (info.flags === 0)
    return Effect.fail(
      new NbdError.ProtocolError({ errno: "EINVAL", operation, message: "handshake: invalid eflags == 0 from server" })
    )
  info.flags = normaliseFlags(h, info.flags)
  h.info = info
  // No SET was due (no structured replies, or no contexts added): "none negotiated" is then a valid answer.
  if (h.settings.requestMetaContext && (!h.structuredReplies || h.settings.metaContexts.length === 0))
    h.metaValid = true
  return Effect.void
}

/** NBD_OPT_EXPORT_NAME: no error path; a server without the export closes the connection. */
const exportName = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    if (h.extendedHeaders)
      return yield* Effect.fail(
        new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "server does not support NBD_OPT_GO, which extended headers require"
        })
      )
    sendOption(conn, Protocol.Opt.EXPORT_NAME, ClientCodec.encodeString(h.settings.exportName))
    const noZeroes = ((h.handshakeFlags ?? 0) & Protocol.FLAG_NO_ZEROES) !== 0
    const reply = yield* conn.awaitMessage(() => conn.engine.handshake.decodeExportNameReply(noZeroes))
    yield* setExportInfo(h, operation, {
      size: reply.size,
      flags: reply.transmissionFlags,
      blockSizes: undefined,
      canonicalName: undefined,
      description: undefined
    })
  })

/**
 * Enters the transmission phase. Bytes that came with the last handshake message are decoded first: when they
 * end the connection, the handshake fails with that error instead of reporting Ready.
 */
const finish = (h: HandleImpl, conn: Connection): Effect.Effect<void, NbdError.NbdError> =>
  Effect.zipRight(
    conn.startTransmission(),
    Effect.suspend(() => {
      // A reconnect moves to Ready itself, once it has checked the export and replayed what waited.
      const ended = conn.ended
      return ended === undefined && h.recovery === undefined ? h.setState(HandleState.Ready) : Effect.void
    })
  )

/**
 * SET_META_CONTEXT when asked for, then INFO or GO. Returns the server's error reply for INFO/GO (the caller
 * decides whether it is fatal); GO's ERR_UNSUP falls back to EXPORT_NAME.
 */
export const goOrInfo = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  option: typeof Protocol.Opt.INFO | typeof Protocol.Opt.GO
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    if (h.protocol === "newstyle") {
      if (option === Protocol.Opt.INFO) return yield* Effect.fail(notFixedNewstyle(operation))
      yield* exportName(h, conn, operation)
      return yield* finish(h, conn)
    }
    const contexts = h.settings.metaContexts
    if (h.settings.requestMetaContext) resetMetaContexts(h)
    if (h.settings.requestMetaContext && h.structuredReplies && contexts.length > 0) {
      // A refusal leaves no contexts negotiated; the connection goes on, as with libnbd, and the answer
      // "none" is valid only if the server named none before refusing.
      yield* Effect.catchIf(
        metaContextExchange(h, conn, operation, Protocol.Opt.SET_META_CONTEXT, contexts),
        (e) => e._tag === "OptionError",
        () =>
          Effect.sync(() => {
            h.metaValid = (h.metaContexts?.size ?? 0) === 0
          })
      )
    }
    const final = yield* infoExchange(h, conn, operation, option)
    if (final._tag === "Ack") {
      if (option === Protocol.Opt.GO) yield* finish(h, conn)
      return
    }
    if (final._tag === "Error" && final.type === Protocol.Rep.ERR_UNSUP && option === Protocol.Opt.GO) {
      yield* exportName(h, conn, operation)
      return yield* finish(h, conn)
    }
    h.metaValid = false
    const error =
      final._tag === "Error" ? optionErrorOf(h, operation, final) : protocolError(operation, "unexpected reply")
    return yield* Effect.fail(
      error._tag === "OptionError" && error.errno === ""
        ? new NbdError.OptionError({ ...error, errno: "ENOTSUP" })
        : error
    )
  })

export const notFixedNewstyle = (operation: string): NbdError.OptionError =>
  new NbdError.OptionError({
    errno: "ENOTSUP",
    operation,
    option: 0,
    replyType: 0,
    message: "server is not using fixed newstyle protocol"
  })

/** Sends NBD_OPT_ABORT and shuts the write side; libnbd does not wait for the ACK. */
export const sendAbort = (conn: Connection): void => {
  sendOption(conn, Protocol.Opt.ABORT)
  conn.engine.endWrites()
}

const tlsUnavailable = (operation: string, why: string): NbdError.OptionError =>
  new NbdError.OptionError({
    errno: "ENOTSUP",
    operation,
    option: Protocol.Opt.STARTTLS,
    replyType: 0,
    message: `handshake: ${why}, but handle TLS setting is 'require' (2)`
  })

const plaintextAfterAck = (operation: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({
    errno: "EPROTO",
    operation,
    message: "handshake: server sent data after accepting NBD_OPT_STARTTLS, outside TLS"
  })

/**
 * NBD_OPT_STARTTLS: false when the server refused; true once it accepted and the transport finished the TLS
 * handshake on the live connection. What was negotiated in plaintext (structured replies, extended headers,
 * meta contexts, export info) is forgotten, as the server forgets it.
 */
export const starttls = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  startTls: NonNullable<Transport.Service["startTls"]>
): Effect.Effect<boolean, NbdError.NbdError> =>
  Effect.gen(function* () {
    const { final, replies } = yield* exchange(h, conn, Protocol.Opt.STARTTLS, undefined, operation)
    if (replies.length > 0)
      return yield* Effect.fail(protocolError(operation, "handshake: unexpected option reply type to NBD_OPT_STARTTLS"))
    if (final._tag !== "Ack") return false
    if (h.tlsNegotiated)
      return yield* Effect.fail(
        new NbdError.ProtocolError({
          errno: "EPROTO",
          operation,
          message: "handshake: server accepted NBD_OPT_STARTTLS on a connection already using TLS"
        })
      )
    // The server speaks next only after our ClientHello: bytes already here were injected in plaintext.
    if (conn.engine.handshake.buffered > 0) return yield* Effect.fail(plaintextAfterAck(operation))
    yield* startTls(tlsSettings(h.settings))
    // Bytes read by the plaintext reader before the switch would otherwise be taken as encrypted replies.
    if (conn.engine.handshake.buffered > 0) return yield* Effect.fail(plaintextAfterAck(operation))
    h.tlsNegotiated = true
    h.structuredReplies = false
    h.extendedHeaders = false
    h.metaContexts = undefined
    h.metaValid = false
    h.info = undefined
    return true
  })

/**
 * The STARTTLS step of the handshake (fixed newstyle, tls != disable). Without a TLS-capable transport "allow"
 * goes on in plaintext without asking and "require" fails; a refusal is fatal only for "require". Either
 * failure sends NBD_OPT_ABORT and nothing else in plaintext.
 */
const tlsStep = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    const mode = h.settings.tls
    if (mode === "disable") return
    const startTls = h.transport?.startTls
    if (startTls === undefined) {
      if (mode === "allow") return
      sendAbort(conn)
      return yield* Effect.fail(tlsUnavailable(operation, "TLS is not available on this transport"))
    }
    const accepted = yield* starttls(h, conn, operation, startTls)
    if (!accepted && mode === "require") {
      sendAbort(conn)
      // libnbd ends in CLOSED rather than DEAD when option mode was asked for.
      if (h.settings.optMode) yield* h.setState(HandleState.Closed)
      return yield* Effect.fail(tlsUnavailable(operation, "server refused TLS"))
    }
  })

/**
 * The whole handshake, in libnbd's order: greeting, client flags, STARTTLS, EXTENDED_HEADERS, STRUCTURED_REPLY, the
 * pause in option mode, SET_META_CONTEXT, GO (or EXPORT_NAME).
 */
export const run = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.zipRight(steps(h, conn, operation), failIfEnded(conn))

/** A connection that ended with an error while the handshake finished fails the connect, whatever state it set. */
const failIfEnded = (conn: Connection): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => (conn.ended?.error === undefined ? Effect.void : Effect.fail(conn.ended.error)))

const steps = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    const greeting = yield* conn.awaitMessage(() => conn.engine.handshake.decodeGreeting())
    const settings = h.settings
    // A reconnect goes straight to the transmission phase: the options a caller chose in option mode are
    // what the settings already say (export name, meta contexts).
    const optMode = settings.optMode && h.recovery === undefined
    if (greeting._tag === "Oldstyle") {
      if (settings.tls === "require") return yield* Effect.fail(tlsUnavailable(operation, "server is oldstyle"))
      if (greeting.globalFlags !== 0)
        return yield* Effect.fail(protocolError(operation, "handshake: oldstyle server should not set gflags"))
      h.protocol = "oldstyle"
      h.handshakeFlags = 0
      yield* setExportInfo(h, operation, {
        size: greeting.size,
        flags: greeting.transmissionFlags,
        blockSizes: undefined,
        canonicalName: undefined,
        description: undefined
      })
      return yield* finish(h, conn)
    }
    const flags = greeting.handshakeFlags & settings.handshakeFlags
    const fixed = (flags & Protocol.FLAG_FIXED_NEWSTYLE) !== 0
    h.handshakeFlags = flags
    h.protocol = fixed ? "newstyle-fixed" : "newstyle"
    if (!fixed && settings.tls === "require")
      return yield* Effect.fail(tlsUnavailable(operation, "server is not using fixed newstyle"))
    conn.engine.send(ClientCodec.encodeClientFlags(flags))
    if (!fixed) {
      if (optMode) return yield* h.setState(HandleState.Negotiating)
      yield* exportName(h, conn, operation)
      return yield* finish(h, conn)
    }
    yield* tlsStep(h, conn, operation)
    if (settings.requestStructuredReplies && settings.requestExtendedHeaders)
      yield* negotiateFeature(h, conn, Protocol.Opt.EXTENDED_HEADERS)
    if (settings.requestStructuredReplies && !h.structuredReplies)
      yield* negotiateFeature(h, conn, Protocol.Opt.STRUCTURED_REPLY)
    if (optMode) return yield* h.setState(HandleState.Negotiating)
    yield* Effect.tapError(goOrInfo(h, conn, operation, Protocol.Opt.GO), (error) =>
      error._tag === "OptionError" ? Effect.sync(() => sendAbort(conn)) : Effect.void
    )
  })
