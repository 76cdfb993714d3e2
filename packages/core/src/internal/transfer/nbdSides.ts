/**
 * NBD handles and pools as the sides of a transfer: a reader (with block status when the source has
 * base:allocation) and a writer (zero ranges as NBD_CMD_WRITE_ZEROES, or writes of zeroes where the server
 * lacks it). Every I/O is a command submitted without an effect (`commands.submit`): no fiber per command, a
 * reconnect waited for, debug output and metrics in the context the side was made in.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Nbd from "../../Nbd.js"
import * as NbdError from "../../NbdError.js"
import type * as NbdPool from "../../NbdPool.js"
import * as Protocol from "../../Protocol.js"
import { invalidArgument } from "../engine/arguments.js"
import { toOffset } from "../api/arguments.js"
import * as commandCalls from "../api/commandCalls.js"
import * as commands from "../api/commands.js"
import type { HandleImpl } from "../session/handle.js"
import { handlesOf } from "../api/nbdPool.js"
import { type Done, ended, endNow, type Item, type Reader, type Started, type Writer } from "./sides.js"

/** The engine's view of a public handle (the same object). */
const implOf = (h: Nbd.Handle): HandleImpl => h as unknown as HandleImpl

/** The largest request a handle takes: the server's maximum block size, within libnbd's payload cap. */
const requestLimit = (h: Nbd.Handle): Effect.Effect<number, NbdError.NbdError> =>
  Effect.zipWith(Nbd.getBlockSize(h, "maximum"), Nbd.getBlockSize(h, "payload"), (maximum, payload) =>
    maximum > 0 ? Math.min(maximum, payload) : payload
  )

const exportSize = (operation: string, h: Nbd.Handle): Effect.Effect<number, NbdError.NbdError> =>
  Effect.flatMap(Nbd.getSize(h), (size) => toOffset(operation, "the export size", size))

/** Base:allocation extents as items over `[offset, offset + length)`, neighbours of one kind joined. */
const itemsOf = (entries: ReadonlyArray<Nbd.BlockStatusEntry>, offset: number, length: number): ReadonlyArray<Item> => {
  const items: Array<Item> = []
  const end = offset + length
  let at = offset
  for (const e of entries.find((x) => x.context === "base:allocation")?.extents ?? []) {
    if (at >= end) break
    const len = Math.min(Number(e.length), end - at)
    if (len <= 0) continue
    const zero = (e.flags & Protocol.STATE_ZERO) !== 0
    const last = items[items.length - 1]
    if (last !== undefined && last.zero === zero) items[items.length - 1] = { ...last, length: last.length + len }
    else items.push({ offset: at, length: len, zero })
    at += len
  }
  // A server that answered nothing usable: the range is data.
  return items.length > 0 ? items : [{ offset, length, zero: false }]
}

/** The handles of a target, at most `lanes` of them. */
const lanesOf = (target: NbdPool.Target, lanes: number): ReadonlyArray<Nbd.Handle> =>
  handlesOf(target).slice(0, Math.max(1, lanes))

/**
 * The items with their zero runs shrunk to whole blocks of `minimum` (the larger of both sides' minimum block
 * sizes), the range's own ends kept: since doc/proto.md of 2025-06 a server may report extents of any length, and a
 * read of part of a block is one that strict mode refuses. A block only partly zero is read as data.
 */
export const alignToBlocks = (items: ReadonlyArray<Item>, minimum: number): ReadonlyArray<Item> => {
  const first = items[0]
  const last = items[items.length - 1]
  if (minimum <= 1 || first === undefined || last === undefined) return items
  const start = first.offset
  const end = last.offset + last.length
  const out: Array<Item> = []
  const push = (offset: number, length: number, zero: boolean): void => {
    if (length <= 0) return
    const prev = out[out.length - 1]
    if (prev !== undefined && prev.zero === zero) out[out.length - 1] = { ...prev, length: prev.length + length }
    else out.push({ offset, length, zero })
  }
  let at = start
  for (const item of items) {
    if (!item.zero) continue
    const itemEnd = item.offset + item.length
    const from = item.offset === start ? start : Math.ceil(item.offset / minimum) * minimum
    const to = itemEnd === end ? end : Math.floor(itemEnd / minimum) * minimum
    if (to <= from) continue
    push(at, from - at, false)
    push(from, to - from, true)
    at = to
  }
  push(at, end - at, false)
  return out
}

/**
 * Submits a command for a side: its outcome reaches `done` as a side's (the read's data with it), and the
 * command is what stopping it cancels. One that fails its checks ends at once.
 */
const command = <A>(
  impl: HandleImpl,
  spec: commands.CommandSpec,
  report: commands.Report,
  done: Done<NbdError.NbdError, A>
): Started => {
  const submitted = commands.submit(
    impl,
    spec,
    (outcome) => (outcome.ok ? done(undefined, outcome.value as A) : done(Cause.fail(outcome.error))),
    report
  )
  return NbdError.isNbdError(submitted) ? endNow(done, Cause.fail(submitted)) : submitted
}

/**
 * A handle or pool as a reader; block status is used when `sparse` and the source negotiated base:allocation.
 * Zero runs are shrunk to whole blocks of the larger of the source's minimum block size and `alignment` (the
 * destination's, for a copy): the data pieces between them inherit their edges, and a destination with a
 * larger minimum refuses a write or zero that is not whole blocks of it.
 */
