import { CmdFlag } from "../../Protocol.js"
import type { Permitted } from "../session/handle.js"

/**
 * One call of the API, as libnbd's generator/API.ml records it: the libnbd name its errors, spans and debug
 * messages carry, the states it is permitted in, and the command flags it may take. The one wrapper
 * (`internal/api/call.ts`) enforces the states and flags, so no call can forget its rule. A call reaches its
 * record by its key (`calls.pread`), never by its name: a misspelt key is a type error. What a call does is
 * said once, in the JSDoc of its export; `packages/node/test/calls-table.test.ts` checks the records against
 * libnbd's list.
 */
export interface Spec {
  readonly name: string
  readonly states: ReadonlyArray<Permitted> | "any"
  /** The command flags the call may be given (libnbd's per-call subset); absent for calls without flags. */
  readonly flags?: number
  /** Whether libnbd has this call (its states are then libnbd's); false for this library's own. */
  readonly libnbd: boolean
}

// The records in libnbd's groups, each keyed by the export of `Nbd` (or `NodeNbd`) that runs it.

/** The handle and its state: made by nbd_create, and the aio_is_* predicates over its state. */
export const handle = {
  make: { name: "nbd_create", states: "any", libnbd: false },
  state: { name: "nbd_state", states: "any", libnbd: false },
  aioIsCreated: { name: "nbd_aio_is_created", states: "any", libnbd: true },
  aioIsConnecting: { name: "nbd_aio_is_connecting", states: "any", libnbd: true },
  aioIsNegotiating: { name: "nbd_aio_is_negotiating", states: "any", libnbd: true },
  aioIsReady: { name: "nbd_aio_is_ready", states: "any", libnbd: true },
  aioIsProcessing: { name: "nbd_aio_is_processing", states: "any", libnbd: true },
  aioIsDead: { name: "nbd_aio_is_dead", states: "any", libnbd: true },
  aioIsClosed: { name: "nbd_aio_is_closed", states: "any", libnbd: true }
} as const satisfies Record<string, Spec>

/**
 * The connect calls: `Nbd`'s on a socket, and the transports' (`NodeNbd`'s), which begin through
 * `aioConnectSocket` under their own record.
 */
export const connecting = {
  aioConnectSocket: { name: "nbd_aio_connect_socket", states: ["created"], libnbd: true },
  connectSocket: { name: "nbd_connect_socket", states: ["created"], libnbd: true },
  connectUri: { name: "nbd_connect_uri", states: ["created"], libnbd: true },
  aioConnectUri: { name: "nbd_aio_connect_uri", states: ["created"], libnbd: true },
  connectUnix: { name: "nbd_connect_unix", states: ["created"], libnbd: true },
  aioConnectUnix: { name: "nbd_aio_connect_unix", states: ["created"], libnbd: true },
  connectTcp: { name: "nbd_connect_tcp", states: ["created"], libnbd: true },
  aioConnectTcp: { name: "nbd_aio_connect_tcp", states: ["created"], libnbd: true },
  connectCommand: { name: "nbd_connect_command", states: ["created"], libnbd: true },
  aioConnectCommand: { name: "nbd_aio_connect_command", states: ["created"], libnbd: true },
  connectSystemdSocketActivation: { name: "nbd_connect_systemd_socket_activation", states: ["created"], libnbd: true },
  aioConnectSystemdSocketActivation: {
    name: "nbd_aio_connect_systemd_socket_activation",
    states: ["created"],
    libnbd: true
  }
} as const satisfies Record<string, Spec>

/** A connection once begun: waiting for its handshake, its URI, the subprocess its transport started. */
export const connection = {
  awaitConnected: { name: "nbd_connect", states: "any", libnbd: false },
  getUri: { name: "nbd_get_uri", states: ["connecting", "negotiating", "connected", "closed", "dead"], libnbd: true },
  getSubprocessPid: { name: "nbd_get_subprocess_pid", states: "any", libnbd: true },
  killSubprocess: { name: "nbd_kill_subprocess", states: "any", libnbd: true }
} as const satisfies Record<string, Spec>

