/**
 * The `effect-nbd-server` command line on effect/cli, with nbdkit's habits: its options (`-U`, `-p`, `-s`,
 * `-r`, `-f`, `--run`, ...), its plugin syntax (`PLUGIN [KEY=VALUE ...] [ARG]`, the positional arguments)
 * and its filters (`--filter=NAME`, their `KEY=VALUE` parameters among the positional arguments).
 *
 * Before effect/cli parses the command line, `order` notes where the options whose meaning depends on their
 * place appear (effect/cli keeps each option's values in order, not the order between options): a
 * `--fault`, `--delay` or `--malformed` applies to the export of the `--export` before it (to every export
 * before the first), the three keep their order among themselves, and the last of `-o` and `-n` wins.
 *
 * @internal
 */
import * as TlsPriority from "@effect-nbd/core/TlsPriority"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Argument from "effect/cli/Argument"
import * as CliConfig from "effect/cli/CliConfig"
import * as CliOutput from "effect/cli/CliOutput"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as GlobalFlag from "effect/cli/GlobalFlag"
import * as CliHelp from "../CliHelp.js"
import * as Filter from "../Filter.js"
import * as Activation from "./activation.js"
import * as TestServer from "../TestServer.js"

/** @internal */
export class CliError extends Error {}

/** @internal */
export const activatedFds = Activation.activatedFds

const SUFFIXES: Record<string, bigint> = {
  "": 1n,
  b: 1n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n
}

/**
 * A size with an optional suffix (K, M, G, T, P, E as powers of 1024): "what: invalid size" when it is not one.
 * @internal
 */
export const parseSize = (s: string, what: string): bigint => {
  const m = /^([0-9]+)([bkmgtpe]?)$/i.exec(s.trim())
  if (m === null) throw new CliError(`${what}: invalid size "${s}" (use bytes or e.g. 64K, 512M, 1G)`)
  const size = BigInt(m[1]!) * SUFFIXES[m[2]!.toLowerCase()]!
  if (size > 0x7fffffffffffffffn) throw new CliError(`${what}: size "${s}" exceeds 2^63 - 1 bytes`)
  return size
}

/** A whole number of `what`, within `[min, max]`. */
const parseInteger = (text: string, what: string, min: number, max: number, range: string): number => {
  const n = /^\s*[0-9]+\s*$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n)) throw new CliError(`${what}: expected a whole number, got "${text}"`)
  if (n < min || n > max) throw new CliError(`${what}: ${range}, got ${n}`)
  return n
}

/** A value decoded by one of the server's schemas, or its first complaint as a one-line error. */
const decode = <S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  input: unknown,
  what: string
): S["Type"] => {
  const result = Schema.decodeUnknownResult(schema)(input)
  if (Result.isSuccess(result)) return result.success
  throw new CliError(`${what}: ${result.failure.message.replace(/\s+/g, " ").trim()}`)
}

const COMMANDS: Record<string, TestServer.CommandKind> = {
  read: "read",
  write: "write",
  flush: "flush",
  trim: "trim",
  cache: "cache",
  "write-zeroes": "write-zeroes",
  zero: "write-zeroes",
  "block-status": "block-status"
}

const ERRNOS: ReadonlyArray<string> = TestServer.FaultErrno.literals

const parseCommand = (text: string, flag: string): TestServer.CommandKind => {
  const command = COMMANDS[text.toLowerCase()]
  if (command === undefined)
    throw new CliError(
      `${flag}: unknown command "${text}" (read, write, flush, trim, cache, write-zeroes, block-status)`
    )
  return command
}

/** `--tls-priority`: refused here, with the element Node cannot express, rather than when serving. */
const parseTlsPriority = (priority: string): string => {
  const parsed = TlsPriority.parse(priority)
  if (parsed._tag !== "Options") throw new CliError(`--tls-priority: ${parsed.message} (in "${priority}")`)
  return priority
}

/** When a fault fires: a rate (0..1 or a percentage) or `#N` (the Nth command of its kind on a connection). */
const parseWhen = (text: string | undefined, flag: string): { rate: number } | { nth: number } | {} => {
  if (text === undefined) return {}
  const nth = /^#([0-9]+)$/.exec(text.trim())
  if (nth !== null) {
    const n = Number(nth[1])
    if (!(Number.isSafeInteger(n) && n >= 1)) throw new CliError(`${flag}: invalid #N "${text}" (1 or more)`)
    return { nth: n }
  }
  const m = /^([0-9]*\.?[0-9]+)(%?)$/.exec(text.trim())
  const rate = m === null ? NaN : Number(m[1]) / (m[2] === "%" ? 100 : 1)
  if (!(rate >= 0 && rate <= 1))
    throw new CliError(`${flag}: invalid rate "${text}" (0 to 1, 0% to 100%, or #N for the Nth command)`)
  return { rate }
}

const parseDelay = (text: string, flag: string): number => {
  const m = /^([0-9]*\.?[0-9]+)(ms|s)?$/.exec(text.trim())
  const ms = m === null ? NaN : Math.round(Number(m[1]) * (m[2] === "s" ? 1000 : 1))
  if (!(ms >= 0 && ms <= 2_147_483_647)) throw new CliError(`${flag}: invalid delay "${text}" (e.g. 200, 200ms, 2s)`)
  return ms
}

/** `COMMAND:ERRNO[:RATE]` */
const parseFault = (spec: string): TestServer.FaultConfig => {
  const [command, errno, rate, ...rest] = spec.split(":")
  if (command === undefined || errno === undefined || rest.length > 0)
    throw new CliError(`--fault: expected COMMAND:ERRNO[:RATE], got "${spec}"`)
  const name = errno.toUpperCase()
  if (!ERRNOS.includes(name)) throw new CliError(`--fault: unknown errno "${errno}" (${ERRNOS.join(", ")})`)
  return {
    command: parseCommand(command, "--fault"),
    errno: name as typeof TestServer.FaultErrno.Type,
    ...parseWhen(rate, "--fault")
  }
}

