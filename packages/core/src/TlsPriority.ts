/**
 * GnuTLS priority strings, as libnbd's `nbd_set_tls_priority` and nbdkit's and qemu-nbd's `--tls-priority`
 * take them ("NORMAL", "NORMAL:-VERS-TLS1.3", "SECURE256:+SECURE128", "NORMAL:-CIPHER-ALL:+AES-256-GCM"),
 * mapped to what Node's TLS (OpenSSL) can be told: a range of protocol versions, a cipher list and, for a
 * server, whether its own cipher order wins. Pure: the client checks a string with `parse` when it is set
 * and its transport maps it with `parse` again; the test server maps its `tlsPriority` with it too.
 *
 * The meaning is GnuTLS's (`gnutls_priority_init`):
 *
 * - The first element is a keyword: NORMAL, PERFORMANCE, SECURE128 (or SECURE) keep Node's cipher list; PFS
 *   keeps only forward-secret key exchange; SECURE192 and its alias SECURE256 keep forward-secret AEAD
 *   suites of 256-bit ciphers. A keyword later on (bare or with `+`) adds its suites.
 * - Every keyword enables TLS 1.0 to 1.3; `+`, `-` or `!` with VERS-TLS1.0 ... VERS-TLS1.3, VERS-TLS-ALL or
 *   VERS-ALL change that, and the versions left must be one range (Node has a minimum and a maximum).
 *   As GnuTLS does, TLS 1.3 is dropped when TLS 1.2 is off and an older version is on. Datagram versions
 *   mean nothing on a stream and are ignored, as is taking away SSL 3.0.
 * - `+` or `-` with AES-256-GCM, CHACHA20-POLY1305, AES-256-CCM, AES-256-CBC, AES-128-GCM, AES-128-CCM,
 *   AES-128-CBC or CIPHER-ALL changes the ciphers. A list then names OpenSSL's suites one by one: the
 *   TLS 1.3 suites of those ciphers when TLS 1.3 is on, their TLS 1.2 suites when an older version is;
 *   when one side has none, the versions shrink to the other.
 * - +PSK, +DHE-PSK and +ECDHE-PSK add their TLS 1.2 suites to such a list, and change nothing else: Node
 *   takes PSK from its credentials. COMP-* elements are ignored, as GnuTLS ignores them.
 * - %SERVER_PRECEDENCE is `honorCipherOrder`, a server's option (a client leaves it out).
 *
 * What GnuTLS refuses too is "Invalid" (EINVAL): an empty string or element, an unknown keyword, version or
 * % flag, a keyword taken away, no version or no cipher left. What GnuTLS accepts but Node cannot be told is
 * "Unsupported" (ENOTSUP), never dropped in silence: other algorithms (MACs, key exchanges, signatures,
 * groups, certificate types), other % flags, LEGACY and SUITEB*, NONE, @KEYWORD, a hole in the versions.
 * Both name the element at fault in their message.
 *
 * @since 0.3.0
 */

/**
 * A protocol version as Node's `minVersion` / `maxVersion` name it.
 * @since 0.3.0
 * @category models
 */
export type Version = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"

/**
 * What a priority string asks of Node's TLS; an absent field keeps Node's default (or, for `ciphers`, what
 * the caller's credentials need, such as the PSK suites).
 * @since 0.3.0
 * @category models
 */
export interface Options {
  readonly minVersion?: Version
  readonly maxVersion?: Version
  /** OpenSSL's cipher list, suite by suite, the TLS 1.3 suites first (Node splits them off). */
  readonly ciphers?: string
  /** %SERVER_PRECEDENCE: the server's order of suites wins. A client has no such option. */
  readonly honorCipherOrder?: boolean
}

/**
 * The outcome of `parse`: the options; or "Invalid" (EINVAL), a string GnuTLS refuses too; or "Unsupported"
 * (ENOTSUP), a string GnuTLS accepts but Node's TLS cannot be told. `element` is the element at fault, as
 * written ("" when the string is empty); `message` names it.
 * @since 0.3.0
 * @category models
 */
export type Result =
  | { readonly _tag: "Options"; readonly options: Options }
  | { readonly _tag: "Invalid"; readonly element: string; readonly message: string }
  | { readonly _tag: "Unsupported"; readonly element: string; readonly message: string }

/**
 * libnbd's compile-time default priority, what `Nbd.getTlsPriority` answers until one is set.
 * @since 0.3.0
 * @category constants
 */
