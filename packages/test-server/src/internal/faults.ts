/**
 * The `faults` of a configuration (and the CLI's `--fault` and `--delay`) as filters: an error fault is an
 * error filter, a delay fault a delay filter, over the export's backend. Malformed replies stay with the
 * connection, which writes them.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import type * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import * as Backend from "../Backend.js"
import * as Filter from "../Filter.js"
import type * as TestServer from "../TestServer.js"
import * as Request from "./request.js"

type Fault = typeof TestServer.Fault.Type

const OPERATIONS: Record<TestServer.CommandKind, Filter.Operation> = {
  read: "read",
  write: "write",
  flush: "flush",
  trim: "trim",
  cache: "cache",
  "write-zeroes": "zero",
  "block-status": "extents"
}

/** When a fault fires, said as a filter trigger: on the nth request of its command, or at its rate. */
const triggerOf = (fault: Fault, operation: Filter.Operation): Filter.Trigger =>
  fault.nth !== undefined ? { nths: { [operation]: fault.nth } } : { rates: { [operation]: fault.rate ?? 1 } }

/**
 * One draw per request for a fault with both a delay and an errno: its delay filter and its error filter
 * then act on the same requests, as the one fault it is. The request keeps the draw (`Request.Served`).
 * A predicate is asked about every operation (the error filter's errno defaults to EIO for the ones it
 * has none for), so it answers for its fault's operation only.
 */
const sharedDraw = (operation: Filter.Operation, rate: number): Filter.Trigger => {
  const draw = (): boolean => Math.random() < rate
  const trigger: Filter.Trigger = {
    when: (asked, request) =>
      asked === operation && (request instanceof Request.Served ? request.drawOnce(trigger, draw) : draw())
  }
  return trigger
}

/**
 * The filters of a list of faults, the outermost first: every delay, then every error, each in the list's
 * order. So the delays of the faults that fire on a request add up, and the first error among them is the
 * reply, as the list's documentation says.
 * @internal
 */
export const toFilters = (faults: ReadonlyArray<Fault>): ReadonlyArray<Filter.Filter> => {
  const delays: Array<Filter.Filter> = []
  const errors: Array<Filter.Filter> = []
  for (const fault of faults) {
    if (fault.malformed !== undefined) continue
    const operation = OPERATIONS[fault.command]
    const delayMs = fault.delayMs ?? 0
    const rate = fault.rate ?? 1
    const trigger =
      fault.errno !== undefined && delayMs > 0 && fault.nth === undefined && rate > 0 && rate < 1
        ? sharedDraw(operation, rate)
        : triggerOf(fault, operation)
    if (delayMs > 0) delays.push(Filter.delay({ [operation]: delayMs }, trigger))
    if (fault.errno !== undefined) errors.push(Filter.error({ ...trigger, errnos: { [operation]: fault.errno } }))
  }
  return [...delays, ...errors]
}

/** Set while a request a malformed reply replaces passes the filters: the storage is not to be touched. */
const passing = Context.Reference<boolean>("@effect-nbd/test-server/passing", { defaultValue: () => false })

/** Stands in for the storage while `passing`: a call succeeds at once, with zeroes for a read. */
const skipWhilePassing = <A>(effect: Effect.Effect<A, Backend.BackendError>, instead: A) =>
  Effect.flatMap(Effect.service(passing), (skip) => (skip ? Effect.succeed(instead) : effect))

/**
 * The storage under the filters, skipped by `passFilters`. Only an export with malformed-reply faults
 * needs it, so no other pays for the check.
 * @internal
 */
export const passable = (backend: Backend.Backend): Backend.Backend => ({
  ...backend,
  read: (offset, length) => skipWhilePassing(backend.read(offset, length), [Backend.zeroes(length)]),
  write: (offset, data, fua) => skipWhilePassing(backend.write(offset, data, fua), undefined),
  zero: (offset, length, mayTrim) => skipWhilePassing(backend.zero(offset, length, mayTrim), undefined),
  trim: (offset, length) => skipWhilePassing(backend.trim(offset, length), undefined),
  flush: skipWhilePassing(backend.flush, undefined),
  cache: (offset, length) => skipWhilePassing(backend.cache(offset, length), undefined),
  extents: (offset, length) => skipWhilePassing(backend.extents(offset, length), [])
})

/**
 * Takes a request that a malformed reply replaces through the filters over `passable` storage, and drops
 * the outcome: the delays of the faults that fire on it still add up, and the request is not carried out.
 * @internal
 */
export const passFilters = (
  backend: Backend.Backend,
  request: ServerCodec.Request,
  length: number
): Effect.Effect<void> => {
  const offset = Number(request.offset)
  const call = (): Effect.Effect<unknown, Backend.BackendError> => {
    switch (request.type) {
      case Protocol.Cmd.READ:
        return backend.read(offset, length)
      case Protocol.Cmd.WRITE:
        return backend.write(offset, request.payload ?? new Uint8Array(0), false)
      case Protocol.Cmd.WRITE_ZEROES:
        return backend.zero(offset, length, true)
      case Protocol.Cmd.TRIM:
        return backend.trim(offset, length)
      case Protocol.Cmd.CACHE:
        return backend.cache(offset, length)
      case Protocol.Cmd.BLOCK_STATUS:
        return backend.extents(offset, length)
      default:
        return backend.flush
    }
  }
  return Effect.provideService(Effect.ignore(Effect.suspend(call)), passing, true)
}
