/**
 * `effect-nbd copy SRC DST`: copies between NBD exports, files, stdin/stdout and `null:`, like nbdcopy:
 * several connections when the server allows multi-conn, many requests in flight, reused buffers, and
 * sparseness kept (holes and zero extents are never read; zeroes become NBD_CMD_WRITE_ZEROES or file holes).
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Nbd } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { FileHandle } from "node:fs/promises"
import * as FsPromises from "node:fs/promises"
import type { Readable } from "node:stream"
import * as Common from "./common.js"

/** Where bytes come from or go to. */
type Endpoint =
  | { readonly _tag: "Nbd"; readonly uri: string }
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Stdio" }
  | { readonly _tag: "Null" }

const endpoint = (arg: string): Endpoint =>
  arg === "-"
    ? { _tag: "Stdio" }
    : arg === "null:"
      ? { _tag: "Null" }
      : Common.isNbdUri(arg)
        ? { _tag: "Nbd", uri: arg }
        : { _tag: "File", path: arg }

/** The largest single NBD_CMD_WRITE_ZEROES (and the largest zero extent handed out at once). */
const MAX_ZERO = 1 << 30
/** The largest block-status range asked for at once. */
const MAX_STATUS = 1 << 30

/** A piece of work: a range, and whether the source already said it reads as zeroes. */
interface Item {
  readonly offset: bigint
  readonly length: number
  readonly zero: boolean
}

/** A source that can be read anywhere, on connection `k`. */
interface RandomSource {
  readonly size: bigint
  readonly read: (k: number, offset: bigint, into: Uint8Array) => Effect.Effect<void, Common.Failure>
  /** Base:allocation extents from `offset` (at least one), when the source knows them. */
  readonly extents: Option.Option<
    (offset: bigint, length: number) => Effect.Effect<ReadonlyArray<Item>, Common.Failure>
  >
}

/** A destination that can be written anywhere, on connection `k`. */
interface RandomDestination {
  readonly write: (k: number, offset: bigint, data: Uint8Array) => Effect.Effect<void, Common.Failure>
  readonly zero: (k: number, offset: bigint, length: number) => Effect.Effect<void, Common.Failure>
  /** Called once the total size is known (a stdin source learns it at the end). */
  readonly finish: (size: bigint) => Effect.Effect<void, Common.Failure>
}

const fileOp = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, Common.CliError> =>
  Effect.tryPromise({ try: f, catch: (e) => Common.systemError(what, e) })

const openFile = (path: string, flags: string): Effect.Effect<FileHandle, Common.CliError, Scope.Scope> =>
  Effect.acquireRelease(
    fileOp(`open: ${path}`, () => FsPromises.open(path, flags)),
    (fh) => Effect.promise(() => fh.close().catch(() => undefined))
  )

const isAllZero = (buffer: Uint8Array): boolean => {
  // Eight bytes at a time where the alignment allows.
  if (buffer.byteOffset % 8 === 0 && buffer.length % 8 === 0) {
    const words = new BigUint64Array(buffer.buffer, buffer.byteOffset, buffer.length / 8)
    for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false
    return true
  }
  for (let i = 0; i < buffer.length; i++) if (buffer[i] !== 0) return false
  return true
}

/** Connects `wanted` handles to a URI, or one when the server does not advertise multi-conn. */
const connectAll = (
  uri: string,
  wanted: number,
  settings: Nbd.Settings
): Effect.Effect<ReadonlyArray<Nbd.Handle>, NbdError.NbdError, Scope.Scope> =>
  Effect.gen(function* () {
    const first = yield* Common.connect(uri, settings)
    const n = wanted > 1 && (yield* Nbd.canMultiConn(first)) ? wanted : 1
    const rest = yield* Effect.all(
      Array.from({ length: n - 1 }, () => Common.connect(uri, settings)),
      { concurrency: "unbounded" }
    )
    return [first, ...rest]
  })

const pick = <A>(all: ReadonlyArray<A>, k: number): A => all[k % all.length]!