/** `COMMAND:TIME[:RATE]` */
const parseDelayFault = (spec: string): TestServer.FaultConfig => {
  const [command, time, rate, ...rest] = spec.split(":")
  if (command === undefined || time === undefined || rest.length > 0)
    throw new CliError(`--delay: expected COMMAND:TIME[:RATE], got "${spec}"`)
  return {
    command: parseCommand(command, "--delay"),
    delayMs: parseDelay(time, "--delay"),
    ...parseWhen(rate, "--delay")
  }
}

const MALFORMED: ReadonlyArray<string> = TestServer.MalformedReply.literals

/** `COMMAND:KIND[:RATE]`, checked against the Fault schema (some kinds fit one command only). */
const parseMalformed = (spec: string): TestServer.FaultConfig => {
  const [command, kind, rate, ...rest] = spec.split(":")
  if (command === undefined || kind === undefined || rest.length > 0)
    throw new CliError(`--malformed: expected COMMAND:KIND[:RATE], got "${spec}"`)
  const name = kind.toLowerCase()
  if (!MALFORMED.includes(name)) throw new CliError(`--malformed: unknown kind "${kind}" (${MALFORMED.join(", ")})`)
  const fault: TestServer.FaultConfig = {
    command: parseCommand(command, "--malformed"),
    malformed: name as TestServer.MalformedReply,
    ...parseWhen(rate, "--malformed")
  }
  decode(TestServer.Fault, fault, "--malformed")
  return fault
}

/** @internal */
export interface Options {
  readonly config: TestServer.Config
  readonly pidfile: string | undefined
  readonly run: string | undefined
  /** `-s`: serve one client on stdin/stdout (a socket) and exit when it leaves. */
  readonly single: boolean
  /** Stay in the foreground (`-f`, or implied by -s, --run, --exit-with-parent); else go to the background once listening. */
  readonly foreground: boolean
  /** `--exit-with-parent`: stop when the process that started the server exits. */
  readonly exitWithParent: boolean
  /** The file plugin's path: the bin opens it and gives the first export its backend. */
  readonly file: string | undefined
  /** Print the server's URI on stdout once it listens (`-p 0` or `-U -`, the server chose the address). */
  readonly printUri: boolean
}

/** @internal */
export type Parsed =
  | { readonly _tag: "Help"; readonly text: string }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Serve"; readonly options: Options }

/** An option whose last value counts when it is given more than once, as getopt's callers read it. */
const last = (name: string): Flag.Flag<Option.Option<string>> =>
  Flag.String(name).pipe(
    Flag.atLeast(0),
    Flag.map((values) => Option.fromNullishOr(values.at(-1)))
  )

/** A switch that may be given more than once. */
const on = (name: string): Flag.Flag<boolean> =>
  Flag.Boolean(name).pipe(
    Flag.withoutNegation,
    Flag.atLeast(0),
    Flag.map((values) => values.at(-1) ?? false)
  )

const many = (name: string): Flag.Flag<ReadonlyArray<string>> => Flag.String(name).pipe(Flag.atLeast(0))

const FILTER_NAMES = "error, delay, readonly, nozero, notrim, noextents, multi-conn, blocksize-policy, evil"

