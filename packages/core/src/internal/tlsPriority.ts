/**
 * GnuTLS priority strings (libnbd's nbd_set_tls_priority, e.g. "NORMAL", "NORMAL:-VERS-TLS1.3",
 * "SECURE256:+SECURE128") mapped to what Node's TLS can be told: a range of protocol versions and a cipher
 * list. Pure, with no `node:` import, so the core can check a string when it is set.
 *
 * What maps: the keywords NORMAL, PERFORMANCE, SECURE128, PFS, SECURE192 and SECURE256 (first, or added with
 * `+`), and the protocol versions (`+`/`-`/`!` with VERS-TLS1.0 ... VERS-TLS1.3, VERS-ALL, VERS-TLS-ALL).
 * Datagram versions (VERS-DTLS*) mean nothing on a stream and are ignored, as is %SERVER_PRECEDENCE (a server's
 * choice). Everything else GnuTLS knows (single algorithms, groups, signatures, % flags, LEGACY, SUITEB*,
 * NONE, SYSTEM, @KEYWORD) is refused as unsupported rather than silently dropped.
 */

/** A protocol version as Node's `minVersion` / `maxVersion` name it. */
export type TlsVersion = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"

/** What a priority string asks of Node's TLS client; an absent field keeps Node's default. */
export interface TlsPriorityOptions {
  readonly minVersion?: TlsVersion
  readonly maxVersion?: TlsVersion
  /** An OpenSSL cipher list with the TLS 1.3 suites in it, as Node's `ciphers` option takes it. */
  readonly ciphers?: string
}

/**
 * The outcome: the options; or "Invalid" (EINVAL), a string GnuTLS would reject too (empty, an empty
 * element, an unknown keyword, no protocol version left); or "Unsupported" (ENOTSUP), a string GnuTLS
 * accepts but Node's TLS cannot be told.
 */
export type TlsPriority =
  | { readonly _tag: "Options"; readonly options: TlsPriorityOptions }
  | { readonly _tag: "Invalid"; readonly message: string }
  | { readonly _tag: "Unsupported"; readonly message: string }

/** libnbd's compile-time default, which `Nbd.getTlsPriority` answers until one is set. */
export const DEFAULT = "NORMAL"

const versions: ReadonlyArray<TlsVersion> = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

const versionNames: Readonly<Record<string, ReadonlyArray<number>>> = {
  "VERS-TLS1.0": [0],
  "VERS-TLS1.1": [1],
  "VERS-TLS1.2": [2],
  "VERS-TLS1.3": [3],
  "VERS-ALL": [0, 1, 2, 3],
  "VERS-TLS-ALL": [0, 1, 2, 3]
}

/**
 * The cipher sets a keyword selects, from the widest: Node's default list (which already holds only
 * suites of 128-bit strength or more), forward secret suites only, and 192-bit strength or more (GnuTLS's
 * SECURE256 is an alias of SECURE192).
 */
type CipherSet = "default" | "pfs" | "strong"

const width: Readonly<Record<CipherSet, number>> = { strong: 0, pfs: 1, default: 2 }

const levels: Readonly<Record<string, CipherSet>> = {
  NORMAL: "default",
  PERFORMANCE: "default",
  SECURE128: "default",
  PFS: "pfs",
  SECURE192: "strong",
  SECURE256: "strong"
}

/** GnuTLS keywords with no Node equivalent: weak algorithms, Suite B profiles, system policy files. */
const unmapped = new Set(["LEGACY", "SUITEB128", "SUITEB192", "NONE", "SYSTEM"])

const tls13 = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

const cipherLists: Readonly<Record<CipherSet, string | undefined>> = {
  default: undefined,
  pfs: [
    tls13,
    "TLS_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA256:DHE-RSA-AES128-SHA256"
  ].join(":"),
  strong: [
    tls13,
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
  ].join(":")
}

const invalid = (message: string): TlsPriority => ({ _tag: "Invalid", message })
const unsupported = (message: string): TlsPriority => ({ _tag: "Unsupported", message })

/** The first element: a keyword that sets the starting cipher set (every TLS version is on). */
const start = (keyword: string): CipherSet | TlsPriority => {
  const name = keyword.toUpperCase()
  const level = levels[name]
  if (level !== undefined) return level
  if (unmapped.has(name) || name.startsWith("@"))
    return unsupported(`${keyword}: Node's TLS has no equivalent of this keyword`)
  if (/^[-+!%]/.test(name)) return unsupported(`${keyword}: a priority string must begin with a keyword like NORMAL`)
  return invalid(`${keyword}: unknown keyword`)
}

/** The versions left on, as Node's range; undefined fields when all are on (Node's defaults then apply). */
const range = (on: ReadonlyArray<boolean>): TlsPriority | TlsPriorityOptions => {
  if (on.every(Boolean)) return {}
  const first = on.indexOf(true)
  const last = on.lastIndexOf(true)
  if (first === -1) return invalid("no TLS protocol version is left enabled")
  const gap = on.slice(first, last + 1).indexOf(false)
  if (gap !== -1)
    return unsupported(
      `Node's TLS takes a range of protocol versions: ${versions[first + gap]} cannot be left out between ` +
        `${versions[first]} and ${versions[last]}`
    )
  return { minVersion: versions[first]!, maxVersion: versions[last]! }
}

const isResult = (u: object): u is TlsPriority => "_tag" in u

/**
 * Maps a GnuTLS priority string to Node's TLS client options, or says why it cannot (see the module's
 * comment for what maps). Keywords and names are matched without regard to case, as GnuTLS matches them.
 */
export const parseTlsPriority = (s: string): TlsPriority => {
  if (s === "") return invalid("the priority string is empty")
  const [first, ...rest] = s.split(":")
  const begun = start(first!)
  if (typeof begun !== "string") return begun
  let ciphers: CipherSet = begun
  const on = [true, true, true, true]
  for (const element of rest) {
    if (element === "") return invalid(`${s}: empty element`)
    const upper = element.toUpperCase()
    if (upper === "%SERVER_PRECEDENCE") continue
    if (upper.startsWith("%")) return unsupported(`${element}: Node's TLS has no equivalent of this flag`)
    const op = /^[-+!]/.test(upper) ? upper[0]! : ""
    const name = op === "" ? upper : upper.slice(1)
    if (name === "") return invalid(`${element}: a modifier needs a name`)
    const level = levels[name]
    if (level !== undefined && op !== "-" && op !== "!") {
      // A keyword after the first adds its suites: the union is the wider set.
      if (width[level] > width[ciphers]) ciphers = level
      continue
    }
    if (op === "") {
      const other = start(element)
      return typeof other === "string" ? invalid(`${element}: unknown keyword`) : other
    }
    const indices = versionNames[name]
    if (indices !== undefined) {
      for (const i of indices) on[i] = op === "+"
      continue
    }
    if (name.startsWith("VERS-DTLS")) continue
    if (name === "VERS-SSL3.0") {
      if (op === "+") return unsupported(`${element}: Node's TLS does not speak SSL 3.0`)
      continue
    }
    return unsupported(`${element}: Node's TLS cannot be told this; only protocol versions and the keywords map`)
  }
  const versionOptions = range(on)
  if (isResult(versionOptions)) return versionOptions
  const list = cipherLists[ciphers]
  return { _tag: "Options", options: list === undefined ? versionOptions : { ...versionOptions, ciphers: list } }
}
