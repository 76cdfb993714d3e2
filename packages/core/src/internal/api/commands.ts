import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { constVoid } from "effect/Function"
import * as Option from "effect/Option"
import * as HandleState from "../../HandleState.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument, toNumber } from "./arguments.js"
import * as debug from "./debug.js"
import type { Outcome } from "../engine/completion.js"
import { type CommandRequest, type Pending, release } from "../engine/pending.js"
import { type ExportInfo, type HandleImpl, payloadMaximum, stranded } from "../session/handle.js"

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

const writesData = (type: number) =>
  type === Protocol.Cmd.WRITE || type === Protocol.Cmd.TRIM || type === Protocol.Cmd.WRITE_ZEROES

/** The per-command checks of STRICT_COMMANDS: does the server support this command and these flags. */
const commandSupportError = (info: ExportInfo, h: HandleImpl, spec: CommandSpec): NbdError.NbdError | undefined => {
  const has = (flag: number) => (info.flags & flag) !== 0
  const op = spec.operation
  const notSupported = (what: string) => invalidArgument(op, `server does not support ${what}`)
  switch (spec.type) {
    case Protocol.Cmd.FLUSH:
      if (!has(Protocol.TFlag.SEND_FLUSH)) return notSupported("flush operations")
      break
    case Protocol.Cmd.TRIM:
      if (!has(Protocol.TFlag.SEND_TRIM)) return notSupported("trim operations")
      break
    case Protocol.Cmd.WRITE_ZEROES:
      if (!has(Protocol.TFlag.SEND_WRITE_ZEROES)) return notSupported("zero operations")
      if (spec.flags & Protocol.CmdFlag.FAST_ZERO && !has(Protocol.TFlag.SEND_FAST_ZERO))
        return notSupported("the fast zero flag")
      break
    case Protocol.Cmd.CACHE:
      if (!has(Protocol.TFlag.SEND_CACHE)) return notSupported("cache operations")
      break
    case Protocol.Cmd.READ:
      if (spec.flags & Protocol.CmdFlag.DF && !has(Protocol.TFlag.SEND_DF)) return notSupported("the DF flag")
      break
    case Protocol.Cmd.BLOCK_STATUS:
      if (!h.agreement.structuredReplies)
        return new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation: op,
          message: "server does not support structured replies"
        })
      if (!h.agreement.metaValid || h.agreement.metaContexts === undefined || h.agreement.metaContexts.size === 0)
        return new NbdError.UnsupportedError({
          errno: "ENOTSUP",
          operation: op,
          message:
            "did not negotiate any metadata contexts, either you did not call add_meta_context, or the server does not support any of them"
        })
      break
  }
  if (writesData(spec.type) && has(Protocol.TFlag.READ_ONLY))
    return invalidArgument(op, "server does not support write operations", "EPERM")
  if (spec.flags & Protocol.CmdFlag.FUA && !has(Protocol.TFlag.SEND_FUA)) return notSupported("the FUA flag")
  if (
    spec.type === Protocol.Cmd.WRITE &&
    ((spec.flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0) !== h.agreement.extendedHeaders
  )
    return invalidArgument(op, "incorrect setting for PAYLOAD_LEN flag")
  return undefined
}

/** Every check libnbd makes before a command leaves the client, in its order. */
const check = (h: HandleImpl, spec: CommandSpec, offset: number, count: number): NbdError.NbdError | undefined => {
  const strict = h.settings.strictMode
  const op = spec.operation
  const info = h.agreement.info!
  if (strict & Protocol.Strict.COMMANDS) {
    const error = commandSupportError(info, h, spec)
    if (error !== undefined) return error
  }
  // The flags were checked against the call's own by the wrapper (internal/call.ts), before anything else.
  if (h.connection!.engine.disconnectRequested)
    return invalidArgument(op, "cannot request more commands after NBD_CMD_DISC")
  if (spec.type === Protocol.Cmd.FLUSH || spec.type === Protocol.Cmd.DISC) return undefined
  if (strict & Protocol.Strict.ZERO_SIZE && count === 0) return invalidArgument(op, "count cannot be 0")
  if (strict & Protocol.Strict.BOUNDS) {
    const size = info.size
    if (BigInt(offset) > size || BigInt(count) > size - BigInt(offset))
      return invalidArgument(op, "request out of bounds", writesData(spec.type) ? "ENOSPC" : "EINVAL")
  }
  const minimum = info.blockSizes?.minimum
  if (
    strict & Protocol.Strict.ALIGN &&
    minimum !== undefined &&
    minimum > 1 &&
    (offset % minimum !== 0 || count % minimum !== 0)
  )
    return invalidArgument(op, "request is unaligned")
  if (spec.type === Protocol.Cmd.WRITE && strict & Protocol.Strict.PAYLOAD && count > payloadMaximum(info))
    return invalidArgument(op, `request too large: maximum payload size is ${payloadMaximum(info)}`, "ERANGE")
  if ((spec.type === Protocol.Cmd.READ || spec.type === Protocol.Cmd.WRITE) && count > Protocol.Limits.MAX_REQUEST_SIZE)
    return invalidArgument(
      op,
      `request too large: maximum request size is ${Protocol.Limits.MAX_REQUEST_SIZE}`,
      "ERANGE"
    )
  if (!h.agreement.extendedHeaders && count > 0xffffffff)
    return invalidArgument(op, "count is too large for a server without extended headers", "ERANGE")
  return undefined
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
  return check(h, spec, offset, count) ?? { offset, count }
}