/** The options, with their help: the sections below place them. */
const flags = {
  unix: last("unix").pipe(
    Flag.withAlias("U"),
    Flag.withMetavar("PATH"),
    Flag.withDescription('listen on a Unix socket; "-U -" picks a fresh temporary path')
  ),
  port: last("port").pipe(
    Flag.withAlias("p"),
    Flag.withMetavar("PORT"),
    Flag.withDescription("listen on a TCP port (0 = ephemeral)")
  ),
  ipaddr: last("ipaddr").pipe(
    Flag.withAlias("i"),
    Flag.withMetavar("ADDR"),
    Flag.withDescription("TCP address to bind (default 127.0.0.1)")
  ),
  single: on("single").pipe(
    Flag.withAlias("s"),
    Flag.withAlias("stdin"),
    Flag.withDescription(
      "serve one client on stdin/stdout (a socket, as nbd_connect_command and NodeNbd.connectCommand give it), then exit"
    )
  ),
  filter: many("filter").pipe(
    Flag.withMetavar("NAME"),
    Flag.withDescription(`add a filter (repeatable): ${FILTER_NAMES}`)
  ),
  export: many("export").pipe(
    Flag.withMetavar("NAME=SIZE[:DESCRIPTION]"),
    Flag.withDescription(
      "add an export (repeatable). SIZE is bytes or a number with a suffix K, M, G, T, P, E (powers of 1024), e.g. 512M, 1G, 64K, 4096. NAME may be empty: --export =1G:the default disk"
    )
  ),
  backend: last("backend").pipe(
    Flag.withMetavar("memory|null|pattern"),
    Flag.withDescription("storage of every export (default memory, sparse)")
  ),
  readonly: on("readonly").pipe(
    Flag.withAlias("r"),
    Flag.withAlias("read-only"),
    Flag.withDescription("serve every export read-only")
  ),
  fault: many("fault").pipe(
    Flag.withMetavar("COMMAND:ERRNO[:RATE]"),
    Flag.withDescription(
      "answer COMMAND with the NBD error ERRNO (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN), e.g. --fault read:EIO:0.5 or --fault write:ENOSPC:10%"
    )
  ),
  delay: many("delay").pipe(
    Flag.withMetavar("COMMAND:TIME[:RATE]"),
    Flag.withDescription(
      "serve COMMAND after TIME (milliseconds, or with a unit: 200ms, 2s), e.g. --delay read:200; other requests are not held up"
    )
  ),
  malformed: many("malformed").pipe(
    Flag.withMetavar("COMMAND:KIND[:RATE]"),
    Flag.withDescription(
      "answer COMMAND with a malformed reply, e.g. --malformed read:no-done:#2. KIND is wrong-cookie, wrong-offset (extended headers), two-dones, no-done, chunk-too-long, error-zero, data-outside-request (read), hole-over-data (read), read-data-for-non-read (not read), and for block-status huge-extent, extents-past-request, too-many-extents, zero-length-extent, non-advancing-extent, unaligned-extents"
    )
  ),
  disconnectAfter: last("disconnect-after").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription(
      "drop each connection on receiving its Nth request, as if the server died: that request and any in service get no reply"
    )
  ),
  oldstyle: on("oldstyle").pipe(Flag.withAlias("o"), Flag.withDescription("oldstyle protocol (the first export only)")),
  newstyle: on("newstyle").pipe(
    Flag.withAlias("n"),
    Flag.withDescription("fixed newstyle protocol (the default; the last of -o and -n wins)")
  ),
  maskHandshake: last("mask-handshake").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription(
      "handshake flags to offer: 3 (default) = fixed newstyle + no zeroes, 0 or 2 = non-fixed newstyle (NBD_OPT_EXPORT_NAME only)"
    )
  ),
  noSr: on("no-sr").pipe(Flag.withDescription("do not offer structured replies (nor extended headers)")),
  noEh: on("no-eh").pipe(Flag.withDescription("do not offer extended headers")),
  outOfOrder: on("out-of-order").pipe(Flag.withDescription("answer requests out of order")),
  maxReplyBytes: last("max-reply-bytes").pipe(
    Flag.withMetavar("SIZE"),
    Flag.withDescription("reply bytes owed (default 64M)")
  ),
  maxRequests: last("max-requests").pipe(
    Flag.withMetavar("N"),
    Flag.withDescription("requests in service (default 128)")
  ),
  tls: last("tls").pipe(
    Flag.withMetavar("off|on|require"),
    Flag.withDescription(
      "off (default); on: serve plaintext and TLS clients; require: refuse every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT until TLS is active"
    )
  ),
  tlsCertificates: last("tls-certificates").pipe(
    Flag.withMetavar("DIR"),
    Flag.withDescription(
      "X.509: DIR holds server-cert.pem, server-key.pem (and ca-cert.pem), e.g. made with certtool as nbdkit-tls(1) shows"
    )
  ),
  tlsPsk: last("tls-psk").pipe(
    Flag.withMetavar("FILE"),
    Flag.withDescription(
      "pre-shared keys: FILE holds username:hexkey lines (psktool -u NAME -p FILE); used instead of certificates when both are given"
    )
  ),
  tlsVerifyPeer: on("tls-verify-peer").pipe(
    Flag.withDescription(
      "with --tls-certificates: a client must present a certificate signed by DIR/ca-cert.pem (libnbd: client-cert.pem, client-key.pem in its directory)"
    )
  ),
  tlsPriority: last("tls-priority").pipe(
    Flag.withMetavar("STRING"),
    Flag.withDescription(
      "a GnuTLS priority string (e.g. NORMAL:-VERS-ALL:+VERS-TLS1.3), as far as Node's TLS options express it: NORMAL, PFS, SECURE128/192/256, versions, AES/ChaCha20 ciphers, +PSK, %SERVER_PRECEDENCE; anything else is refused"
    )
  ),
  pidfile: last("pidfile").pipe(
    Flag.withAlias("P"),
    Flag.withMetavar("PIDFILE"),
    Flag.withDescription("write the server's pid to PIDFILE once it listens")
  ),
  foreground: on("foreground").pipe(
    Flag.withAlias("f"),
    Flag.withAlias("no-fork"),
    Flag.withDescription(
      "stay in the foreground. By default, as nbdkit, the server goes to the background once it listens (-s, --run and --exit-with-parent imply -f), so a script can run it, then its client: stop it with kill $(cat PIDFILE)"
    )
  ),
  exitWithParent: on("exit-with-parent").pipe(
    Flag.withDescription("stop when the process that started the server exits")
  ),
  run: last("run").pipe(
    Flag.withMetavar("CMD"),
    Flag.withDescription(
      "run CMD with /bin/sh -c once the server listens, with $uri (and $unixsocket or $port, $exportname) set; stop the server when CMD exits and exit with its status"
    )
  ),
  plugin: Argument.String("PLUGIN").pipe(Argument.withMetavar("PLUGIN [KEY=VALUE ...] [ARG]"), Argument.variadic())
}

/** What the command line said, as effect/cli parsed it. */
type Input = Command.Command.Config.Infer<typeof flags>

