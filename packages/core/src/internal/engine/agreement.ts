/**
 * What the server agreed to on one connection: the greeting it sent, the features both sides turned on, the
 * export's size, flags and block sizes, and the meta contexts. The handshake fills it in; the handle, the
 * command checks, block status and a reconnect read it. Also libnbd's rules for what it accepts of the
 * server's word (block sizes, flags).
 */
import * as Protocol from "../../Protocol.js"

/** Which greeting the server sent. */
export type ProtocolName = "oldstyle" | "newstyle" | "newstyle-fixed"

/** What the server said about the export: its size and flags, and what INFO added. */
export interface ExportInfo {
  size: bigint
  flags: number
  blockSizes: Protocol.BlockSizes | undefined
  canonicalName: string | undefined
  description: string | undefined
}

/**
 * What the server agreed to on one connection, held once: the handle, the command checks, block status and
 * a reconnect all read it from here.
 */
export interface Agreement {
  protocol: ProtocolName | undefined
  /** The handshake flags both sides set (the client's reply to the greeting). */
  handshakeFlags: number | undefined
  structuredReplies: boolean
  extendedHeaders: boolean
  tlsNegotiated: boolean
  info: ExportInfo | undefined
  /** Negotiated meta contexts by id, or undefined when no SET_META_CONTEXT has succeeded. */
  metaContexts: Map<number, string> | undefined
  /**
   * libnbd's meta_valid: the negotiated contexts may be trusted. Set by a successful SET_META_CONTEXT, or by
   * INFO/GO when contexts were requested but structured replies are off or none were added; cleared when
   * the export name changes, INFO/GO fails, a SET begins, or STARTTLS succeeds.
   */
  metaValid: boolean
}

/** An agreement with nothing agreed yet. */
export const emptyAgreement = (): Agreement => ({
  protocol: undefined,
  handshakeFlags: undefined,
  structuredReplies: false,
  extendedHeaders: false,
  tlsNegotiated: false,
  info: undefined,
  metaContexts: undefined,
  metaValid: false
})

/** Validates the advertised block sizes as libnbd does; invalid ones are ignored, not an error. */
export const acceptBlockSizes = (sizes: Protocol.BlockSizes): Protocol.BlockSizes | undefined => {
  const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0
  const { maximum, minimum, preferred } = sizes
  if (!isPow2(minimum) || minimum > 65536) return undefined
  if (!isPow2(preferred) || preferred < 512 || preferred < minimum) return undefined
  if (maximum < preferred || (maximum % minimum !== 0 && maximum !== 0xffffffff)) return undefined
  return sizes
}

/** Fixes up the flags of an export as libnbd does when it learns them: no flag for what was not agreed. */
export const normaliseFlags = (agreement: Agreement, flags: number): number => {
  let f = flags
  if (!agreement.structuredReplies) f &= ~Protocol.TFlag.SEND_DF
  if (!agreement.extendedHeaders) f &= ~Protocol.TFlag.BLOCK_STATUS_PAYLOAD
  if ((f & Protocol.TFlag.SEND_WRITE_ZEROES) === 0) f &= ~Protocol.TFlag.SEND_FAST_ZERO
  return f
}

/** Export info with only what the greeting or EXPORT_NAME says: its size and flags. */
export const exportInfo = (size: bigint, flags: number): ExportInfo => ({
  size,
  flags,
  blockSizes: undefined,
  canonicalName: undefined,
  description: undefined
})

/** libnbd's payload maximum: the advertised maximum clamped to [1 MiB, 64 MiB], else 32 MiB. */
export const payloadMaximum = (info: ExportInfo | undefined): number => {
  const max = info?.blockSizes?.maximum
  if (max === undefined) return Protocol.Limits.DEFAULT_PAYLOAD_MAX
  return Math.min(Protocol.Limits.MAX_REQUEST_SIZE, Math.max(1024 * 1024, max))
}
