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
import * as Data from "effect/Data"
import * as Either from "effect/Either"
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

/**
 * What a priority string comes to in Node's `tls` options; a field left out keeps Node's default (or what
 * the caller's credentials need, such as the PSK cipher suites).
 * @since 0.3.0
 * @category models
 */
export interface NodeOptions {
  readonly minVersion?: Version
  readonly maxVersion?: Version
  /** OpenSSL's cipher string, the TLS 1.3 suites first by name (Node splits them off). */
  readonly ciphers?: string
  readonly honorCipherOrder?: boolean
}

/**
 * A priority string Node cannot honour, or a malformed one.
 * @since 0.3.0
 * @category errors
 */
export class PriorityError extends Data.TaggedError("TlsPriorityError")<{
  /** The element of the string at fault (empty when the string itself is). */
  readonly element: string
  readonly message: string
}> {}

const VERSIONS: ReadonlyArray<readonly [string, Version]> = [
  ["VERS-TLS1.0", "TLSv1"],
  ["VERS-TLS1.1", "TLSv1.1"],
  ["VERS-TLS1.2", "TLSv1.2"],
  ["VERS-TLS1.3", "TLSv1.3"]
]

/** A GnuTLS cipher: its TLS 1.3 suite (if any) and the OpenSSL selector of its TLS 1.2 suites. */
interface Cipher {
  readonly tls13: string | undefined
  readonly tls12: string
}

const CIPHERS: ReadonlyMap<string, Cipher> = new Map([
  ["AES-256-GCM", { tls13: "TLS_AES_256_GCM_SHA384", tls12: "AESGCM+AES256" }],
  ["CHACHA20-POLY1305", { tls13: "TLS_CHACHA20_POLY1305_SHA256", tls12: "CHACHA20" }],
  ["AES-128-GCM", { tls13: "TLS_AES_128_GCM_SHA256", tls12: "AESGCM+AES128" }],
  ["AES-128-CCM", { tls13: "TLS_AES_128_CCM_SHA256", tls12: "AESCCM+AES128" }],
  ["AES-256-CCM", { tls13: undefined, tls12: "AESCCM+AES256" }],
  ["AES-128-CBC", { tls13: undefined, tls12: "AES128+SHA1:AES128+SHA256" }],
  ["AES-256-CBC", { tls13: undefined, tls12: "AES256+SHA1:AES256+SHA384:AES256+SHA256" }]
])

/** Node's TLS 1.3 suites by default, in its order (CCM is off unless asked for). */
const DEFAULT_TLS13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
/** The ciphers on by default: Node's defaults hold no CCM suite. */
const DEFAULT_CIPHERS = ["AES-256-GCM", "CHACHA20-POLY1305", "AES-128-GCM", "AES-128-CBC", "AES-256-CBC"]

const PSK_KX = new Set(["PSK", "DHE-PSK", "ECDHE-PSK"])

const BASES: ReadonlyMap<string, { readonly none: boolean; readonly pfs: boolean }> = new Map([
  ["NORMAL", { none: false, pfs: false }],
  ["PERFORMANCE", { none: false, pfs: false }],
  ["SECURE128", { none: false, pfs: false }],
  ["@SYSTEM", { none: false, pfs: false }],
  ["PFS", { none: false, pfs: true }],
  ["NONE", { none: true, pfs: false }]
])

const refuse = (element: string, message: string) => Either.left(new PriorityError({ element, message }))

/** The enabled versions as one range, or why they are not one. */
const versionRange = (enabled: ReadonlySet<Version>): Either.Either<readonly [Version, Version], PriorityError> => {
  const on = VERSIONS.map(([, v]) => enabled.has(v))
  const first = on.indexOf(true)
  const last = on.lastIndexOf(true)
  if (first < 0) return refuse("", "no TLS version is left enabled")
  if (on.slice(first, last + 1).includes(false))
    return refuse("", "the enabled TLS versions have a gap: Node can only set a minimum and a maximum")
  return Either.right([VERSIONS[first]![1], VERSIONS[last]![1]] as const)
}

/**
 * Maps a GnuTLS priority string to Node's TLS options, or refuses it with the element Node cannot express.
 *
 * @example
 * import * as TlsPriority from "@effect-nbd/core/TlsPriority"
 *
 * // { minVersion: "TLSv1.3", maxVersion: "TLSv1.3" }
 * TlsPriority.toNodeOptions("NORMAL:-VERS-ALL:+VERS-TLS1.3")
 *
 * @since 0.3.0
 * @category mapping
 */