export const DEFAULT: string = "NORMAL"

type Refusal = Exclude<Result, { readonly _tag: "Options" }>

const say = (element: string, reason: string): string =>
  element === "" ? reason : `${JSON.stringify(element)}: ${reason}`
const invalid = (element: string, reason: string): Refusal => ({
  _tag: "Invalid",
  element,
  message: say(element, reason)
})
const unsupported = (element: string, reason: string): Refusal => ({
  _tag: "Unsupported",
  element,
  message: say(element, reason)
})

// ---------------------------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------------------------

const VERSIONS: ReadonlyArray<Version> = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

/** GnuTLS's names of the stream versions, as indices into VERSIONS. */
const VERSION_NAMES: Readonly<Record<string, ReadonlyArray<number>>> = {
  "VERS-TLS1.0": [0],
  "VERS-TLS1.1": [1],
  "VERS-TLS1.2": [2],
  "VERS-TLS1.3": [3],
  "VERS-TLS-ALL": [0, 1, 2, 3],
  "VERS-ALL": [0, 1, 2, 3]
}

const DATAGRAM_VERSIONS = new Set(["VERS-DTLS0.9", "VERS-DTLS1.0", "VERS-DTLS1.2", "VERS-DTLS-ALL"])

// ---------------------------------------------------------------------------------------------------------
// Ciphers
// ---------------------------------------------------------------------------------------------------------

type Kx = "ECDHE-ECDSA" | "ECDHE-RSA" | "DHE-RSA" | "RSA" | "ECDHE-PSK" | "DHE-PSK" | "PSK"

/** The key exchanges a forward-secret keyword keeps (GnuTLS's PFS list); the PSK ones come only when added. */
const FORWARD_SECRET: ReadonlySet<Kx> = new Set(["ECDHE-ECDSA", "ECDHE-RSA", "DHE-RSA"])
const PSK_KX: ReadonlySet<string> = new Set(["ECDHE-PSK", "DHE-PSK", "PSK"])

/** An OpenSSL TLS 1.2 suite; `legacy` ones (CBC with SHA-1) run on TLS 1.0 and 1.1 too. */
interface Suite {
  readonly kx: Kx
  readonly name: string
  readonly legacy?: true
}

/** A GnuTLS cipher: its TLS 1.3 suite, if it has one, and its TLS 1.2 suites in OpenSSL. */
interface Cipher {
  readonly tls13?: string
  readonly suites: ReadonlyArray<Suite>
}

const suites = (byKx: Partial<Record<Kx, string>>, legacy = false): ReadonlyArray<Suite> =>
  Object.entries(byKx).map(([kx, name]) => ({ kx: kx as Kx, name: name!, ...(legacy ? { legacy: true } : {}) }))

