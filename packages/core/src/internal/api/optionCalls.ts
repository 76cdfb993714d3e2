import * as Effect from "effect/Effect"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { kill } from "../session/connect.js"
import type { Connection } from "../session/connection.js"
import { checkState, type HandleImpl } from "../session/handle.js"
import * as handshake from "../session/handshake.js"

// The bodies of the option-mode calls: one option at a time, while the handle negotiates.

const refusals: ReadonlySet<NbdError.NbdError["_tag"]> = new Set([
  "OptionError",
  "InvalidStateError",
  "InvalidArgumentError",
  "UnsupportedError"
])

/** An export the server lists. */
export interface ExportEntry {
  readonly name: string
  readonly description: string
}

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
  impl.protocol === "newstyle" ? Effect.fail(handshake.notFixedNewstyle(operation)) : Effect.void

export const listExports = (
  impl: HandleImpl,
  conn: Connection
): Effect.Effect<ReadonlyArray<ExportEntry>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const { final, replies } = yield* handshake.exchange(impl, conn, Protocol.Opt.LIST, undefined, "nbd_opt_list")
    if (final._tag === "Error") {
      const error = handshake.optionErrorOf(impl, "nbd_opt_list", final)
      return yield* Effect.fail(new NbdError.OptionError({ ...error, errno: "ENOTSUP" }))
    }
    const entries: Array<ExportEntry> = []
    for (const reply of replies) {
      if (reply._tag !== "Server")
        return yield* Effect.fail(
          new NbdError.ProtocolError({
            errno: "",
            operation: "nbd_opt_list",
            message: "handshake: unexpected option reply type to NBD_OPT_LIST"
          })
        )
      entries.push({ name: reply.name, description: reply.description })
    }
    return entries
  })