export const nbdReader = (
  operation: string,
  target: NbdPool.Target,
  lanes: number,
  sparse: boolean,
  alignment = 1
): Effect.Effect<Reader<NbdError.NbdError>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const handles = lanesOf(target, lanes)
    const impls = handles.map(implOf)
    const h0 = handles[0]!
    const size = yield* exportSize(operation, h0)
    const maxRequest = yield* requestLimit(h0)
    const allocation = sparse && (yield* Effect.orElseSucceed(Nbd.canMetaContext(h0, "base:allocation"), () => false))
    // Minimum block sizes are powers of two (doc/proto.md), so the larger is a multiple of the smaller.
    const minimum = Math.max(yield* Nbd.getBlockSize(h0, "minimum"), alignment)
    const report = yield* Effect.context<never>()
    return {
      size,
      lanes: handles.length,
      maxRequest,
      read: (lane, offset, length, into, done) => {
        const impl = impls[lane]!
        const given = typeof into === "string" ? undefined : into
        return command(
          impl,
          {
            operation: "nbd_aio_pread",
            type: Protocol.Cmd.READ,
            flags: 0,
            offset,
            count: length,
            buffer: given === undefined || !impl.settings.preadInitialize ? given : given.fill(0),
            fresh: into === "fresh"
          },
          report,
          done
        )
      },
      drops: true,
      extents: allocation
        ? (offset, length) =>
            Effect.map(Nbd.blockStatus(h0, length, offset), (e) => alignToBlocks(itemsOf(e, offset, length), minimum))
        : undefined
    }
  })

/** The options of an NBD writer. */
export interface NbdWriterOptions {
  /** The source's size when known: a smaller destination fails at once with ENOSPC. */
  readonly sourceSize?: number | undefined
  /** Where the data starts (a write sink at an offset). */
  readonly offset?: number | undefined
  readonly destinationIsZero?: boolean | undefined
  /** Zero ranges must end allocated: NBD_CMD_WRITE_ZEROES with NO_HOLE (nbdcopy's --allocated). */
  readonly allocated?: boolean | undefined
}

/**
 * A handle or pool as a writer: read-only fails with EPERM, a source larger than the export with ENOSPC;
 * zero ranges become NBD_CMD_WRITE_ZEROES where the server has it, else writes of a shared zero buffer.
 */
export const nbdWriter = (
  operation: string,
  target: NbdPool.Target,
  lanes: number,
  options: NbdWriterOptions
): Effect.Effect<Writer<NbdError.NbdError>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const handles = lanesOf(target, lanes)
    const h0 = handles[0]!
    const size = yield* exportSize(operation, h0)
    if (yield* Nbd.isReadOnly(h0))
      return yield* invalidArgument(operation, "the destination export is read-only", "EPERM")
    const start = options.offset ?? 0
    if (options.sourceSize !== undefined && start + options.sourceSize > size)
      return yield* invalidArgument(
        operation,
        `the destination (${size} bytes) is smaller than the source (${options.sourceSize} bytes)`,
        "ENOSPC"
      )
    const canZero = yield* Nbd.canZero(h0)
    const canFlush = yield* Nbd.canFlush(h0)
    const maxRequest = yield* requestLimit(h0)
    const report = yield* Effect.context<never>()
    const impls = handles.map(implOf)
    const zeroFlags = options.allocated ? Protocol.CmdFlag.NO_HOLE : 0
    let zeroes: Uint8Array | undefined
    const outOfSpace = () =>
      Cause.fail(invalidArgument(operation, `the source is larger than the destination (${size} bytes)`, "ENOSPC"))
    const fits = (offset: number, length: number) => offset + length <= size
    const write = (
      impl: HandleImpl,
      operation: string,
      offset: number,
      data: Uint8Array,
      done: Done<NbdError.NbdError>
    ) =>
      command(
        impl,
        {
          operation,
          type: Protocol.Cmd.WRITE,
          flags: commandCalls.autoPayloadLen(impl, 0),
          offset,
          count: data.length,
          payload: data
        },
        report,
        done
      )
    /** A server without NBD_CMD_WRITE_ZEROES: writes of a shared zero buffer, one after another. */
    const writeZeroes = (impl: HandleImpl, offset: number, length: number, done: Done<NbdError.NbdError>): Started => {
      const buffer = (zeroes ??= new Uint8Array(Math.min(maxRequest, 1 << 20)))
      let current: Started = ended
      let at = 0
      const next = (failure: Cause.Cause<NbdError.NbdError> | undefined): void => {
        if (failure !== undefined || at >= length) return done(failure)
        const n = Math.min(buffer.length, length - at)
        const from = offset + at
        at += n
        current = write(impl, "nbd_pwrite", from, buffer.subarray(0, n), next)
      }
      next(undefined)
      return { cancel: () => current.cancel() }
    }
    return {
      lanes: handles.length,
      maxRequest,
      discards: false,
      write: (lane, offset, data, done) =>
        fits(offset, data.length)
          ? write(impls[lane]!, "nbd_aio_pwrite", offset, data, done)
          : endNow(done, outOfSpace()),
      zero: (lane, offset, length, done) => {
        if (!fits(offset, length)) return endNow(done, outOfSpace())
        if (options.destinationIsZero) return endNow(done, undefined)
        if (!canZero) return writeZeroes(impls[lane]!, offset, length, done)
        return command(
          impls[lane]!,
          { operation: "nbd_aio_zero", type: Protocol.Cmd.WRITE_ZEROES, flags: zeroFlags, offset, count: length },
          report,
          done
        )
      },
      finish: (_size, flush) =>
        flush && canFlush
          ? Effect.forEach(handles, (h) => Nbd.flush(h), { concurrency: "unbounded", discard: true })
          : Effect.void
    }
  })