/** In GnuTLS's order of preference for NORMAL, which is also the order of a list made from them. */
const CIPHERS: ReadonlyMap<string, Cipher> = new Map<string, Cipher>([
  [
    "AES-256-GCM",
    {
      tls13: "TLS_AES_256_GCM_SHA384",
      suites: suites({
        "ECDHE-ECDSA": "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA": "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA": "DHE-RSA-AES256-GCM-SHA384",
        RSA: "AES256-GCM-SHA384",
        "DHE-PSK": "DHE-PSK-AES256-GCM-SHA384",
        PSK: "PSK-AES256-GCM-SHA384"
      })
    }
  ],
  [
    "CHACHA20-POLY1305",
    {
      tls13: "TLS_CHACHA20_POLY1305_SHA256",
      suites: suites({
        "ECDHE-ECDSA": "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA": "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA": "DHE-RSA-CHACHA20-POLY1305",
        "ECDHE-PSK": "ECDHE-PSK-CHACHA20-POLY1305",
        "DHE-PSK": "DHE-PSK-CHACHA20-POLY1305",
        PSK: "PSK-CHACHA20-POLY1305"
      })
    }
  ],
  [
    "AES-256-CCM",
    {
      suites: suites({
        "ECDHE-ECDSA": "ECDHE-ECDSA-AES256-CCM",
        "DHE-RSA": "DHE-RSA-AES256-CCM",
        RSA: "AES256-CCM",
        "DHE-PSK": "DHE-PSK-AES256-CCM",
        PSK: "PSK-AES256-CCM"
      })
    }
  ],
  [
    "AES-256-CBC",
    {
      suites: [
        ...suites({
          "ECDHE-ECDSA": "ECDHE-ECDSA-AES256-SHA384",
          "ECDHE-RSA": "ECDHE-RSA-AES256-SHA384",
          "DHE-RSA": "DHE-RSA-AES256-SHA256",
          RSA: "AES256-SHA256",
          "ECDHE-PSK": "ECDHE-PSK-AES256-CBC-SHA384",
          "DHE-PSK": "DHE-PSK-AES256-CBC-SHA384",
          PSK: "PSK-AES256-CBC-SHA384"
        }),
        ...suites(
          {
            "ECDHE-ECDSA": "ECDHE-ECDSA-AES256-SHA",
            "ECDHE-RSA": "ECDHE-RSA-AES256-SHA",
            "DHE-RSA": "DHE-RSA-AES256-SHA",
            RSA: "AES256-SHA",
            "ECDHE-PSK": "ECDHE-PSK-AES256-CBC-SHA",
            "DHE-PSK": "DHE-PSK-AES256-CBC-SHA",
            PSK: "PSK-AES256-CBC-SHA"
          },
          true
        )
      ]
    }
  ],
  [
    "AES-128-GCM",
    {
      tls13: "TLS_AES_128_GCM_SHA256",
      suites: suites({
        "ECDHE-ECDSA": "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA": "ECDHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA": "DHE-RSA-AES128-GCM-SHA256",
        RSA: "AES128-GCM-SHA256",
        "DHE-PSK": "DHE-PSK-AES128-GCM-SHA256",
        PSK: "PSK-AES128-GCM-SHA256"
      })
    }
  ],
  [
    "AES-128-CCM",
    {
      tls13: "TLS_AES_128_CCM_SHA256",
      suites: suites({
        "ECDHE-ECDSA": "ECDHE-ECDSA-AES128-CCM",
        "DHE-RSA": "DHE-RSA-AES128-CCM",
        RSA: "AES128-CCM",
        "DHE-PSK": "DHE-PSK-AES128-CCM",
        PSK: "PSK-AES128-CCM"
      })
    }
  ],
  [
    "AES-128-CBC",
    {
      suites: [
        ...suites({
          "ECDHE-ECDSA": "ECDHE-ECDSA-AES128-SHA256",
          "ECDHE-RSA": "ECDHE-RSA-AES128-SHA256",
          "DHE-RSA": "DHE-RSA-AES128-SHA256",
          RSA: "AES128-SHA256",
          "ECDHE-PSK": "ECDHE-PSK-AES128-CBC-SHA256",
          "DHE-PSK": "DHE-PSK-AES128-CBC-SHA256",
          PSK: "PSK-AES128-CBC-SHA256"
        }),
        ...suites(
          {
            "ECDHE-ECDSA": "ECDHE-ECDSA-AES128-SHA",
            "ECDHE-RSA": "ECDHE-RSA-AES128-SHA",
            "DHE-RSA": "DHE-RSA-AES128-SHA",
            RSA: "AES128-SHA",
            "ECDHE-PSK": "ECDHE-PSK-AES128-CBC-SHA",
            "DHE-PSK": "DHE-PSK-AES128-CBC-SHA",
            PSK: "PSK-AES128-CBC-SHA"
          },
          true
        )
      ]
    }
  ]
])

/**
 * What a keyword enables: its ciphers, and whether static RSA key exchange is among its key exchanges.
 * NORMAL's ciphers are taken as Node's default list has them (no CCM), so that NORMAL leaves that list
 * alone. GnuTLS's SECURE192 (SECURE256 is its alias) allows the 256-bit ciphers only: it maps to the
 * forward-secret AEAD suites among them, a subset of what GnuTLS would allow, never more.
 */
interface Level {
  readonly ciphers: ReadonlySet<string>
  readonly staticRsa: boolean
}

const NODE_DEFAULT_CIPHERS: ReadonlySet<string> = new Set([
  "AES-256-GCM",
  "CHACHA20-POLY1305",
  "AES-256-CBC",
  "AES-128-GCM",
  "AES-128-CBC"
])

const normal: Level = { ciphers: NODE_DEFAULT_CIPHERS, staticRsa: true }
const pfs: Level = { ciphers: NODE_DEFAULT_CIPHERS, staticRsa: false }
const strong: Level = { ciphers: new Set(["AES-256-GCM", "CHACHA20-POLY1305"]), staticRsa: false }

