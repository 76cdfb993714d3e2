import * as Effect from "effect/Effect"
import * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import * as blockStatusInternal from "../engine/blockStatus.js"
import type * as Call from "./call.js"
import * as commands from "./commands.js"
import type { Command } from "./commands.js"
import { payloadMaximum } from "../engine/agreement.js"
import type { HandleImpl } from "../session/handle.js"

// The bodies of the command calls: what each one builds and queues once the wrapper has checked it.

/** What a read takes besides its range: the caller's buffer, and command flags. */
export interface ReadArguments {
  readonly buffer?: Uint8Array
  readonly flags?: number
}

/** What a command takes besides its range: command flags. */
export interface FlagArguments {
  readonly flags?: number
}

/** A structured read's result: the data, and the chunks it arrived in. */
export interface StructuredRead {
  readonly data: Uint8Array
  readonly chunks: ReadonlyArray<ClientCodec.ReadChunk>
}

/** Whether a read count is one a buffer can be allocated for; other counts fail the command's checks. */
export const validCount = (count: number): boolean =>
  Number.isSafeInteger(count) && count >= 0 && count <= Protocol.Limits.MAX_REQUEST_SIZE

/** What a command on a range tells the wrapper: its flags to check, its bytes, its span's attributes. */
export const describeRange = (
  count: number | bigint,
  offset: number | bigint,
  flags: number | undefined,
  more: Partial<Call.Details> = {}
): Call.Details => ({
  flags: () => flags ?? 0,
  bytes: typeof count === "number" ? count : Number(count),
  attributes: () => ({ count, offset, flags: flags ?? 0 }),
  ...more
})

/** Waits for a queued command's reply: what a blocking call adds to its aio twin. */
export const awaitCommand = <A>(command: Command<A>): Effect.Effect<A, NbdError.NbdError> => command.await

/** libnbd's pread_initialize: the caller's buffer is zeroed before any check, so a failed read leaks nothing. */
export const zeroFirst =
  (options: ReadArguments) =>
  (impl: HandleImpl): void => {
    if (options.buffer !== undefined && impl.settings.preadInitialize) options.buffer.fill(0)
  }

/**
 * A read of `count` bytes at `offset` into the caller's buffer or a fresh one, made anew each time the
 * effect runs. As libnbd does, the caller's buffer is zeroed first, before any check can fail.
 */
export const read = (
  impl: HandleImpl,
  operation: string,
  count: number,
  offset: number | bigint,
  options: ReadArguments
): Effect.Effect<Command<Uint8Array>, NbdError.NbdError> => {
  const given = options.buffer
  if (given !== undefined && given.length !== count)
    return Effect.fail(invalidArgument(operation, "buffer length does not match count"))
  return commands.issue(impl, {
    operation,
    type: Protocol.Cmd.READ,
    flags: options.flags ?? 0,
    offset,
    count,
    buffer: given,
    // A buffer of its own is made when the data arrives (connection.ts); a count that cannot be fails a check.
    fresh: given === undefined && validCount(count)
  })
}

export const autoPayloadLen = (impl: HandleImpl, flags: number): number => {
  if ((impl.settings.strictMode & Protocol.Strict.AUTO_FLAG) === 0) return flags
  return impl.agreement.extendedHeaders ? flags | Protocol.CmdFlag.PAYLOAD_LEN : flags & ~Protocol.CmdFlag.PAYLOAD_LEN
}

/** A write; PAYLOAD_LEN follows what the connection negotiated, so it is decided when the effect runs. */
export const write = (
  impl: HandleImpl,
  operation: string,
  data: Uint8Array,
  offset: number | bigint,
  options: FlagArguments
): Effect.Effect<Command<void>, NbdError.NbdError> =>
  commands.issue(impl, {
    operation,
    type: Protocol.Cmd.WRITE,
    flags: autoPayloadLen(impl, options.flags ?? 0),
    offset,
    count: data.length,
    payload: data
  })

/** A command with only a range and flags (flush, trim, cache, zero), named by its caller. */
export const rangeCommand = (
  impl: HandleImpl,
  operation: string,
  type: number,
  count: number | bigint,
  offset: number | bigint,
  options: FlagArguments
): Effect.Effect<Command<void>, NbdError.NbdError> =>
  commands.issue(impl, { operation, type, flags: options.flags ?? 0, offset, count })

