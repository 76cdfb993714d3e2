import { CmdFlag } from "../../Protocol.js"
import type { Permitted } from "../session/handle.js"

/**
 * One call of the API, as libnbd's generator/API.ml records it: the libnbd name its errors, spans and debug
 * messages carry, the states it is permitted in, the command flags it may take, and what it does. The one
 * wrapper (`internal/call.ts`) enforces the states and flags, so no call can forget its rule.
 */
export interface Spec {
  readonly name: string
  readonly states: ReadonlyArray<Permitted> | "any"
  /** The command flags the call may be given (libnbd's per-call subset); absent for calls without flags. */
  readonly flags?: number
  /** Whether libnbd has this call (its states are then libnbd's); false for this library's own. */
  readonly libnbd: boolean
  readonly doc: string
}

/** Every call of `Nbd`, by its export name. */
export const calls = {
  make: { name: "nbd_create", states: "any", libnbd: false, doc: "Makes a handle; closing its scope is nbd_close." },
  state: { name: "nbd_state", states: "any", libnbd: false, doc: "The handle's state, held in a SubscriptionRef." },
  aioIsCreated: {
    name: "nbd_aio_is_created",
    states: "any",
    libnbd: true,
    doc: "True in START (before any connect). (unlocked)"
  },
  aioIsConnecting: {
    name: "nbd_aio_is_connecting",
    states: "any",
    libnbd: true,
    doc: "True in CONNECT*/MAGIC/OLDSTYLE/NEWSTYLE groups (connecting, handshaking, option in flight). (unlocked)"
  },
  aioIsNegotiating: {
    name: "nbd_aio_is_negotiating",
    states: "any",
    libnbd: true,
    doc: "True in NEGOTIATING (opt mode pause). (unlocked)"
  },
  aioIsReady: {
    name: "nbd_aio_is_ready",
    states: "any",
    libnbd: true,
    doc: "True in READY (idle or waiting for replies). (unlocked)"
  },
  aioIsProcessing: {
    name: "nbd_aio_is_processing",
    states: "any",
    libnbd: true,
    doc: "True in ISSUE_COMMAND.* or REPLY.* (mid-send/mid-receive). (unlocked)"
  },
  aioIsDead: {
    name: "nbd_aio_is_dead",
    states: "any",
    libnbd: true,
    doc: "True in DEAD (fatal error; only close possible). (unlocked)"
  },
  aioIsClosed: {
    name: "nbd_aio_is_closed",
    states: "any",
    libnbd: true,
    doc: "True in CLOSED (clean shutdown / server EOF). (unlocked)"
  },
  aioConnectSocket: {
    name: "nbd_aio_connect_socket",
    states: ["created"],
    libnbd: true,
    doc: "Begin handshake over connected socket (sets O_NONBLOCK+FD_CLOEXEC; on fcntl failure closes fd)."
  },
  connectSocket: {
    name: "nbd_connect_socket",
    states: ["created"],
    libnbd: true,
    doc: "Use an already-connected socket fd (ownership passes to libnbd on success); jumps straight to handshake."
  },
  awaitConnected: {
    name: "nbd_connect",
    states: "any",
    libnbd: false,
    doc: "Waits for a handshake begun by an aio connect to finish."
  },
  getUri: {
    name: "nbd_get_uri",
    states: ["connecting", "negotiating", "connected", "closed", "dead"],
    libnbd: true,
    doc: 'Best-effort URI to reconnect (e.g. "nbd+unix:///?socket=/p", "nbd://127.0.0.1:PORT/"); fails for connect_socket.'
  },
  getSubprocessPid: {
    name: "nbd_get_subprocess_pid",
    states: "any",
    libnbd: true,
    doc: "PID of subprocess; ESRCH if none."
  },
  killSubprocess: {
    name: "nbd_kill_subprocess",
    states: "any",
    libnbd: true,
    doc: "Send signal (0 -> SIGTERM) to connect_command/SA subprocess; ESRCH if none."
  },
  setExportName: {
    name: "nbd_set_export_name",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: 'Set export name (default ""); >4096 bytes -> ENAMETOOLONG; changing it wipes size/flags/meta info learned by opt_info.'
  },
  getExportName: { name: "nbd_get_export_name", states: "any", libnbd: true, doc: "Get requested export name." },
  setHandleName: {
    name: "nbd_set_handle_name",
    states: "any",
    libnbd: true,
    doc: 'Set handle name used in debug output (default "nbd1","nbd2",...).'
  },
  getHandleName: { name: "nbd_get_handle_name", states: "any", libnbd: true, doc: "Get handle name." },
  setOptMode: {
    name: "nbd_set_opt_mode",
    states: ["created"],
    libnbd: true,
    doc: "Enable option mode: connect pauses in NEGOTIATING (newstyle servers only) instead of going to READY."
  },
  getOptMode: { name: "nbd_get_opt_mode", states: "any", libnbd: true, doc: "Return opt-mode flag." },
  setTls: {
    name: "nbd_set_tls",
    states: ["created"],
    libnbd: true,
    doc: "TLS mode enum: DISABLE=0 (default), ALLOW=1, REQUIRE=2; bad value -> EINVAL; ENOTSUP if built without TLS."
  },
  getTls: { name: "nbd_get_tls", states: "any", libnbd: true, doc: "Return TLS request setting." },
  setTlsCertificates: {
    name: "nbd_set_tls_certificates",
    states: ["created"],
    libnbd: true,
    doc: "Set X.509 certificates directory."
  },
  getTlsCertificates: {
    name: "nbd_get_tls_certificates",
    states: "any",
    libnbd: false,
    doc: "Get the X.509 certificates directory."
  },
  setTlsVerifyPeer: {
    name: "nbd_set_tls_verify_peer",
    states: ["created"],
    libnbd: true,
    doc: "Verify server certificate (default true)."
  },
  getTlsVerifyPeer: { name: "nbd_get_tls_verify_peer", states: "any", libnbd: true, doc: "Return verify-peer flag." },
  setTlsUsername: {
    name: "nbd_set_tls_username",
    states: ["created"],
    libnbd: true,
    doc: "TLS (PSK) username; default = local login name."
  },
  getTlsUsername: { name: "nbd_get_tls_username", states: "any", libnbd: true, doc: "Get TLS username." },
  setTlsHostname: {
    name: "nbd_set_tls_hostname",
    states: ["created"],
    libnbd: true,
    doc: "Override hostname used to verify server certificate."
  },
  getTlsHostname: { name: "nbd_get_tls_hostname", states: "any", libnbd: true, doc: "Get effective TLS hostname." },
  setTlsPskFile: {
    name: "nbd_set_tls_psk_file",
    states: ["created"],
    libnbd: true,
    doc: "Set PSK keys file (enables PSK auth)."
  },
  getTlsPskFile: { name: "nbd_get_tls_psk_file", states: "any", libnbd: false, doc: "Get the PSK keys file." },
  setTlsPriority: {
    name: "nbd_set_tls_priority",
    states: ["created"],
    libnbd: true,
    doc: 'Set the GnuTLS priority string (default "NORMAL"). (1.24)'
  },
  getTlsPriority: {
    name: "nbd_get_tls_priority",
    states: "any",
    libnbd: true,
    doc: "Get the TLS priority string, or the default when none was set. (1.24)"
  },
  setRequestStructuredReplies: {
    name: "nbd_set_request_structured_replies",
    states: ["created"],
    libnbd: true,
    doc: "Try NBD_OPT_STRUCTURED_REPLY during connect (default true); false also disables EH request."
  },
  getRequestStructuredReplies: {
    name: "nbd_get_request_structured_replies",
    states: "any",
    libnbd: true,
    doc: "Return request-SR flag."
  },
  setRequestExtendedHeaders: {
    name: "nbd_set_request_extended_headers",
    states: ["created"],
    libnbd: true,
    doc: "Try NBD_OPT_EXTENDED_HEADERS during connect (default true; ignored if request_structured_replies=false)."
  },
  getRequestExtendedHeaders: {
    name: "nbd_get_request_extended_headers",
    states: "any",
    libnbd: true,
    doc: "Return request-EH flag."
  },
  setRequestMetaContext: {
    name: "nbd_set_request_meta_context",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: "Whether connect/opt_go/opt_info automatically send NBD_OPT_SET_META_CONTEXT with the add_meta_context list (default true)."
  },
  getRequestMetaContext: {
    name: "nbd_get_request_meta_context",
    states: "any",
    libnbd: true,
    doc: "Return auto-meta-context flag."
  },
  addMetaContext: {
    name: "nbd_add_meta_context",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: "Append a meta context name/query to request list (>4096 bytes -> ENAMETOOLONG)."
  },
  clearMetaContexts: {
    name: "nbd_clear_meta_contexts",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: "Empty the requested meta-context list."
  },
  getMetaContexts: {
    name: "nbd_get_meta_contexts",
    states: "any",
    libnbd: false,
    doc: "The meta contexts to request (get_nr_meta_contexts and get_meta_context)."
  },
  setFullInfo: {
    name: "nbd_set_full_info",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: "Whether OPT_GO/INFO also requests NBD_INFO_NAME + NBD_INFO_DESCRIPTION (default false)."
  },
  getFullInfo: { name: "nbd_get_full_info", states: "any", libnbd: true, doc: "Return full-info flag." },
  setRequestBlockSize: {
    name: "nbd_set_request_block_size",
    states: ["created", "negotiating"],
    libnbd: true,
    doc: "Whether OPT_GO/INFO requests NBD_INFO_BLOCK_SIZE (default true)."
  },
  getRequestBlockSize: {
    name: "nbd_get_request_block_size",
    states: "any",
    libnbd: true,
    doc: "Return request-block-size flag."
  },
  setHandshakeFlags: {
    name: "nbd_set_handshake_flags",
    states: ["created"],
    libnbd: true,
    doc: "Client handshake flags mask (FIXED_NEWSTYLE=1, NO_ZEROES=2; default both); unknown bit -> EINVAL."
  },
  getHandshakeFlags: {
    name: "nbd_get_handshake_flags",
    states: "any",
    libnbd: true,
    doc: "Before connect: flags client will offer; after: flags agreed (client & server)."
  },
  setStrictMode: {
    name: "nbd_set_strict_mode",
    states: "any",
    libnbd: true,
    doc: "Client-side strictness bitmask (see STRICT_* table; default STRICT_MASK=0x7f). Allowed in any state."
  },
  getStrictMode: { name: "nbd_get_strict_mode", states: "any", libnbd: true, doc: "Return strictness flags." },
  setPreadInitialize: {
    name: "nbd_set_pread_initialize",
    states: "any",
    libnbd: true,
    doc: "Whether read buffers are zeroed before any error check (default true)."
  },
  getPreadInitialize: {
    name: "nbd_get_pread_initialize",
    states: "any",
    libnbd: true,
    doc: "Return pread-initialize flag."
  },
  setDebug: {
    name: "nbd_set_debug",
    states: "any",
    libnbd: true,
    doc: "Set/clear debug flag (default false unless env LIBNBD_DEBUG=1 at create time)."
  },
  getDebug: { name: "nbd_get_debug", states: "any", libnbd: true, doc: "Return debug flag." },
  optGo: {
    name: "nbd_opt_go",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_GO (or EXPORT_NAME on non-fixed newstyle); success -> READY, failure -> stays NEGOTIATING (or DEAD)."
  },
  optInfo: {
    name: "nbd_opt_info",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_INFO for current export name (plus auto SET_META_CONTEXT); fills size/flags/block sizes."
  },
  optAbort: {
    name: "nbd_opt_abort",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_ABORT, shut writes -> CLOSED (DEAD on non-fixed newstyle)."
  },
  optList: {
    name: "nbd_opt_list",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_LIST; callback(name,description) per export; returns count; ENOTSUP etc. on server error."
  },
  optListMetaContext: {
    name: "nbd_opt_list_meta_context",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_LIST_META_CONTEXT with add_meta_context list as queries; callback(name) per reply; returns count; stateless."
  },
  optSetMetaContext: {
    name: "nbd_opt_set_meta_context",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_SET_META_CONTEXT with add_meta_context list; replaces negotiated set; returns count."
  },
  optStructuredReply: {
    name: "nbd_opt_structured_reply",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_STRUCTURED_REPLY; true/false per server reply."
  },
  optExtendedHeaders: {
    name: "nbd_opt_extended_headers",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_EXTENDED_HEADERS; true/false per server reply (redundant 2nd request may return false)."
  },
  optStarttls: {
    name: "nbd_opt_starttls",
    states: ["negotiating"],
    libnbd: true,
    doc: "Send NBD_OPT_STARTTLS; true=server accepted+TLS handshake done, false=server refused; -1 only on lost connection."
  },
  getSize: {
    name: "nbd_get_size",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "Export size (EINVAL before export info; EOVERFLOW if > INT64_MAX)."
  },
  getBlockSize: {
    name: "nbd_get_block_size",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "SIZE_MINIMUM=0/PREFERRED=1/MAXIMUM=2 (0=not advertised) or PAYLOAD=3 (libnbd cap: 1M..64M, default 32M)."
  },
  isReadOnly: {
    name: "nbd_is_read_only",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_READ_ONLY."
  },
  canFlush: {
    name: "nbd_can_flush",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_FLUSH."
  },
  canFua: {
    name: "nbd_can_fua",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_FUA."
  },
  isRotational: {
    name: "nbd_is_rotational",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_ROTATIONAL."
  },
  canTrim: {
    name: "nbd_can_trim",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_TRIM."
  },
  canZero: {
    name: "nbd_can_zero",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_WRITE_ZEROES."
  },
  canFastZero: {
    name: "nbd_can_fast_zero",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_FAST_ZERO (forced false if no WRITE_ZEROES)."
  },
  canDf: {
    name: "nbd_can_df",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_DF (forced false without structured replies)."
  },
  canMultiConn: {
    name: "nbd_can_multi_conn",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_CAN_MULTI_CONN."
  },
  canCache: {
    name: "nbd_can_cache",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_SEND_CACHE."
  },
  canBlockStatusPayload: {
    name: "nbd_can_block_status_payload",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "NBD_FLAG_BLOCK_STATUS_PAYLOAD (forced false without extended headers)."
  },
  canMetaContext: {
    name: "nbd_can_meta_context",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "Whether named context was negotiated; EINVAL if contexts were requested but no successful SET yet."
  },
  getProtocol: {
    name: "nbd_get_protocol",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: '"oldstyle", "newstyle" or "newstyle-fixed".'
  },
  getCanonicalExportName: {
    name: "nbd_get_canonical_export_name",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "Server-reported canonical name (NBD_INFO_NAME); ENOTSUP if not advertised, EINVAL if no export info yet."
  },
  getExportDescription: {
    name: "nbd_get_export_description",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "Server-reported description (NBD_INFO_DESCRIPTION); ENOTSUP if not advertised."
  },
  getStructuredRepliesNegotiated: {
    name: "nbd_get_structured_replies_negotiated",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "True if SR negotiated (sticky; also true when EH negotiated)."
  },
  getExtendedHeadersNegotiated: {
    name: "nbd_get_extended_headers_negotiated",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "True if extended headers negotiated (sticky)."
  },
  getTlsNegotiated: {
    name: "nbd_get_tls_negotiated",
    states: ["negotiating", "connected", "closed"],
    libnbd: true,
    doc: "True if TLS actually negotiated on this connection."
  },
  stats: { name: "nbd_stats", states: "any", libnbd: false, doc: "The byte and chunk counters (the stats_* calls)." },
  aioPread: {
    name: "nbd_aio_pread",
    states: ["connected"],
    flags: 0,
    libnbd: true,
    doc: "Async pread; returns cookie (>=1); buf must stay valid until completion."
  },
  pread: {
    name: "nbd_pread",
    states: ["connected"],
    flags: 0,
    libnbd: true,
    doc: "Read count bytes at offset into buf; all-or-nothing. Max 64 MiB (ERANGE)."
  },
  aioPwrite: {
    name: "nbd_aio_pwrite",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.PAYLOAD_LEN,
    libnbd: true,
    doc: "Async pwrite."
  },
  pwrite: {
    name: "nbd_pwrite",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.PAYLOAD_LEN,
    libnbd: true,
    doc: "Write buf at offset; flags FUA, PAYLOAD_LEN (auto-managed)."
  },
  aioFlush: { name: "nbd_aio_flush", states: ["connected"], flags: 0, libnbd: true, doc: "Async flush." },
  flush: { name: "nbd_flush", states: ["connected"], flags: 0, libnbd: true, doc: "NBD_CMD_FLUSH." },
  aioPreadStructured: {
    name: "nbd_aio_pread_structured",
    states: ["connected"],
    flags: CmdFlag.DF,
    libnbd: true,
    doc: "Async pread_structured."
  },
  preadStructured: {
    name: "nbd_pread_structured",
    states: ["connected"],
    flags: CmdFlag.DF,
    libnbd: true,
    doc: "ERROR,&error) per structured chunk; flag DF allowed."
  },
  aioTrim: { name: "nbd_aio_trim", states: ["connected"], flags: CmdFlag.FUA, libnbd: true, doc: "Async trim." },
  trim: { name: "nbd_trim", states: ["connected"], flags: CmdFlag.FUA, libnbd: true, doc: "NBD_CMD_TRIM (flag FUA)." },
  aioCache: { name: "nbd_aio_cache", states: ["connected"], flags: 0, libnbd: true, doc: "Async cache." },
  cache: { name: "nbd_cache", states: ["connected"], flags: 0, libnbd: true, doc: "NBD_CMD_CACHE (prefetch)." },
  aioZero: {
    name: "nbd_aio_zero",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
    libnbd: true,
    doc: "Async zero."
  },
  zero: {
    name: "nbd_zero",
    states: ["connected"],
    flags: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
    libnbd: true,
    doc: "NBD_CMD_WRITE_ZEROES (flags FUA, NO_HOLE, FAST_ZERO)."
  },
  aioBlockStatus: {
    name: "nbd_aio_block_status",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE,
    libnbd: true,
    doc: "Async block_status (32-bit callback)."
  },
  blockStatus: {
    name: "nbd_block_status",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE,
    libnbd: true,
    doc: "NBD_CMD_BLOCK_STATUS; extent callback(metacontext, offset, uint32 pairs[len,flags], nr_entries=2*n, &error) once per context."
  },
  aioBlockStatusFilter: {
    name: "nbd_aio_block_status_filter",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE | CmdFlag.PAYLOAD_LEN,
    libnbd: true,
    doc: "Async block_status_filter."
  },
  blockStatusFilter: {
    name: "nbd_block_status_filter",
    states: ["connected"],
    flags: CmdFlag.REQ_ONE | CmdFlag.PAYLOAD_LEN,
    libnbd: true,
    doc: "Block status limited to listed contexts (needs EH + BLOCK_STATUS_PAYLOAD); sends payload."
  },
  aioInFlight: {
    name: "nbd_aio_in_flight",
    states: ["connected", "closed", "dead"],
    libnbd: true,
    doc: "Number of commands queued or awaiting reply (excludes completed-not-retired); 0 after CLOSED/DEAD."
  },
  aioDisconnect: {
    name: "nbd_aio_disconnect",
    states: ["connected"],
    flags: 0,
    libnbd: true,
    doc: "Queue NBD_CMD_DISC (no reply); later commands -> EINVAL; wait for aio_is_closed."
  },
  shutdown: {
    name: "nbd_shutdown",
    states: ["negotiating", "connected"],
    libnbd: true,
    doc: "Graceful end: in NEGOTIATING sends OPT_ABORT; else queues NBD_CMD_DISC after pending cmds and waits for CLOSED/DEAD; flag SHUTDOWN_ABANDON_PENDING drops unsent cmds."
  },
  awaitClosed: { name: "nbd_await_closed", states: "any", libnbd: false, doc: "Waits for the connection to end." },
  getPackageName: { name: "nbd_get_package_name", states: "any", libnbd: true, doc: '"libnbd". (unlocked)' },
  getVersion: {
    name: "nbd_get_version",
    states: "any",
    libnbd: true,
    doc: '"major.minor.release" (even minor = stable). (unlocked)'
  },
  getVersionExtra: {
    name: "nbd_get_version_extra",
    states: "any",
    libnbd: true,
    doc: 'A packager\'s extra version text, "" for an upstream build. (1.24)'
  },
  supportsTls: { name: "nbd_supports_tls", states: "any", libnbd: true, doc: "Built with GnuTLS? (unlocked)" },
  supportsUri: {
    name: "nbd_supports_uri",
    states: "any",
    libnbd: true,
    doc: "Built with libxml2 (URI support)? (unlocked)"
  },
  supportsVsock: { name: "nbd_supports_vsock", states: "any", libnbd: true, doc: "Built with AF_VSOCK? (unlocked)" },
  // The transports' connect calls (libnbd's), which name their errors and spans through connectSocket.
  connectUri: {
    name: "nbd_connect_uri",
    states: ["created"],
    libnbd: true,
    doc: "Connect to an NBD URI and wait for the handshake."
  },
  aioConnectUri: {
    name: "nbd_aio_connect_uri",
    states: ["created"],
    libnbd: true,
    doc: "Begin connecting to an NBD URI."
  },
  connectUnix: {
    name: "nbd_connect_unix",
    states: ["created"],
    libnbd: true,
    doc: "Connect to a Unix socket and wait for the handshake."
  },
  aioConnectUnix: {
    name: "nbd_aio_connect_unix",
    states: ["created"],
    libnbd: true,
    doc: "Begin connecting to a Unix socket."
  },
  connectTcp: {
    name: "nbd_connect_tcp",
    states: ["created"],
    libnbd: true,
    doc: "Connect over TCP and wait for the handshake."
  },
  aioConnectTcp: { name: "nbd_aio_connect_tcp", states: ["created"], libnbd: true, doc: "Begin connecting over TCP." },
  connectCommand: {
    name: "nbd_connect_command",
    states: ["created"],
    libnbd: true,
    doc: "Run a server on a socket pair and wait for the handshake."
  },
  aioConnectCommand: {
    name: "nbd_aio_connect_command",
    states: ["created"],
    libnbd: true,
    doc: "Begin: run a server on a socket pair."
  },
  connectSystemdSocketActivation: {
    name: "nbd_connect_systemd_socket_activation",
    states: ["created"],
    libnbd: true,
    doc: "Start a server by socket activation and wait for the handshake."
  },
  aioConnectSystemdSocketActivation: {
    name: "nbd_aio_connect_systemd_socket_activation",
    states: ["created"],
    libnbd: true,
    doc: "Begin: start a server by socket activation."
  }
} as const satisfies Record<string, Spec>

/** The name of a call of `Nbd`. */
export type CallName = keyof typeof calls

const byNameTable = new Map<string, Spec>(Object.values(calls).map((spec) => [spec.name, spec]))

/** The record of the call named `name` (libnbd's name, e.g. "nbd_pread"). */
export const byName = (name: string): Spec => {
  const spec = byNameTable.get(name)
  if (spec === undefined) throw new Error(`no call named ${name} in the table of calls`)
  return spec
}