const LEVELS: Readonly<Record<string, Level>> = {
  NORMAL: normal,
  PERFORMANCE: normal,
  SECURE128: normal,
  SECURE: normal,
  PFS: pfs,
  SECURE192: strong,
  SECURE256: strong
}

/** Keywords GnuTLS knows whose algorithms Node's TLS has no way to choose. */
const UNMAPPED_LEVELS = new Set(["LEGACY", "SUITEB128", "SUITEB192"])

/** GnuTLS's % flags (priority_options.gperf), matched as it matches them: with case. */
const FLAGS = new Set([
  "COMPAT",
  "DUMBFW",
  "NO_EXTENSIONS",
  "NO_TICKETS",
  "NO_TICKETS_TLS12",
  "NO_ETM",
  "FORCE_ETM",
  "NO_SESSION_HASH",
  "FORCE_SESSION_HASH",
  "NO_STATUS_REQUEST",
  "STATELESS_COMPRESSION",
  "VERIFY_ALLOW_BROKEN",
  "VERIFY_ALLOW_SIGN_RSA_MD5",
  "VERIFY_ALLOW_SIGN_WITH_SHA1",
  "VERIFY_DISABLE_CRL_CHECKS",
  "SSL3_RECORD_VERSION",
  "LATEST_RECORD_VERSION",
  "VERIFY_ALLOW_X509_V1_CA_CRT",
  "UNSAFE_RENEGOTIATION",
  "SAFE_RENEGOTIATION",
  "PARTIAL_RENEGOTIATION",
  "DISABLE_SAFE_RENEGOTIATION",
  "FALLBACK_SCSV",
  "DISABLE_WILDCARDS",
  "SERVER_PRECEDENCE",
  "PROFILE_VERY_WEAK",
  "PROFILE_LOW",
  "PROFILE_LEGACY",
  "PROFILE_MEDIUM",
  "PROFILE_HIGH",
  "PROFILE_ULTRA",
  "PROFILE_FUTURE",
  "PROFILE_SUITEB128",
  "PROFILE_SUITEB192",
  "NEW_PADDING",
  "DEBUG_ALLOW_KEY_USAGE_VIOLATIONS",
  "ALLOW_SMALL_RECORDS",
  "DISABLE_TLS13_COMPAT_MODE",
  "NO_SHUFFLE_EXTENSIONS"
])

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

/** What the elements read so far ask for. */
interface State {
  readonly versions: Array<boolean>
  readonly ciphers: Set<string>
  staticRsa: boolean
  readonly psk: Set<Kx>
  serverPrecedence: boolean
  /** The last element that changed the versions, then the ciphers: the one named when they end up wrong. */
  versionElement: string
  cipherElement: string
}

const addLevel = (state: State, level: Level): undefined => {
  for (const c of level.ciphers) state.ciphers.add(c)
  state.staticRsa ||= level.staticRsa
  return undefined
}

/**
 * The first element. NONE and a modifier first both start GnuTLS from empty lists of ciphers, MACs, key
 * exchanges, signatures and groups, which such a string must then name one by one; Node's TLS cannot be told
 * most of those. An @KEYWORD is expanded from GnuTLS's system configuration file (/etc/gnutls/config, which
 * crypto-policies writes), unknown here and not read by Node: mapping @SYSTEM to Node's defaults would drop
 * the administrator's policy in silence.
 */
const start = (first: string): Level | Refusal => {
  if (first === "") return invalid("", "the priority string begins with an empty element")
  const name = first.toUpperCase()
  const level = LEVELS[name]
  if (level !== undefined) return level
  if (UNMAPPED_LEVELS.has(name)) return unsupported(first, "Node's TLS options have no equivalent of this keyword")
  if (name === "NONE")
    return unsupported(
      first,
      "a string from NONE names every MAC, key exchange, signature and group, which Node's TLS cannot be told; " +
        "start from NORMAL and take away what is not wanted"
    )
  if (name.startsWith("@"))
    return unsupported(first, "a policy from GnuTLS's system configuration file, which Node's TLS does not read")
  if (/^[-+!%]/.test(name))
    return unsupported(
      first,
      "a string must begin with a keyword like NORMAL for Node's TLS: without one GnuTLS starts from no " +
        "cipher, MAC or key exchange, which must then be named one by one"
    )
  return invalid(first, "unknown keyword")
}

const isRefusal = (r: object): r is Refusal => "_tag" in r