const nbdSource = (handles: ReadonlyArray<Nbd.Handle>): Effect.Effect<RandomSource, NbdError.NbdError> =>
  Effect.gen(function* () {
    const h0 = handles[0]!
    const size = yield* Nbd.getSize(h0)
    const sparse = yield* Effect.orElseSucceed(Nbd.canMetaContext(h0, "base:allocation"), () => false)
    return {
      size,
      read: (k, offset, into) => Nbd.pread(pick(handles, k), into.length, offset, { buffer: into }),
      extents: sparse
        ? Option.some((offset: bigint, length: number) =>
            Effect.map(Nbd.blockStatus(h0, length, offset), (entries) => {
              const items: Array<Item> = []
              let at = offset
              const end = offset + BigInt(length)
              for (const e of entries.find((x) => x.context === "base:allocation")?.extents ?? []) {
                if (at >= end) break
                const len = e.length > end - at ? end - at : e.length
                items.push({ offset: at, length: Number(len), zero: (e.flags & 2) !== 0 })
                at += len
              }
              // A server that answered nothing: treat the range as data.
              return items.length > 0 ? items : [{ offset, length, zero: false }]
            })
          )
        : Option.none()
    }
  })

const fileSource = (path: string): Effect.Effect<RandomSource, Common.CliError, Scope.Scope> =>
  Effect.gen(function* () {
    const fh = yield* openFile(path, "r")
    const stat = yield* fileOp(`stat: ${path}`, () => fh.stat({ bigint: true }))
    return {
      size: stat.size,
      read: (_k, offset, into) =>
        fileOp(`read: ${path}`, async () => {
          let done = 0
          while (done < into.length) {
            const { bytesRead } = await fh.read(into, done, into.length - done, Number(offset) + done)
            if (bytesRead === 0) throw Object.assign(new Error("unexpected end of file"), { code: "EIO" })
            done += bytesRead
          }
        }),
      extents: Option.none()
    }
  })

const nbdDestination = (
  handles: ReadonlyArray<Nbd.Handle>,
  sourceSize: bigint | undefined,
  requestSize: number
): Effect.Effect<RandomDestination, Common.Failure> =>
  Effect.gen(function* () {
    const h0 = handles[0]!
    const size = yield* Nbd.getSize(h0)
    if (yield* Nbd.isReadOnly(h0))
      return yield* new Common.CliError({ message: "copy: the destination export is read-only (EPERM)" })
    if (sourceSize !== undefined && size < sourceSize)
      return yield* new Common.CliError({
        message: `copy: the destination (${size} bytes) is smaller than the source (${sourceSize} bytes) (ENOSPC)`
      })
    const canZero = yield* Nbd.canZero(h0)
    const canFlush = yield* Nbd.canFlush(h0)
    const zeroes = new Uint8Array(requestSize)
    const checkBounds = (offset: bigint, length: number) =>
      offset + BigInt(length) > size
        ? Effect.fail(
            new Common.CliError({
              message: `copy: the source is larger than the destination (${size} bytes) (ENOSPC)`
            })
          )
        : Effect.void
    return {
      write: (k, offset, data) =>
        Effect.zipRight(checkBounds(offset, data.length), Nbd.pwrite(pick(handles, k), data, offset)),
      zero: (k, offset, length) =>
        Effect.zipRight(
          checkBounds(offset, length),
          canZero
            ? Nbd.zero(pick(handles, k), length, offset)
            : Effect.gen(function* () {
                for (let done = 0; done < length; done += requestSize)
                  yield* Nbd.pwrite(
                    pick(handles, k),
                    zeroes.subarray(0, Math.min(requestSize, length - done)),
                    offset + BigInt(done)
                  )
              })
        ),
      finish: () =>
        canFlush
          ? Effect.forEach(handles, (h) => Nbd.flush(h), { concurrency: "unbounded", discard: true })
          : Effect.void
    }
  })

