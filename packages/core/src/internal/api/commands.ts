import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument, toNumber } from "../engine/arguments.js"
import { commandError } from "../engine/checks.js"
import * as debug from "./debug.js"
import * as metrics from "./metrics.js"
import { type Completion, failed, type Outcome } from "../engine/completion.js"
import { type CommandRequest, type Pending, release } from "../engine/pending.js"
import { type HandleImpl, stranded } from "../session/handle.js"

/** A command handed to the engine, before checks: its range as the caller gave it. */
export interface CommandSpec extends CommandRequest {
  readonly offset: number | bigint
  readonly count: number | bigint
}

/**
 * A command that has been queued, in order, with its cookie.
 * @since 0.1.0
 */
export interface Command<A> {
  readonly cookie: bigint
  readonly await: Effect.Effect<A, NbdError.NbdError>
}

const stateError = (operation: string, s: HandleState.HandleState): NbdError.InvalidStateError =>
  new NbdError.InvalidStateError({
    errno: s._tag === "Created" ? "ENOTCONN" : "EINVAL",
    operation,
    message: `invalid state: ${HandleState.shortName(s)}: the handle must be connected with the server`
  })

/** ENOTCONN once the reader has stopped, even before the state has caught up: nothing may wait on a dead socket. */
const connectionEnded = (h: HandleImpl, operation: string): NbdError.ConnectionError | undefined =>
  h.connection?.ended === undefined
    ? undefined
    : new NbdError.ConnectionError({
        errno: "ENOTCONN",
        operation,
        message: "the connection to the server has ended",
        cause: h.connection.ended.error
      })

/** A command that passed its checks: its range as numbers. */
interface Checked {
  readonly offset: number
  readonly count: number
}

/** Every check a command goes through before it is queued, on a connected handle that is not reconnecting. */
const checked = (h: HandleImpl, spec: CommandSpec): Checked | NbdError.NbdError => {
  // The wrapper checked the state already; this guards the engine's own callers, read synchronously.
  const s = h.state.now
  if (!HandleState.isConnected(s)) return stateError(spec.operation, s)
  const ended = connectionEnded(h, spec.operation)
  if (ended !== undefined) return ended
  const offset = toNumber(spec.operation, "offset", spec.offset)
  if (typeof offset !== "number") return offset
  const count = toNumber(spec.operation, "count", spec.count)
  if (typeof count !== "number") return count
  const disconnectRequested = h.connection!.engine.disconnectRequested
  return commandError(h.agreement, h.settings.strictMode, disconnectRequested, spec, offset, count) ?? { offset, count }
}

/** How a submitted command ends, for its caller: called once, unless the caller cancels first. */
export type OnOutcome = (outcome: Outcome) => void

/**
 * A command handed to `submit`, as its caller holds it.
 */
export interface Submitted {
  /** Its cookie once it is queued; a command submitted during a reconnect is queued when the reconnect ends. */
  readonly cookie: number | undefined
  /**
   * Stops waiting for it: `onOutcome` is not called after this, a late reply is still read and dropped (so
   * the stream stays in step), the caller's buffer is never written again, and a reconnect does not replay it.
   * Always true: a command can always be stopped waiting for (as a transfer's `Started` says).
   */
  cancel(): true
}

/**
 * Where a caller outside the call wrapper (`call.ts`) has its commands reported as the wrapper would report
 * the aio call: the context whose logger gets the debug messages and whose metrics count them. The copy's
 * NBD sides pass the context they were made in; the wrapper's own commands pass none.
 */
export type Report = Context.Context<never>

/** A command in the engine, with the caller's listener on its completion. */
class Queued implements Submitted {
  constructor(
    private readonly pending: Pending,
    private readonly listener: OnOutcome
  ) {}
  get cookie(): number {
    return this.pending.cookie
  }
  cancel(): true {
    this.pending.completion.unlisten(this.listener)
    release(this.pending)
    return true
  }
}

/**
 * A command submitted while the handle reconnects: it listens to the reconnect's end, then is submitted as
 * any other (every check is made then, against what the new connection negotiated), or fails with the
 * reconnect's error under its own name.
 */