/** The sections of the help page, in nbdkit's order, with the prose each ends with. */
const sections: ReadonlyArray<CliHelp.Section> = [
  {
    title: "Listening (default: TCP port 10809 on 127.0.0.1)",
    flags: ["unix", "port", "ipaddr", "single"],
    note: `  With -p 0 or -U -, and no --run, the server prints its URI on stdout once it listens.
  Socket activation (systemd's, and libnbd's: nbdinfo [ effect-nbd-server memory 1G ]): with
  LISTEN_PID set to the server's pid and LISTEN_FDS=N, it serves the listening sockets on fds 3
  to 3+N-1 and stays in the foreground; -U, -p, -i, -s and --run are then refused, as in nbdkit.`
  },
  {
    title: "Plugins and filters (nbdkit's syntax)",
    flags: ["filter"],
    note: `  A plugin names the one export "" instead of --export; as in nbdkit, it is served under any
  export name a client asks for, and NBD_OPT_LIST lists it as "":
    memory [size=]SIZE     sparse memory
    null [size=]SIZE       reads zeroes, discards writes (default size 0)
    pattern [size=]SIZE    read-only; each 8-byte word holds its offset (big-endian)
    file [file=]PATH       a regular file or block device, of its size; FUA and flush reach the
                           disk (fdatasync, fsync). Pure Node has no SEEK_HOLE/SEEK_DATA: block
                           status reports data (a file with no block allocated: one hole)
  Filters layer as nbdkit's (the first --filter outermost), their KEY=VALUE anywhere after the
  options:
    error                  error=ERRNO (default EIO) error-rate=RATE error-file=FILE, and per
                           operation error-pread=, error-pread-rate=, error-pread-file= (likewise
                           pwrite, zero, trim, flush, extents, cache). RATE is 0..1 or a
                           percentage (default 0); with a FILE, errors fire only while FILE
                           exists. error-nth=N, error-pread-nth=N ...: fail only the Nth such
                           request on each connection (not in nbdkit)
    delay                  delay-read=SECS (or 200ms), delay-write, delay-zero, delay-trim,
                           delay-flush, delay-extents, delay-cache; rdelay, wdelay. Not in
                           nbdkit: delay-rate=RATE, delay-read-rate=RATE ... (default 1: every
                           request), delay-nth=N, delay-read-nth=N ...: the Nth such request
    readonly               serve read-only
    nozero                 do not advertise write zeroes (a zero is refused, EINVAL)
    notrim                 do not advertise trim (a trim is refused, EINVAL)
    noextents              report every range as data
    multi-conn             multi-conn-mode=disable|unsafe: advertise multi-conn or not
    blocksize-policy       blocksize-minimum=, blocksize-preferred=, blocksize-maximum=:
                           advertise these and refuse requests outside them
    evil                   evil-probability=P (each bit read flipped with chance P, default
                           1e-8), evil-seed=N (default: the time); evil=cosmic-rays
  e.g. effect-nbd-server -U S --filter=error error=EIO error-pread-rate=10% memory 1G`
  },
  { title: 'Exports (default: one export "" of 1G)', flags: ["export", "backend", "readonly"] },
  {
    title: "Fault injection (repeatable; --fault and --delay are the error and delay filters, per export)",
    flags: ["fault", "delay", "malformed", "disconnect-after"],
    note: `  RATE is 0..1 or a percentage (default 1: every command), or #N: the Nth such command on each
  connection only. COMMAND is read, write, flush, trim, cache, write-zeroes (or zero) or
  block-status. A --fault, --delay or --malformed given before any --export applies to every
  export; given after an --export it applies to that export only. --fault read:EIO:0.5 is
  --filter=error error-pread=EIO error-pread-rate=0.5, --delay read:200:#2 is --filter=delay
  delay-read=200ms delay-read-nth=2, on its exports only; their delays come before their
  errors, so the delays that fire add up and the first error wins.`
  },
  {
    title: "Protocol",
    flags: ["oldstyle", "newstyle", "mask-handshake", "no-sr", "no-eh", "out-of-order"]
  },
  {
    title: "Backpressure (a connection is not read while the server owes it this much)",
    flags: ["max-reply-bytes", "max-requests"]
  },
  {
    title: "TLS (as nbdkit; clients upgrade with NBD_OPT_STARTTLS, e.g. nbds+unix:// URIs)",
    flags: ["tls", "tls-certificates", "tls-psk", "tls-verify-peer", "tls-priority"],
    note: "  --tls and a credential go together; TLS needs fixed newstyle (not -o or --mask-handshake 0)."
  },
  {
    title: "Process",
    flags: ["pidfile", "foreground", "exit-with-parent", "run"],
    note: "  Without --run, the server serves until SIGINT or SIGTERM."
  }
]

const description = `An NBD server for tests, CI and demos (fixed newstyle, structured replies, extended headers,
base:allocation), serving sparse in-memory exports, or a file, with nbdkit's options:`

const examples: ReadonlyArray<Command.Command.Example> = [
  { command: "effect-nbd-server -U /tmp/sock memory 1G" },
  { command: "effect-nbd-server -p 0 -f file disk.img", description: "prints the URI of the port it chose" },
  { command: `nbdsh -c 'h.connect_command(["effect-nbd-server", "-s", "memory", "1G"])'` }
]

/** The short options that take a value: getopt's `-p0` is `-p 0`. */
const valueShorts: ReadonlySet<string> = new Set(["U", "p", "i", "P"])

/** The options whose place on the command line `order` notes, by each of their spellings. */
const placed: Readonly<Record<string, "export" | "fault" | "delay" | "malformed" | "oldstyle" | "newstyle">> = {
  "--export": "export",
  "--fault": "fault",
  "--delay": "delay",
  "--malformed": "malformed",
  "--oldstyle": "oldstyle",
  "-o": "oldstyle",
  "--newstyle": "newstyle",
  "-n": "newstyle"
}

/**
 * Where the options whose place matters appear, in order: effect/cli's tokens are the arguments before `--`
 * that start with `-` (a value never does: an option's value is the next argument only when it does not).
 */