/** A file destination: created or truncated, sized up front so zero ranges stay holes and are never written. */
const fileDestination = (
  path: string,
  sourceSize: bigint | undefined,
  requestSize: number
): Effect.Effect<RandomDestination, Common.CliError, Scope.Scope> =>
  Effect.gen(function* () {
    const fh = yield* openFile(path, "w")
    // A regular file keeps zero ranges as holes; anything else (a device, /dev/null) is written in full.
    const regular = (yield* fileOp(`stat: ${path}`, () => fh.stat())).isFile()
    if (regular && sourceSize !== undefined) yield* fileOp(`truncate: ${path}`, () => fh.truncate(Number(sourceSize)))
    const write = (offset: bigint, data: Uint8Array) =>
      fileOp(`write: ${path}`, async () => {
        let done = 0
        while (done < data.length) {
          const { bytesWritten } = await fh.write(data, done, data.length - done, Number(offset) + done)
          done += bytesWritten
        }
      })
    const zeroes = regular ? new Uint8Array(0) : new Uint8Array(requestSize)
    return {
      write: (_k, offset, data) => write(offset, data),
      zero: (_k, offset, length) =>
        regular
          ? Effect.void
          : Effect.gen(function* () {
              for (let done = 0; done < length; done += requestSize)
                yield* write(offset + BigInt(done), zeroes.subarray(0, Math.min(requestSize, length - done)))
            }),
      finish: (size) =>
        regular && sourceSize === undefined ? fileOp(`truncate: ${path}`, () => fh.truncate(Number(size))) : Effect.void
    }
  })

const nullDestination: RandomDestination = {
  write: () => Effect.void,
  zero: () => Effect.void,
  finish: () => Effect.void
}

/** Reads up to `n` bytes from a stream (fewer only at its end); None at the end. */
const readChunk = (stream: Readable, n: number): Effect.Effect<Option.Option<Uint8Array>, Common.CliError> =>
  Effect.async<Option.Option<Uint8Array>, Common.CliError>((resume) => {
    const cleanup = () => {
      stream.off("readable", attempt)
      stream.off("end", onEnd)
      stream.off("error", onError)
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed(Option.none()))
    }
    const onError = (error: unknown) => {
      cleanup()
      resume(Effect.fail(Common.systemError("read from stdin", error)))
    }
    function attempt() {
      const chunk = stream.read(n) as Buffer | null
      if (chunk !== null) {
        cleanup()
        resume(Effect.succeed(Option.some(chunk)))
      } else if (stream.readableEnded) onEnd()
    }
    stream.on("readable", attempt)
    stream.on("end", onEnd)
    stream.on("error", onError)
    attempt()
    return Effect.sync(cleanup)
  })

/** Progress on stderr, only when it is a terminal. */
const progressBar = (enabled: boolean, total: () => bigint | undefined, done: () => bigint) =>
  Effect.gen(function* () {
    if (!enabled || !process.stderr.isTTY) return
    const draw = () => {
      const t = total()
      const d = done()
      const fraction = t === undefined || t === 0n ? 1 : Number((d * 1000n) / t) / 1000
      const width = 40
      const filled = Math.round(fraction * width)
      process.stderr.write(
        `\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(1).padStart(5)}%`
      )
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        draw()
        process.stderr.write("\n")
      })
    )
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sync(draw), Effect.sleep("200 millis"))))
  })

interface CopyOptions {
  readonly connections: number
  readonly requests: number
  readonly requestSize: number
  readonly progress: boolean
}

/** Hands out work in offset order: request-size data pieces, whole zero extents (up to 1 GiB). */
const planner = (source: RandomSource, requestSize: number) =>
  Effect.gen(function* () {
    const lock = yield* Effect.makeSemaphore(1)
    let pos = 0n
    let queue: Array<Item> = []
    const take = Effect.gen(function* () {
      if (pos >= source.size) return Option.none<Item>()
      if (Option.isNone(source.extents)) {
        const length = Number(source.size - pos < BigInt(requestSize) ? source.size - pos : BigInt(requestSize))
        const item = { offset: pos, length, zero: false }
        pos += BigInt(length)
        return Option.some(item)
      }
      if (queue.length === 0) {
        const length = Number(source.size - pos < BigInt(MAX_STATUS) ? source.size - pos : BigInt(MAX_STATUS))
        queue = [...(yield* source.extents.value(pos, length))]
      }
      const head = queue[0]!
      const length = Math.min(head.length, head.zero ? MAX_ZERO : requestSize)
      if (length === head.length) queue.shift()
      else queue[0] = { offset: head.offset + BigInt(length), length: head.length - length, zero: head.zero }
      pos = head.offset + BigInt(length)
      return Option.some({ offset: head.offset, length, zero: head.zero })
    })
    return lock.withPermits(1)(take)
  })

