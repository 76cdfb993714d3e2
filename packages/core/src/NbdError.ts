/**
 * Typed errors: what libnbd reports as -1 and errno. Every error keeps the errno name libnbd would set
 * ("" where libnbd sets none), the operation that failed and a message a person can act on.
 *
 * @since 0.1.0
 */
import type * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"
import * as Protocol from "./Protocol.js"

/**
 * The mark every effect-nbd error carries, whichever class it is.
 * @since 0.2.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("@effect-nbd/core/NbdError")

/**
 * @since 0.2.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Every errno name an effect-nbd error can carry, "" (libnbd sets none) first:
 *
 * - the errors a server can reply with (NBD_EPERM ... NBD_ESHUTDOWN, as libnbd maps them);
 * - the errnos libnbd sets itself (ENOTCONN, ERANGE, EPROTO, ENOENT, ENAMETOOLONG, ...);
 * - the system errors the transports can meet connecting, reading, writing, opening a TLS file or starting
 *   a server process (ECONNREFUSED, EPIPE, EACCES, ETIMEDOUT, EHOSTUNREACH, EMFILE, ...).
 *
 * @since 0.2.0
 * @category models
 */
export const errnos = [
  "",
  // A server's error replies (doc/proto.md), then libnbd's own errnos.
  ...Protocol.errnoNames,
  "ENOTCONN",
  "ERANGE",
  "EPROTO",
  "ENOENT",
  "ENAMETOOLONG",
  "EFAULT",
  "ESRCH",
  "EAFNOSUPPORT",
  "EPROTONOSUPPORT",
  // What a server's storage may fail with (it replies NBD_ENOSPC for these).
  "EDQUOT",
  "EFBIG",
  // Sockets.
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EADDRNOTAVAIL",
  "EADDRINUSE",
  "ENOBUFS",
  "EBADF",
  "ENOTSOCK",
  // Files (Unix socket paths, TLS credentials) and processes (`nbdkit -s`, socket activation).
  "EACCES",
  "ENOTDIR",
  "EISDIR",
  "ELOOP",
  "EMFILE",
  "ENFILE",
  "EAGAIN",
  "ENOEXEC",
  // A reconnect that found another export behind the same address.
  "ESTALE"
] as const

/**
 * An errno name, as libnbd's `nbd_get_errno` would give it, or "" where libnbd gives 0.
 * @since 0.2.0
 * @category models
 */
export type Errno = (typeof errnos)[number]

const known: ReadonlySet<string> = new Set(errnos)

/**
 * Whether a value is one of the errno names `Errno` lists.
 * @since 0.2.0
 * @category guards
 */
export const isErrno = (u: unknown): u is Errno => typeof u === "string" && known.has(u)

/**
 * The errno name for a system error's `code` (Node's `error.code`, or the error itself):
 *
 * - a name `Errno` lists is kept;
 * - no code, or a code that is not an errno (Node's `ERR_*`, and the resolver's `ENOTFOUND` and `EAI_*`,
 *   where libnbd reports getaddrinfo failures with no errno) gives "";
 * - any other errno name the system invents gives "EIO": the type stays a closed union that callers can
 *   match exhaustively, and the system's own code is still in the error's `cause`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const errnoOf = (codeOrError: unknown): Errno => {
  const code = Predicate.hasProperty(codeOrError, "code") ? codeOrError.code : codeOrError
  if (typeof code !== "string") return ""
  if (known.has(code)) return code as Errno
  return /^E[A-Z0-9]+$/.test(code) && code !== "ENOTFOUND" ? "EIO" : ""
}

/**
 * The fields every effect-nbd error has.
 * @since 0.1.0
 * @category models
 */
export interface NbdErrorFields {
  /** The errno name libnbd would set: "EINVAL", "ENOTCONN", ...; "" where libnbd sets none. */
  readonly errno: Errno
  /** The call that failed, e.g. "nbd_pread". */
  readonly operation: string
  readonly message: string
  readonly cause?: unknown
}

// The base of every effect-nbd error class: a tagged, yieldable error that carries the `TypeId` on its
// prototype, so `isNbdError` recognises every class at once.
type NbdErrorConstructor<Tag extends string> = new <A extends NbdErrorFields>(args: {
  readonly [P in keyof A as P extends "_tag" | TypeId ? never : P]: A[P]
}) => Cause.YieldableError & { readonly _tag: Tag; readonly [TypeId]: TypeId } & Readonly<A>

