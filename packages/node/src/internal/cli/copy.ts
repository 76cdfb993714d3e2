/**
 * `effect-nbd copy SRC DST`: copies between NBD exports, files, stdin/stdout and `null:`, like nbdcopy. It
 * is `NbdCopy.copy` with the command line's endpoints: several connections when the server allows
 * multi-conn (`NbdPool`), many requests in flight, reused buffers, and sparseness kept (holes and zero
 * extents are never read; zeroes become NBD_CMD_WRITE_ZEROES or file holes).
 *
 * @since 0.1.0
 */
import { NbdCopy, NbdPool } from "@effect-nbd/core"
import { Nbd } from "@effect-nbd/core"
import * as CliHelp from "@effect-nbd/test-server/CliHelp"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import type * as PlatformError from "effect/PlatformError"
import * as References from "effect/References"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Fs from "node:fs"
import * as Os from "node:os"
import type { Readable } from "node:stream"
import * as NodeNbd from "../../NodeNbd.js"
import * as Blkhash from "./blkhash.js"
import * as Common from "./common.js"
import * as CopyLimits from "./copyLimits.js"

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
      : Common.isNbdUri(arg) || Common.subprocessKind(arg) !== undefined
        ? { _tag: "Nbd", uri: arg }
        : { _tag: "File", path: arg }

