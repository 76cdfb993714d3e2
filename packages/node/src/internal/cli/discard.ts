/**
 * `effect-nbd discard` and `effect-nbd zero`: nbddiscard(1) and nbdzero(1) of libnbd 1.22 and later. They
 * erase a range of an export (all of it by default): discard frees it with NBD_CMD_TRIM, zero replaces it
 * with allocated zeroes (NBD_CMD_WRITE_ZEROES with NO_HOLE, or written zeroes when the server cannot zero).
 * Both ask before they erase, unless `-y`; `-c` only checks whether the range already is sparse, or reads as
 * zeroes, and answers with the exit status (0 yes, 2 no, 1 error), as nbdinfo's tests do.
 *
 * @since 0.3.0
 */
import { Nbd, Protocol } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import * as CliHelp from "@effect-nbd/test-server/CliHelp"
import * as Effect from "effect/Effect"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Argv from "./argv.js"
import * as Common from "./common.js"

/** The most bytes one trim, zero or block status request covers: within 32 bits, aligned to any block size. */
const MAX_RANGE = 1 << 30
/** The most bytes one read (of --check) or one write of zeroes carries. */
const MAX_PAYLOAD = 4 << 20
/** Requests in flight. */
const IN_FLIGHT = 16

/** What the command line asks for, with its sizes parsed. */
interface Erase {
  /** "discard" or "zero": the name messages go by. */
  readonly name: string
  readonly uri: string
  /** Zeroes rather than a discard (nbdzero, nbddiscard -z or --fast-zero). */
  readonly zero: boolean
  readonly fastZero: boolean
  readonly check: boolean
  readonly quiet: boolean
  readonly verbose: boolean
  readonly yes: boolean
  readonly offset: bigint
  readonly length: bigint | undefined
}

/** The range `[offset, offset + length)` cut into pieces of at most `max` bytes. */
const pieces = (offset: bigint, length: bigint, max: number): Array<readonly [bigint, number]> => {
  const out: Array<readonly [bigint, number]> = []
  for (let at = offset; at < offset + length; at += BigInt(max)) {
    const rest = offset + length - at
    out.push([at, rest < BigInt(max) ? Number(rest) : max])
  }
  return out
}

const say = (erase: Erase, text: string): Effect.Effect<void> =>
  Effect.sync(() => void process.stderr.write(`effect-nbd: ${erase.name}: ${text}\n`))

/** The range the options name, checked against the export's size. */
const range = (erase: Erase, size: bigint): Effect.Effect<bigint, Common.CliError> => {
  if (erase.offset > size)
    return Effect.fail(
      new Common.CliError({
        message: `--offset: ${erase.offset} is past the end of the export (${size} bytes) (EINVAL)`
      })
    )
  const length = erase.length ?? (size > erase.offset ? size - erase.offset : 0n)
  return erase.offset + length <= size
    ? Effect.succeed(length)
    : Effect.fail(
        new Common.CliError({
          message: `--offset/--length: bytes ${erase.offset} - ${erase.offset + length - 1n} end past the end of the export (${size} bytes) (EINVAL)`
        })
      )
}

/** Asks on stderr, reads the answer from stdin: only "y" or "yes" goes on (end of input is no). */
const confirm = (question: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    process.stderr.write(question)
    let line = ""
    const done = (answer: boolean) => {
      process.stdin.off("data", onData)
      process.stdin.off("end", onEnd)
      process.stdin.off("error", onEnd)
      process.stdin.pause()
      resume(Effect.succeed(answer))
    }
    const onData = (chunk: Buffer) => {
      line += chunk.toString()
      const end = line.indexOf("\n")
      if (end >= 0) done(/^\s*y(es)?\s*$/i.test(line.slice(0, end)))
    }
    const onEnd = () => done(/^\s*y(es)?\s*$/i.test(line))
    process.stdin.on("data", onData)
    process.stdin.on("end", onEnd)
    process.stdin.on("error", onEnd)
    process.stdin.resume()
  })

/** The extents of base:allocation over a range, in order; none when the server has not the context. */
const extents = (
  h: Nbd.Handle,
  offset: bigint,
  length: bigint
): Effect.Effect<ReadonlyArray<Nbd.Extent> | undefined, Common.Failure> =>
  Effect.gen(function* () {
    if (!(yield* Effect.orElseSucceed(Nbd.canMetaContext(h, "base:allocation"), () => false))) return undefined
    const out: Array<Nbd.Extent> = []
    const end = offset + length
    let at = offset
    while (at < end) {
      const entries = yield* Nbd.blockStatus(h, end - at < BigInt(MAX_RANGE) ? end - at : MAX_RANGE, at)
      const got = entries.find((e) => e.context === "base:allocation")?.extents ?? []
      if (got.length === 0)
        return yield* new Common.CliError({ message: "--check: server did not return any extents (EPROTO)" })
      for (const e of got) {
        // The last extent may reach past the range: only the range counts.
        const n = e.length < end - at ? e.length : end - at
        out.push({ ...e, length: n })
        at += n
        if (at >= end) break
      }
    }
    return out
  })

