/**
 * The Effect driver of the handshake machine (`engine/handshake.ts`): it starts the machine, or one option
 * exchange in option mode, and loops on its steps. It waits for bytes through the connection, upgrades the
 * transport to TLS when asked, logs the machine's debug lines, and sets the handle's state. Every decision
 * of the handshake is the machine's.
 */
import * as Effect from "effect/Effect"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import type * as Transport from "../../Transport.js"
import * as debug from "../api/debug.js"
import type { ExportEntry, OptionRequest, OptionResults, Step } from "../engine/handshake.js"
import type { Connection } from "./connection.js"
import type { HandleImpl } from "./handle.js"
import { tlsSettings } from "./handle.js"

/** The refusal of an option that needs fixed newstyle (the machine's, for the calls that check first). */
export { notFixedNewstyle } from "../engine/optionErrors.js"

type StartTls = NonNullable<Transport.Service["startTls"]>

/**
 * Enters the transmission phase. Bytes that came with the last handshake message are decoded first: when they
 * end the connection, the handshake fails with that error instead of reporting Ready.
 */
const finish = (h: HandleImpl, conn: Connection): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(
    conn.startTransmission(),
    Effect.suspend(() => {
      // A reconnect moves to Ready itself, once it has checked the export and replayed what waited.
      const ended = conn.ended
      return ended === undefined && h.recovery === undefined ? h.setState(HandleState.Ready) : Effect.void
    })
  )

/** Logs what the machine gathered for debug, under the call that caused it (nothing while debug is off). */
const logLines = (h: HandleImpl, conn: Connection): Effect.Effect<void> =>
  Effect.suspend(() => {
    const lines = conn.engine.handshake.takeDebugLines()
    return lines.length === 0
      ? Effect.void
      : Effect.forEach(lines, (line) => debug.log(h, line.operation, line.message), { discard: true })
  })

/** The TLS upgrade the machine asked for, on the transport's live connection. */
const upgrade = (
  h: HandleImpl,
  operation: string,
  startTls: StartTls | undefined
): Effect.Effect<void, NbdError.NbdError> =>
  startTls === undefined
    ? Effect.fail(
        new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation,
          message: "TLS is not available on this transport"
        })
      )
    : startTls(tlsSettings(h.settings))

/**
 * Runs the machine until it pauses, finishes or fails; answers what the option exchange that paused it
 * answered. `onPause` is what the pause does to the handle's state.
 */
const drive = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  startTls: StartTls | undefined,
  onPause: Effect.Effect<void>
): Effect.Effect<OptionResults[keyof OptionResults], NbdError.NbdError> =>
  Effect.gen(function* () {
    const machine = conn.engine.handshake
    while (true) {
      const step: Step = machine.next()
      yield* logLines(h, conn)
      switch (step._tag) {
        case "Read":
          yield* conn.awaitHandshakeBytes
          break
        case "StartTls":
          yield* upgrade(h, operation, startTls)
          machine.tlsDone()
          break
        case "Negotiating":
          yield* onPause
          return step.value
        case "Done":
          yield* finish(h, conn)
          return undefined
        case "Failed":
          if (step.close) yield* h.setState(HandleState.Closed)
          return yield* step.error
      }
    }
  })

/**
 * One option exchange in option mode: the machine sends it and reads its replies; the caller (optionCalls'
 * runOption) puts the state back to Negotiating.
 */
export const option = <T extends OptionRequest["_tag"]>(
  h: HandleImpl,
  conn: Connection,
  operation: string,
  request: Extract<OptionRequest, { readonly _tag: T }>,
  startTls: StartTls | undefined = h.transport?.startTls
): Effect.Effect<OptionResults[T], NbdError.NbdError> =>
  Effect.suspend(() => {
    conn.engine.handshake.option(operation, request)
    return drive(h, conn, operation, startTls, Effect.void) as Effect.Effect<OptionResults[T], NbdError.NbdError>
  })

/** NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS: true when the server agreed. */
export const negotiateFeature = (
  h: HandleImpl,
  conn: Connection,
  feature: typeof Protocol.Opt.STRUCTURED_REPLY | typeof Protocol.Opt.EXTENDED_HEADERS,
  operation = "handshake"
): Effect.Effect<boolean, NbdError.NbdError> =>
  feature === Protocol.Opt.STRUCTURED_REPLY
    ? option(h, conn, operation, { _tag: "StructuredReply" })
    : option(h, conn, operation, { _tag: "ExtendedHeaders" })

/**
 * NBD_OPT_SET_META_CONTEXT or NBD_OPT_LIST_META_CONTEXT with the given queries; returns the context names in
 * the server's order.
 */
export const metaContextExchange = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  which: typeof Protocol.Opt.SET_META_CONTEXT | typeof Protocol.Opt.LIST_META_CONTEXT,
  queries: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<string>, NbdError.NbdError> =>
  which === Protocol.Opt.LIST_META_CONTEXT
    ? option(h, conn, operation, { _tag: "ListMetaContext", queries })
    : option(h, conn, operation, { _tag: "SetMetaContext", queries })

/** NBD_OPT_INFO, or NBD_OPT_GO (which enters the transmission phase), for the current export name. */
export const goOrInfo = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  which: typeof Protocol.Opt.INFO | typeof Protocol.Opt.GO
): Effect.Effect<void, NbdError.NbdError> =>
  which === Protocol.Opt.GO ? option(h, conn, operation, { _tag: "Go" }) : option(h, conn, operation, { _tag: "Info" })

/** NBD_OPT_STARTTLS: false when the server refused, true once the connection is encrypted. */
export const starttls = (
  h: HandleImpl,
  conn: Connection,
  operation: string,
  startTls: StartTls
): Effect.Effect<boolean, NbdError.NbdError> => option(h, conn, operation, { _tag: "StartTls" }, startTls)

/** NBD_OPT_LIST: the exports the server offers. */
export const listExports = (
  h: HandleImpl,
  conn: Connection,
  operation: string
): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> => option(h, conn, operation, { _tag: "List" })

/** Sends NBD_OPT_ABORT and shuts the write side; libnbd does not wait for the ACK. */
export const sendAbort = (conn: Connection): void => conn.engine.handshake.abort()

/**
 * The whole handshake, in libnbd's order: greeting, client flags, STARTTLS, EXTENDED_HEADERS, STRUCTURED_REPLY,
 * the pause in option mode, SET_META_CONTEXT, GO (or EXPORT_NAME).
 */
export const run = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(steps(h, conn, operation), failIfEnded(conn))

/** A connection that ended with an error while the handshake finished fails the connect, whatever state it set. */
const failIfEnded = (conn: Connection): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => (conn.ended?.error === undefined ? Effect.void : Effect.fail(conn.ended.error)))

const steps = (h: HandleImpl, conn: Connection, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => {
    const startTls = h.transport?.startTls
    conn.engine.handshake.start(h.settings, {
      operation,
      // A reconnect goes straight to the transmission phase: the options a caller chose in option mode are
      // what the settings already say (export name, meta contexts).
      optionMode: h.settings.optMode && h.recovery === undefined,
      tlsAvailable: startTls !== undefined
    })
    return Effect.asVoid(drive(h, conn, operation, startTls, h.setState(HandleState.Negotiating)))
  })
