import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as HandleState from "../../HandleState.js"
import type * as NbdError from "../../NbdError.js"
import * as commands from "../api/commands.js"
import { type Connection, FLUSH_ONLY } from "./connection.js"
import type { HandleImpl } from "./handle.js"
import * as handshake from "./handshake.js"
import * as reconnect from "./reconnect.js"

/** How a connection ends: what it says to the server first, and the state it leaves. */
export interface Ending {
  /** NBD_CMD_DISC while connected, NBD_OPT_ABORT while negotiating, as fits the state; or nothing. */
  readonly farewell: boolean
  /** Wait, up to the close grace, for the server to close after the farewell. */
  readonly awaitServer: boolean
  /** Dead with this error; Closed when undefined. */
  readonly error: NbdError.NbdError | undefined
  /** Move to the final state at once (a kill, opt_abort), rather than once the connection is down (a close). */
  readonly stateFirst: boolean
}

/**
 * Whether waiting for the server would only hold the socket: commands still wait for replies (the caller
 * gave up on them, or interrupted them and their replies never came). The farewell is still written, as it
 * costs no wait, unless a write is stuck on a peer that stopped reading.
 */
const abandoning = (conn: Connection): boolean => conn.engine.inFlight > 0

/**
 * The one way a connection ends, for the close of the handle's scope, a failed or interrupted handshake and
 * option, and opt_abort: the farewell, the graceful wait (at most `closeGrace`, skipped when abandoning),
 * every waiting command failed with ENOTCONN, the final state, and the reader and writer stopped.
 */
export const end = (h: HandleImpl, conn: Connection | undefined, ending: Ending): Effect.Effect<void> =>
  Effect.gen(function* () {
    const final = ending.error === undefined ? HandleState.Closed : HandleState.Dead(ending.error)
    h.ending = true
    yield* reconnect.abandon(h)
    const before = yield* h.state.get
    if (ending.stateFirst) yield* settle(h, final)
    if (conn !== undefined && conn.ended === undefined && !conn.writing) {
      const grace = h.settings.closeGrace
      const patient = !abandoning(conn)
      if (ending.farewell) yield* farewell(h, conn, before)
      conn.engine.endWrites()
      yield* conn.drain(patient ? grace : FLUSH_ONLY)
      // Finalizers run uninterruptibly: without `interruptible` the timeout could not stop the wait, and a
      // peer that keeps the socket open after NBD_CMD_DISC would hold the close forever.
      if (ending.awaitServer && patient)
        yield* Effect.ignore(Effect.timeout(Effect.interruptible(Deferred.await(conn.endedSignal)), grace))
    }
    conn?.engine.failPending("the handle was closed before the server replied")
    if (!ending.stateFirst) yield* settle(h, final)
    if (conn !== undefined) yield* conn.terminate(ending.error)
  })

/** What to say to the server, by the state the handle was in when the ending began. */
const farewell = (h: HandleImpl, conn: Connection, state: HandleState.HandleState): Effect.Effect<void> => {
  if (HandleState.isConnected(state) && !conn.engine.disconnectRequested)
    return Effect.ignore(commands.disconnect(h, "nbd_close"))
  if (HandleState.isNegotiating(state)) handshake.sendAbort(conn)
  return Effect.void
}

/** A handle that already ended keeps its state: a Dead one its error, a Closed one (opt_abort) stays Closed. */
const settle = (h: HandleImpl, final: HandleState.HandleState): Effect.Effect<void> =>
  h.transition((state) => [undefined, HandleState.isDead(state) || HandleState.isClosed(state) ? state : final])
