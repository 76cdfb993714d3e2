/**
 * NBD URIs (the NBD project's uri.md): `nbd://[user@]host[:port]/export`, `nbd+unix:///export?socket=PATH`,
 * and their TLS forms `nbds://` and `nbds+unix://`. Platform-neutral: parsing and formatting only, validated
 * with `effect/Schema` (`NbdUriFromString` decodes a string, and encodes back to one).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaGetter from "effect/SchemaGetter"
import * as SchemaIssue from "effect/SchemaIssue"
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
  port: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }, { message: "port out of range" }))
})

/**
 * A Unix socket path.
 * @since 0.1.0
 * @category schemas
 */
export const Unix = Schema.TaggedStruct("Unix", {
  path: Schema.String.check(Schema.isNonEmpty({ message: "missing socket= query parameter" }))
})

/**
 * Where a URI points.
 * @since 0.1.0
 * @category schemas
 */
export const Transport = Schema.Union([Tcp, Unix])

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
export const ExportName = Schema.String.check(
  Schema.makeFilter((s: string) => utf8Length(s) <= Protocol.Limits.MAX_STRING, {
    message: "export name is longer than 4096 bytes"
  })
).annotate({ identifier: "ExportName" })

const booleanWords = ["1", "0", "true", "false", "yes", "no", "on", "off"]

/**
 * Query parameters other than `socket` and `tls-username` (tls-certificates, tls-psk-file, tls-hostname,
 * tls-verify-peer, and any other, kept as given). `tls-verify-peer` must be a boolean word.
 * @since 0.1.0
 * @category schemas
 */
export const Query = Schema.ReadonlyMap(Schema.String, Schema.String).check(
  Schema.makeFilter((query: ReadonlyMap<string, string>) => {
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
  username: Schema.optionalKey(Schema.String),
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
const split = (uri: string): Result.Result<NbdUri, string> => {
  const { rest, userinfo: hostless } = detachUserinfo(uri)
  let url: URL
  try {
    url = new URL(rest)
  } catch {
    return Result.fail("unable to parse URI")
  }
  const scheme = schemes[url.protocol]
  if (scheme === undefined) return Result.fail(`unknown NBD URI scheme ${url.protocol.slice(0, -1)}`)
  if (!uri.slice(url.protocol.length).startsWith("//")) return Result.fail(`URI must begin with '${url.protocol}//'`)
  if (url.password !== "" || hostless?.includes(":")) return Result.fail("a password is not supported in an NBD URI")
  const exportName = decodeComponent(url.pathname.replace(/^\//, ""))
  if (exportName === undefined) return Result.fail("invalid percent-encoding in the export name")
  const userinfo = decodeComponent(hostless ?? url.username)
  if (userinfo === undefined) return Result.fail("invalid percent-encoding in the user name")
  const query = parseQuery(url.search)
  if (query === undefined) return Result.fail("invalid percent-encoding in the query")
  const socket = query.get("socket")
  query.delete("socket")
  const queryUser = query.get("tls-username")
  query.delete("tls-username")
  const username = userinfo !== "" ? userinfo : queryUser
  const common = { tls: scheme.tls, exportName, query, ...(username === undefined ? {} : { username }) }
  if (scheme.unix) {
    if (url.hostname !== "" || url.port !== "") return Result.fail("a Unix socket URI takes no host or port")
    if (socket === undefined || socket === "") return Result.fail("missing socket= query parameter")
    return Result.succeed({ transport: { _tag: "Unix", path: socket }, ...common })
  }
  if (socket !== undefined) return Result.fail("socket= is only valid with nbd+unix:// URIs")
  // libnbd connects to localhost when the URI names no host ("nbd:///disk").
  const host = url.hostname === "" ? "localhost" : url.hostname.replace(/^\[(.*)\]$/, "$1")
  const port = url.port === "" ? Protocol.DEFAULT_PORT : Number(url.port)
  return Result.succeed({ transport: { _tag: "Tcp", host, port }, ...common })
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
export const NbdUriFromString = Schema.String.pipe(
  Schema.decodeTo(NbdUri, {
    decode: SchemaGetter.transformEffect((uri: string) =>
      Result.match(split(uri), {
        onFailure: (why) => Effect.fail(new SchemaIssue.InvalidValue({ message: why })),
        onSuccess: (parsed) => Effect.succeed(parsed)
      })
    ),
    encode: SchemaGetter.transform(format)
  })
).annotate({ identifier: "NbdUriFromString" })

const decodeUri = Schema.decodeEffect(NbdUriFromString)

const shown = (uri: string): string => (uri.length > 200 ? `${uri.slice(0, 200)}...` : uri)

const formatIssue = SchemaIssue.makeFormatterStandardSchemaV1()

const toError = (uri: string, error: Schema.SchemaError): NbdError.InvalidArgumentError => {
  const first = formatIssue(error.issue).issues[0]
  const why = first?.message ?? "invalid NBD URI"
  const tooLong = first?.path?.[0] === "exportName"
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