/** Random-access source to random-access destination: connections × requests workers, each with one buffer. */
const copyRandom = (
  source: RandomSource,
  destination: RandomDestination,
  connections: number,
  options: CopyOptions,
  onProgress: (n: number) => void
): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    const next = yield* planner(source, options.requestSize)
    const worker = (w: number) =>
      Effect.gen(function* () {
        const k = w % connections
        const buffer = new Uint8Array(options.requestSize)
        while (true) {
          const item = yield* next
          if (Option.isNone(item)) return
          const { length, offset, zero } = item.value
          if (zero) yield* destination.zero(k, offset, length)
          else {
            const view = buffer.subarray(0, length)
            yield* source.read(k, offset, view)
            if (isAllZero(view)) yield* destination.zero(k, offset, length)
            else yield* destination.write(k, offset, view)
          }
          onProgress(length)
        }
      })
    yield* Effect.all(
      Array.from({ length: connections * options.requests }, (_, w) => worker(w)),
      { concurrency: "unbounded", discard: true }
    )
    yield* destination.finish(source.size)
  })

/** Random-access source to stdout: reads run ahead, writes go out in order. */
const copyToStdout = (
  source: RandomSource,
  options: CopyOptions,
  onProgress: (n: number) => void
): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    const next = yield* planner(source, options.requestSize)
    const zeroes = new Uint8Array(options.requestSize)
    yield* Stream.repeatEffectOption(
      Effect.flatMap(Effect.mapError(next, Option.some), (item) =>
        Option.isSome(item) ? Effect.succeed(item.value) : Effect.fail(Option.none())
      )
    ).pipe(
      Stream.mapEffect(
        (item): Effect.Effect<{ readonly item: Item; readonly data: Uint8Array | undefined }, Common.Failure> =>
          item.zero
            ? Effect.succeed({ item, data: undefined })
            : Effect.map(
                Effect.suspend(() => {
                  const data = new Uint8Array(item.length)
                  return Effect.as(source.read(0, item.offset, data), data)
                }),
                (data) => ({ item, data })
              ),
        { concurrency: options.requests }
      ),
      Stream.runForEach(({ data, item }) =>
        Effect.gen(function* () {
          if (data !== undefined) yield* Common.writeStdout(data)
          else
            for (let done = 0; done < item.length; done += zeroes.length)
              yield* Common.writeStdout(zeroes.subarray(0, Math.min(zeroes.length, item.length - done)))
          onProgress(item.length)
        })
      )
    )
  })

/** Stdin to a destination: sequential reads, writes with requests in flight. */
const copyFromStdin = (
  destination: RandomDestination | "stdout",
  options: CopyOptions,
  onProgress: (n: number) => void
): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    let pos = 0n
    const chunks = Stream.repeatEffectOption(
      Effect.flatMap(Effect.mapError(readChunk(process.stdin, options.requestSize), Option.some), (chunk) => {
        if (Option.isNone(chunk)) return Effect.fail(Option.none())
        const offset = pos
        pos += BigInt(chunk.value.length)
        return Effect.succeed({ offset, data: chunk.value })
      })
    )
    if (destination === "stdout")
      yield* Stream.runForEach(chunks, ({ data }) =>
        Effect.zipRight(
          Common.writeStdout(data),
          Effect.sync(() => onProgress(data.length))
        )
      )
    else {
      yield* Stream.runDrain(
        Stream.mapEffect(
          chunks,
          ({ data, offset }) =>
            Effect.zipRight(
              isAllZero(data) ? destination.zero(0, offset, data.length) : destination.write(0, offset, data),
              Effect.sync(() => onProgress(data.length))
            ),
          { concurrency: options.requests, unordered: true }
        )
      )
      yield* destination.finish(pos)
    }
  })

