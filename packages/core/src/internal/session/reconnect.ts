import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import { Connection, DISCONNECTED, FLUSH_ONLY } from "./connection.js"
import { failed, succeeded } from "../engine/completion.js"
import type { Agreement, HandleImpl, Recovery } from "./handle.js"
import { stranded } from "./handle.js"
import * as handshake from "./handshake.js"

// Reconnecting, after qemu's reconnect-delay: when a connection drops, the commands still waiting are kept,
// the handle opens its socket again and repeats the handshake with the same settings, checks the export is
// the one it was, and sends the kept commands again in their order. New commands wait meanwhile.

const OPERATION = "reconnect"

/** The schedule the first connect retries on when an open timeout is set without a reconnect schedule. */
const DEFAULT_OPEN_RETRY = Schedule.spaced(Duration.millis(100))

/**
 * Whether a failed try is worth another: the socket could not connect, or the connection dropped (a server
 * on its way down or up). A refusal (an unknown export, TLS refused) or a protocol error is an answer.
 */
export const isDrop = (error: NbdError.NbdError): boolean =>
  error._tag === "ConnectionError" ||
  (error._tag === "ProtocolError" && error.reason === "Disconnected") ||
  (error._tag === "OptionError" && error.errno === "ESHUTDOWN")

/**
 * How the export differs between what the dropped connection agreed and what the new one agreed, in words,
 * or undefined when the waiting commands still mean what they meant: the same size and flags, reply format
 * and meta contexts.
 */
const difference = (before: Agreement, after: Agreement): string | undefined => {
  const size = (a: Agreement) => a.info?.size ?? -1n
  const flags = (a: Agreement) => a.info?.flags ?? 0
  if (size(before) !== size(after)) return `the export's size changed from ${size(before)} to ${size(after)}`
  if (flags(before) !== flags(after))
    return `the export's flags changed from 0x${flags(before).toString(16)} to 0x${flags(after).toString(16)}`
  if (before.structuredReplies !== after.structuredReplies || before.extendedHeaders !== after.extendedHeaders)
    return "the server no longer negotiates the same reply format"
  if (contextsOf(before) !== contextsOf(after))
    return `the negotiated meta contexts changed from [${contextsOf(before)}] to [${contextsOf(after)}]`
  return undefined
}

/** The negotiated contexts, ids with names: the waiting block-status requests and their filters carry ids. */
const contextsOf = (a: Agreement): string =>
  [...(a.metaContexts ?? new Map<number, string>()).entries()]
    .sort(([x], [y]) => x - y)
    .map(([id, name]) => `${id}:${name}`)
    .join(",")

/** Ends a connection the handle will not use, without waiting for the server. */
const discard = (conn: Connection, error: NbdError.NbdError | undefined): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (conn.ended !== undefined) return Effect.void
    if (conn.engine.replies !== undefined) conn.engine.disconnect()
    else conn.engine.endWrites()
    return Effect.andThen(conn.drain(FLUSH_ONLY), conn.terminate(error))
  })

/**
 * One try: a new connection on the same socket, the same handshake, the check that the export is the same,
 * and the waiting commands sent again, in their order. The replay is one synchronous step after the check
 * that the connection still lives, so no reply can be lost between the two.
 */
const attempt = (h: HandleImpl, recovery: Recovery, before: Agreement, firstCookie: number) =>
  Effect.gen(function* () {
    if (!HandleState.isConnecting(h.state.now)) yield* h.setState(HandleState.Connecting)
    if (h.connection !== undefined) yield* h.connection.stopped
    const conn = yield* Connection.start(h, h.socket!, h.scope, firstCookie)
    h.connection = conn
    yield* Effect.onExit(
      Effect.gen(function* () {
        yield* handshake.run(h, conn, OPERATION)
        const changed = difference(before, conn.engine.handshake.agreement)
        if (changed !== undefined)
          return yield* new NbdError.ExportChangedError({ errno: "ESTALE", operation: OPERATION, message: changed })
        yield* h.setState(HandleState.Ready)
        if (conn.ended !== undefined)
          return yield* (
            conn.ended.error ??
            new NbdError.ConnectionError({ errno: "ENOTCONN", operation: OPERATION, message: DISCONNECTED })
          )
        // Callers that stopped waiting (interrupted, timed out) are not replayed: nobody takes the result.
        for (const pending of recovery.waiting) if (!pending.cancelled) conn.engine.replay(pending)
        h.recovery = undefined
        h.stats.reconnects += 1
      }),
      (exit) => (Exit.isSuccess(exit) ? Effect.void : discard(conn, undefined))
    )
  })

