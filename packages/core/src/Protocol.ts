/**
 * The constants of the NBD protocol (doc/proto.md), shared by the client and the server.
 * All integers on the wire are big-endian.
 *
 * @since 0.1.0
 */

/**
 * "NBDMAGIC", the first 8 bytes of every greeting.
 * @since 0.1.0
 * @category magic
 */
export const NBDMAGIC = 0x4e42444d41474943n
/**
 * The second 8 bytes of an oldstyle greeting.
 * @since 0.1.0
 * @category magic
 */
export const OLDSTYLE_MAGIC = 0x00420281861253n
/**
 * "IHAVEOPT": the second 8 bytes of a newstyle greeting and the prefix of every option request.
 * @since 0.1.0
 * @category magic
 */
export const IHAVEOPT = 0x49484156454f5054n
/**
 * The magic of every fixed-newstyle option reply.
 * @since 0.1.0
 * @category magic
 */
export const REP_MAGIC = 0x3e889045565a9n
/**
 * @since 0.1.0
 * @category magic
 */
export const REQUEST_MAGIC = 0x25609513
/**
 * @since 0.1.0
 * @category magic
 */
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71
/**
 * @since 0.1.0
 * @category magic
 */
export const SIMPLE_REPLY_MAGIC = 0x67446698
/**
 * @since 0.1.0
 * @category magic
 */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef
/**
 * @since 0.1.0
 * @category magic
 */
export const EXTENDED_REPLY_MAGIC = 0x6e8a278c

/**
 * Handshake flags sent by the server after the newstyle greeting (u16).
 * @since 0.1.0
 * @category handshake
 */
export const FLAG_FIXED_NEWSTYLE = 0x1
/**
 * @since 0.1.0
 * @category handshake
 */
export const FLAG_NO_ZEROES = 0x2
/**
 * Client flags (u32), the echo of the handshake flags the client accepts.
 * @since 0.1.0
 * @category handshake
 */
export const FLAG_C_FIXED_NEWSTYLE = 0x1
/**
 * @since 0.1.0
 * @category handshake
 */
export const FLAG_C_NO_ZEROES = 0x2
/**
 * @since 0.1.0
 * @category handshake
 */
export const HANDSHAKE_FLAG_MASK = 0x3

/**
 * Transmission flags (u16).
 * @since 0.1.0
 * @category transmission flags
 */
export const TFlag = {
  HAS_FLAGS: 0x0001,
  READ_ONLY: 0x0002,
  SEND_FLUSH: 0x0004,
  SEND_FUA: 0x0008,
  ROTATIONAL: 0x0010,
  SEND_TRIM: 0x0020,
  SEND_WRITE_ZEROES: 0x0040,
  SEND_DF: 0x0080,
  CAN_MULTI_CONN: 0x0100,
  SEND_RESIZE: 0x0200,
  SEND_CACHE: 0x0400,
  SEND_FAST_ZERO: 0x0800,
  BLOCK_STATUS_PAYLOAD: 0x1000
} as const

/**
 * Option codes.
 * @since 0.1.0
 * @category options
 */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11
} as const

/**
 * The name of an option code, for messages.
 * @since 0.1.0
 * @category options
 */
export const optionName = (option: number): string => {
  for (const [name, code] of Object.entries(Opt)) if (code === option) return `NBD_OPT_${name}`
  return `option ${option}`
}

/**
 * Option reply types. Error replies have bit 31 set.
 * @since 0.1.0
 * @category options
 */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  ERR_EXT_HEADER_REQD: 0x8000000a
} as const

/**
 * Whether an option reply type is an error (bit 31 set).
 * @since 0.1.0
 * @category options
 */
export const isErrorReply = (type: number): boolean => type >= 0x80000000

/**
 * Info types requested by NBD_OPT_INFO and NBD_OPT_GO.
 * @since 0.1.0
 * @category options
 */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3
} as const

/**
 * Command types.
 * @since 0.1.0
 * @category commands
 */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8
} as const

/**
 * libnbd's short name of a command, as its messages use it.
 * @since 0.1.0
 * @category commands
 */
export const commandName = (type: number): string => {
  switch (type) {
    case Cmd.READ:
      return "read"
    case Cmd.WRITE:
      return "write"
    case Cmd.DISC:
      return "disconnect"
    case Cmd.FLUSH:
      return "flush"
    case Cmd.TRIM:
      return "trim"
    case Cmd.CACHE:
      return "cache"
    case Cmd.WRITE_ZEROES:
      return "write-zeroes"
    case Cmd.BLOCK_STATUS:
      return "block-status"
    case Cmd.RESIZE:
      return "resize"
    default:
      return `command ${type}`
  }
}

/**
 * Command flags (u16).
 * @since 0.1.0
 * @category commands
 */
export const CmdFlag = {
  FUA: 0x01,
  NO_HOLE: 0x02,
  DF: 0x04,
  REQ_ONE: 0x08,
  FAST_ZERO: 0x10,
  PAYLOAD_LEN: 0x20
} as const

/**
 * @since 0.1.0
 * @category commands
 */
export const CMD_FLAG_MASK = 0x3f

/**
 * Structured and extended reply flags.
 * @since 0.1.0
 * @category replies
 */
export const REPLY_FLAG_DONE = 0x1

/**
 * Structured and extended reply chunk types.
 * @since 0.1.0
 * @category replies
 */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002
} as const

/**
 * Whether a chunk type is an error type (bit 15 set).
 * @since 0.1.0
 * @category replies
 */
