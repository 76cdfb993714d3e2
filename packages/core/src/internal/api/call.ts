import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"
import type * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import type { Spec } from "./calls.js"
import * as debug from "./debug.js"
import { type HandleImpl, stateDenied } from "../session/handle.js"
import * as metrics from "./metrics.js"
import { uriOf } from "../session/uri.js"

/** What a call tells the wrapper beyond its record. */
export interface Details {
  /** Runs before any check, as libnbd zeroes a read's buffer before it checks anything. */
  readonly first?: (h: HandleImpl) => void
  /** The command flags the caller gave, checked against the call's own (`Spec.flags`). */
  readonly flags?: (h: HandleImpl) => number
  /** The bytes a successful read or write moves, for the metrics. */
  readonly bytes?: number
  /** What the span and the debug message say of the arguments (offset, count, a name...). */
  readonly attributes?: () => Readonly<Record<string, unknown>>
}

/**
 * The one wrapper every call runs through, in libnbd's order (generator/C.ml): what must come first (a read
 * zeroes its buffer), the state check with libnbd's message (ENOTCONN while created, else EINVAL), the flag
 * check (while STRICT_FLAGS is set, or for bits above 0xffff), then the body. Nothing happens until the
 * effect runs. With a tracer installed the call is a span named after it (`nbd_pread`) with the handle,
 * export, server and arguments as attributes; with debug on, its entry and result are logged; with metrics
 * on, it is counted and timed.
 */
export const call = <A, E, R>(
  h: HandleImpl,
  spec: Spec,
  body: () => Effect.Effect<A, E, R>,
  details: Details = {}
): Effect.Effect<A, E | NbdError.NbdError, R> =>
  // One step for the checks and the choice of span: the small commands' cost is in steps like these.
  Effect.contextWith((context: Context.Context<never>) => {
    details.first?.(h)
    const refused =
      (spec.states === "any" ? undefined : stateDenied(h, spec.name, spec.states)) ?? checkFlags(h, spec, details)
    let effect: Effect.Effect<A, E | NbdError.NbdError, R> = refused === undefined ? body() : Effect.fail(refused)
    if (h.settings.metrics) effect = metrics.observe(spec.name, effect, details.bytes)
    if (h.settings.debug) effect = debug.traceCall(h, spec.name, effect, describe(details))
    // Effect's built-in tracer records spans nobody reads: with it installed, calls open no span.
    return Context.get(context, Tracer.Tracer) === Tracer.nativeTracer
      ? effect
      : Effect.withSpan(effect, spec.name, { kind: "client", attributes: spanAttributes(h, spec, details) })
  })

const checkFlags = (h: HandleImpl, spec: Spec, details: Details): NbdError.NbdError | undefined => {
  if (spec.flags === undefined || details.flags === undefined) return undefined
  const flags = details.flags(h)
  const strict = (h.settings.strictMode & Protocol.Strict.FLAGS) !== 0
  if ((strict || flags > 0xffff) && (flags & ~spec.flags) !== 0)
    return invalidArgument(spec.name, `flags: invalid value for flag: 0x${flags.toString(16)}`)
  return undefined
}

/**
 * What every span of a handle says of it, computed once per connection (its URI changes with it), and again
 * only when the handle's or the export's name is set anew.
 */
interface HandleAttributes {
  readonly connection: unknown
  readonly handleName: string
  readonly exportName: string
  readonly attributes: Readonly<Record<string, unknown>>
}

const handleAttributes = new WeakMap<HandleImpl, HandleAttributes>()

const attributesOf = (h: HandleImpl): Readonly<Record<string, unknown>> => {
  const cached = handleAttributes.get(h)
  if (
    cached !== undefined &&
    cached.connection === h.connection &&
    cached.handleName === h.settings.handleName &&
    cached.exportName === h.settings.exportName
  )
    return cached.attributes
  const attributes: Record<string, unknown> = {
    "nbd.handle.name": h.settings.handleName,
    "nbd.export.name": h.settings.exportName
  }
  const uri = uriOf(h)
  if (uri !== undefined) attributes["server.address"] = uri
  handleAttributes.set(h, {
    connection: h.connection,
    handleName: h.settings.handleName,
    exportName: h.settings.exportName,
    attributes
  })
  return attributes
}

/** Attributes a user filters spans on, after @effect/sql's `db.*` and OpenTelemetry's `server.address`. */
const spanAttributes = (h: HandleImpl, spec: Spec, details: Details): Record<string, unknown> => {
  const attributes: Record<string, unknown> = { "nbd.operation.name": spec.name, ...attributesOf(h) }
  const given = details.attributes?.()
  if (given !== undefined) for (const [key, value] of Object.entries(given)) attributes[`nbd.${key}`] = spanValue(value)
  return attributes
}

const describe = (details: Details): (() => string) | undefined => {
  const attributes = details.attributes
  if (attributes === undefined) return undefined
  return () =>
    Object.entries(attributes())
      .map(([key, value]) => `${key}=${typeof value === "string" ? JSON.stringify(value) : show(key, value)}`)
      .join(" ")
}

/** Flags read best in hex, as libnbd's debug output shows them. */
const show = (key: string, value: unknown): string =>
  key === "flags" && typeof value === "number" ? `0x${value.toString(16)}` : String(value)

/** Span attributes are strings, numbers and booleans: a bigint offset becomes a number where it is exact. */
const spanValue = (value: unknown): unknown =>
  typeof value === "bigint" ? (value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString()) : value