/** The settings: each set_* and get_* pair, checked against libnbd's states. */
export const settings = {
  setExportName: { name: "nbd_set_export_name", states: ["created", "negotiating"], libnbd: true },
  getExportName: { name: "nbd_get_export_name", states: "any", libnbd: true },
  setHandleName: { name: "nbd_set_handle_name", states: "any", libnbd: true },
  getHandleName: { name: "nbd_get_handle_name", states: "any", libnbd: true },
  setOptMode: { name: "nbd_set_opt_mode", states: ["created"], libnbd: true },
  getOptMode: { name: "nbd_get_opt_mode", states: "any", libnbd: true },
  setTls: { name: "nbd_set_tls", states: ["created"], libnbd: true },
  getTls: { name: "nbd_get_tls", states: "any", libnbd: true },
  setTlsCertificates: { name: "nbd_set_tls_certificates", states: ["created"], libnbd: true },
  getTlsCertificates: { name: "nbd_get_tls_certificates", states: "any", libnbd: false },
  setTlsVerifyPeer: { name: "nbd_set_tls_verify_peer", states: ["created"], libnbd: true },
  getTlsVerifyPeer: { name: "nbd_get_tls_verify_peer", states: "any", libnbd: true },
  setTlsUsername: { name: "nbd_set_tls_username", states: ["created"], libnbd: true },
  getTlsUsername: { name: "nbd_get_tls_username", states: "any", libnbd: true },
  setTlsHostname: { name: "nbd_set_tls_hostname", states: ["created"], libnbd: true },
  getTlsHostname: { name: "nbd_get_tls_hostname", states: "any", libnbd: true },
  setTlsPskFile: { name: "nbd_set_tls_psk_file", states: ["created"], libnbd: true },
  getTlsPskFile: { name: "nbd_get_tls_psk_file", states: "any", libnbd: false },
  setTlsPriority: { name: "nbd_set_tls_priority", states: ["created"], libnbd: true },
  getTlsPriority: { name: "nbd_get_tls_priority", states: "any", libnbd: true },
  setRequestStructuredReplies: { name: "nbd_set_request_structured_replies", states: ["created"], libnbd: true },
  getRequestStructuredReplies: { name: "nbd_get_request_structured_replies", states: "any", libnbd: true },
  setRequestExtendedHeaders: { name: "nbd_set_request_extended_headers", states: ["created"], libnbd: true },
  getRequestExtendedHeaders: { name: "nbd_get_request_extended_headers", states: "any", libnbd: true },
  setRequestMetaContext: { name: "nbd_set_request_meta_context", states: ["created", "negotiating"], libnbd: true },
  getRequestMetaContext: { name: "nbd_get_request_meta_context", states: "any", libnbd: true },
  addMetaContext: { name: "nbd_add_meta_context", states: ["created", "negotiating"], libnbd: true },
  clearMetaContexts: { name: "nbd_clear_meta_contexts", states: ["created", "negotiating"], libnbd: true },
  getMetaContexts: { name: "nbd_get_meta_contexts", states: "any", libnbd: false },
  setFullInfo: { name: "nbd_set_full_info", states: ["created", "negotiating"], libnbd: true },
  getFullInfo: { name: "nbd_get_full_info", states: "any", libnbd: true },
  setRequestBlockSize: { name: "nbd_set_request_block_size", states: ["created", "negotiating"], libnbd: true },
  getRequestBlockSize: { name: "nbd_get_request_block_size", states: "any", libnbd: true },
  setHandshakeFlags: { name: "nbd_set_handshake_flags", states: ["created"], libnbd: true },
  getHandshakeFlags: { name: "nbd_get_handshake_flags", states: "any", libnbd: true },
  setStrictMode: { name: "nbd_set_strict_mode", states: "any", libnbd: true },
  getStrictMode: { name: "nbd_get_strict_mode", states: "any", libnbd: true },
  setPreadInitialize: { name: "nbd_set_pread_initialize", states: "any", libnbd: true },
  getPreadInitialize: { name: "nbd_get_pread_initialize", states: "any", libnbd: true },
  setDebug: { name: "nbd_set_debug", states: "any", libnbd: true },
  getDebug: { name: "nbd_get_debug", states: "any", libnbd: true }
} as const satisfies Record<string, Spec>

