/**
 * What the `effect-nbd` subcommands share: their error, connecting, the embedded server, sizes and output.
 *
 * @since 0.1.0
 */
import { Nbd, NbdError } from "@effect-nbd/core"
import type { TestServer } from "@effect-nbd/test-server"
import * as Argument from "effect/cli/Argument"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as NodeNbd from "../../NodeNbd.js"
import * as Argv from "./argv.js"

/**
 * A failure the CLI reports as one line on stderr, with its exit status (1 unless told).
 * @since 0.1.0
 * @category errors
 */
export class CliError extends Data.TaggedError("CliError")<{
  readonly message: string
  readonly exitCode?: number
  /** A second line, "effect-nbd: suggestion: ...", as nbdinfo gives after some errors. */
  readonly suggestion?: string
}> {}

/**
 * Ends the command with an exit status and no message (`--can` / `--is` answering false).
 * @since 0.1.0
 * @category errors
 */
export class ExitStatus extends Data.TaggedError("ExitStatus")<{ readonly code: number }> {}

/**
 * Any failure a subcommand can end with.
 * @since 0.1.0
 * @category errors
 */
export type Failure = CliError | ExitStatus | NbdError.NbdError | TestServer.TestServerError

/**
 * The one-line message of a failure.
 * @since 0.1.0
 * @category errors
 */
export const describe = (error: Failure): string => {
  switch (error._tag) {
    case "CliError":
      return error.message
    case "ExitStatus":
      return ""
    case "TestServerError":
      return `embedded server: ${error.message}`
    default:
      return `${error.operation}: ${plainMessage(error)}${error.errno === "" ? "" : ` (${error.errno})`}`
  }
}

/** What strerror says for the errors a connection or a file meets most. */
const strerror: Record<string, string> = {
  EACCES: "Permission denied",
  EADDRINUSE: "Address already in use",
  EADDRNOTAVAIL: "Cannot assign requested address",
  ECONNREFUSED: "Connection refused",
  ECONNRESET: "Connection reset by peer",
  EHOSTUNREACH: "No route to host",
  EISDIR: "Is a directory",
  ENETUNREACH: "Network is unreachable",
  ENOENT: "No such file or directory",
  ENOTDIR: "Not a directory",
  ENOTSOCK: "Socket operation on non-socket",
  EPERM: "Operation not permitted",
  EPIPE: "Broken pipe",
  ETIMEDOUT: "Connection timed out",
  ENOTFOUND: "Name or service not known",
  EAI_AGAIN: "Temporary failure in name resolution"
}

/**
 * Node's raw text for a system error ("connect ENOENT /tmp/s.sock", "ENOENT: no such file or directory,
 * open 'x'") as libnbd's tools say it: the strerror text, the errno following in parentheses.
 */
const plainMessage = (error: NbdError.NbdError): string => {
  const text = strerror[error.errno]
  if (text === undefined || !new RegExp(`(^| )${error.errno}\\b`).test(error.message)) return error.message
  const syscall = /^([a-z_]+) E[A-Z0-9_]+\b/.exec(error.message)
  // "connect" is already the operation: "connect: No such file or directory (ENOENT)".
  return syscall !== null && syscall[1] !== error.operation ? `${syscall[1]}: ${text}` : text
}

/**
 * A `CliError` from a Node system error (`fs`, streams): "what: message (ECODE)".
 * @since 0.1.0
 * @category errors
 */
export const systemError = (what: string, cause: unknown): CliError => {
  const code =
    typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
      ? cause.code
      : undefined
  const raw = cause instanceof Error ? cause.message : String(cause)
  // Node's messages read "ENOENT: no such file or directory, open '/x'": keep the human part only.
  const message = raw.replace(/^[A-Z0-9_]+: /, "").replace(/, \w+ '.*'$/, "")
  return new CliError({ message: `${what}: ${message}${code !== undefined ? ` (${code})` : ""}` })
}

/**
 * Whether an argument names an NBD URI rather than a file.
 * @since 0.1.0
 * @category uri
 */
export const isNbdUri = (s: string): boolean => /^nbds?(\+unix)?:/i.test(s)

/**
 * Makes a handle for the scope and connects it to a URI.
 * @since 0.1.0
 * @category connecting
 */
export const connect = (
  uri: string,
  settings: Nbd.Settings = {}
): Effect.Effect<Nbd.Handle, NbdError.NbdError, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Nbd.make(settings)
    yield* connectHandle(h, uri)
    return h
  })

/**
 * Connects a handle to what a command-line argument names: an NBD URI, or a subprocess (`[ CMD ]` by
 * socket activation, `-- CMD` on stdin/stdout).
 * @since 0.2.0
 * @category connecting
 */
export const connectHandle = (h: Nbd.Handle, uri: string): Effect.Effect<void, NbdError.NbdError> => {
  const sub = Argv.subprocessOf(uri)
  if (sub === undefined)
    // As nbdinfo and nbdcopy do: a URI on the command line may name local TLS files.
    return NodeNbd.connectUri(h, uri, { allowLocalFile: true })
  return sub._tag === "Command"
    ? NodeNbd.connectCommand(h, sub.argv)
    : NodeNbd.connectSystemdSocketActivation(h, sub.argv)
}