const copy = (src: Endpoint, dst: Endpoint, options: CopyOptions): Effect.Effect<void, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    let done = 0n
    let total: bigint | undefined
    const onProgress = (n: number) => {
      done += BigInt(n)
    }
    let srcHandles: ReadonlyArray<Nbd.Handle> = []
    let dstHandles: ReadonlyArray<Nbd.Handle> = []
    if (src._tag === "Null")
      return yield* new Common.CliError({ message: "copy: null: can only be a destination (EINVAL)" })
    if (src._tag === "Nbd")
      srcHandles = yield* connectAll(src.uri, options.connections, { metaContexts: ["base:allocation"] })
    if (dst._tag === "Nbd") dstHandles = yield* connectAll(dst.uri, options.connections, { requestMetaContext: false })
    // Multi-conn on both sides or one connection each (as nbdcopy).
    const connections = Math.min(
      src._tag === "Nbd" ? srcHandles.length : options.connections,
      dst._tag === "Nbd" ? dstHandles.length : options.connections
    )
    const source =
      src._tag === "Nbd" ? yield* nbdSource(srcHandles) : src._tag === "File" ? yield* fileSource(src.path) : undefined
    total = source?.size
    yield* progressBar(
      options.progress,
      () => total,
      () => done
    )
    const destination =
      dst._tag === "Nbd"
        ? yield* nbdDestination(dstHandles, total, options.requestSize)
        : dst._tag === "File"
          ? yield* fileDestination(dst.path, total, options.requestSize)
          : dst._tag === "Null"
            ? nullDestination
            : ("stdout" as const)
    if (source === undefined) return yield* copyFromStdin(destination, options, onProgress)
    if (destination === "stdout") return yield* copyToStdout(source, options, onProgress)
    yield* copyRandom(source, destination, connections, options, onProgress)
  })

const positive = (name: string, n: number, max: number): Effect.Effect<number, Common.CliError> =>
  Number.isInteger(n) && n >= 1 && n <= max
    ? Effect.succeed(n)
    : Effect.fail(new Common.CliError({ message: `${name}: must be between 1 and ${max}, got ${n} (EINVAL)` }))

/**
 * The `copy` subcommand.
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "copy",
  {
    connections: Options.integer("connections").pipe(
      Options.withAlias("C"),
      Options.withDescription("connections per NBD side, used only when the server advertises multi-conn"),
      Options.withDefault(4)
    ),
    requests: Options.integer("requests").pipe(
      Options.withAlias("R"),
      Options.withDescription("requests in flight per connection"),
      Options.withDefault(64)
    ),
    requestSize: Options.text("request-size").pipe(
      Options.withDescription("bytes per request (suffixes K, M allowed)"),
      Options.withDefault("256K")
    ),
    progress: Options.boolean("progress").pipe(
      Options.withAlias("p"),
      Options.withDescription("show a progress bar on stderr (when it is a terminal)")
    ),
    source: Args.text({ name: "SRC" }).pipe(Args.withDescription("NBD URI, file, - (stdin)")),
    destination: Args.text({ name: "DST" }).pipe(Args.withDescription("NBD URI, file, - (stdout) or null:"))
  },
  (o) =>
    Effect.scoped(
      Effect.gen(function* () {
        const requestSize = yield* Effect.flatMap(Common.parseSize("--request-size", o.requestSize), (n) =>
          positive("--request-size", n, 32 << 20)
        )
        const connections = yield* positive("--connections", o.connections, 64)
        const requests = yield* positive("--requests", o.requests, 1024)
        yield* copy(endpoint(o.source), endpoint(o.destination), {
          connections,
          requests,
          requestSize,
          progress: o.progress
        })
      })
    )
).pipe(Command.withDescription("copy between NBD exports, files, stdin/stdout and null: (like nbdcopy)"))
