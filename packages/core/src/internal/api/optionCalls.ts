import * as Effect from "effect/Effect"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import { kill } from "../session/connect.js"
import type { Connection } from "../session/connection.js"
import { checkState, type HandleImpl } from "../session/handle.js"
import * as handshake from "../session/handshake.js"
import type { ExportEntry } from "../engine/handshake.js"

// The bodies of the option-mode calls: one option at a time, while the handle negotiates.

const refusals: ReadonlySet<NbdError.NbdError["_tag"]> = new Set([
  "OptionError",
  "InvalidStateError",
  "InvalidArgumentError",
  "UnsupportedError"
])

/** An export the server lists. */
export type { ExportEntry } from "../engine/handshake.js"

export const runOption = <A>(
  impl: HandleImpl,
  operation: string,
  body: (impl: HandleImpl, conn: Connection) => Effect.Effect<A, NbdError.NbdError>
): Effect.Effect<A, NbdError.NbdError> =>
  Effect.gen(function* () {
    const claimed = yield* impl.transition(
      (s): readonly [HandleState.HandleState | undefined, HandleState.HandleState] =>
        HandleState.isNegotiating(s) ? [undefined, HandleState.Connecting] : [s, s]
    )
    if (claimed !== undefined) yield* checkState(impl, operation, ["negotiating"])
    const conn = impl.connection!
    return yield* body(impl, conn).pipe(
      Effect.tap(() =>
        Effect.flatMap(impl.state.get, (s) =>
          HandleState.isConnecting(s) ? impl.setState(HandleState.Negotiating) : Effect.void
        )
      ),
      Effect.tapError((error) =>
        // A refusal, or a call that sent nothing, leaves the negotiation as it was; anything else killed it.
        refusals.has(error._tag) ? impl.setState(HandleState.Negotiating) : kill(impl, conn, error)
      ),
      Effect.onInterrupt(() =>
        kill(impl, conn, new NbdError.ConnectionError({ errno: "ENOTCONN", operation, message: "option interrupted" }))
      )
    )
  })

export const requireFixed = (impl: HandleImpl, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  impl.agreement.protocol === "newstyle" ? Effect.fail(handshake.notFixedNewstyle(operation)) : Effect.void

export const listExports = (
  impl: HandleImpl,
  conn: Connection
): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> => handshake.listExports(impl, conn, "nbd_opt_list")