const NbdErrorClass = <Tag extends string>(tag: Tag): NbdErrorConstructor<Tag> => {
  class Base extends Data.TaggedError(tag)<{}> {}
  Object.defineProperty(Base.prototype, TypeId, { value: TypeId })
  // The prototype now carries the TypeId the constructor's type promises; the fields come from the arguments.
  return Base as unknown as NbdErrorConstructor<Tag>
}

/**
 * A call made in a state that does not permit it. ENOTCONN while the handle is newly created, else EINVAL.
 * @since 0.1.0
 * @category errors
 */
export class InvalidStateError extends NbdErrorClass("InvalidStateError")<NbdErrorFields> {}

/**
 * A bad argument: a name too long, a request too large, a value out of range, a request strict mode refuses.
 * @since 0.1.0
 * @category errors
 */
export class InvalidArgumentError extends NbdErrorClass("InvalidArgumentError")<NbdErrorFields> {}

/**
 * What the call needs is not there (ENOTSUP): the server lacks a capability (structured replies, extended
 * headers, a block-status payload, a meta context, a name it never advertised) or the transport cannot do
 * it (TLS). Nothing is wrong with the arguments; the same call may work against another server.
 * @since 0.2.0
 * @category errors
 */
export class UnsupportedError extends NbdErrorClass("UnsupportedError")<NbdErrorFields> {}

/**
 * Why a protocol error ended the connection, where the reason is not garbage on the wire:
 * `"Disconnected"`, the server closed the connection where the protocol expects more (in the handshake;
 * libnbd's "server disconnected unexpectedly"). A reconnect and an open timeout try again after it, as
 * after a ConnectionError.
 * @since 0.3.0
 * @category models
 */
export type ProtocolErrorReason = "Disconnected"

/**
 * The server broke the protocol: garbage, a wrong magic, an impossible length, a reply it may not send, or
 * a close in the middle of the handshake (`reason` "Disconnected").
 * @since 0.1.0
 * @category errors
 */
export class ProtocolError extends NbdErrorClass("ProtocolError")<
  NbdErrorFields & {
    /** Set when the server closed the connection early (since 0.3.0); absent for a malformed message. */
    readonly reason?: ProtocolErrorReason
  }
> {}

/**
 * The server refused an option during the handshake or in option mode (NBD_REP_ERR_*).
 * @since 0.1.0
 * @category errors
 */
export class OptionError extends NbdErrorClass("OptionError")<
  NbdErrorFields & { readonly option: number; readonly replyType: number }
> {}

/**
 * The server answered a command with an error; only that command fails.
 * @since 0.1.0
 * @category errors
 */
export class CommandError extends NbdErrorClass("CommandError")<NbdErrorFields & { readonly command: string }> {}

/**
 * The connection is gone or could not be made: the socket's own error, or ENOTCONN for a command stranded
 * by a closed connection.
 * @since 0.1.0
 * @category errors
 */
export class ConnectionError extends NbdErrorClass("ConnectionError")<NbdErrorFields> {}

/**
 * A reconnect reached the server, but the export behind it is no longer the one the handle was using: its
 * size, its flags, the negotiated meta contexts or the reply format differ. Nothing that waited for the
 * reconnect is replayed; errno is ESTALE.
 * @since 0.2.0
 * @category errors
 */
export class ExportChangedError extends NbdErrorClass("ExportChangedError")<NbdErrorFields> {}

/**
 * Any error effect-nbd reports.
 * @since 0.1.0
 * @category models
 */
export type NbdError =
  | InvalidStateError
  | InvalidArgumentError
  | UnsupportedError
  | ProtocolError
  | OptionError
  | CommandError
  | ConnectionError
  | ExportChangedError

/**
 * Whether a value is one of effect-nbd's errors: it carries the `TypeId`.
 * @since 0.1.0
 * @category guards
 */
export const isNbdError = (u: unknown): u is NbdError => Predicate.hasProperty(u, TypeId)

/**
 * A one-line description in libnbd's form: "operation: message: errno".
 * @since 0.1.0
 * @category formatting
 */
export const format = (error: NbdError): string =>
  `${error.operation}: ${error.message}${error.errno === "" ? "" : ` (${error.errno})`}`