/** Option mode: the opt_* calls, one option exchange each while the handle negotiates. */
export const options = {
  optGo: { name: "nbd_opt_go", states: ["negotiating"], libnbd: true },
  optInfo: { name: "nbd_opt_info", states: ["negotiating"], libnbd: true },
  optAbort: { name: "nbd_opt_abort", states: ["negotiating"], libnbd: true },
  optList: { name: "nbd_opt_list", states: ["negotiating"], libnbd: true },
  optListMetaContext: { name: "nbd_opt_list_meta_context", states: ["negotiating"], libnbd: true },
  optSetMetaContext: { name: "nbd_opt_set_meta_context", states: ["negotiating"], libnbd: true },
  optStructuredReply: { name: "nbd_opt_structured_reply", states: ["negotiating"], libnbd: true },
  optExtendedHeaders: { name: "nbd_opt_extended_headers", states: ["negotiating"], libnbd: true },
  optStarttls: { name: "nbd_opt_starttls", states: ["negotiating"], libnbd: true }
} as const satisfies Record<string, Spec>

/** What the handshake learned of the export and the connection: size, flags, block sizes, negotiated features. */
export const exportInfo = {
  getSize: { name: "nbd_get_size", states: ["negotiating", "connected", "closed"], libnbd: true },
  getBlockSize: { name: "nbd_get_block_size", states: ["negotiating", "connected", "closed"], libnbd: true },
  isReadOnly: { name: "nbd_is_read_only", states: ["negotiating", "connected", "closed"], libnbd: true },
  canFlush: { name: "nbd_can_flush", states: ["negotiating", "connected", "closed"], libnbd: true },
  canFua: { name: "nbd_can_fua", states: ["negotiating", "connected", "closed"], libnbd: true },
  isRotational: { name: "nbd_is_rotational", states: ["negotiating", "connected", "closed"], libnbd: true },
  canTrim: { name: "nbd_can_trim", states: ["negotiating", "connected", "closed"], libnbd: true },
  canZero: { name: "nbd_can_zero", states: ["negotiating", "connected", "closed"], libnbd: true },
  canFastZero: { name: "nbd_can_fast_zero", states: ["negotiating", "connected", "closed"], libnbd: true },
  canDf: { name: "nbd_can_df", states: ["negotiating", "connected", "closed"], libnbd: true },
  canMultiConn: { name: "nbd_can_multi_conn", states: ["negotiating", "connected", "closed"], libnbd: true },
  canCache: { name: "nbd_can_cache", states: ["negotiating", "connected", "closed"], libnbd: true },
  canBlockStatusPayload: {
    name: "nbd_can_block_status_payload",
    states: ["negotiating", "connected", "closed"],
    libnbd: true
  },
  canMetaContext: { name: "nbd_can_meta_context", states: ["negotiating", "connected", "closed"], libnbd: true },
  getProtocol: { name: "nbd_get_protocol", states: ["negotiating", "connected", "closed"], libnbd: true },
  getCanonicalExportName: {
    name: "nbd_get_canonical_export_name",
    states: ["negotiating", "connected", "closed"],
    libnbd: true
  },
  getExportDescription: {
    name: "nbd_get_export_description",
    states: ["negotiating", "connected", "closed"],
    libnbd: true
  },
  getStructuredRepliesNegotiated: {
    name: "nbd_get_structured_replies_negotiated",
    states: ["negotiating", "connected", "closed"],
    libnbd: true
  },
  getExtendedHeadersNegotiated: {
    name: "nbd_get_extended_headers_negotiated",
    states: ["negotiating", "connected", "closed"],
    libnbd: true
  },
  getTlsNegotiated: { name: "nbd_get_tls_negotiated", states: ["negotiating", "connected", "closed"], libnbd: true },
  stats: { name: "nbd_stats", states: "any", libnbd: false }
} as const satisfies Record<string, Spec>