class Postponed implements Submitted {
  private submitted: Submitted | undefined = undefined
  constructor(
    private readonly h: HandleImpl,
    private readonly spec: CommandSpec,
    private readonly onOutcome: OnOutcome,
    private readonly report: Report | undefined,
    private readonly ready: Completion
  ) {
    ready.listen(this.resume)
  }
  get cookie(): number | undefined {
    return this.submitted?.cookie
  }
  private readonly resume = (outcome: Outcome): void => {
    if (!outcome.ok) return this.onOutcome(failed(stranded(outcome.error, this.spec.operation)))
    const submitted = submit(this.h, this.spec, this.onOutcome, this.report)
    if (NbdError.isNbdError(submitted)) return this.onOutcome(failed(submitted))
    this.submitted = submitted
  }
  cancel(): true {
    if (this.submitted !== undefined) return this.submitted.cancel()
    this.ready.unlisten(this.resume)
    return true
  }
}

/**
 * The one way a command is issued, without an effect: its checks (in libnbd's order), then its request
 * queued on the connection's engine, and `onOutcome` called once it settles. Answers the command, with how
 * to stop waiting for it, or the error of the first check that failed (then nothing is queued, and
 * `onOutcome` is never called).
 *
 * While the handle reconnects, the command waits for the reconnect and is then checked and queued as usual;
 * a check that fails then, or a reconnect that gives up, reaches `onOutcome`. With `report`, its debug
 * messages and metrics run in that context (see `Report`).
 *
 * A copy's commands cost here what the engine allocates (the pending command and its request bytes), the
 * `Submitted` and nothing else: no fiber, no effect, no microtask.
 */
export const submit = (
  h: HandleImpl,
  spec: CommandSpec,
  onOutcome: OnOutcome,
  report?: Report
): Submitted | NbdError.NbdError => {
  const recovery = h.recovery
  if (recovery !== undefined) return new Postponed(h, spec, onOutcome, report, recovery.ready)
  const reported = report !== undefined && (h.settings.debug || h.settings.metrics)
  const began = reported ? performance.now() : 0
  const ok = checked(h, spec)
  if (reported && h.settings.metrics) count(report, spec, !NbdError.isNbdError(ok), performance.now() - began)
  if (NbdError.isNbdError(ok)) return ok
  const pending = h.connection!.engine.issue(spec, ok.offset, ok.count)
  let listener = onOutcome
  if (reported && h.settings.debug) {
    Effect.runSyncWith(report)(traceRequest(h, spec, BigInt(pending.cookie), ok.offset, ok.count))
    listener = (outcome) => {
      Effect.runSyncWith(report)(debug.log(h, spec.operation, () => replyMessage(spec, pending.cookie, outcome)))
      onOutcome(outcome)
    }
  }
  pending.completion.listen(listener)
  return new Queued(pending, listener)
}

/** Counts a submitted command as the call wrapper counts an aio call: queued or refused, its bytes, its time. */
const count = (report: Report, spec: CommandSpec, queued: boolean, millis: number): void =>
  Effect.runSyncWith(report)(metrics.record(spec.operation, queued, Number(spec.count), millis))

/** An outcome as the exit an effect resumes with. */
const exitOf = <A>(outcome: Outcome): Exit.Exit<A, NbdError.NbdError> =>
  outcome.ok ? Exit.succeed(outcome.value as A) : Exit.fail(outcome.error)

/**
 * The effect side of a submitted command: its outcome once known and the fiber waiting for it. Waiting
 * suspends once; a wait that is interrupted (or timed out) cancels the command, as `Submitted.cancel` says.
 */
class Reply<A> {
  outcome: Outcome | undefined = undefined
  private resume: ((exit: Exit.Exit<A, NbdError.NbdError>) => void) | undefined = undefined
  submitted: Submitted | undefined = undefined
  readonly settle = (outcome: Outcome): void => {
    this.outcome = outcome
    const resume = this.resume
    if (resume === undefined) return
    this.resume = undefined
    resume(exitOf(outcome))
  }
  readonly await: Effect.Effect<A, NbdError.NbdError> = Effect.callback<A, NbdError.NbdError>((resume) => {
    if (this.outcome !== undefined) return resume(exitOf(this.outcome))
    if (this.submitted === undefined)
      return resume(Exit.fail(invalidArgument(this.operation, "stopped waiting: an earlier wait was interrupted")))
    this.resume = resume
    return Effect.sync(() => {
      this.resume = undefined
      this.submitted?.cancel()
      this.submitted = undefined
    })
  })
  constructor(private readonly operation: string) {}
}