const order = (argv: ReadonlyArray<string>): ReadonlyArray<(typeof placed)[string]> => {
  const end = argv.indexOf("--")
  return (end < 0 ? argv : argv.slice(0, end)).flatMap((a) => {
    if (a.startsWith("--")) {
      const kind = placed[a.split("=")[0]!]
      return kind === undefined ? [] : [kind]
    }
    // A cluster of short options (`-ro`) is each of them, up to a glued value.
    if (!/^-[A-Za-z]/.test(a)) return []
    const kinds: Array<(typeof placed)[string]> = []
    for (const c of a.slice(1).split("=")[0]!) {
      const kind = placed[`-${c}`]
      if (kind !== undefined) kinds.push(kind)
      if (valueShorts.has(c)) break
    }
    return kinds
  })
}

/** The command, with what it does once the command line is parsed. */
const command = <E>(run: (input: Input) => Effect.Effect<void, E>) =>
  Command.make("effect-nbd-server", flags, run).pipe(
    Command.withDescription(description),
    Command.annotate(CliHelp.Sections, sections),
    Command.withExamples(examples)
  )

/**
 * Parses argv (without node and the script), with the descriptors socket activation passed
 * (`activatedFds`): effect/cli reads the options, `toOptions` what they mean. Throws `CliError` with a
 * one-line message on bad input.
 * @internal
 */
export const parse = (argv: ReadonlyArray<string>, activated: ReadonlyArray<number> = []): Parsed => {
  const args = CliHelp.attachShortValues(argv, valueShorts)
  const places = order(args)
  let parsed: Parsed | undefined
  let invalid: string | undefined
  const presenter: CliOutput.Presenter = {
    present: (event) =>
      Effect.sync(() => {
        if (event._tag === "Help") parsed = { _tag: "Help", text: CliHelp.formatter.formatHelpDoc(event.helpDoc) }
        else if (event._tag === "Version") parsed = { _tag: "Version" }
        else if (event.errors[0] !== undefined)
          invalid = CliHelp.describe(event.errors[0], { doc: event.helpDoc, argv: args })
      })
  }
  const version = CliHelp.version(
    Effect.sync(() => {
      parsed = { _tag: "Version" }
    })
  )
  const program = Command.runWith(
    command((input) =>
      Effect.sync(() => {
        parsed = { _tag: "Serve", options: toOptions(input, places, activated) }
      })
    ).pipe(Command.withGlobalFlags([version])),
    { version: "" }
  )(args).pipe(
    Effect.provide(
      Layer.mergeAll(
        NodeServices.layer,
        CliOutput.layer(CliHelp.formatter),
        CliOutput.layerPresenter(presenter),
        CliConfig.layer({ builtIns: [GlobalFlag.Help] })
      )
    )
  )
  const exit = Effect.runSyncExit(program)
  if (Exit.isFailure(exit)) {
    // toOptions throws: its error is the run's defect.
    const defect = Cause.squash(exit.cause)
    if (defect instanceof CliError) throw defect
    throw new CliError(invalid ?? (defect instanceof Error ? defect.message : String(defect)))
  }
  if (parsed === undefined) throw new CliError("nothing to do (see --help)")
  return parsed
}