/** Whether a range reads as zeroes, read in pieces. */
const readsAsZero = (h: Nbd.Handle, offset: bigint, length: bigint): Effect.Effect<boolean, NbdError.NbdError> =>
  Effect.map(
    Effect.forEach(
      pieces(offset, length, MAX_PAYLOAD),
      ([at, n]) => Effect.map(Nbd.pread(h, n, at), (data) => data.every((b) => b === 0)),
      { concurrency: IN_FLIGHT }
    ),
    (all) => all.every(Boolean)
  )

/**
 * `--check`: whether the range is already sparse (every extent a hole), or with zeroes already reads as zero
 * (extents block status reports as zeroes, the rest read). Without base:allocation nothing is known to be a
 * hole, and every byte is read.
 */
const check = (h: Nbd.Handle, erase: Erase, offset: bigint, length: bigint): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    const known = yield* extents(h, offset, length)
    if (known === undefined && erase.verbose) yield* say(erase, "the server has no base:allocation")
    let yes = true
    if (!erase.zero) yes = known !== undefined && known.every((e) => (e.flags & Protocol.STATE_HOLE) !== 0)
    else if (known === undefined) yes = yield* readsAsZero(h, offset, length)
    else {
      let at = offset
      for (const e of known) {
        if ((e.flags & Protocol.STATE_ZERO) === 0 && !(yield* readsAsZero(h, at, e.length))) yes = false
        at += e.length
        if (!yes) break
      }
    }
    const what = erase.zero ? "read as zeroes" : "are sparse"
    if (erase.verbose)
      yield* say(
        erase,
        `bytes ${offset} - ${offset + length - 1n} ${yes ? what : `do not all ${what.replace("are", "be")}`}`
      )
    if (!yes) return yield* new Common.ExitStatus({ code: 2 })
  })

/** Zeroes the range: NBD_CMD_WRITE_ZEROES when the server can, else zeroes written as data. */
const zeroRange = (h: Nbd.Handle, erase: Erase, offset: bigint, length: bigint): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    if (erase.fastZero && !(yield* Nbd.canFastZero(h)))
      return yield* new Common.CliError({ message: "--fast-zero: the server does not support fast zeroes (ENOTSUP)" })
    if (yield* Nbd.canZero(h)) {
      // Allocated zeroes, as the tool promises: no hole, and with --fast-zero a quick failure over a slow zero.
      const flags = Protocol.CmdFlag.NO_HOLE | (erase.fastZero ? Protocol.CmdFlag.FAST_ZERO : 0)
      const requests = pieces(offset, length, MAX_RANGE)
      if (erase.verbose)
        yield* say(erase, `zeroing bytes ${offset} - ${offset + length - 1n} in ${requests.length} request(s)`)
      return yield* Effect.forEach(requests, ([at, n]) => Nbd.zero(h, n, at, { flags }), {
        concurrency: IN_FLIGHT,
        discard: true
      })
    }
    const requests = pieces(offset, length, MAX_PAYLOAD)
    if (erase.verbose)
      yield* say(erase, `the server cannot zero: writing zeroes to bytes ${offset} - ${offset + length - 1n}`)
    const zeroes = new Uint8Array(MAX_PAYLOAD)
    yield* Effect.forEach(requests, ([at, n]) => Nbd.pwrite(h, zeroes.subarray(0, n), at), {
      concurrency: IN_FLIGHT,
      discard: true
    })
  })

/** Discards the range with NBD_CMD_TRIM; a server that cannot trim keeps its data, with a warning. */
const trimRange = (h: Nbd.Handle, erase: Erase, offset: bigint, length: bigint): Effect.Effect<void, Common.Failure> =>
  Effect.gen(function* () {
    if (!(yield* Nbd.canTrim(h))) {
      if (!erase.quiet) yield* say(erase, "warning: the server does not support trim: nothing was discarded")
      return
    }
    const requests = pieces(offset, length, MAX_RANGE)
    if (erase.verbose)
      yield* say(erase, `discarding bytes ${offset} - ${offset + length - 1n} in ${requests.length} request(s)`)
    yield* Effect.forEach(requests, ([at, n]) => Nbd.trim(h, n, at), { concurrency: IN_FLIGHT, discard: true })
  })

const run = (erase: Erase): Effect.Effect<void, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Common.connect(erase.uri, erase.check ? { metaContexts: ["base:allocation"] } : {})
    const offset = erase.offset
    const length = yield* range(erase, yield* Nbd.getSize(h))
    if (length === 0n) return
    if (erase.check) return yield* check(h, erase, offset, length)
    if (yield* Nbd.isReadOnly(h))
      return yield* new Common.CliError({
        message: `${erase.name}: ${Argv.show(erase.uri)}: the export is read-only (EPERM)`
      })
    if (!erase.yes) {
      const question = `PERMANENTLY ERASE everything on ${Argv.show(erase.uri)} bytes ${offset} - ${offset + length - 1n}\n(y/N)? `
      if (!(yield* confirm(question)))
        return yield* new Common.CliError({ message: `${erase.name}: not confirmed: nothing was erased (ECANCELED)` })
    }
    yield* (erase.zero ? zeroRange : trimRange)(h, erase, offset, length)
    // The erased range is durable before the command says it is done.
    if (yield* Nbd.canFlush(h)) yield* Nbd.flush(h)
    if (erase.verbose) yield* say(erase, "done")
  })