/** Reads up to `n` bytes from a stream (fewer only at its end); None at the end. */
const readChunk = (stream: Readable, n: number): Effect.Effect<Option.Option<Uint8Array>, Common.CliError> =>
  Effect.callback<Option.Option<Uint8Array>, Common.CliError>((resume) => {
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

/** Stdin as a stream of chunks of at most `n` bytes. */
const stdin = (n: number): Stream.Stream<Uint8Array, Common.CliError> =>
  Stream.fromEffectRepeat(
    Effect.flatMap(readChunk(process.stdin, n), (chunk) =>
      Option.isSome(chunk) ? Effect.succeed(chunk.value) : Cause.done()
    )
  )

/** Stdout as a sink that respects its back-pressure. */
const stdout: Sink.Sink<void, Uint8Array, never, Common.CliError> = Sink.forEach(Common.writeStdout)

/** A file error as the CLI reports it: "open: PATH: no such file or directory (ENOENT)". */
const fileError = (error: PlatformError.PlatformError): Common.CliError => {
  const reason = error.reason
  if (reason._tag === "BadArgument")
    return new Common.CliError({ message: `${reason.method}: ${reason.description ?? "bad argument"} (EINVAL)` })
  const what = `${reason.method}: ${String(reason.pathOrDescriptor)}`
  return reason.cause !== undefined
    ? Common.systemError(what, reason.cause)
    : new Common.CliError({ message: `${what}: ${reason.description ?? reason._tag} (EIO)` })
}

/** A duration in seconds as "1:02:03" or "02:03". */
const clock = (seconds: number): string => {
  const t = Math.max(0, Math.round(seconds))
  const h = Math.floor(t / 3600)
  const mm = String(Math.floor((t % 3600) / 60)).padStart(2, "0")
  const ss = String(t % 60).padStart(2, "0")
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`
}

/** A rate in bytes per second, in binary units. */
const rateText = (rate: number): string => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let r = rate
  let i = 0
  while (r >= 1024 && i < units.length - 1) {
    r /= 1024
    i++
  }
  return `${r.toFixed(r < 10 && i > 0 ? 1 : 0)} ${units[i]}/s`
}

const percentOf = (progress: NbdCopy.Progress): number => {
  const { bytes, total } = progress
  return total === undefined || total === 0n ? 100 : Number((bytes * 100n) / total)
}

/**
 * The line `-p` draws on stderr (terminal or not, as nbdcopy does): nbdcopy's bar, then the average rate
 * and the time left at that rate. Exported for tests.
 * @since 0.2.0
 * @category progress
 */
export const bar = (progress: NbdCopy.Progress, done: boolean): string => {
  const percent = percentOf(progress)
  const width = 40
  const filled = Math.floor((percent * width) / 100)
  const left =
    done || progress.total === undefined || progress.rate <= 0
      ? ""
      : ` ${clock(Number(progress.total - progress.bytes) / progress.rate)} left`
  return `${String(percent).padStart(4)}% [${"*".repeat(filled)}${"-".repeat(width - filled)}] ${rateText(progress.rate)}${left}`
}

interface CopyOptions {
  readonly connections: number
  readonly requests: number
  readonly requestSize: number
  readonly progress: boolean
  readonly progressFd: number | undefined
  readonly destinationIsZero: boolean
  readonly flush: boolean
  readonly extents: boolean
  /**
   * nbdcopy's -S: the zero-detection block size, 0 for none; undefined for nbdcopy's default, 4096 or the
   * destination's preferred block size, whichever is larger.
   */
  readonly sparse: number | undefined
  readonly allocated: boolean
  readonly queueSize: number
  readonly verbose: boolean
  readonly blkhash: Blkhash.Spec | undefined
  readonly blkhashFile: string | undefined
  /** qemu's reconnect-delay: how long each NBD side keeps reconnecting after a drop; 0 for never. */
  readonly reconnectDelay: number
}

/** How often a side that lost its server tries again, within --reconnect-delay. */
const RECONNECT_INTERVAL = "100 millis"

/** The handle settings of one NBD side: its meta contexts, and the reconnect policy of --reconnect-delay. */
const sideSettings = (options: CopyOptions, settings: Nbd.Settings): Nbd.Settings =>
  options.reconnectDelay > 0
    ? {
        ...settings,
        reconnect: Schedule.spaced(RECONNECT_INTERVAL).pipe(
          Schedule.upTo({ duration: Duration.seconds(options.reconnectDelay) })
        )
      }
    : settings

/**
 * The reconnect's log lines, on stderr as the CLI's other messages: a drop and a give-up always (they
 * explain a pause or a failure), the return with -v.
 */
const logToStderr = (verbose: boolean) =>
  Layer.merge(
    Logger.layer([
      Logger.make(({ message }) => {
        process.stderr.write(`effect-nbd: copy: ${Array.isArray(message) ? message.join(" ") : String(message)}\n`)
      })
    ]),
    Layer.succeed(References.MinimumLogLevel, verbose ? "Info" : "Warn")
  )

/**
 * A pool on a URI or a subprocess: `connections` handles when the server allows multi-conn, else one. A
 * server started by socket activation is started once; the other connections use its socket's URI. A
 * server on stdin/stdout serves one connection.
 */
const pool = (uri: string, connections: number, settings: Nbd.Settings) =>
  Effect.gen(function* () {
    const kind = Common.subprocessKind(uri)
    let socketUri: string | undefined
    return yield* NbdPool.make({
      connections: kind === "Command" ? 1 : connections,
      settings,
      connect: (h, index) =>
        index === 0 || socketUri === undefined
          ? Effect.tap(Common.connectHandle(h, uri), () =>
              kind === "SocketActivation"
                ? Effect.map(Nbd.getUri(h), (u) => {
                    socketUri = u
                  })
                : Effect.void
            )
          : // As nbdinfo and nbdcopy do: a URI on the command line may name local TLS files.
            NodeNbd.connectUri(h, socketUri, { allowLocalFile: true })
    })
  })

type Source = NbdPool.Pool | NbdCopy.File | NbdCopy.FromStream<Common.CliError, never>
type Destination = NbdPool.Pool | NbdCopy.File | NbdCopy.ToSink<Common.CliError, never> | NbdCopy.Discard

const copy = (
  src: Endpoint,
  dst: Endpoint,
  options: CopyOptions
): Effect.Effect<void, Common.Failure, Scope.Scope | FileSystem.FileSystem> =>
  Effect.gen(function* () {
    if (src._tag === "Null")
      return yield* new Common.CliError({ message: "copy: null: can only be a destination (EINVAL)" })
    const source: Source =
      src._tag === "Nbd"
        ? yield* pool(
            src.uri,
            options.connections,
            // As nbdcopy does: the copy's reads fill pooled buffers it never shows when a read fails, so
            // zeroing each one first (pread_initialize) would only cost a memset of the whole export.
            sideSettings(options, {
              preadInitialize: false,
              ...(options.extents ? { metaContexts: ["base:allocation"] } : { requestMetaContext: false })
            })
          )
        : src._tag === "File"
          ? NbdCopy.file(src.path)
          : NbdCopy.fromStream(stdin(options.requestSize))
    const hash = options.blkhash === undefined ? undefined : new Blkhash.Blkhash(options.blkhash)
    if (hash !== undefined && dst._tag === "Stdio" && options.blkhashFile === undefined)
      return yield* new Common.CliError({
        message: "--blkhash: the destination - is stdout, so the hash needs --blkhash-file (EINVAL)"
      })
    const destination: Destination =
      dst._tag === "Nbd"
        ? yield* pool(dst.uri, options.connections, sideSettings(options, { requestMetaContext: false }))
        : dst._tag === "File"
          ? NbdCopy.file(dst.path)
          : dst._tag === "Null"
            ? NbdCopy.discard
            : NbdCopy.toSink(stdout)
    const sparse = options.sparse ?? (yield* defaultSparse(destination))
    const settings: NbdCopy.Options = {
      connections: options.connections,
      requests: options.requests,
      requestSize: options.requestSize,
      sparse: sparse > 0,
      sparseSize: sparse > 0 ? sparse : undefined,
      allocated: options.allocated,
      // The hash is of the source's bytes as the copy reads them, whatever the destination keeps of them.
      observer: hash === undefined ? undefined : hashObserver(hash),
      destinationIsZero: options.destinationIsZero,
      // An NBD destination is always flushed at the end; --flush fsyncs a file too.
      flush: options.flush || dst._tag === "Nbd"
    }
    if (options.verbose)
      process.stderr.write(
        `effect-nbd: copy: ${describeEndpoint(src)} -> ${describeEndpoint(dst)}: ` +
          `connections=${options.connections} requests=${options.requests} request-size=${options.requestSize} ` +
          `queue-size=${options.queueSize} sparse=${sparse} allocated=${options.allocated} ` +
          `extents=${options.extents} destination-is-zero=${options.destinationIsZero} flush=${settings.flush}\n`
      )
    const fd = options.progressFd
    const report = (p: NbdCopy.Progress, last: boolean): void => {
      if (fd !== undefined)
        try {
          Fs.writeSync(fd, `${percentOf(p)}/100\n`)
        } catch {
          // Progress is advisory: a reader that went away does not fail the copy.
        }
      if (options.progress) process.stderr.write(`\r${bar(p, last)}${last ? "\n" : ""}`)
    }
    const run =
      options.progress || fd !== undefined
        ? Effect.gen(function* () {
            let last: NbdCopy.Progress | undefined
            yield* Stream.runForEach(
              NbdCopy.copyWithProgress(source, destination, { ...settings, interval: "200 millis" }),
              (p) =>
                Effect.sync(() => {
                  if (last !== undefined) report(last, false)
                  last = p
                })
            )
            // The last event is the finished copy: drawn with its newline.
            if (last !== undefined) report(last, true)
          })
        : Effect.asVoid(
            Effect.tap(NbdCopy.copy(source, destination, settings), (r) =>
              options.verbose
                ? Effect.sync(() =>
                    process.stderr.write(
                      `effect-nbd: copy: ${r.bytes} bytes: ${r.dataBytes} as data, ${r.zeroBytes} as zeroes, ` +
                        `${r.connections} connection(s), ${r.buffers} buffer(s)\n`
                    )
                  )
                : Effect.void
            )
          )
    yield* Effect.catchTag(run, "PlatformError", (e) => Effect.fail(fileError(e)))
    if (hash !== undefined) {
      const line = `${hash.hexDigest()}\n`
      if (options.blkhashFile === undefined) yield* Common.writeStdout(line)
      else {
        const file = options.blkhashFile
        yield* Effect.try({
          try: () => Fs.writeFileSync(file, line),
          catch: (e) => Common.systemError(`--blkhash-file: ${file}`, e)
        })
      }
    }
  })

/** Feeds the block hash with what the copy reads, in whatever order the requests complete. */
const hashObserver = (hash: Blkhash.Blkhash): NbdCopy.Observer => ({
  data: (offset, bytes) => hash.write(offset, bytes),
  zero: (offset, length) => hash.zero(offset, length)
})

const isOpen = (fd: number): boolean => {
  try {
    Fs.fstatSync(fd)
    return true
  } catch {
    return false
  }
}

const describeEndpoint = (e: Endpoint): string =>
  e._tag === "Nbd"
    ? Common.subprocessKind(e.uri) !== undefined
      ? "subprocess"
      : e.uri
    : e._tag === "File"
      ? e.path
      : e._tag === "Stdio"
        ? "-"
        : "null:"

const positive = (name: string, n: number, max: number): Effect.Effect<number, Common.CliError> =>
  Number.isInteger(n) && n >= 1 && n <= max
    ? Effect.succeed(n)
    : Effect.fail(new Common.CliError({ message: `${name}: must be between 1 and ${max}, got ${n} (EINVAL)` }))

/** The largest -S: a block larger than the largest request could never be seen whole. */
const MAX_SPARSE = 32 << 20

/** nbdcopy's -S without the option. */
const DEFAULT_SPARSE = 4096

/**
 * nbdcopy's default -S: 4096, or the preferred block size of an NBD destination when larger (so a server
 * that prefers 64K blocks is not sent zeroes in 4K pieces); a preferred size -S could not take is passed over.
 */
const defaultSparse = (destination: Destination): Effect.Effect<number> =>
  NbdPool.isPool(destination)
    ? Effect.map(
        Effect.orElseSucceed(Nbd.getBlockSize(destination.handles[0], "preferred"), () => 0),
        (preferred) =>
          preferred > DEFAULT_SPARSE && preferred <= MAX_SPARSE && (preferred & (preferred - 1)) === 0
            ? preferred
            : DEFAULT_SPARSE
      )
    : Effect.succeed(DEFAULT_SPARSE)

/** nbdcopy's rule for -S: 0 (no zero detection) or a power of 2 of at least 512. */
const sparseSize = (n: number): Effect.Effect<number, Common.CliError> =>
  n === 0 || (n >= 512 && n <= MAX_SPARSE && (n & (n - 1)) === 0)
    ? Effect.succeed(n)
    : Effect.fail(
        new Common.CliError({
          message: `--sparse: must be 0 or a power of 2 between 512 and ${MAX_SPARSE}, got ${n} (EINVAL)`
        })
      )

/** A value of a progress option: "" for the bar (`-p`, `--progress`), or a file descriptor (`--progress=FD`). */
const progressOf = (value: string): Effect.Effect<{ readonly bar: boolean; readonly fd?: number }, Common.CliError> =>
  value === ""
    ? Effect.succeed({ bar: true })
    : /^\d+$/.test(value)
      ? Effect.succeed({ bar: false, fd: Number(value) })
      : Effect.fail(new Common.CliError({ message: `--progress=${value}: not a file descriptor (EINVAL)` }))

/**
 * The `copy` subcommand.
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "copy",
  {
    allocated: CliHelp.boolean("allocated"),
    blkhash: Flag.String("blkhash").pipe(
      Flag.withOptionalValue("sha256"),
      Flag.withMetavar("DIGEST[/SIZE]"),
      Flag.optional
    ),
    blkhashFile: Flag.String("blkhash-file").pipe(Flag.withMetavar("FILE"), Flag.optional),
    connections: CliHelp.integer("connections").pipe(Flag.withAlias("C"), Flag.withMetavar("N"), Flag.withDefault(4)),
    requests: CliHelp.integer("requests").pipe(Flag.withAlias("R"), Flag.withMetavar("N"), Flag.withDefault(64)),
    requestSize: Flag.String("request-size").pipe(Flag.withMetavar("N"), Flag.withDefault("256K")),
    queueSize: Flag.String("queue-size").pipe(Flag.withMetavar("N"), Flag.withDefault(CopyLimits.defaults.queueSize)),
    threads: CliHelp.integer("threads").pipe(
      Flag.withAlias("T"),
      Flag.withMetavar("N"),
      Flag.withDefault(CopyLimits.defaults.threads)
    ),
    destinationIsZero: CliHelp.boolean("destination-is-zero"),
    targetIsZero: CliHelp.boolean("target-is-zero"),
    flush: CliHelp.boolean("flush"),
    noExtents: CliHelp.boolean("no-extents"),
    progress: Flag.String("progress").pipe(
      Flag.withAlias("p"),
      Flag.withOptionalValue(""),
      Flag.withMetavar("FD"),
      Flag.optional
    ),
    reconnectDelay: Flag.Finite("reconnect-delay").pipe(Flag.withMetavar("SECONDS"), Flag.withDefault(0)),
    sparse: Flag.String("sparse").pipe(Flag.withAlias("S"), Flag.withMetavar("N"), Flag.optional),
    synchronous: CliHelp.boolean("synchronous"),
    verbose: CliHelp.boolean("verbose").pipe(Flag.withAlias("v")),
    source: Argument.String("SOURCE").pipe(Argument.withMetavar("SOURCE")),
    destination: Argument.String("DESTINATION").pipe(Argument.withMetavar("DESTINATION"))
  },
  (o) =>
    Effect.scoped(
      Effect.gen(function* () {
        const requestSize = yield* Effect.flatMap(Common.parseSize("--request-size", o.requestSize), (n) =>
          positive("--request-size", n, 32 << 20)
        )
        const queueSize = yield* Common.parseSize("--queue-size", o.queueSize)
        const resolved = CopyLimits.resolve({
          connections: o.connections,
          requests: o.requests,
          requestSize,
          queueSize,
          threads: o.threads,
          synchronous: o.synchronous,
          processors: Os.availableParallelism()
        })
        if ("error" in resolved) return yield* new Common.CliError({ message: resolved.error })
        const { connections, requests } = resolved.limits
        const sparse = Option.isSome(o.sparse)
          ? yield* Effect.flatMap(Common.parseSize("--sparse", o.sparse.value), sparseSize)
          : undefined
        if (!(Number.isFinite(o.reconnectDelay) && o.reconnectDelay >= 0))
          return yield* new Common.CliError({
            message: `--reconnect-delay: must be a number of seconds, 0 or more, got ${o.reconnectDelay} (EINVAL)`
          })
        const progress = Option.isSome(o.progress) ? yield* progressOf(o.progress.value) : { bar: false }
        if (progress.fd !== undefined && !isOpen(progress.fd))
          return yield* new Common.CliError({
            message: `--progress=${progress.fd}: not an open file descriptor (EBADF)`
          })
        let blkhash: Blkhash.Spec | undefined
        if (Option.isSome(o.blkhash)) {
          const parsed = Blkhash.parseSpec(o.blkhash.value, Common.sizeOf)
          if ("error" in parsed) return yield* new Common.CliError({ message: parsed.error })
          blkhash = parsed.spec
        } else if (Option.isSome(o.blkhashFile))
          return yield* new Common.CliError({ message: "--blkhash-file needs --blkhash (EINVAL)" })
        yield* copy(endpoint(o.source), endpoint(o.destination), {
          blkhash,
          blkhashFile: Option.getOrUndefined(o.blkhashFile),
          connections,
          requests,
          requestSize,
          progress: progress.bar,
          progressFd: progress.fd,
          destinationIsZero: o.destinationIsZero || o.targetIsZero,
          flush: o.flush,
          extents: !o.noExtents,
          sparse,
          allocated: o.allocated,
          queueSize,
          verbose: o.verbose,
          reconnectDelay: o.reconnectDelay
        }).pipe(Effect.provide(logToStderr(o.verbose)))
      })
    )
).pipe(
  Command.withDescription(`Copy to and from an NBD server, like nbdcopy:

  SOURCE, DESTINATION := - | FILE | DEVICE | NBD-URI | [ CMD ARGS ... ]
  DESTINATION += null:

Defaults (nbdcopy's): 4 connections (when the server advertises multi-conn),
64 requests in flight each, 256K per request (--request-size at most 32M),
--queue-size=16M in flight per connection (so at most 16M/request-size
requests); -T 0. As nbdcopy's, -T N caps the connections at N and -T 0 at the
processors this process may run on (so -C 4 is 2 connections on a 2-core
machine), though the engine itself runs on one thread. -S 4096 (or an NBD
destination's preferred block size, if larger): zero blocks of that size
become holes or zeroes (-S 0 writes every byte as data); --allocated writes
zeroes, never holes. An NBD destination is flushed at the end (--flush also
fsyncs a file). --progress=FD writes "N/100" lines to FD; -p draws a bar with
the rate and time left on stderr. --blkhash prints libnbd's block hash of the
data copied (default sha256 over 64K blocks; DIGEST is any of node's, e.g.
md5, sha512/512k), with any destination (to - give --blkhash-file).
--reconnect-delay=SECONDS (qemu's name; default 0: never): a side whose server
drops the connection reconnects every 100 ms for that long and sends the
waiting requests again.`),
  Command.withShortDescription("copy NBD exports, files, stdin/stdout (like nbdcopy)"),
  Command.withExamples([
    { command: "effect-nbd copy nbd://example.com local.img" },
    { command: "effect-nbd copy -C4 -R64 --request-size=1M local.img nbd://example.com" },
    { command: "effect-nbd copy --blkhash nbd://example.com null:" },
    { command: "effect-nbd copy -T2 --queue-size=4M --allocated nbd://example.com local.img" },
    { command: "cat disk1 disk2 | effect-nbd copy -- - [ qemu-nbd -f qcow2 output.qcow2 ]" }
  ])
)
