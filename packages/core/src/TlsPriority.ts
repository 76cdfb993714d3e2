/**
 * GnuTLS priority strings, as libnbd's `nbd_set_tls_priority` takes them ("NORMAL", "NORMAL:-VERS-TLS1.3",
 * "SECURE256:+SECURE128"), mapped to the protocol versions and cipher list a TLS stack like Node's (OpenSSL)
 * is told. Pure: `Nbd.setTlsPriority` checks a string with it when it is set, and a transport maps it with
 * the same function when it starts TLS.
 *
 * What maps: the keywords NORMAL, PERFORMANCE, SECURE128, PFS, SECURE192 and SECURE256 (first, or added with
 * `+`) and the protocol versions (`+`, `-` or `!` with VERS-TLS1.0 to VERS-TLS1.3, VERS-ALL, VERS-TLS-ALL).
 * What GnuTLS accepts but does not map (single algorithms, groups, signatures, % flags, LEGACY, SUITEB,
 * NONE, SYSTEM, @KEYWORD, a set of versions with a hole) is refused as "Unsupported" (ENOTSUP), never
 * dropped in silence; what GnuTLS would refuse too (empty, an unknown keyword, no version left) is
 * "Invalid" (EINVAL).
 *
 * @since 0.3.0
 */
import * as internal from "./internal/tlsPriority.js"

/**
 * A protocol version as Node's `minVersion` / `maxVersion` name it.
 * @since 0.3.0
 * @category models
 */
export type Version = internal.TlsVersion

/**
 * What a priority string asks of the TLS client; an absent field keeps the stack's default.
 * @since 0.3.0
 * @category models
 */
export type Options = internal.TlsPriorityOptions

/**
 * The outcome of `parse`: the options, "Invalid" (EINVAL) or "Unsupported" (ENOTSUP) with a message.
 * @since 0.3.0
 * @category models
 */
export type Result = internal.TlsPriority

/**
 * libnbd's compile-time default priority, what `Nbd.getTlsPriority` answers until one is set.
 * @since 0.3.0
 * @category constants
 */
export const DEFAULT: string = internal.DEFAULT

/**
 * Maps a GnuTLS priority string to TLS client options, or says why it cannot.
 * @example
 * ```ts
 * import { TlsPriority } from "@effect-nbd/core"
 *
 * TlsPriority.parse("NORMAL:-VERS-TLS1.3")
 * // { _tag: "Options", options: { minVersion: "TLSv1", maxVersion: "TLSv1.2" } }
 * ```
 * @since 0.3.0
 * @category parsing
 */
export const parse: (s: string) => Result = internal.parseTlsPriority