/** What the options mean: the server's configuration, or a `CliError` that says why not. */
const toOptions = (
  input: Input,
  places: ReadonlyArray<(typeof placed)[string]>,
  activated: ReadonlyArray<number>
): Options => {
  const unix = Option.getOrUndefined(input.unix)
  const port = Option.match(input.port, {
    onNone: () => undefined,
    onSome: (p) => parseInteger(p, "--port", 0, 65535, "a port lies between 0 and 65535")
  })
  const host = Option.getOrUndefined(input.ipaddr)
  const runCommand = Option.getOrUndefined(input.run)
  const single = input.single
  const exitWithParent = input.exitWithParent
  const readOnly = input.readonly
  const pidfile = Option.getOrUndefined(input.pidfile)

  // The last of -o and -n wins; --mask-handshake says which newstyle, and whether zeroes pad NBD_OPT_EXPORT_NAME.
  const style = places.filter((p) => p === "oldstyle" || p === "newstyle").at(-1)
  const mask = Option.match(input.maskHandshake, {
    onNone: () => undefined,
    onSome: (m) => parseInteger(m, "--mask-handshake", 0, 3, "--mask-handshake takes 0 to 3")
  })
  const protocol: "fixed-newstyle" | "newstyle" | "oldstyle" =
    style === "oldstyle" ? "oldstyle" : mask !== undefined && (mask & 1) === 0 ? "newstyle" : "fixed-newstyle"
  const noZeroes = mask === undefined || (mask & 2) !== 0

  const backendText = Option.getOrUndefined(input.backend)
  if (backendText !== undefined && backendText !== "memory" && backendText !== "null" && backendText !== "pattern")
    throw new CliError(`--backend: unknown backend "${backendText}" (memory, null, pattern)`)
  let backend: "memory" | "null" | "pattern" = backendText ?? "memory"

  const tlsText = Option.getOrUndefined(input.tls)
  if (tlsText !== undefined && tlsText !== "off" && tlsText !== "on" && tlsText !== "require")
    throw new CliError(`--tls: expected off, on or require, got "${tlsText}"`)
  const tls = tlsText
  const tlsCertificates = Option.getOrUndefined(input.tlsCertificates)
  const tlsPsk = Option.getOrUndefined(input.tlsPsk)
  const tlsVerifyPeer = input.tlsVerifyPeer
  const tlsPriority = Option.match(input.tlsPriority, { onNone: () => undefined, onSome: parseTlsPriority })
  const disconnectAfter = Option.match(input.disconnectAfter, {
    onNone: () => undefined,
    onSome: (n) => parseInteger(n, "--disconnect-after", 1, Number.MAX_SAFE_INTEGER, "expected 1 or more")
  })
  const maxRequests = Option.match(input.maxRequests, {
    onNone: () => undefined,
    onSome: (n) => parseInteger(n, "--max-requests", 1, Number.MAX_SAFE_INTEGER, "expected 1 or more")
  })
  const maxReplyBytes = Option.match(input.maxReplyBytes, {
    onNone: () => undefined,
    onSome: (text) => {
      const size = parseSize(text, "--max-reply-bytes")
      if (size < 1n || size > BigInt(Number.MAX_SAFE_INTEGER))
        throw new CliError("--max-reply-bytes: expected a size of 1 byte or more")
      return Number(size)
    }
  })

  // The exports and their faults, in the order the command line gave them.
  const exports: Array<{
    name: string
    size: bigint
    description?: string
    anyName?: boolean
    faults: Array<TestServer.FaultConfig>
  }> = []
  const faults: Array<TestServer.FaultConfig> = []
  const next = { export: 0, fault: 0, delay: 0, malformed: 0 }
  for (const place of places) {
    // Where --fault, --delay and --malformed go: every export until the first --export, then the last export.
    const target = exports[exports.length - 1]?.faults ?? faults
    switch (place) {
      case "export": {
        const spec = input.export[next.export++]!
        const at = spec.indexOf("=")
        if (at < 0) throw new CliError(`--export: expected NAME=SIZE[:DESCRIPTION], got "${spec}"`)
        const name = spec.slice(0, at)
        const rest = spec.slice(at + 1)
        const colon = rest.indexOf(":")
        const size = parseSize(colon < 0 ? rest : rest.slice(0, colon), `--export ${name}`)
        if (exports.some((e) => e.name === name)) throw new CliError(`--export: export "${name}" is given twice`)
        exports.push(
          colon < 0 ? { name, size, faults: [] } : { name, size, description: rest.slice(colon + 1), faults: [] }
        )
        break
      }
      case "fault":
        target.push(parseFault(input.fault[next.fault++]!))
        break
      case "delay":
        target.push(parseDelayFault(input.delay[next.delay++]!))
        break
      case "malformed":
        target.push(parseMalformed(input.malformed[next.malformed++]!))
        break
    }
  }

  for (const name of input.filter)
    if (!(name in FILTERS)) throw new CliError(`unknown filter "${name}" (${Object.keys(FILTERS).join(", ")})`)
  /** nbdkit's PLUGIN [key=value ...] [MAGIC]: the first bare word, its parameters, in order. */
  let plugin: string | undefined
  const params: Params = []
  for (const arg of input.plugin) {
    const eq = arg.indexOf("=")
    if (plugin === undefined && eq < 0) plugin = arg
    else params.push(eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [undefined, arg])
  }

  if (unix !== undefined && port !== undefined) throw new CliError("-U and -p cannot be used together")
  if (activated.length > 0) {
    // nbdkit's rule: the sockets come from the parent, so nothing else may say where to listen.
    const flag =
      unix !== undefined
        ? "-U"
        : port !== undefined
          ? "-p"
          : host !== undefined
            ? "-i"
            : single
              ? "-s"
              : runCommand !== undefined
                ? "--run"
                : undefined
    if (flag !== undefined) throw new CliError(`cannot use socket activation with ${flag} flag`)
  }
  if (single && (unix !== undefined || port !== undefined || runCommand !== undefined))
    throw new CliError("-s serves stdin: it does not go with -U, -p or --run")
  let file: string | undefined
  const filterList = input.filter.map((name) => makeFilter(name, params))
  if (plugin !== undefined) {
    if (exports.length > 0) throw new CliError(`a plugin (${plugin}) and --export cannot be used together`)
    if (backendText !== undefined) throw new CliError(`a plugin (${plugin}) and --backend cannot be used together`)
    const p = pluginExport(plugin, params)
    if (p.file !== undefined) file = p.file
    else backend = p.backend
    // nbdkit serves its plugin under whatever export name the client asks for.
    exports.push({ name: "", size: p.size, anyName: true, faults: [] })
  } else if (params.length > 0) {
    const [key, v] = params[0]!
    throw new CliError(`unexpected argument "${key === undefined ? v : `${key}=${v}`}" (see --help)`)
  }
  if (tls !== undefined && tls !== "off") {
    if (tlsCertificates === undefined && tlsPsk === undefined)
      throw new CliError(`--tls=${tls} needs --tls-certificates DIR or --tls-psk FILE`)
    if (protocol !== "fixed-newstyle") throw new CliError(`--tls=${tls} needs the fixed newstyle protocol`)
  }
  if (tlsVerifyPeer && (tlsCertificates === undefined || tlsPsk !== undefined))
    throw new CliError("--tls-verify-peer needs --tls-certificates DIR (X.509), not --tls-psk")
  const listen: TestServer.Config["listen"] =
    activated.length > 0
      ? { _tag: "Fd", fds: [activated[0]!, ...activated.slice(1)] }
      : unix !== undefined
        ? unix === "-"
          ? { _tag: "Unix" }
          : { _tag: "Unix", path: unix }
        : host !== undefined
          ? { _tag: "Tcp", port: port ?? 10809, host }
          : { _tag: "Tcp", port: port ?? 10809 }
  const list = exports.length > 0 ? exports : [{ name: "", size: 1n << 30n, faults: [] }]
  return {
    config: {
      listen,
      exports: list.map(({ faults, size, ...e }) => ({
        ...e,
        ...(file === undefined ? { size, backend } : {}),
        readOnly,
        ...(filterList.length > 0 ? { filters: filterList } : {}),
        ...(faults.length > 0 ? { faults } : {})
      })),
      ...(faults.length > 0 ? { faults } : {}),
      ...(tls !== undefined ? { tls } : {}),
      ...(tlsCertificates !== undefined ? { tlsCertificates } : {}),
      ...(tlsPsk !== undefined ? { tlsPsk } : {}),
      ...(tlsVerifyPeer ? { tlsVerifyPeer } : {}),
      ...(tlsPriority !== undefined ? { tlsPriority } : {}),
      ...(disconnectAfter !== undefined ? { disconnectAfter } : {}),
      ...(maxReplyBytes !== undefined || maxRequests !== undefined
        ? {
            backpressure: {
              ...(maxReplyBytes !== undefined ? { maxReplyBytes } : {}),
              ...(maxRequests !== undefined ? { maxRequests } : {})
            }
          }
        : {}),
      protocol,
      noZeroes,
      structuredReplies: !input.noSr,
      extendedHeaders: !input.noSr && !input.noEh,
      outOfOrder: input.outOfOrder
    },
    pidfile,
    run: runCommand,
    single,
    exitWithParent,
    // nbdkit: -s, --run, --exit-with-parent and socket activation keep the server in the foreground.
    foreground: input.foreground || single || runCommand !== undefined || exitWithParent || activated.length > 0,
    file,
    printUri: !single && runCommand === undefined && (port === 0 || unix === "-")
  }
}

