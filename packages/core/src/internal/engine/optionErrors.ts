/**
 * The errors of the handshake, in libnbd's wording and with its errnos: an option's error reply, a refusal, a
 * server that is not fixed newstyle, TLS that cannot be had; and how a reply reads in a debug line.
 */
import type * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"

export const protocolError = (operation: string, message: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "", operation, message })

export const unexpectedReply = (operation: string, option: number): NbdError.ProtocolError =>
  protocolError(operation, `handshake: unexpected option reply type to ${Protocol.optionName(option)}`)

export const escape = (s: string): string =>
  s.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)

/** libnbd's errno and wording for an option error reply (handle_reply_error). */
export const optionErrorOf = (
  exportName: string,
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
        return ["ENOENT", `the server has no export named '${exportName}'`]
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

/** An option error as a call fails with it: libnbd reports a reply without an errno of its own as ENOTSUP. */
export const refusedWith = (error: NbdError.OptionError): NbdError.OptionError =>
  error.errno === "" ? new NbdError.OptionError({ ...error, errno: "ENOTSUP" }) : error

/** The refusal of an option that needs fixed newstyle, on a server that is not. */
export const notFixedNewstyle = (operation: string): NbdError.OptionError =>
  new NbdError.OptionError({
    errno: "ENOTSUP",
    operation,
    option: 0,
    replyType: 0,
    message: "server is not using fixed newstyle protocol"
  })

export const tlsUnavailable = (operation: string, why: string): NbdError.OptionError =>
  new NbdError.OptionError({
    errno: "ENOTSUP",
    operation,
    option: Protocol.Opt.STARTTLS,
    replyType: 0,
    message: `handshake: ${why}, but handle TLS setting is 'require' (2)`
  })

export const plaintextAfterAck = (operation: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({
    errno: "EPROTO",
    operation,
    message: "handshake: server sent data after accepting NBD_OPT_STARTTLS, outside TLS"
  })

export const describeReply = (reply: ClientCodec.OptionReply): string =>
  reply._tag === "Error"
    ? `Error 0x${reply.type.toString(16)}${reply.message ? `: ${escape(reply.message)}` : ""}`
    : reply._tag === "MetaContext"
      ? `MetaContext ${reply.id} ${escape(reply.name)}`
      : reply._tag
