/**
 * NBD URIs (the NBD project's uri.md): `nbd://[user@]host[:port]/export`, `nbd+unix:///export?socket=PATH`,
 * and their TLS forms `nbds://` and `nbds+unix://`. Platform-neutral: parsing and formatting only, validated
 * with `effect/Schema` (`NbdUriFromString` decodes a string, and encodes back to one).
 *
 * @since 0.1.0
 */
import * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { invalidArgument } from "./internal/engine/arguments.js"
import { calls } from "./internal/api/calls.js"
import type * as NbdError from "./NbdError.js"
import * as Protocol from "./Protocol.js"

const utf8Length = (s: string): number => new TextEncoder().encode(s).length

/**
 * A TCP address: a host name or IP address (IPv6 without brackets) and a port.
 * @since 0.1.0
 * @category schemas
 */
export const Tcp = Schema.TaggedStruct("Tcp", {
  host: Schema.NonEmptyString,
  port: Schema.Int.pipe(Schema.between(1, 65535, { message: () => "port out of range" }))
})

/**
 * A Unix socket path.
 * @since 0.1.0
 * @category schemas
 */
export const Unix = Schema.TaggedStruct("Unix", {
  path: Schema.NonEmptyString.annotations({ message: () => "missing socket= query parameter" })
})

/**
 * Where a URI points.
 * @since 0.1.0
 * @category schemas
 */
export const Transport = Schema.Union(Tcp, Unix)

/**
 * Where a URI points.
 * @since 0.1.0
 * @category models
 */
export type Transport = typeof Transport.Type

/**
 * An export name: at most 4096 bytes of UTF-8 (the protocol's string limit).
 * @since 0.1.0
 * @category schemas
 */
export const ExportName = Schema.String.pipe(
  Schema.filter((s) => utf8Length(s) <= Protocol.Limits.MAX_STRING, {
    identifier: "ExportName",
    message: () => "export name is longer than 4096 bytes"
  })
)

const booleanWords = ["1", "0", "true", "false", "yes", "no", "on", "off"]

/**
 * Query parameters other than `socket` and `tls-username` (tls-certificates, tls-psk-file, tls-hostname,
 * tls-verify-peer, and any other, kept as given). `tls-verify-peer` must be a boolean word.
 * @since 0.1.0
 * @category schemas
 */
export const Query = Schema.ReadonlyMapFromSelf({ key: Schema.String, value: Schema.String }).pipe(
  Schema.filter((query) => {
    const verify = query.get("tls-verify-peer")
    return verify === undefined || booleanWords.includes(verify.toLowerCase())
      ? undefined
      : `tls-verify-peer: not a boolean: ${verify}`
  })
)

/**
 * A parsed NBD URI.
 * @since 0.1.0
 * @category schemas
 */
export const NbdUri = Schema.Struct({
  transport: Transport,
  tls: Schema.Boolean,
  exportName: ExportName,
  /** The TLS (PSK) username: the URI's user information, or its `tls-username` query parameter. */
  username: Schema.optionalWith(Schema.String, { exact: true }),
  query: Query
})

/**
 * A parsed NBD URI.
 * @since 0.1.0
 * @category models
 */
export interface NbdUri extends Schema.Schema.Type<typeof NbdUri> {}

const schemes: Record<string, { readonly unix: boolean; readonly tls: boolean }> = {
  "nbd:": { unix: false, tls: false },
  "nbds:": { unix: false, tls: true },
  "nbd+unix:": { unix: true, tls: false },
  "nbds+unix:": { unix: true, tls: true }
}

/** RFC 3986 queries, as libnbd reads them: `&` or `;` between parameters, only `%XX` decoded (`+` is a plus). */
const parseQuery = (search: string): Map<string, string> | undefined => {
  const query = new Map<string, string>()
  for (const part of search.replace(/^\?/, "").split(/[&;]/)) {
    if (part === "") continue
    const eq = part.indexOf("=")
    if (eq === 0) continue // "=value": ignored, as libnbd (and CGI.pm) do
    try {
      query.set(
        decodeURIComponent(eq < 0 ? part : part.slice(0, eq)),
        eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1))
      )
    } catch {
      return undefined
    }
  }
  return query
}

const decodeComponent = (s: string): string | undefined => {
  try {
    return decodeURIComponent(s)
  } catch {
    return undefined
  }
}

/**
 * Takes the user information off an authority with no host (`nbds+unix://alice@/?socket=...`): WHATWG's URL
 * refuses credentials without a host, while libnbd (libxml2) accepts them, and the user is the PSK identity.
 */
