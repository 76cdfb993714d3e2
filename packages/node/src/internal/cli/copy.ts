/**
 * `effect-nbd copy SRC DST`: copies between NBD exports, files, stdin/stdout and `null:`, like nbdcopy. It
 * is `NbdCopy.copy` with the command line's endpoints: several connections when the server allows
 * multi-conn (`NbdPool`), many requests in flight, reused buffers, and sparseness kept (holes and zero
 * extents are never read; zeroes become NBD_CMD_WRITE_ZEROES or file holes).
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { NbdCopy, NbdPool } from "@effect-nbd/core"
import type { Nbd } from "@effect-nbd/core"
import type * as PlatformError from "@effect/platform/Error"
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { Readable } from "node:stream"
import * as NodeNbd from "../../NodeNbd.js"
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

/** Stdin as a stream of chunks of at most `n` bytes. */
const stdin = (n: number): Stream.Stream<Uint8Array, Common.CliError> =>
  Stream.repeatEffectOption(
    Effect.flatMap(Effect.mapError(readChunk(process.stdin, n), Option.some), (chunk) =>
      Option.isSome(chunk) ? Effect.succeed(chunk.value) : Effect.fail(Option.none())
    )
  )

/** Stdout as a sink that respects its back-pressure. */
const stdout: Sink.Sink<void, Uint8Array, never, Common.CliError> = Sink.forEach(Common.writeStdout)

/** A file error as the CLI reports it: "open: PATH: no such file or directory (ENOENT)". */
const fileError = (error: PlatformError.PlatformError): Common.CliError => {
  if (error._tag === "SystemError") {
    const what = `${error.method}: ${String(error.pathOrDescriptor)}`
    return error.cause !== undefined
      ? Common.systemError(what, error.cause)
      : new Common.CliError({ message: `${what}: ${error.description ?? error.reason} (EIO)` })
  }
  return new Common.CliError({ message: `${error.method}: ${error.description ?? "bad argument"} (EINVAL)` })
}

/** Progress on stderr, drawn as a bar. */
const draw = (progress: NbdCopy.Progress): void => {
  const { bytes, total } = progress
  const fraction = total === undefined || total === 0n ? 1 : Number((bytes * 1000n) / total) / 1000
  const width = 40
  const filled = Math.round(fraction * width)
  process.stderr.write(
    `\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(1).padStart(5)}%`
  )
}

interface CopyOptions {
  readonly connections: number
  readonly requests: number
  readonly requestSize: number
  readonly progress: boolean
}

/** A pool on a URI: `connections` handles when the server allows multi-conn, else one. */
const pool = (uri: string, connections: number, settings: Nbd.Settings) =>
  NbdPool.make({
    connections,
    settings,
    // As nbdinfo and nbdcopy do: a URI on the command line may name local TLS files.
    connect: (h) => NodeNbd.connectUri(h, uri, { allowLocalFile: true })
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
        ? yield* pool(src.uri, options.connections, { metaContexts: ["base:allocation"] })
        : src._tag === "File"
          ? NbdCopy.file(src.path)
          : NbdCopy.fromStream(stdin(options.requestSize))
    const destination: Destination =
      dst._tag === "Nbd"
        ? yield* pool(dst.uri, options.connections, { requestMetaContext: false })
        : dst._tag === "File"
          ? NbdCopy.file(dst.path)
          : dst._tag === "Null"
            ? NbdCopy.discard
            : NbdCopy.toSink(stdout)
    const settings: NbdCopy.Options = {
      connections: options.connections,
      requests: options.requests,
      requestSize: options.requestSize,
      // As before: an NBD destination is flushed at the end, a file is left to the kernel.
      flush: dst._tag === "Nbd"
    }
    const run =
      options.progress && process.stderr.isTTY
        ? Stream.runForEach(
            NbdCopy.copyWithProgress(source, destination, { ...settings, interval: "200 millis" }),
            (p) => Effect.sync(() => draw(p))
          ).pipe(Effect.ensuring(Effect.sync(() => process.stderr.write("\n"))))
        : NbdCopy.copy(source, destination, settings)
    yield* Effect.catchTags(run, {
      SystemError: (e) => Effect.fail(fileError(e)),
      BadArgument: (e) => Effect.fail(fileError(e))
    })
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