/**
 * Whether an argument stands for a subprocess rather than a URI, and which kind.
 * @since 0.2.0
 * @category connecting
 */
export const subprocessKind = (arg: string): Argv.Subprocess["_tag"] | undefined => Argv.subprocessOf(arg)?._tag

/** The size of the embedded server's export: 1 MiB. */
const EMBEDDED_SIZE = 1 << 20

const encoder = new TextEncoder()

/**
 * Loads `@effect-nbd/test-server`, an optional peer dependency: only the embedded server needs it, and most
 * runs are given a URI and need not pay for the server's modules. Missing, it is a `CliError` that says what
 * to install.
 */
const loadTestServer = Effect.tryPromise({
  try: () => import("@effect-nbd/test-server"),
  catch: (cause) =>
    new CliError({
      message:
        cause instanceof Error &&
        "code" in cause &&
        cause.code === "ERR_MODULE_NOT_FOUND" &&
        cause.message.includes("'@effect-nbd/test-server'")
          ? "the embedded test server needs the optional package @effect-nbd/test-server: " +
            "install it (npm install @effect-nbd/test-server) or give an NBD URI"
          : `cannot load @effect-nbd/test-server: ${cause instanceof Error ? cause.message : String(cause)}`
    })
})

/**
 * The URI given, or else the URI of an embedded test server started for the scope: one 1 MiB export with a
 * greeting at offset 0 and 4 KiB of 0xab at 512 KiB, so commands show something on a fresh machine.
 * @since 0.1.0
 * @category connecting
 */
export const uriOrEmbedded = (
  uri: Option.Option<string>
): Effect.Effect<string, CliError | TestServer.TestServerError, Scope.Scope> =>
  Option.match(uri, {
    onSome: Effect.succeed,
    onNone: () =>
      Effect.gen(function* () {
        const { Backend, TestServer } = yield* loadTestServer
        const backend = Backend.memory(EMBEDDED_SIZE)
        yield* Effect.orDie(
          backend.write(0, encoder.encode("Hello from the effect-nbd embedded test server!\n"), false)
        )
        yield* Effect.orDie(backend.write(EMBEDDED_SIZE / 2, new Uint8Array(4096).fill(0xab), false))
        const server = yield* TestServer.make({
          exports: [{ name: "", size: EMBEDDED_SIZE, description: "effect-nbd embedded test server", backend }]
        })
        return server.uri
      })
  })

/**
 * A byte count as nbdinfo shows it: the largest binary unit that divides it exactly ("1M", "2075312K"),
 * and whether a unit was used.
 * @since 0.1.0
 * @category formatting
 */
export const humanSize = (bytes: bigint): { readonly text: string; readonly human: boolean } => {
  const units = ["", "K", "M", "G", "T", "P", "E"]
  let n = bytes
  let i = 0
  if (n !== 0n)
    while (n % 1024n === 0n && i < units.length - 1) {
      n /= 1024n
      i++
    }
  return { text: `${n}${units[i]}`, human: i > 0 }
}

/**
 * A byte count with an optional binary suffix ("65536", "256K", "1M", "2GiB"), or undefined when it is not one.
 * @since 0.2.0
 * @category parsing
 */
export const sizeOf = (text: string): number | undefined => {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(text.trim())
  const scale: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }
  const n = m === null ? NaN : Number(m[1]) * (scale[(m[2] ?? "").toLowerCase()] ?? NaN)
  return Number.isSafeInteger(n) ? n : undefined
}

/**
 * Parses a byte count with an optional binary suffix: "65536", "256K", "1M", "2GiB".
 * @since 0.1.0
 * @category parsing
 */
export const parseSize = (what: string, text: string): Effect.Effect<number, CliError> => {
  const n = sizeOf(text)
  return n !== undefined
    ? Effect.succeed(n)
    : Effect.fail(new CliError({ message: `${what}: cannot parse size '${text}' (EINVAL)` }))
}

/**
 * Writes to stdout and waits until Node has taken the data (so large outputs respect back-pressure).
 * @since 0.1.0
 * @category output
 */
export const writeStdout = (data: string | Uint8Array): Effect.Effect<void, CliError> =>
  Effect.callback<void, CliError>((resume) => {
    process.stdout.write(data, (error) =>
      resume(error ? Effect.fail(systemError("write to stdout", error)) : Effect.void)
    )
  })

/**
 * How the help pages name a URI argument: a URI, or a server the command starts.
 * @since 1.0.0
 * @category arguments
 */
export const URI_METAVAR = "NBD-URI | [ CMD ARGS ... ] | -- CMD ARGS ..."

/**
 * The optional URI argument of `info` and `dump`: without one they start an embedded test server.
 * @since 0.1.0
 * @category arguments
 */
export const optionalUri = Argument.String("URI").pipe(
  Argument.withMetavar(URI_METAVAR),
  Argument.withDescription("NBD URI (default: an embedded test server)"),
  Argument.optional
)
