/**
 * NBD URIs (the NBD project's uri.md): `nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`,
 * and their TLS forms `nbds://` and `nbds+unix://`. Platform-neutral: parsing only.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as NbdError from "./NbdError.js"
import * as Protocol from "./Protocol.js"

/**
 * Where a URI points.
 * @since 0.1.0
 * @category models
 */
export type Transport =
  | { readonly _tag: "Tcp"; readonly host: string; readonly port: number }
  | { readonly _tag: "Unix"; readonly path: string }

/**
 * A parsed NBD URI.
 * @since 0.1.0
 * @category models
 */
export interface NbdUri {
  readonly transport: Transport
  readonly tls: boolean
  readonly exportName: string
  /** Query parameters other than `socket` (tls-certificates, tls-psk-file, ...). */
  readonly query: ReadonlyMap<string, string>
}

const schemes: Record<string, { readonly unix: boolean; readonly tls: boolean }> = {
  "nbd:": { unix: false, tls: false },
  "nbds:": { unix: false, tls: true },
  "nbd+unix:": { unix: true, tls: false },
  "nbds+unix:": { unix: true, tls: true }
}

const bad = (uri: string, why: string): NbdError.InvalidArgumentError =>
  new NbdError.InvalidArgumentError({ errno: "EINVAL", operation: "nbd_connect_uri", message: `${why}: ${uri}` })

/** RFC 3986 queries, as libnbd reads them: `&` or `;` between parameters, only `%XX` decoded (`+` is a plus). */
const parseQuery = (search: string): Map<string, string> | undefined => {
  const query = new Map<string, string>()
  for (const part of search.replace(/^\?/, "").split(/[&;]/)) {
    if (part === "") continue
    const eq = part.indexOf("=")
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

const encodeQueryValue = (v: string): string => encodeURIComponent(v).replace(/%2F/g, "/")

/**
 * Parses an NBD URI, failing with EINVAL and the reason for anything malformed or unsupported.
 * @since 0.1.0
 * @category parsing
 */
export const parse = (uri: string): Effect.Effect<NbdUri, NbdError.InvalidArgumentError> =>
  Effect.suspend((): Effect.Effect<NbdUri, NbdError.InvalidArgumentError> => {
    let url: URL
    try {
      url = new URL(uri)
    } catch {
      return Effect.fail(bad(uri, "unable to parse URI"))
    }
    const scheme = schemes[url.protocol]
    if (scheme === undefined) return Effect.fail(bad(uri, `unknown NBD URI scheme ${url.protocol.slice(0, -1)}`))
    if (!uri.slice(url.protocol.length).startsWith("//"))
      return Effect.fail(bad(uri, `URI must begin with '${url.protocol}//'`))
    if (url.username !== "" || url.password !== "") return Effect.fail(bad(uri, "user information is not supported"))
    let exportName: string
    try {
      exportName = decodeURIComponent(url.pathname.replace(/^\//, ""))
    } catch {
      return Effect.fail(bad(uri, "invalid percent-encoding in the export name"))
    }
    if (new TextEncoder().encode(exportName).length > Protocol.Limits.MAX_STRING)
      return Effect.fail(
        new NbdError.InvalidArgumentError({
          errno: "ENAMETOOLONG",
          operation: "nbd_connect_uri",
          message: `export name is longer than 4096 bytes: ${uri.slice(0, 80)}...`
        })
      )
    const query = parseQuery(url.search)
    if (query === undefined) return Effect.fail(bad(uri, "invalid percent-encoding in the query"))
    const socket = query.get("socket")
    query.delete("socket")
    if (scheme.unix) {
      if (url.hostname !== "" || url.port !== "")
        return Effect.fail(bad(uri, "a Unix socket URI takes no host or port"))
      if (socket === undefined || socket === "") return Effect.fail(bad(uri, "missing socket= query parameter"))
      return Effect.succeed({ transport: { _tag: "Unix", path: socket }, tls: scheme.tls, exportName, query })
    }
    if (socket !== undefined) return Effect.fail(bad(uri, "socket= is only valid with nbd+unix:// URIs"))
    if (url.hostname === "") return Effect.fail(bad(uri, "missing host name"))
    const port = url.port === "" ? Protocol.DEFAULT_PORT : Number(url.port)
    const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname
    return Effect.succeed({ transport: { _tag: "Tcp", host, port }, tls: scheme.tls, exportName, query })
  })

/**
 * Formats a URI that reconnects to the same place.
 * @since 0.1.0
 * @category formatting
 */
export const format = (uri: {
  readonly transport: Transport
  readonly tls?: boolean
  readonly exportName?: string
  readonly query?: ReadonlyMap<string, string>
}): string => {
  const path = `/${encodeURIComponent(uri.exportName ?? "").replace(/%2F/g, "/")}`
  const params = new Map<string, string>()
  const s = uri.tls ? "nbds" : "nbd"
  let base: string
  if (uri.transport._tag === "Unix") {
    params.set("socket", uri.transport.path)
    base = `${s}+unix://${path}`
  } else {
    const host = uri.transport.host.includes(":") ? `[${uri.transport.host}]` : uri.transport.host
    const port = uri.transport.port === Protocol.DEFAULT_PORT ? "" : `:${uri.transport.port}`
    base = `${s}://${host}${port}${path}`
  }
  for (const [k, v] of uri.query ?? []) params.set(k, v)
  const q = Array.from(params, ([k, v]) => `${encodeURIComponent(k)}=${encodeQueryValue(v)}`).join("&")
  return q === "" ? base : `${base}?${q}`
}
