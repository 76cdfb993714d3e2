/**
 * What a connection is served with, and what its handshake settles: the resolved exports and their faults,
 * the TLS mode, the server-wide settings, and the few facts about an export that both the handshake and
 * the transmission phase tell the client (its transmission flags, which export a name selects). Plain data
 * and pure functions, below every other module of the session.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import type * as ServerCodec from "@effect-nbd/core/ServerCodec"
import type * as Crypto from "node:crypto"
import type * as Tls from "node:tls"
import type * as Backend from "../../Backend.js"
import type * as Flow from "../flow.js"
import type * as Malformed from "../malformed.js"

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

/**
 * What the handshake settled for the transmission phase of one export.
 * @internal
 */
export interface Negotiated {
  readonly structured: boolean
  readonly extended: boolean
  /** SET_META_CONTEXT selected base:allocation for this export: block-status requests are served. */
  readonly blockStatus: boolean
}

/**
 * How a session ends: "graceful" finishes the requests in flight and flushes their replies, "hard" drops
 * the connection at once.
 * @internal
 */
export type Ending = "graceful" | "hard"

/**
 * The id the server gives base:allocation, its one metadata context.
 * @internal
 */
export const BASE_ALLOCATION_ID = 1

const { TFlag } = Protocol

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