/** Hands a checked command to the connection's engine, which queues its request. */
const enqueue = (h: HandleImpl, spec: CommandSpec, { count, offset }: Checked): Pending =>
  h.connection!.engine.issue(spec, offset, count)

/** An outcome as the exit an effect resumes with. */
const exitOf = <A>(outcome: Outcome): Exit.Exit<A, NbdError.NbdError> =>
  outcome.ok ? Exit.succeed(outcome.value as A) : Exit.fail(outcome.error)

/**
 * Suspends until the command settles. When the caller stops waiting, `pending` is released: its reply is
 * still read and dropped, and its buffer never written again.
 */
const awaitReply = <A>(pending: Pending): Effect.Effect<A, NbdError.NbdError> =>
  Effect.async<A, NbdError.NbdError>((resume) => {
    const completion = pending.completion
    if (completion.outcome !== undefined) return resume(exitOf(completion.outcome))
    const listener = (outcome: Outcome) => resume(exitOf(outcome))
    completion.listen(listener)
    return Effect.sync(() => {
      completion.unlisten(listener)
      release(pending)
    })
  })

/** Checks a command, queues its request and returns it with its cookie. Nothing is sent when a check fails. */
export const issue = <A>(h: HandleImpl, spec: CommandSpec): Effect.Effect<Command<A>, NbdError.NbdError> =>
  Effect.suspend(() => {
    // While the handle reconnects, a new command waits for it, then goes through every check as usual.
    const recovery = h.recovery
    if (recovery !== undefined)
      return Effect.zipRight(
        Effect.mapError(Deferred.await(recovery.ready), (error) => stranded(error, spec.operation)),
        issue<A>(h, spec)
      )
    const ok = checked(h, spec)
    if (NbdError.isNbdError(ok)) return Effect.fail(ok)
    const pending = enqueue(h, spec, ok)
    const reply = awaitReply<A>(pending)
    const cookie = pending.cookie
    const command: Command<A> = {
      cookie: BigInt(cookie),
      await: h.settings.debug ? traceReply(h, spec, cookie, reply) : reply
    }
    return h.settings.debug
      ? Effect.as(traceRequest(h, spec, command.cookie, ok.offset, ok.count), command)
      : Effect.succeed(command)
  })

/**
 * Issues a command without an effect, for the engine's own hot loops (a copy): `done` gets the outcome once.
 * Answers how to stop waiting (the reply is then dropped), or undefined when the command must take the
 * effect path instead: while the handle reconnects, or with debug output or metrics on.
 */
export const issueDirect = (
  h: HandleImpl,
  spec: CommandSpec,
  done: (exit: Exit.Exit<unknown, NbdError.NbdError>) => void
): (() => void) | undefined => {
  if (h.recovery !== undefined || h.settings.debug || h.settings.metrics) return undefined
  const ok = checked(h, spec)
  if (NbdError.isNbdError(ok)) {
    done(Exit.fail(ok))
    return constVoid
  }
  const pending = enqueue(h, spec, ok)
  pending.completion.listen((outcome) => done(exitOf(outcome)))
  return () => release(pending)
}

const traceRequest = (h: HandleImpl, spec: CommandSpec, cookie: bigint, offset: number, count: number) =>
  debug.log(
    h,
    spec.operation,
    () =>
      `sending ${Protocol.commandName(spec.type)} cookie=${cookie} offset=${offset} count=${count} flags=0x${spec.flags.toString(16)}`
  )

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
      return Option.match(Cause.failureOption(exit.cause), {
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
