/**
 * The checks a command goes through before the engine queues it, as libnbd makes them: plain functions of
 * what the server agreed to and the handle's strict mode.
 */
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { type Agreement, type ExportInfo, payloadMaximum } from "./agreement.js"
import { invalidArgument } from "./arguments.js"
import type { CommandRequest } from "./pending.js"

const writesData = (type: number) =>
  type === Protocol.Cmd.WRITE || type === Protocol.Cmd.TRIM || type === Protocol.Cmd.WRITE_ZEROES

/** The per-command checks of STRICT_COMMANDS: does the server support this command and these flags. */
const commandSupportError = (
  agreement: Agreement,
  info: ExportInfo,
  spec: CommandRequest
): NbdError.NbdError | undefined => {
  const has = (flag: number) => (info.flags & flag) !== 0
  const op = spec.operation
  const notSupported = (what: string) => invalidArgument(op, `server does not support ${what}`)
  switch (spec.type) {
    case Protocol.Cmd.FLUSH:
      if (!has(Protocol.TFlag.SEND_FLUSH)) return notSupported("flush operations")
      break
    case Protocol.Cmd.TRIM:
      if (!has(Protocol.TFlag.SEND_TRIM)) return notSupported("trim operations")
      break
    case Protocol.Cmd.WRITE_ZEROES:
      if (!has(Protocol.TFlag.SEND_WRITE_ZEROES)) return notSupported("zero operations")
      if (spec.flags & Protocol.CmdFlag.FAST_ZERO && !has(Protocol.TFlag.SEND_FAST_ZERO))
        return notSupported("the fast zero flag")
      break
    case Protocol.Cmd.CACHE:
      if (!has(Protocol.TFlag.SEND_CACHE)) return notSupported("cache operations")
      break
    case Protocol.Cmd.READ:
      if (spec.flags & Protocol.CmdFlag.DF && !has(Protocol.TFlag.SEND_DF)) return notSupported("the DF flag")
      break
    case Protocol.Cmd.BLOCK_STATUS:
      if (!agreement.structuredReplies)
        return new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation: op,
          message: "server does not support structured replies"
        })
      if (!agreement.metaValid || agreement.metaContexts === undefined || agreement.metaContexts.size === 0)
        return new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation: op,
          message:
            "did not negotiate any metadata contexts, either you did not call add_meta_context, or the server does not support any of them"
        })
      break
  }
  if (writesData(spec.type) && has(Protocol.TFlag.READ_ONLY))
    return invalidArgument(op, "server does not support write operations", "EPERM")
  if (spec.flags & Protocol.CmdFlag.FUA && !has(Protocol.TFlag.SEND_FUA)) return notSupported("the FUA flag")
  if (
    spec.type === Protocol.Cmd.WRITE &&
    ((spec.flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0) !== agreement.extendedHeaders
  )
    return invalidArgument(op, "incorrect setting for PAYLOAD_LEN flag")
  return undefined
}

/**
 * Every check libnbd makes before a command leaves the client, in its order, on a connected handle: what the
 * server agreed to, the strict mode's checks (`Protocol.Strict`), and no command after NBD_CMD_DISC. The
 * command's flags were checked against the call's own by the call wrapper, before anything else.
 */
export const commandError = (
  agreement: Agreement,
  strict: number,
  disconnectRequested: boolean,
  spec: CommandRequest,
  offset: number,
  count: number
): NbdError.NbdError | undefined => {
  const op = spec.operation
  const info = agreement.info!
  if (strict & Protocol.Strict.COMMANDS) {
    const error = commandSupportError(agreement, info, spec)
    if (error !== undefined) return error
  }
  if (disconnectRequested) return invalidArgument(op, "cannot request more commands after NBD_CMD_DISC")
  if (spec.type === Protocol.Cmd.FLUSH || spec.type === Protocol.Cmd.DISC) return undefined
  if (strict & Protocol.Strict.ZERO_SIZE && count === 0) return invalidArgument(op, "count cannot be 0")
  if (strict & Protocol.Strict.BOUNDS) {
    const size = info.size
    if (BigInt(offset) > size || BigInt(count) > size - BigInt(offset))
      return invalidArgument(op, "request out of bounds", writesData(spec.type) ? "ENOSPC" : "EINVAL")
  }
  const minimum = info.blockSizes?.minimum
  if (
    strict & Protocol.Strict.ALIGN &&
    minimum !== undefined &&
    minimum > 1 &&
    (offset % minimum !== 0 || count % minimum !== 0)
  )
    return invalidArgument(op, "request is unaligned")
  if (spec.type === Protocol.Cmd.WRITE && strict & Protocol.Strict.PAYLOAD && count > payloadMaximum(info))
    return invalidArgument(op, `request too large: maximum payload size is ${payloadMaximum(info)}`, "ERANGE")
  if ((spec.type === Protocol.Cmd.READ || spec.type === Protocol.Cmd.WRITE) && count > Protocol.Limits.MAX_REQUEST_SIZE)
    return invalidArgument(
      op,
      `request too large: maximum request size is ${Protocol.Limits.MAX_REQUEST_SIZE}`,
      "ERANGE"
    )
  if (!agreement.extendedHeaders && count > 0xffffffff)
    return invalidArgument(op, "count is too large for a server without extended headers", "ERANGE")
  return undefined
}