/** A % flag: %SERVER_PRECEDENCE maps, the rest of GnuTLS's flags have no equivalent. */
const flag = (state: State, element: string): Refusal | undefined => {
  const name = element.slice(1)
  if (name === "SERVER_PRECEDENCE") {
    state.serverPrecedence = true
    return undefined
  }
  return FLAGS.has(name)
    ? unsupported(element, "Node's TLS options have no equivalent of this flag")
    : invalid(element, "unknown flag")
}

const version = (state: State, element: string, add: boolean, name: string): Refusal | undefined => {
  const indices = VERSION_NAMES[name]
  if (indices !== undefined) {
    for (const i of indices) state.versions[i] = add
    state.versionElement = element
    return undefined
  }
  if (DATAGRAM_VERSIONS.has(name)) return undefined
  if (name === "VERS-SSL3.0") return add ? unsupported(element, "Node's TLS does not speak SSL 3.0") : undefined
  return invalid(element, "unknown protocol version")
}

const cipher = (state: State, element: string, add: boolean, name: string): undefined => {
  // -CIPHER-ALL empties the list, +CIPHER-ALL adds NORMAL's ciphers (all of the table), as in GnuTLS.
  for (const c of name === "CIPHER-ALL" ? CIPHERS.keys() : [name]) {
    if (add) state.ciphers.add(c)
    else state.ciphers.delete(c)
  }
  state.cipherElement = element
  return undefined
}

/** An element after the first: a keyword, a % flag, or a modifier (`+`, `-`, `!`) and a name. */
const modify = (state: State, element: string): Refusal | undefined => {
  if (element === "") return invalid(element, "an empty element (two colons in a row, or one at the end)")
  if (element.startsWith("%")) return flag(state, element)
  const op = element[0]!
  if (op !== "+" && op !== "-" && op !== "!") {
    const level = LEVELS[element.toUpperCase()]
    if (level !== undefined) return addLevel(state, level)
    if (UNMAPPED_LEVELS.has(element.toUpperCase()))
      return unsupported(element, "Node's TLS options have no equivalent of this keyword")
    return invalid(element, "unknown keyword (an element after the first starts with +, -, ! or %)")
  }
  const add = op === "+"
  const name = element.slice(1).toUpperCase()
  if (name === "") return invalid(element, "a modifier needs a name")
  if (LEVELS[name] !== undefined || UNMAPPED_LEVELS.has(name)) {
    if (!add) return invalid(element, "a keyword can be added, not taken away")
    return UNMAPPED_LEVELS.has(name)
      ? unsupported(element, "Node's TLS options have no equivalent of this keyword")
      : addLevel(state, LEVELS[name]!)
  }
  if (name.startsWith("VERS-")) return version(state, element, add, name)
  if (CIPHERS.has(name) || name === "CIPHER-ALL") return cipher(state, element, add, name)
  if (PSK_KX.has(name)) {
    // Node offers PSK whenever its credentials hold a key: it can be added to a cipher list, not taken away.
    if (!add) return unsupported(element, "Node's TLS takes PSK from its credentials; it cannot be taken away")
    state.psk.add(name as Kx)
    return undefined
  }
  if (name.startsWith("COMP-")) return undefined
  return unsupported(element, "Node's TLS options have no equivalent")
}

/** The versions left on as GnuTLS ends up with them, as one range of indices, or why they are not one. */
const versionRange = (state: State): readonly [number, number] | Refusal => {
  const on = [...state.versions]
  // GnuTLS drops TLS 1.3 when TLS 1.2 is off and an older version on (a peer without TLS 1.3 would fall
  // back to TLS 1.2, the version that is missing).
  if (on[3] && !on[2] && (on[0] || on[1])) on[3] = false
  const first = on.indexOf(true)
  const last = on.lastIndexOf(true)
  if (first === -1) return invalid(state.versionElement, "no TLS version is left enabled")
  const gap = on.slice(first, last + 1).indexOf(false)
  if (gap !== -1)
    return unsupported(
      state.versionElement,
      `Node's TLS takes a range of protocol versions: ${VERSIONS[first + gap]} cannot be left out between ` +
        `${VERSIONS[first]} and ${VERSIONS[last]}`
    )
  return [first, last]
}

const changesCiphers = (state: State): boolean =>
  !state.staticRsa ||
  state.ciphers.size !== NODE_DEFAULT_CIPHERS.size ||
  [...state.ciphers].some((c) => !NODE_DEFAULT_CIPHERS.has(c))