export const isErrorChunk = (type: number): boolean => (type & 0x8000) !== 0

/**
 * The error values of the protocol, as the reply `error` field carries them.
 * @since 0.1.0
 * @category errors
 */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108
} as const

/**
 * An errno name the protocol has an error value for.
 * @since 0.3.0
 * @category errors
 */
export type NbdErrnoName = keyof typeof NbdErrno

/**
 * The errno names of `NbdErrno`, in its order: the one list that `NbdError.Errno` and the test server's
 * fault errnos start from, so a name added to the table reaches both.
 * @since 0.3.0
 * @category errors
 */
export const errnoNames = Object.keys(NbdErrno) as unknown as readonly [NbdErrnoName, ...Array<NbdErrnoName>]

/**
 * The errno names a reply's error value maps to, as libnbd maps them; an unknown value becomes EINVAL.
 * @since 0.1.0
 * @category errors
 */
export const errnoOfWire = (value: number): NbdErrnoName => {
  for (const name of errnoNames) if (NbdErrno[name] === value) return name
  return "EINVAL"
}

/**
 * The wire value for an errno name. EDQUOT and EFBIG become NBD_ENOSPC, as the protocol asks of a server
 * whose storage is full; other names the protocol has no value for become NBD_EINVAL.
 * @since 0.1.0
 * @category errors
 */
export const wireOfErrno = (name: string): number =>
  name === "EDQUOT" || name === "EFBIG"
    ? NbdErrno.ENOSPC
    : ((NbdErrno as Record<string, number>)[name] ?? NbdErrno.EINVAL)

/**
 * The block size constraints a server advertises with NBD_INFO_BLOCK_SIZE, in bytes: the smallest block
 * it addresses, the size it prefers, and the largest payload of a request. The client's codec decodes them
 * and the server's encodes them in this one shape.
 * @since 0.2.0
 * @category models
 */
export interface BlockSizes {
  readonly minimum: number
  readonly preferred: number
  readonly maximum: number
}

/**
 * The meta context of allocation status and its flags.
 * @since 0.1.0
 * @category meta contexts
 */
export const CONTEXT_BASE_ALLOCATION = "base:allocation"
/**
 * @since 0.1.0
 * @category meta contexts
 */
export const NAMESPACE_BASE = "base:"
/**
 * @since 0.1.0
 * @category meta contexts
 */
export const STATE_HOLE = 1
/**
 * @since 0.1.0
 * @category meta contexts
 */
export const STATE_ZERO = 2

/**
 * Limits of the protocol and of libnbd's own checks.
 * @since 0.1.0
 * @category limits
 */
export const Limits = {
  /** Longest export name, message or context name. */
  MAX_STRING: 4096,
  /** libnbd refuses option replies and chunk payloads beyond this. */
  MAX_OPTION_REPLY: 64 * 1024 * 1024,
  /** libnbd's cap on one read or write (MAX_REQUEST_SIZE). */
  MAX_REQUEST_SIZE: 64 * 1024 * 1024,
  /** Payload maximum when the server does not advertise one. */
  DEFAULT_PAYLOAD_MAX: 32 * 1024 * 1024,
  /** Largest structured chunk payload libnbd accepts (64 MiB plus the offset). */
  MAX_CHUNK_PAYLOAD: 64 * 1024 * 1024 + 8,
  /** Block-status descriptors a chunk should not exceed. */
  MAX_BLOCK_STATUS_DESCRIPTORS: 1 << 20,
  /** Padding of the oldstyle greeting and the EXPORT_NAME reply. */
  ZERO_PADDING: 124
} as const

/**
 * libnbd's strict-mode bits (LIBNBD_STRICT_*): the checks the client makes of a command before it goes on
 * the wire. Not part of the protocol, but they decide which of its rules the client enforces; the default is
 * all of them (`MASK`).
 *
 * - `COMMANDS`: refuse a command or a flag the server did not advertise;
 * - `FLAGS`: refuse command flags the call does not take;
 * - `BOUNDS`: refuse a request past the end of the export;
 * - `ZERO_SIZE`: refuse a request of 0 bytes;
 * - `ALIGN`: refuse a request not aligned to the server's minimum block size;
 * - `PAYLOAD`: refuse a write larger than the maximum payload;
 * - `AUTO_FLAG`: set or clear PAYLOAD_LEN as the negotiated header format requires.
 *
 * @since 0.3.0
 * @category limits
 */
export const Strict = {
  COMMANDS: 0x01,
  FLAGS: 0x02,
  BOUNDS: 0x04,
  ZERO_SIZE: 0x08,
  ALIGN: 0x10,
  PAYLOAD: 0x20,
  AUTO_FLAG: 0x40,
  MASK: 0x7f
} as const

/**
 * Sizes of the fixed parts of messages, in bytes.
 * @since 0.1.0
 * @category limits
 */
export const Sizes = {
  GREETING_PREFIX: 16,
  OLDSTYLE_REST: 136,
  NEWSTYLE_FLAGS: 2,
  OPTION_HEADER: 16,
  OPTION_REPLY_HEADER: 20,
  EXPORT_NAME_REPLY: 10,
  COMPACT_REQUEST: 28,
  EXTENDED_REQUEST: 32,
  SIMPLE_REPLY: 16,
  STRUCTURED_REPLY: 20,
  EXTENDED_REPLY: 32
} as const

/**
 * The well-known TCP port of NBD.
 * @since 0.1.0
 * @category limits
 */
export const DEFAULT_PORT = 10809
