/**
 * GnuTLS priority strings (nbdkit's and qemu-nbd's `--tls-priority`, libnbd's `nbd_set_tls_priority`) mapped
 * to the TLS options Node can express: the protocol versions (`minVersion`, `maxVersion`), the cipher suites
 * (`ciphers`, OpenSSL's syntax, with the TLS 1.3 suites by name) and the server's cipher order
 * (`honorCipherOrder`). Pure: a string in, options or the reason they cannot be had out; the test server's
 * `--tls-priority` and a client can share it, so they read a priority string alike.
 *
 * What maps:
 *
 * - the first keyword: `NORMAL`, `PERFORMANCE`, `SECURE128`, `@SYSTEM` (Node's defaults, which are at least
 *   128-bit), `PFS` (the defaults without static RSA key exchange), or `NONE` (nothing: versions and ciphers
 *   must then be added);
 * - versions: `VERS-TLS1.0` to `VERS-TLS1.3`, `VERS-ALL`, `VERS-TLS-ALL`, added with `+` and removed with `-`
 *   or `!`; what is left must be one unbroken range (Node has a minimum and a maximum, no holes);
 * - ciphers: `AES-128-GCM`, `AES-256-GCM`, `CHACHA20-POLY1305`, `AES-128-CCM`, `AES-256-CCM`, `AES-128-CBC`,
 *   `AES-256-CBC` and `CIPHER-ALL` (those seven), likewise;
 * - the PSK key exchanges `PSK`, `DHE-PSK`, `ECDHE-PSK` added with `+`: they say the handshake may use
 *   pre-shared keys, which the credentials decide in Node, so they change nothing;
 * - `%SERVER_PRECEDENCE`: the server's cipher order wins.
 *
 * Anything else (other key exchanges, MACs, groups, signatures, compression, other `%` flags, other first
 * keywords such as `SECURE256` or `LEGACY`) has no Node equivalent and is refused with a `PriorityError`,
 * rather than silently ignored.
 *
 * @since 0.3.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"

/**
 * A TLS protocol version as Node names it.
 * @since 0.3.0
 * @category models
 */
export type Version = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"

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