/**
 * The suites of the enabled ciphers the enabled versions can run, and the range they leave: a side (TLS 1.3,
 * or TLS 1.2 and older) without a suite is cut off, as GnuTLS never negotiates a version it has no suite for
 * (and an empty list is an error to OpenSSL, not "none").
 */
const cipherList = (
  state: State,
  [first, last]: readonly [number, number]
): { readonly ciphers: string; readonly first: number; readonly last: number } | Refusal => {
  const enabled = [...CIPHERS].filter(([name]) => state.ciphers.has(name)).map(([, c]) => c)
  const kxOn = (kx: Kx) => FORWARD_SECRET.has(kx) || (kx === "RSA" ? state.staticRsa : state.psk.has(kx))
  const tls13 = last === 3 ? enabled.flatMap((c) => (c.tls13 === undefined ? [] : [c.tls13])) : []
  const tls12 =
    first <= 2 ? enabled.flatMap((c) => c.suites.filter((s) => kxOn(s.kx) && (last >= 2 || s.legacy === true))) : []
  const at = state.cipherElement === "" ? state.versionElement : state.cipherElement
  if (enabled.length === 0) return invalid(at, "no cipher is left enabled")
  if (tls13.length === 0 && tls12.length === 0)
    return unsupported(at, "no cipher suite is left for the enabled TLS versions")
  return {
    ciphers: [...tls13, ...tls12.map((s) => s.name)].join(":"),
    first: tls12.length === 0 ? 3 : first,
    last: tls13.length === 0 ? Math.min(last, 2) : last
  }
}

const finish = (state: State): Result => {
  const range = versionRange(state)
  if (isRefusal(range)) return range
  const allOn = range[0] === 0 && range[1] === 3
  const order = state.serverPrecedence ? { honorCipherOrder: true } : {}
  const versions = (first: number, last: number) => ({ minVersion: VERSIONS[first]!, maxVersion: VERSIONS[last]! })
  if (!changesCiphers(state)) return { _tag: "Options", options: { ...(allOn ? {} : versions(...range)), ...order } }
  const list = cipherList(state, range)
  if (isRefusal(list)) return list
  // All four versions on keeps Node's default range, but for a side the ciphers cut off.
  const bounds = allOn
    ? {
        ...(list.first !== 0 ? { minVersion: VERSIONS[list.first]! } : {}),
        ...(list.last !== 3 ? { maxVersion: VERSIONS[list.last]! } : {})
      }
    : versions(list.first, list.last)
  return { _tag: "Options", options: { ...bounds, ciphers: list.ciphers, ...order } }
}

/**
 * Maps a GnuTLS priority string to Node's TLS options, or says why it cannot (see the module's comment for
 * what maps). Keywords and names match without regard to case and a space after a colon is skipped, as in
 * GnuTLS.
 * @example
 * ```ts
 * import { TlsPriority } from "@effect-nbd/core"
 *
 * TlsPriority.parse("NORMAL:-VERS-TLS1.3")
 * // { _tag: "Options", options: { minVersion: "TLSv1", maxVersion: "TLSv1.2" } }
 * TlsPriority.parse("NORMAL:-VERS-ALL:+VERS-TLS1.3:%SERVER_PRECEDENCE")
 * // { _tag: "Options", options: { minVersion: "TLSv1.3", maxVersion: "TLSv1.3", honorCipherOrder: true } }
 * TlsPriority.parse("NORMAL:+GROUP-X25519")
 * // { _tag: "Unsupported", element: "+GROUP-X25519", message: "\"+GROUP-X25519\": Node's TLS options have ..." }
 * ```
 * @since 0.3.0
 * @category parsing
 */
export const parse = (s: string): Result => {
  const [first, ...rest] = s
    .trimStart()
    .split(":")
    .map((e, i) => (i === 0 ? e : e.replace(/^ +/, "")))
  if (first === "" && rest.length === 0) return invalid("", "the priority string is empty")
  const level = start(first!)
  if (isRefusal(level)) return level
  const state: State = {
    versions: [true, true, true, true],
    ciphers: new Set(level.ciphers),
    staticRsa: level.staticRsa,
    psk: new Set(),
    serverPrecedence: false,
    versionElement: first!,
    cipherElement: ""
  }
  for (const e of rest) {
    const refused = modify(state, e)
    if (refused !== undefined) return refused
  }
  return finish(state)
}