const detachUserinfo = (uri: string): { readonly rest: string; readonly userinfo: string | undefined } => {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)@([/?#]|$)/.exec(uri)
  if (match === null || match[2]!.includes("@")) return { rest: uri, userinfo: undefined }
  return { rest: match[1]! + uri.slice(match[0].length - match[3]!.length), userinfo: match[2]! }
}

/** The URI's parts, before the schema validates them; a string is why it is malformed. */
const split = (uri: string): Either.Either<NbdUri, string> => {
  const { rest, userinfo: hostless } = detachUserinfo(uri)
  let url: URL
  try {
    url = new URL(rest)
  } catch {
    return Either.left("unable to parse URI")
  }
  const scheme = schemes[url.protocol]
  if (scheme === undefined) return Either.left(`unknown NBD URI scheme ${url.protocol.slice(0, -1)}`)
  if (!uri.slice(url.protocol.length).startsWith("//")) return Either.left(`URI must begin with '${url.protocol}//'`)
  if (url.password !== "" || hostless?.includes(":")) return Either.left("a password is not supported in an NBD URI")
  const exportName = decodeComponent(url.pathname.replace(/^\//, ""))
  if (exportName === undefined) return Either.left("invalid percent-encoding in the export name")
  const userinfo = decodeComponent(hostless ?? url.username)
  if (userinfo === undefined) return Either.left("invalid percent-encoding in the user name")
  const query = parseQuery(url.search)
  if (query === undefined) return Either.left("invalid percent-encoding in the query")
  const socket = query.get("socket")
  query.delete("socket")
  const queryUser = query.get("tls-username")
  query.delete("tls-username")
  const username = userinfo !== "" ? userinfo : queryUser
  const common = { tls: scheme.tls, exportName, query, ...(username === undefined ? {} : { username }) }
  if (scheme.unix) {
    if (url.hostname !== "" || url.port !== "") return Either.left("a Unix socket URI takes no host or port")
    if (socket === undefined || socket === "") return Either.left("missing socket= query parameter")
    return Either.right({ transport: { _tag: "Unix", path: socket }, ...common })
  }
  if (socket !== undefined) return Either.left("socket= is only valid with nbd+unix:// URIs")
  // libnbd connects to localhost when the URI names no host ("nbd:///disk").
  const host = url.hostname === "" ? "localhost" : url.hostname.replace(/^\[(.*)\]$/, "$1")
  const port = url.port === "" ? Protocol.DEFAULT_PORT : Number(url.port)
  return Either.right({ transport: { _tag: "Tcp", host, port }, ...common })
}

const encodeQueryValue = (v: string): string => encodeURIComponent(v).replace(/%2F/g, "/")

/**
 * Formats a URI that reconnects to the same place. The TLS username goes in the user information of a TCP
 * URI, and in `tls-username=` for a Unix socket (whose URI has no authority to hold it).
 * @since 0.1.0
 * @category formatting
 */
export const format = (uri: {
  readonly transport: Transport
  readonly tls?: boolean
  readonly exportName?: string
  readonly username?: string
  readonly query?: ReadonlyMap<string, string>
}): string => {
  const path = `/${encodeURIComponent(uri.exportName ?? "").replace(/%2F/g, "/")}`
  const params = new Map<string, string>()
  const s = uri.tls ? "nbds" : "nbd"
  let base: string
  if (uri.transport._tag === "Unix") {
    params.set("socket", uri.transport.path)
    if (uri.username !== undefined) params.set("tls-username", uri.username)
    base = `${s}+unix://${path}`
  } else {
    const user = uri.username === undefined ? "" : `${encodeURIComponent(uri.username)}@`
    const host = uri.transport.host.includes(":") ? `[${uri.transport.host}]` : uri.transport.host
    const port = uri.transport.port === Protocol.DEFAULT_PORT ? "" : `:${uri.transport.port}`
    base = `${s}://${user}${host}${port}${path}`
  }
  for (const [k, v] of uri.query ?? []) if (k !== "socket" && k !== "tls-username") params.set(k, v)
  const q = Array.from(params, ([k, v]) => `${encodeURIComponent(k)}=${encodeQueryValue(v)}`).join("&")
  return q === "" ? base : `${base}?${q}`
}

/**
 * An NBD URI as a string: decoding parses and validates it, encoding formats it.
 * @since 0.1.0
 * @category schemas
 */
export const NbdUriFromString = Schema.transformOrFail(Schema.String, NbdUri, {
  strict: true,
  decode: (uri, _, ast) =>
    Either.match(split(uri), {
      onLeft: (why) => ParseResult.fail(new ParseResult.Type(ast, uri, why)),
      onRight: ParseResult.succeed
    }),
  encode: (uri) => ParseResult.succeed(format(uri))
}).annotations({ identifier: "NbdUriFromString" })

const decodeUri = Schema.decode(NbdUriFromString)

const shown = (uri: string): string => (uri.length > 200 ? `${uri.slice(0, 200)}...` : uri)

const toError = (uri: string, error: ParseResult.ParseError): NbdError.InvalidArgumentError => {
  const first = Arr.head(ParseResult.ArrayFormatter.formatErrorSync(error))
  const why = first._tag === "Some" ? first.value.message : "invalid NBD URI"
  const tooLong = first._tag === "Some" && first.value.path[0] === "exportName"
  return invalidArgument(calls.connectUri.name, `${why}: ${shown(uri)}`, tooLong ? "ENAMETOOLONG" : "EINVAL")
}

/**
 * Parses an NBD URI, failing with EINVAL and the reason for anything malformed or unsupported
 * (ENAMETOOLONG for an export name over 4096 bytes, as nbd_set_export_name).
 * @since 0.1.0
 * @category parsing
 */
export const parse = (uri: string): Effect.Effect<NbdUri, NbdError.InvalidArgumentError> =>
  Effect.suspend(() => Effect.mapError(decodeUri(uri), (error) => toError(uri, error)))

/**
 * Whether a TLS setting word from a URI (`tls-verify-peer=`) means true.
 * @since 0.1.0
 * @category parsing
 */
export const parseBoolean = (word: string): boolean => ["1", "true", "yes", "on"].includes(word.toLowerCase())
