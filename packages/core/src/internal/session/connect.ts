import * as Socket from "effect/socket/Socket"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Transport from "../../Transport.js"
import { Connection } from "./connection.js"
import type { HandleImpl } from "./handle.js"
import * as handshake from "./handshake.js"
import * as lifecycle from "./lifecycle.js"
import * as reconnect from "./reconnect.js"

// Connecting: a handle connects once, on the socket its transport gives, and the handshake runs in the
// connection's scope while the caller goes on.

/** Moves Created → Connecting atomically, so a handle connects once. */
export const claimForConnect = (h: HandleImpl, operation: string) =>
  h
    .transition((s): readonly [Option.Option<HandleState.HandleState>, HandleState.HandleState] =>
      HandleState.isCreated(s) ? [Option.none(), HandleState.Connecting] : [Option.some(s), s]
    )
    .pipe(
      Effect.flatMap(
        Option.match({
          onNone: () => Effect.void,
          onSome: (s) =>
            Effect.fail(
              new NbdError.InvalidStateError({
                errno: "EINVAL",
                operation,
                message: `invalid state: ${HandleState.shortName(s)}: the handle must be newly created`
              })
            )
        })
      )
    )

/** Marks the handle dead with `error` and ends its connection, after sending what was queued. */
export const kill = (h: HandleImpl, conn: Connection, error: NbdError.NbdError): Effect.Effect<void> =>
  lifecycle.end(h, conn, { farewell: false, awaitServer: false, error, stateFirst: true })

export const startHandshake = (
  impl: HandleImpl,
  operation: string
): Effect.Effect<void, NbdError.NbdError, Socket.Socket> =>
  Effect.gen(function* () {
    yield* claimForConnect(impl, operation)
    const socket = yield* Socket.Socket
    impl.socket = socket
    impl.transport = Option.getOrUndefined(yield* Effect.serviceOption(Transport.Transport))
    if (impl.settings.reconnect !== undefined) impl.reconnect = reconnect.begin
    const scope = impl.scope
    const done = yield* Deferred.make<void, NbdError.NbdError>()
    impl.handshakeDone = done
    const openTimeout = impl.settings.openTimeout
    impl.opening = openTimeout !== undefined
    const conn = yield* Connection.start(impl, socket, scope)
    impl.connection = conn
    const opened =
      openTimeout === undefined
        ? handshake.run(impl, conn, operation)
        : reconnect.openWithRetries(impl, conn, operation, openTimeout)
    yield* opened.pipe(
      Effect.tapError((error) => kill(impl, impl.connection ?? conn, error)),
      Effect.onInterrupt(() =>
        kill(
          impl,
          impl.connection ?? conn,
          new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: "handshake interrupted" })
        )
      ),
      Effect.exit,
      Effect.flatMap((exit) => Deferred.done(done, exit)),
      Effect.forkIn(scope)
    )
  })