/** Waits for a reconnect under way to end; fails with its error, under the command's name, when it gives up. */
const awaitRecovery = (ready: Completion, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.callback<void, NbdError.NbdError>((resume) => {
    const listener = (outcome: Outcome) =>
      resume(outcome.ok ? Effect.void : Effect.fail(stranded(outcome.error, operation)))
    ready.listen(listener)
    return Effect.sync(() => ready.unlisten(listener))
  })

/**
 * `submit` as an effect, for the calls: the command is checked and queued when the effect runs, and comes
 * back with its cookie and the effect that waits for its reply. Nothing is sent when a check fails. While
 * the handle reconnects, it waits for the reconnect first, so the command it returns is queued and has its
 * cookie. With debug on, the request and its reply are logged.
 */
export const issue = <A>(h: HandleImpl, spec: CommandSpec): Effect.Effect<Command<A>, NbdError.NbdError> =>
  Effect.suspend(() => {
    const recovery = h.recovery
    if (recovery !== undefined) return Effect.andThen(awaitRecovery(recovery.ready, spec.operation), issue<A>(h, spec))
    const reply = new Reply<A>(spec.operation)
    const submitted = submit(h, spec, reply.settle)
    if (NbdError.isNbdError(submitted)) return Effect.fail(submitted)
    reply.submitted = submitted
    // Not reconnecting, so queued at once: the cookie is known.
    const cookie = submitted.cookie!
    if (!h.settings.debug) return Effect.succeed<Command<A>>({ cookie: BigInt(cookie), await: reply.await })
    const command: Command<A> = { cookie: BigInt(cookie), await: traceReply(h, spec, cookie, reply.await) }
    return Effect.as(traceRequest(h, spec, command.cookie, spec.offset, spec.count), command)
  })

const traceRequest = (
  h: HandleImpl,
  spec: CommandSpec,
  cookie: bigint,
  offset: number | bigint,
  count: number | bigint
) =>
  debug.log(
    h,
    spec.operation,
    () =>
      `sending ${Protocol.commandName(spec.type)} cookie=${cookie} offset=${offset} count=${count} flags=0x${spec.flags.toString(16)}`
  )

/** What the debug output says of a command's outcome. */
const replyMessage = (spec: CommandSpec, cookie: number, outcome: Outcome): string => {
  const what = `${Protocol.commandName(spec.type)} cookie=${cookie}`
  return outcome.ok
    ? `received reply to ${what}: success`
    : `received reply to ${what}: ${NbdError.format(outcome.error)}`
}

/** Logs the reply to a command as its caller receives it. */
const traceReply = <A>(
  h: HandleImpl,
  spec: CommandSpec,
  cookie: number,
  awaitReply: Effect.Effect<A, NbdError.NbdError>
): Effect.Effect<A, NbdError.NbdError> =>
  Effect.onExit(awaitReply, (exit) =>
    debug.log(h, spec.operation, () => {
      const what = `${Protocol.commandName(spec.type)} cookie=${cookie}`
      if (exit._tag === "Success") return `received reply to ${what}: success`
      return Option.match(Cause.findErrorOption(exit.cause), {
        onNone: () => `stopped waiting for the reply to ${what}`,
        onSome: (error) => `received reply to ${what}: ${NbdError.format(error)}`
      })
    })
  )

/** Queues NBD_CMD_DISC (it has no reply) and shuts the write side after it. */
export const disconnect = (h: HandleImpl, operation: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.flatMap(h.state.get, (s): Effect.Effect<void, NbdError.NbdError> => {
    if (!HandleState.isConnected(s)) return Effect.fail(stateError(operation, s))
    const cookie = h.connection!.engine.disconnect()
    if (cookie === undefined)
      return Effect.fail(invalidArgument(operation, "cannot request more commands after NBD_CMD_DISC"))
    return debug.log(h, operation, () => `sending ${Protocol.commandName(Protocol.Cmd.DISC)} cookie=${cookie}`)
  })