/** A structured read with a fresh buffer and chunk list each time the effect runs. */
export const readStructured = (
  impl: HandleImpl,
  operation: string,
  count: number,
  offset: number | bigint,
  options: FlagArguments
): Effect.Effect<Command<StructuredRead>, NbdError.NbdError> => {
  const chunks: Array<ClientCodec.ReadChunk> = []
  const buffer = validCount(count) ? new Uint8Array(count) : undefined
  return Effect.map(
    commands.issue<Uint8Array>(impl, {
      operation,
      type: Protocol.Cmd.READ,
      flags: options.flags ?? 0,
      offset,
      count,
      buffer,
      chunks
    }),
    (command) => ({
      cookie: command.cookie,
      await: Effect.map(command.await, (data) => ({
        data,
        chunks:
          chunks.length === 0 && count > 0 ? [{ _tag: "Data" as const, offset: Number(offset), length: count }] : chunks
      }))
    })
  )
}

export const blockStatusCollector = (
  impl: HandleImpl,
  operation: string,
  offset: number | bigint,
  count: number | bigint
) =>
  blockStatusInternal.makeCollector(
    impl.agreement.metaContexts,
    impl.agreement.info?.size ?? 0n,
    operation,
    Number(offset),
    Number(count)
  )

/** Block status over every negotiated context, with a fresh entry list each time the effect runs. */
export const blockStatusOf = (
  impl: HandleImpl,
  operation: string,
  count: number | bigint,
  offset: number | bigint,
  options: FlagArguments
): Effect.Effect<Command<ReadonlyArray<ClientCodec.BlockStatusEntry>>, NbdError.NbdError> => {
  const { entries, onBlockStatus, restart } = blockStatusCollector(impl, operation, offset, count)
  return Effect.map(
    commands.issue<void>(impl, {
      operation,
      type: Protocol.Cmd.BLOCK_STATUS,
      flags: options.flags ?? 0,
      offset,
      count,
      onBlockStatus,
      restart
    }),
    (command) => ({ cookie: command.cookie, await: Effect.as(command.await, entries) })
  )
}

/** Block status limited to `contexts`: libnbd's checks in its order, then the request with its id payload. */
export const blockStatusFiltered = (
  impl: HandleImpl,
  operation: string,
  count: number | bigint,
  offset: number | bigint,
  contexts: ReadonlyArray<string>,
  options: FlagArguments
): Effect.Effect<Command<ReadonlyArray<ClientCodec.BlockStatusEntry>>, NbdError.NbdError> =>
  Effect.suspend(() => {
    const strict = impl.settings.strictMode
    let flags = options.flags ?? 0
    if (strict & Protocol.Strict.AUTO_FLAG) flags |= Protocol.CmdFlag.PAYLOAD_LEN
    if (impl.agreement.info !== undefined && strict & Protocol.Strict.COMMANDS) {
      if (!impl.agreement.extendedHeaders)
        return Effect.fail(
          new NbdError.UnsupportedError({
            errno: "ENOTSUP",
            operation,
            message: "server does not support extended headers"
          })
        )
      if ((impl.agreement.info.flags & Protocol.TFlag.BLOCK_STATUS_PAYLOAD) === 0)
        return Effect.fail(invalidArgument(operation, "server does not support the block status payload"))
    }
    const ids: Array<number> = []
    for (const name of contexts) {
      const id = impl.agreement.metaValid
        ? [...(impl.agreement.metaContexts ?? new Map<number, string>()).entries()].find(([, n]) => n === name)?.[0]
        : undefined
      if (id === undefined) return Effect.fail(invalidArgument(operation, `context ${name} not negotiated`))
      ids.push(id)
    }
    const payloadLength = 8 + 4 * ids.length
    if (payloadLength > payloadMaximum(impl.agreement.info))
      return Effect.fail(invalidArgument(operation, "filter set too large", "ERANGE"))
    const payload = new Uint8Array(payloadLength)
    const view = new DataView(payload.buffer)
    view.setBigUint64(0, BigInt(count))
    ids.forEach((id, i) => view.setUint32(8 + 4 * i, id))
    const { entries, onBlockStatus, restart } = blockStatusCollector(impl, operation, offset, count)
    return Effect.map(
      commands.issue<void>(impl, {
        operation,
        type: Protocol.Cmd.BLOCK_STATUS,
        flags,
        offset,
        count,
        requestLength: (flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0 ? payloadLength : Number(count),
        payload: (flags & Protocol.CmdFlag.PAYLOAD_LEN) !== 0 ? payload : undefined,
        onBlockStatus,
        restart
      }),
      (command) => ({ cookie: command.cookie, await: Effect.as(command.await, entries) })
    )
  })