/** The options both commands share; discard adds `-z`. */
const shared = {
  check: CliHelp.boolean("check").pipe(Flag.withAlias("c")),
  fastZero: CliHelp.boolean("fast-zero"),
  quiet: CliHelp.boolean("quiet").pipe(Flag.withAlias("q")),
  verbose: CliHelp.boolean("verbose").pipe(Flag.withAlias("v")),
  yes: CliHelp.boolean("yes").pipe(Flag.withAlias("y")),
  offset: Flag.String("offset").pipe(Flag.withAlias("o"), Flag.withMetavar("OFFSET"), Flag.optional),
  length: Flag.String("length").pipe(Flag.withAlias("l"), Flag.withMetavar("LENGTH"), Flag.optional),
  uri: Argument.String("NBD-URI").pipe(Argument.withMetavar(Common.URI_METAVAR))
}

/** What the range options say, and the exit statuses: both pages end with it. */
const rangeText = `All data in the range is PERMANENTLY ERASED: it asks first (y/N on stdin)
  unless -y. The range: -o OFFSET (default 0), -l LENGTH bytes (default: to
  the end), with suffixes K, M, G, T. Exit status 1 on any error.`

interface Given {
  readonly check: boolean
  readonly fastZero: boolean
  readonly quiet: boolean
  readonly verbose: boolean
  readonly yes: boolean
  readonly offset: Option.Option<string>
  readonly length: Option.Option<string>
  readonly uri: string
}

const handler = (name: string, zero: boolean) => (o: Given) =>
  Effect.scoped(
    Effect.gen(function* () {
      const offset = Option.isSome(o.offset) ? yield* Common.parseSize("--offset", o.offset.value) : 0
      const length = Option.isSome(o.length) ? yield* Common.parseSize("--length", o.length.value) : undefined
      yield* run({
        name,
        uri: o.uri,
        zero: zero || o.fastZero,
        fastZero: o.fastZero,
        check: o.check,
        quiet: o.quiet,
        verbose: o.verbose,
        yes: o.yes,
        offset: BigInt(offset),
        length: length === undefined ? undefined : BigInt(length)
      })
    })
  )

/**
 * The `discard` subcommand (nbddiscard).
 * @since 0.3.0
 * @category commands
 */
export const discard = Command.make(
  "discard",
  { ...shared, zero: CliHelp.boolean("zero").pipe(Flag.withAlias("z")) },
  (o) => handler(o.zero || o.fastZero ? "zero" : "discard", o.zero)(o)
).pipe(
  Command.withDescription(`Discard all data (or a range) of an NBD export, like nbddiscard:

  Frees the range with NBD_CMD_TRIM (a server without trim keeps its data,
  with a warning that -q silences); -z writes allocated zeroes instead, as
  effect-nbd zero does, and --fast-zero (which implies -z) zeroes with
  NBD_CMD_FLAG_FAST_ZERO, failing at once if the server cannot zero fast.
  -c changes nothing: exit status 0 if the range is already sparse (with -z:
  reads as zeroes), 2 if not. -v says what is done.
  ${rangeText}`),
  Command.withShortDescription("discard a range, all of it by default (like nbddiscard)"),
  Command.withExamples([
    { command: "effect-nbd discard nbd://localhost" },
    { command: "effect-nbd discard -y -o 1M -l 64K nbd://localhost" },
    { command: "effect-nbd discard --check nbd://localhost" }
  ])
)

/**
 * The `zero` subcommand (nbdzero).
 * @since 0.3.0
 * @category commands
 */
export const zero = Command.make("zero", shared, handler("zero", true)).pipe(
  Command.withDescription(`Zero all data (or a range) of an NBD export, like nbdzero:

  Replaces the range with allocated zeroes: NBD_CMD_WRITE_ZEROES with
  NO_HOLE, or zeroes written as data when the server cannot zero.
  --fast-zero zeroes with NBD_CMD_FLAG_FAST_ZERO, failing at once if the
  server cannot zero fast. -c changes nothing: exit status 0 if the range
  already reads as zeroes, 2 if not. -v says what is done.
  ${rangeText}`),
  Command.withShortDescription("zero a range, all of it by default (like nbdzero)"),
  Command.withExamples([
    { command: "effect-nbd zero nbd://localhost" },
    { command: "effect-nbd zero -y --fast-zero -o 1M -l 64K nbd://localhost" },
    { command: "effect-nbd zero --check nbd://localhost" }
  ])
)