/** The commands: each blocking call with its aio form, the flags libnbd allows it, and the ends of a connection. */
export const commands = {
  aioPread: { name: "nbd_aio_pread", states: ["connected"], flags: 0, libnbd: true },
  pread: { name: "nbd_pread", states: ["connected"], flags: 0, libnbd: true },
  aioPwrite: { name: "nbd_aio_pwrite", states: ["connected"], flags: CmdFlag.FUA | CmdFlag.PAYLOAD_LEN, libnbd: true },
  pwrite: { name: "nbd_pwrite", states: ["connected"], flags: CmdFlag.FUA | CmdFlag.PAYLOAD_LEN, libnbd: true },
  aioFlush: { name: "nbd_aio_flush", states: ["connected"], flags: 0, libnbd: true },
  flush: { name: "nbd_flush", states: ["connected"], flags: 0, libnbd: true },
  aioPreadStructured: { name: "nbd_aio_pread_structured", states: ["connected"], flags: CmdFlag.DF, libnbd: true },
  preadStructured: { name: "nbd_pread_structured", states: ["connected"], flags: CmdFlag.DF, libnbd: true },
  aioTrim: { name: "nbd_aio_trim", states: ["connected"], flags: CmdFlag.FUA, libnbd: true },
  trim: { name: "nbd_trim", states: ["connected"], flags: CmdFlag.FUA, libnbd: true },
  aioCache: { name: "nbd_aio_cache", states: ["connected"], flags: 0, libnbd: true },
  cache: { name: "nbd_cache", states: ["connected"], flags: 0, libnbd: true },
  aioZero: {
    name: "nbd_aio_zero",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
    libnbd: true
  },
  zero: {
    name: "nbd_zero",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
    libnbd: true
  },
  aioBlockStatus: { name: "nbd_aio_block_status", states: ["connected"], flags: CmdFlag.REQ_ONE, libnbd: true },
  blockStatus: { name: "nbd_block_status", states: ["connected"], flags: CmdFlag.REQ_ONE, libnbd: true },
  aioBlockStatusFilter: {
    name: "nbd_aio_block_status_filter",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE | CmdFlag.PAYLOAD_LEN,
    libnbd: true
  },
  blockStatusFilter: {
    name: "nbd_block_status_filter",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE | CmdFlag.PAYLOAD_LEN,
    libnbd: true
  },
  aioInFlight: { name: "nbd_aio_in_flight", states: ["connected", "closed", "dead"], libnbd: true },
  aioDisconnect: { name: "nbd_aio_disconnect", states: ["connected"], flags: 0, libnbd: true },
  shutdown: { name: "nbd_shutdown", states: ["negotiating", "connected"], libnbd: true },
  awaitClosed: { name: "nbd_await_closed", states: "any", libnbd: false }
} as const satisfies Record<string, Spec>

/** The library itself: its name, version and what it supports (no state needed). */
export const library = {
  getPackageName: { name: "nbd_get_package_name", states: "any", libnbd: true },
  getVersion: { name: "nbd_get_version", states: "any", libnbd: true },
  getVersionExtra: { name: "nbd_get_version_extra", states: "any", libnbd: true },
  supportsTls: { name: "nbd_supports_tls", states: "any", libnbd: true },
  supportsUri: { name: "nbd_supports_uri", states: "any", libnbd: true },
  supportsVsock: { name: "nbd_supports_vsock", states: "any", libnbd: true }
} as const satisfies Record<string, Spec>

/** Every call of `Nbd` and `NodeNbd`, by its export name. */
export const calls = {
  ...handle,
  ...connecting,
  ...connection,
  ...settings,
  ...options,
  ...exportInfo,
  ...commands,
  ...library
}

/** The name of a call of `Nbd` or `NodeNbd`. */
export type CallName = keyof typeof calls
