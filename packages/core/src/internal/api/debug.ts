import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import type { HandleImpl } from "../session/handle.js"

/**
 * libnbd's debug messages, through Effect's logger: at Debug level, annotated with the handle's name and the
 * call, so any Logger layer receives them. Nothing is built while debug is off.
 */
export const log = (h: HandleImpl, call: string, message: string | (() => string)): Effect.Effect<void> =>
  Effect.suspend(() =>
    h.settings.debug
      ? Effect.annotateLogs(Effect.logDebug(typeof message === "string" ? message : message()), {
          "nbd.handle": h.settings.handleName,
          "nbd.call": call
        })
      : Effect.void
  )

const isEnded = (s: HandleState.HandleState): boolean => HandleState.isDead(s) || HandleState.isClosed(s)

/**
 * Logs every state change of the handle from now until it is Dead or Closed, when debug is on. The watcher
 * is subscribed before this returns, so no change is missed, and it ends by itself with the handle.
 */
export const watchState = (h: HandleImpl): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (h.stateWatched) return Effect.void
    h.stateWatched = true
    return Effect.flatMap(Deferred.make<void>(), (subscribed) =>
      h.state.changes.pipe(
        Stream.tap(() => Deferred.succeed(subscribed, undefined)),
        Stream.zipWithPrevious,
        Stream.takeUntil(([, s]) => isEnded(s)),
        Stream.runForEach(([previous, s]) =>
          previous._tag === "Some" && previous.value._tag !== s._tag
            ? log(h, "state", `state: ${previous.value._tag} -> ${s._tag}`)
            : Effect.void
        ),
        Effect.ensuring(
          Effect.sync(() => {
            h.stateWatched = false
          })
        ),
        Effect.forkDetach,
        Effect.andThen(Deferred.await(subscribed))
      )
    )
  })

/** Logs a call's entry (with its arguments) and how it ended, as libnbd's "enter:" and "leave:" lines. */
export const traceCall = <A, E, R>(
  h: HandleImpl,
  call: string,
  body: Effect.Effect<A, E, R>,
  args?: () => string
): Effect.Effect<A, E, R> =>
  Effect.andThen(
    log(h, call, () => (args === undefined ? "enter" : `enter: ${args()}`)),
    Effect.onExit(body, (exit) =>
      log(h, call, () =>
        Exit.match(exit, {
          onSuccess: (value) => `leave: ret=${describe(value)}`,
          onFailure: (cause) =>
            Option.match(Cause.findErrorOption(cause), {
              onNone: () => "leave: interrupted",
              onSome: (error) => `leave: error=${describeError(error)}`
            })
        })
      )
    )
  )

const describe = (value: unknown): string => {
  if (value === undefined) return "ok"
  if (value instanceof Uint8Array) return `<${value.length} bytes>`
  if (typeof value === "string") return JSON.stringify(value)
  if (typeof value === "object" && value !== null) return "<object>"
  return String(value)
}

const describeError = (error: unknown): string => (NbdError.isNbdError(error) ? NbdError.format(error) : String(error))