/** Fails every waiting command, under its own name, and the new commands waiting with them. */
const release = (recovery: Recovery, error: NbdError.NbdError): Effect.Effect<void> =>
  Effect.sync(() => {
    // Emptied first: a fiber waiting on a command resumes as soon as it fails, and may count what waits.
    const waiting = recovery.waiting.splice(0)
    for (const pending of waiting) pending.completion.done(failed(stranded(error, pending.operation)))
    recovery.ready.done(failed(error))
  })

/** The reconnect gave up or found another export: the handle is dead and nothing waiting is sent. */
const giveUp = (h: HandleImpl, recovery: Recovery, last: NbdError.NbdError): Effect.Effect<void> => {
  const error =
    last._tag === "ExportChangedError"
      ? last
      : new NbdError.ConnectionError({
          errno: "ENOTCONN",
          operation: OPERATION,
          message: `gave up reconnecting: ${NbdError.format(last)}`,
          cause: last
        })
  return Effect.gen(function* () {
    yield* h.setState(HandleState.Dead(error))
    h.recovery = undefined
    yield* release(recovery, error)
    yield* Effect.logWarning(`${h.settings.handleName}: ${NbdError.format(error)}`)
  })
}

/**
 * Begins reconnecting the handle whose connection dropped, in the connection's scope: the kept commands
 * wait until the schedule brings the connection back (and they are replayed) or gives up (and they fail).
 */
export const begin = (h: HandleImpl): Effect.Effect<void> =>
  Effect.suspend(() => {
    const recovery = h.recovery
    if (recovery === undefined || recovery.started) return Effect.void
    recovery.started = true
    const dropped = h.connection?.ended?.error
    const before = recovery.agreement
    const firstCookie = h.connection?.engine.cookieFloor ?? 1
    const schedule = h.settings.reconnect!
    const reconnect = Effect.gen(function* () {
      yield* h.setState(HandleState.Connecting)
      yield* Effect.logWarning(
        `${h.settings.handleName}: connection dropped${dropped === undefined ? "" : ` (${NbdError.format(dropped)})`}; reconnecting with ${recovery.waiting.length} commands waiting`
      )
      const outcome = yield* attempt(h, recovery, before, firstCookie).pipe(
        Effect.retry({ schedule, while: isDrop }),
        Effect.withSpan("nbd_reconnect", {
          kind: "client",
          attributes: {
            "nbd.handle.name": h.settings.handleName,
            "nbd.export.name": h.settings.exportName,
            "nbd.waiting": recovery.waiting.length
          }
        }),
        Effect.result
      )
      if (outcome._tag === "Failure") return yield* giveUp(h, recovery, outcome.failure)
      recovery.ready.done(succeeded(undefined))
      yield* Effect.logInfo(`${h.settings.handleName}: reconnected`)
    })
    return Effect.map(Effect.forkIn(reconnect, h.scope), (fiber) => {
      recovery.fiber = fiber
    })
  })

/** The handle is ending while it reconnects: stop trying and fail what waits, with ENOTCONN. */
export const abandon = (h: HandleImpl): Effect.Effect<void> =>
  Effect.suspend(() => {
    const recovery = h.recovery
    if (recovery === undefined) return Effect.void
    h.recovery = undefined
    const error = new NbdError.ConnectionError({
      errno: "ENOTCONN",
      operation: OPERATION,
      message: "the handle was closed while reconnecting"
    })
    const fiber = recovery.fiber
    return Effect.andThen(release(recovery, error), fiber === undefined ? Effect.void : Fiber.interrupt(fiber))
  })

/**
 * The first connect under an open timeout (qemu's open-timeout): while the socket cannot connect or the
 * server drops the handshake, try again on the reconnect schedule (or every 100 ms) until the timeout.
 */
export const openWithRetries = (
  h: HandleImpl,
  first: Connection,
  operation: string,
  timeout: Duration.Duration
): Effect.Effect<void, NbdError.NbdError> => {
  let next: Connection | undefined = first
  const once = Effect.gen(function* () {
    if (next === undefined && h.connection !== undefined) yield* h.connection.stopped
    const conn = next ?? (yield* Connection.start(h, h.socket!, h.scope))
    next = undefined
    h.connection = conn
    yield* Effect.tapError(handshake.run(h, conn, operation), (error) => discard(conn, error))
    if (conn.ended !== undefined)
      return yield* (
        conn.ended.error ?? new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: DISCONNECTED })
      )
    // From here on an end of this connection is an ordinary one.
    h.opening = false
  })
  const schedule = Schedule.upTo(h.settings.reconnect ?? DEFAULT_OPEN_RETRY, { duration: timeout })
  return Effect.ensuring(
    Effect.retry(once, { schedule, while: isDrop }),
    Effect.sync(() => {
      h.opening = false
    })
  )
}