/** The export nbdkit's plugin syntax names: `memory 1G`, `null size=1G`, `pattern 1G`, `file PATH`. */
const pluginExport = (
  plugin: string,
  params: ReadonlyArray<[key: string | undefined, value: string]>
): { backend: "memory" | "null" | "pattern"; size: bigint; file?: undefined } | { file: string; size: bigint } => {
  const magic = plugin === "file" ? "file" : "size"
  const values = new Map<string, string>()
  for (const [key, value] of params) {
    const k = key ?? magic
    if (k !== magic) throw new CliError(`${plugin}: unknown parameter "${k}" (${plugin} takes ${magic}=...)`)
    if (values.has(k)) throw new CliError(`${plugin}: ${k} is given twice`)
    values.set(k, value)
  }
  switch (plugin) {
    case "file": {
      const file = values.get("file")
      if (file === undefined || file === "") throw new CliError("file: needs a path: file PATH or file file=PATH")
      return { file, size: 0n }
    }
    case "memory":
    case "null":
    case "pattern": {
      const text = values.get("size")
      if (text === undefined && plugin !== "null") throw new CliError(`${plugin}: needs a size, e.g. ${plugin} 1G`)
      return { backend: plugin, size: text === undefined ? 0n : parseSize(text, plugin) }
    }
    default:
      throw new CliError(`unknown plugin "${plugin}" (file, memory, null, pattern)`)
  }
}

type Params = Array<[key: string | undefined, value: string]>

/** Takes the parameters whose key `owns` accepts out of `params`, in order. */
const take = (params: Params, owns: (key: string) => boolean): Map<string, string> => {
  const out = new Map<string, string>()
  for (let i = 0; i < params.length;) {
    const [key, value] = params[i]!
    if (key !== undefined && owns(key)) {
      out.set(key, value)
      params.splice(i, 1)
    } else i++
  }
  return out
}

const parseRate = (text: string, key: string): number => {
  const m = /^([0-9]*\.?[0-9]+)(%?)$/.exec(text.trim())
  const rate = m === null ? NaN : Number(m[1]) / (m[2] === "%" ? 100 : 1)
  if (!(rate >= 0 && rate <= 1)) throw new CliError(`${key}: invalid rate "${text}" (0 to 1, or 0% to 100%)`)
  return rate
}

/** The nth request of an operation on each connection: 1 or more. */
const parseNth = (text: string, key: string): number => {
  const n = /^[0-9]+$/.test(text.trim()) ? Number(text) : NaN
  if (!(Number.isSafeInteger(n) && n >= 1)) throw new CliError(`${key}: invalid nth "${text}" (1 or more)`)
  return n
}

/** nbdkit's delays: seconds, or with a unit (200ms, 2s). */
const parseSeconds = (text: string, key: string): number => {
  const m = /^([0-9]*\.?[0-9]+)(ms|s)?$/.exec(text.trim())
  const ms = m === null ? NaN : Math.round(Number(m[1]) * (m[2] === "ms" ? 1 : 1000))
  if (!(ms >= 0 && ms <= 2_147_483_647)) throw new CliError(`${key}: invalid delay "${text}" (e.g. 2, 0.5, 200ms)`)
  return ms
}

/** nbdkit's names of the operations in filter keys. */
/** The rate and nth triggers of the error and delay filters: for every operation, or for one. */
class Triggers {
  rate: number | undefined = undefined
  nth: number | undefined = undefined
  readonly rates: Partial<Record<Filter.Operation, number>> = {}
  readonly nths: Partial<Record<Filter.Operation, number>> = {}

  /** Takes a `-rate` or `-nth` parameter (`kind`); false for any other kind. */
  take(kind: string | undefined, operation: Filter.Operation | undefined, v: string, key: string): boolean {
    if (kind === "rate") {
      const rate = parseRate(v, key)
      if (operation === undefined) this.rate = rate
      else this.rates[operation] = rate
      return true
    }
    if (kind === "nth") {
      const nth = parseNth(v, key)
      if (operation === undefined) this.nth = nth
      else this.nths[operation] = nth
      return true
    }
    return false
  }

  /** The triggers as a filter's options. */
  get options() {
    return {
      ...(this.rate !== undefined ? { rate: this.rate } : {}),
      ...(this.nth !== undefined ? { nth: this.nth } : {}),
      rates: this.rates,
      nths: this.nths
    }
  }
}

const OPERATIONS: Record<string, Filter.Operation> = {
  pread: "read",
  pwrite: "write",
  zero: "zero",
  trim: "trim",
  flush: "flush",
  extents: "extents",
  cache: "cache"
}