export const toNodeOptions = (priority: string): Either.Either<NodeOptions, PriorityError> => {
  const elements = priority.split(":")
  const base = BASES.get(elements[0]!.trim())
  if (base === undefined)
    return refuse(
      elements[0]!,
      `the first keyword must be one of ${[...BASES.keys()].join(", ")}; others have no Node equivalent`
    )
  const versions = new Set<Version>(base.none ? [] : ["TLSv1.2", "TLSv1.3"])
  const ciphers = new Set<string>(base.none ? [] : DEFAULT_CIPHERS)
  let versionsChanged = false
  let ciphersChanged = false
  let honorCipherOrder = false
  for (const raw of elements.slice(1)) {
    const element = raw.trim()
    if (element === "") continue
    if (element === "%SERVER_PRECEDENCE") {
      honorCipherOrder = true
      continue
    }
    const op = element[0]
    const name = element.slice(1)
    if (op !== "+" && op !== "-" && op !== "!")
      return refuse(element, "an element other than the first must start with +, - or ! (or be %SERVER_PRECEDENCE)")
    const add = op === "+"
    const version = VERSIONS.find(([n]) => n === name)
    if (version !== undefined || name === "VERS-ALL" || name === "VERS-TLS-ALL") {
      versionsChanged = true
      for (const [, v] of version === undefined ? VERSIONS : [version]) {
        if (add) versions.add(v)
        else versions.delete(v)
      }
      continue
    }
    if (CIPHERS.has(name) || name === "CIPHER-ALL") {
      ciphersChanged = true
      for (const c of name === "CIPHER-ALL" ? CIPHERS.keys() : [name]) {
        if (add) ciphers.add(c)
        else ciphers.delete(c)
      }
      continue
    }
    if (add && PSK_KX.has(name)) continue
    return refuse(element, `${element} has no equivalent in Node's TLS options`)
  }
  return Either.flatMap(
    versionRange(versions),
    ([minVersion, maxVersion]): Either.Either<NodeOptions, PriorityError> => {
      const order = honorCipherOrder ? { honorCipherOrder: true } : {}
      const range = versionsChanged || base.none ? { minVersion, maxVersion } : {}
      if (!ciphersChanged && !base.none && !base.pfs) return Either.right({ ...range, ...order })
      return Either.map(cipherOptions(ciphers, minVersion, maxVersion, base.pfs), (c) => ({ ...range, ...c, ...order }))
    }
  )
}

/**
 * The cipher string for the enabled ciphers: the TLS 1.3 suites by name, then the TLS 1.2 suites as
 * OpenSSL's `HIGH` narrowed to those ciphers (without static RSA or plain PSK key exchange under `PFS`).
 * Where one side is left with no suite, the version range shrinks to the other, as it would in GnuTLS
 * (an empty OpenSSL cipher list is an error rather than "none").
 */
const cipherOptions = (
  enabled: ReadonlySet<string>,
  minVersion: Version,
  maxVersion: Version,
  pfs: boolean
): Either.Either<NodeOptions, PriorityError> => {
  const named = [...CIPHERS].flatMap(([name, c]) => (enabled.has(name) && c.tls13 !== undefined ? [c.tls13] : []))
  const tls13 = [...DEFAULT_TLS13.filter((s) => named.includes(s)), ...named.filter((s) => !DEFAULT_TLS13.includes(s))]
  const tls12 = [...CIPHERS].filter(([name]) => enabled.has(name)).flatMap(([, c]) => c.tls12.split(":"))
  const with13 = maxVersion === "TLSv1.3" && tls13.length > 0
  const with12 = minVersion !== "TLSv1.3" && tls12.length > 0
  if (!with13 && !with12) return refuse("", "no cipher is left for the enabled TLS versions")
  // The weak and anonymous suites out, whatever a selector let in.
  const drop = ["!aNULL", "!eNULL", "!MD5", "!RC4", "!DES", "!3DES", "!CAMELLIA", ...(pfs ? ["!kRSA", "!kPSK"] : [])]
  const ciphers = [...(with13 ? tls13 : []), ...(with12 ? [...tls12.map((s) => `${s}+HIGH`), ...drop] : [])]
  return Either.right({
    ciphers: ciphers.join(":"),
    ...(with13 ? {} : { maxVersion: "TLSv1.2" as const }),
    ...(with12 ? {} : { minVersion: "TLSv1.3" as const })
  })
}
