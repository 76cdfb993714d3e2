/**
 * Typed errors: what libnbd reports as -1 and errno. Every error keeps the errno name libnbd would set
 * ("" where libnbd sets none), the operation that failed and a message a person can act on.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"

/**
 * The fields every effect-nbd error has.
 * @since 0.1.0
 * @category models
 */
export interface NbdErrorFields {
  /** The errno name libnbd would set: "EINVAL", "ENOTCONN", ...; "" where libnbd sets none. */
  readonly errno: string
  /** The call that failed, e.g. "nbd_pread". */
  readonly operation: string
  readonly message: string
  readonly cause?: unknown
}

/**
 * A call made in a state that does not permit it. ENOTCONN while the handle is newly created, else EINVAL.
 * @since 0.1.0
 * @category errors
 */
export class InvalidStateError extends Data.TaggedError("InvalidStateError")<NbdErrorFields> {}

/**
 * A bad argument: a name too long, a request too large, a value out of range, a request strict mode refuses.
 * @since 0.1.0
 * @category errors
 */
export class InvalidArgumentError extends Data.TaggedError("InvalidArgumentError")<NbdErrorFields> {}

/**
 * The server broke the protocol: garbage, a wrong magic, an impossible length, a reply it may not send.
 * @since 0.1.0
 * @category errors
 */
export class ProtocolError extends Data.TaggedError("ProtocolError")<NbdErrorFields> {}

/**
 * The server refused an option during the handshake or in option mode (NBD_REP_ERR_*).
 * @since 0.1.0
 * @category errors
 */
export class OptionError extends Data.TaggedError("OptionError")<
  NbdErrorFields & { readonly option: number; readonly replyType: number }
> {}

/**
 * The server answered a command with an error; only that command fails.
 * @since 0.1.0
 * @category errors
 */
export class CommandError extends Data.TaggedError("CommandError")<NbdErrorFields & { readonly command: string }> {}

/**
 * The connection is gone or could not be made: the socket's own error, or ENOTCONN for a command stranded
 * by a closed connection.
 * @since 0.1.0
 * @category errors
 */
export class ConnectionError extends Data.TaggedError("ConnectionError")<NbdErrorFields> {}

/**
 * Any error effect-nbd reports.
 * @since 0.1.0
 * @category models
 */
export type NbdError =
  InvalidStateError | InvalidArgumentError | ProtocolError | OptionError | CommandError | ConnectionError

const tags = new Set([
  "InvalidStateError",
  "InvalidArgumentError",
  "ProtocolError",
  "OptionError",
  "CommandError",
  "ConnectionError"
])

/**
 * Whether a value is one of effect-nbd's errors.
 * @since 0.1.0
 * @category guards
 */
export const isNbdError = (u: unknown): u is NbdError =>
  Predicate.hasProperty(u, "_tag") && typeof u._tag === "string" && tags.has(u._tag)

/**
 * A one-line description in libnbd's form: "operation: message: errno".
 * @since 0.1.0
 * @category formatting
 */
export const format = (error: NbdError): string =>
  `${error.operation}: ${error.message}${error.errno === "" ? "" : ` (${error.errno})`}`