const errnoParam = (text: string, key: string): typeof TestServer.FaultErrno.Type => {
  const name = text.toUpperCase()
  if (!ERRNOS.includes(name)) throw new CliError(`${key}: unknown errno "${text}" (${ERRNOS.join(", ")})`)
  return name as typeof TestServer.FaultErrno.Type
}

const FILTERS: Record<string, (params: Params) => Filter.Filter> = {
  error: (params) => {
    const keys = take(params, (k) => /^error(-|$)/.test(k))
    const errnos: Partial<Record<Filter.Operation, typeof TestServer.FaultErrno.Type>> = {}
    const files: Partial<Record<Filter.Operation, string>> = {}
    const triggers = new Triggers()
    let errno: typeof TestServer.FaultErrno.Type | undefined
    let file: string | undefined
    for (const [key, v] of keys) {
      const m = /^error(?:-(pread|pwrite|zero|trim|flush|extents|cache))?(?:-(rate|file|nth))?$/.exec(key)
      if (m === null) throw new CliError(`error filter: unknown parameter "${key}"`)
      const operation = m[1] === undefined ? undefined : OPERATIONS[m[1]]!
      if (triggers.take(m[2], operation, v, key)) continue
      if (m[2] === "file") {
        if (operation === undefined) file = v
        else files[operation] = v
      } else if (operation === undefined) errno = errnoParam(v, key)
      else errnos[operation] = errnoParam(v, key)
    }
    return Filter.error({
      ...(errno !== undefined ? { errno } : {}),
      ...(file !== undefined ? { file } : {}),
      ...triggers.options,
      errnos,
      files
    })
  },
  delay: (params) => {
    const keys = take(params, (k) => /^delay-/.test(k) || k === "rdelay" || k === "wdelay")
    const delays: Partial<Record<Filter.Operation, number>> = {}
    const triggers = new Triggers()
    for (const [key, v] of keys) {
      const m =
        key === "rdelay" || key === "wdelay"
          ? ["", key === "rdelay" ? "read" : "write", undefined]
          : /^delay(?:-(read|write|zero|trim|flush|extents|cache))?(?:-(rate|nth))?$/.exec(key)
      if (m === null || (m[1] === undefined && m[2] === undefined))
        throw new CliError(`delay filter: unknown parameter "${key}"`)
      const operation = m[1] as Filter.Operation | undefined
      if (!triggers.take(m[2], operation, v, key)) delays[operation!] = parseSeconds(v, key)
    }
    return Filter.delay(delays, triggers.options)
  },
  readonly: () => Filter.readOnly,
  nozero: () => Filter.noZero,
  notrim: () => Filter.noTrim,
  noextents: () => Filter.noExtents,
  "multi-conn": (params) => {
    const keys = take(params, (k) => k.startsWith("multi-conn-"))
    for (const key of keys.keys())
      if (key !== "multi-conn-mode") throw new CliError(`multi-conn filter: unknown parameter "${key}"`)
    const mode = keys.get("multi-conn-mode") ?? "unsafe"
    if (mode !== "disable" && mode !== "unsafe")
      throw new CliError(`multi-conn-mode: expected disable or unsafe, got "${mode}"`)
    return Filter.multiConn(mode === "unsafe")
  },
  "blocksize-policy": (params) => {
    const keys = take(params, (k) => k.startsWith("blocksize-"))
    const size = (key: string, fallback: number): number => {
      const text = keys.get(key)
      if (text === undefined) return fallback
      const n = parseSize(text, key)
      if (n > 0xffffffffn) throw new CliError(`${key}: at most 4G - 1`)
      return Number(n)
    }
    for (const key of keys.keys())
      if (!["blocksize-minimum", "blocksize-preferred", "blocksize-maximum", "blocksize-error-policy"].includes(key))
        throw new CliError(`blocksize-policy filter: unknown parameter "${key}"`)
    if ((keys.get("blocksize-error-policy") ?? "error") !== "error")
      throw new CliError("blocksize-error-policy: only error is supported (requests out of policy are refused)")
    const minimum = size("blocksize-minimum", 1)
    const preferred = size("blocksize-preferred", Math.max(4096, minimum))
    const sizes = decode(
      TestServer.BlockSize,
      { minimum, preferred, maximum: size("blocksize-maximum", 32 * 1024 * 1024) },
      "blocksize-policy"
    )
    return Filter.blockSizePolicy(sizes)
  },
  evil: (params) => {
    const keys = take(params, (k) => /^evil(-|$)/.test(k))
    for (const key of keys.keys())
      if (!["evil", "evil-probability", "evil-seed"].includes(key))
        throw new CliError(`evil filter: unknown parameter "${key}"`)
    const mode = keys.get("evil") ?? "cosmic-rays"
    if (mode !== "cosmic-rays") throw new CliError(`evil: only cosmic-rays is supported, got "${mode}"`)
    const text = keys.get("evil-probability") ?? "1e-8"
    const probability = /^[0-9.e+-]+%?$/i.test(text.trim())
      ? Number(text.replace("%", "")) / (text.endsWith("%") ? 100 : 1)
      : NaN
    if (!(probability >= 0 && probability <= 1))
      throw new CliError(`evil-probability: invalid probability "${text}" (0 to 1, or a percentage)`)
    const seedText = keys.get("evil-seed")
    const seed = seedText === undefined ? Date.now() : Number(seedText)
    if (!Number.isSafeInteger(seed)) throw new CliError(`evil-seed: expected an integer, got "${seedText}"`)
    return Filter.evil({ probability, seed })
  }
}

const makeFilter = (name: string, params: Params): Filter.Filter => FILTERS[name]!(params)
