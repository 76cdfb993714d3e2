/**
 * `effect-nbd info`: what nbdinfo shows about a server and its exports, in the same text and JSON.
 *
 * @since 0.1.0
 */
import { Nbd, NbdUri } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import * as CliHelp from "@effect-nbd/test-server/CliHelp"
import * as Effect from "effect/Effect"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Common from "./common.js"

/** A yes-or-no question about a connection or its export. */
type Question = (h: Nbd.Handle) => Effect.Effect<boolean, NbdError.NbdError>

/**
 * Whether the export can be opened (nbdinfo's `--can open`): NBD_OPT_GO succeeds; a server that refuses the
 * export answers no, while a failed connection stays an error. An oldstyle server opens it at once.
 */
const canOpen: Question = (h) =>
  Effect.flatMap(Nbd.aioIsNegotiating(h), (negotiating) =>
    negotiating
      ? Nbd.optGo(h).pipe(
          Effect.as(true),
          Effect.catchIf(
            (e) => e._tag === "OptionError",
            () => Effect.succeed(false)
          )
        )
      : Effect.succeed(true)
  )

/**
 * The features `--can`, `--is` and `--has` test, as nbdinfo names them. As in nbdinfo the three options are
 * one question, so each takes any of these names; `export` says whether the answer needs the export's info
 * (NBD_OPT_INFO), not only the connection.
 */
const features: Readonly<Record<string, { readonly question: Question; readonly export: boolean }>> = {
  connect: { question: () => Effect.succeed(true), export: false },
  read: { question: () => Effect.succeed(true), export: false },
  open: { question: canOpen, export: false },
  tls: { question: Nbd.getTlsNegotiated, export: false },
  "structured-reply": { question: Nbd.getStructuredRepliesNegotiated, export: false },
  "extended-headers": { question: Nbd.getExtendedHeadersNegotiated, export: false },
  "read-only": { question: Nbd.isReadOnly, export: true },
  write: { question: (h) => Effect.map(Nbd.isReadOnly(h), (ro) => !ro), export: true },
  rotational: { question: Nbd.isRotational, export: true },
  "block-status-payload": { question: Nbd.canBlockStatusPayload, export: true },
  cache: { question: Nbd.canCache, export: true },
  df: { question: Nbd.canDf, export: true },
  "fast-zero": { question: Nbd.canFastZero, export: true },
  flush: { question: Nbd.canFlush, export: true },
  fua: { question: Nbd.canFua, export: true },
  "multi-conn": { question: Nbd.canMultiConn, export: true },
  trim: { question: Nbd.canTrim, export: true },
  zero: { question: Nbd.canZero, export: true }
}

/** nbdinfo's other spellings of a feature, after `_` and spaces became `-`. */
const aliases: Readonly<Record<string, string>> = {
  sr: "structured-reply",
  structured: "structured-reply",
  "structured-replies": "structured-reply",
  eh: "extended-headers",
  "extended-header": "extended-headers",
  readonly: "read-only",
  fastzero: "fast-zero",
  multiconn: "multi-conn"
}

/** A feature as nbdinfo reads its name: in any case, with `-`, `_` or a space between the words. */
const featureName = (text: string): string | undefined => {
  const name = text.toLowerCase().replace(/[_ ]/g, "-")
  const canonical = aliases[name] ?? name
  return canonical in features ? canonical : undefined
}

/** What nbdinfo shows about one export, in its order. */
interface ExportFacts {
  readonly name: string
  readonly description: string | undefined
  readonly content: string | undefined
  readonly uri: string | undefined
  readonly contexts: ReadonlyArray<string> | undefined
  readonly flags: ReadonlyArray<readonly [string, boolean]>
  readonly blockSizes: ReadonlyArray<readonly [string, number]>
  readonly size: bigint
}

/**
 * The first 8 KiB run through file(1), as nbdinfo probes content: the library itself cannot say what an
 * export holds. Undefined when it cannot tell; when file(1) cannot be run and `--content` was asked for,
 * a warning says so plainly (nbdinfo leaves the line out without a word).
 */
const probeContent = (h: Nbd.Handle, size: bigint, explicit: boolean): Effect.Effect<string | undefined> =>
  Effect.gen(function* () {
    const n = Number(size < 8192n ? size : 8192n)
    const data = n > 0 ? yield* Nbd.pread(h, n, 0) : new Uint8Array(0)
    return yield* Effect.acquireUseRelease(
      Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-content-"))),
      (dir) =>
        Effect.callback<string | undefined>((resume) => {
          const file = Path.join(dir, "content")
          Fs.writeFileSync(file, data)
          execFile("file", ["-b", file], (error, stdout) => {
            if (error && explicit) {
              const code = typeof error.code === "string" ? error.code : "EIO"
              process.stderr.write(`effect-nbd: warning: --content: cannot run file(1), content not shown (${code})\n`)
            }
            resume(Effect.succeed(error ? undefined : stdout.split("\n")[0]))
          })
        }),
      (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
    )
  }).pipe(Effect.orElseSucceed(() => undefined))

/**
 * The URI of the handle's current export. `Nbd.getUri` keeps the export name the handle connected with, so
 * after `setExportName` (listing) the name is put back in here.
 */
const uriOf = (h: Nbd.Handle): Effect.Effect<string, NbdError.NbdError> =>
  Effect.gen(function* () {
    const parsed = yield* NbdUri.parse(yield* Nbd.getUri(h))
    return NbdUri.format({ ...parsed, exportName: yield* Nbd.getExportName(h) })
  })

const optional = <A>(effect: Effect.Effect<A, NbdError.NbdError>): Effect.Effect<A | undefined> =>
  Effect.orElseSucceed(effect, () => undefined)

/** Gathers one export's facts on a handle in option mode (as nbdinfo's show_one_export). */
const gather = (
  h: Nbd.Handle,
  listedDescription: string | undefined,
  content: boolean,
  explicit = false
): Effect.Effect<ExportFacts, NbdError.NbdError> =>
  Effect.gen(function* () {
    if (yield* Nbd.aioIsNegotiating(h)) yield* Effect.catch(Nbd.optInfo(h), () => Nbd.optGo(h))
    const size = yield* Nbd.getSize(h)
    const uri = yield* optional(uriOf(h))
    const name = (yield* optional(Nbd.getCanonicalExportName(h))) ?? (yield* Nbd.getExportName(h))
    const description = listedDescription ?? (yield* optional(Nbd.getExportDescription(h)))
    const flags: Array<readonly [string, boolean]> = []
    for (const [key, get] of [
      ["is_rotational", Nbd.isRotational],
      ["is_read_only", Nbd.isReadOnly],
      ["can_cache", Nbd.canCache],
      ["can_df", Nbd.canDf],
      ["can_fast_zero", Nbd.canFastZero],
      ["can_flush", Nbd.canFlush],
      ["can_fua", Nbd.canFua],
      ["can_multi_conn", Nbd.canMultiConn],
      ["can_trim", Nbd.canTrim],
      ["can_zero", Nbd.canZero]
    ] as const) {
      const value = yield* optional(get(h))
      if (value !== undefined) flags.push([key, value])
    }
    const blockSizes: Array<readonly [string, number]> = []
    for (const kind of ["minimum", "preferred", "maximum"] as const) {
      const value = yield* optional(Nbd.getBlockSize(h, kind))
      if (value !== undefined && value > 0) blockSizes.push([`block_size_${kind}`, value])
    }
    const contexts = (yield* Nbd.aioIsNegotiating(h)) ? yield* optional(Nbd.optListMetaContext(h, [])) : undefined
    // Content last: it needs the export selected, which ends option mode.
    let probed: string | undefined
    if (content) {
      if (yield* Nbd.aioIsNegotiating(h)) yield* Nbd.optGo(h)
      probed = yield* probeContent(h, size, explicit)
    }
    return { name, description, content: probed, uri, contexts, flags, blockSizes, size }
  })

const q = (s: string): string => JSON.stringify(s)

const exportText = (e: ExportFacts): string => {
  const size = Common.humanSize(e.size)
  const lines = [`export=${q(e.name)}:`]
  if (e.description) lines.push(`\tdescription: ${e.description}`)
  lines.push(`\texport-size: ${e.size}${size.human ? ` (${size.text})` : ""}`)
  if (e.content !== undefined) lines.push(`\tcontent: ${e.content}`)
  if (e.uri !== undefined) lines.push(`\turi: ${e.uri}`)
  if (e.contexts !== undefined) lines.push("\tcontexts:", ...e.contexts.map((c) => `\t\t${c}`))
  for (const [k, v] of e.flags) lines.push(`\t${k}: ${v}`)
  for (const [k, v] of e.blockSizes) lines.push(`\t${k}: ${v}`)
  return lines.map((l) => `${l}\n`).join("")
}

const exportJson = (e: ExportFacts): string => {
  const fields = [`\t"export-name": ${q(e.name)}`]
  if (e.description) fields.push(`\t"description": ${q(e.description)}`)
  if (e.content !== undefined) fields.push(`\t"content": ${q(e.content)}`)
  if (e.uri !== undefined) fields.push(`\t"uri": ${q(e.uri)}`)
  if (e.contexts !== undefined)
    fields.push(
      `\t"contexts": [\n${e.contexts.map((c) => `\t\t${q(c)}`).join(",\n")}${e.contexts.length ? "\n" : ""}\t]`
    )
  for (const [k, v] of e.flags) fields.push(`\t"${k}": ${v}`)
  for (const [k, v] of e.blockSizes) fields.push(`\t"${k}": ${v}`)
  fields.push(`\t"export-size": ${e.size}`, `\t"export-size-str": ${q(Common.humanSize(e.size).text)}`)
  return `\t{\n${fields.join(",\n")}\n\t}`
}

/** The per-connection header, text or JSON. */
const header = (h: Nbd.Handle, json: boolean): Effect.Effect<string, NbdError.NbdError> =>
  Effect.gen(function* () {
    const protocol = yield* Nbd.getProtocol(h)
    const tls = yield* Nbd.getTlsNegotiated(h)
    const structured = yield* Nbd.getStructuredRepliesNegotiated(h)
    const extended = yield* Nbd.getExtendedHeadersNegotiated(h)
    if (json) return `{\n"protocol": ${q(protocol)},\n"TLS": ${tls},\n"structured": ${structured},\n`
    const packets = extended ? "extended" : structured ? "structured" : "simple"
    return `protocol: ${protocol} ${tls ? "with" : "without"} TLS, using ${packets} packets\n`
  })

/** Default mode and `--list`: one export or every export the server lists. */
const showExports = (
  uri: string,
  options: {
    readonly json: boolean
    readonly list: boolean
    readonly content: boolean
    readonly explicitContent: boolean
  }
): Effect.Effect<string, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Common.connect(uri, { optMode: true, fullInfo: true })
    const head = yield* header(h, options.json)
    const exports: Array<ExportFacts> = []
    if (!options.list) exports.push(yield* gather(h, undefined, options.content, options.explicitContent))
    else {
      const listed = yield* Nbd.optList(h)
      for (const entry of listed) {
        if (options.content) {
          // Content probing leaves option mode, so each export gets its own connection (as nbdinfo does).
          const facts = yield* Effect.scoped(
            Effect.gen(function* () {
              const h2 = yield* Common.connect(uri, { optMode: true, fullInfo: true })
              yield* Nbd.setExportName(h2, entry.name)
              return yield* gather(h2, entry.description, true, options.explicitContent)
            })
          )
          exports.push(facts)
        } else {
          yield* Nbd.setExportName(h, entry.name)
          exports.push(yield* gather(h, entry.description, false))
        }
      }
    }
    if (yield* Nbd.aioIsNegotiating(h)) yield* Effect.ignore(Nbd.optAbort(h))
    if (!options.json) return head + exports.map(exportText).join("")
    const body = exports.length === 0 ? `"exports": []\n` : `"exports": [\n${exports.map(exportJson).join(",\n")} ]\n`
    return `${head}${body}}\n`
  })

/** A base:allocation (or other context) type as nbdinfo describes it. */
const describeType = (context: string, type: number): string | undefined => {
  if (context === "base:allocation") return ["data", "hole", "zero", "hole,zero"][type]
  if (context.startsWith("qemu:dirty-bitmap:")) return ["clean", "dirty"][type]
  if (context === "qemu:allocation-depth") return type === 0 ? "absent" : type === 1 ? "local" : `backing depth ${type}`
  return undefined
}

/** One extent of a map, coalesced by type. */
interface Extent {
  offset: bigint
  length: bigint
  readonly type: number
}

/** The extents of a context over the whole export, coalesced by type (as nbdinfo --map reads them). */
const readMap = (
  uri: string,
  context: string
): Effect.Effect<{ readonly extents: ReadonlyArray<Extent>; readonly size: bigint }, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Common.connect(uri, { metaContexts: [context] })
    if (!(yield* Effect.orElseSucceed(Nbd.canMetaContext(h, context), () => false)))
      return yield* new Common.CliError({
        message: `--map: server does not support metadata context ${q(context)} (ENOTSUP)`
      })
    const align = BigInt((yield* Nbd.getBlockSize(h, "minimum")) || 512)
    const maxLength = 0xffffffffn - align + 1n
    const size = yield* Nbd.getSize(h)
    const extents: Array<Extent> = []
    let offset = 0n
    while (offset < size) {
      const entries = yield* Nbd.blockStatus(h, size - offset < maxLength ? size - offset : maxLength, offset)
      const got = entries.find((e) => e.context === context)?.extents ?? []
      if (got.length === 0)
        return yield* new Common.CliError({ message: "--map: server did not return any extents (EPROTO)" })
      for (const e of got) {
        const length = e.length > size - offset ? size - offset : e.length
        const last = extents[extents.length - 1]
        if (last !== undefined && last.type === e.flags) last.length += length
        else extents.push({ offset, length, type: e.flags })
        offset += length
        if (offset >= size) break
      }
    }
    return { extents, size }
  })

/** `--map[=CONTEXT]`: the extents, one line (or JSON object) each. */
const showMap = (uri: string, context: string, json: boolean): Effect.Effect<string, Common.Failure, Scope.Scope> =>
  Effect.map(readMap(uri, context), ({ extents }) => {
    const lines = extents.map(({ length, offset, type }) => {
      const d = describeType(context, type)
      return json
        ? `{ "offset": ${offset}, "length": ${length}, "type": ${type}${d !== undefined ? `, "description": ${q(d)}` : ""}}`
        : `${String(offset).padStart(10)}  ${String(length).padStart(10)}  ${String(type).padStart(3)}${d !== undefined ? `  ${d}` : ""}\n`
    })
    return json ? `[\n${lines.join(",\n")}\n]\n` : lines.join("")
  })

/** `%g` as C prints it for the percentages nbdinfo shows (six significant digits, no trailing zeroes). */
const g = (x: number): string => String(Number(x.toPrecision(6)))

/** `--map --totals`: bytes and share of the export per type, in ascending order of type (as nbdinfo). */
const showTotals = (uri: string, context: string, json: boolean): Effect.Effect<string, Common.Failure, Scope.Scope> =>
  Effect.map(readMap(uri, context), ({ extents, size }) => {
    const sums = new Map<number, bigint>()
    for (const e of extents) sums.set(e.type, (sums.get(e.type) ?? 0n) + e.length)
    const rows = [...sums].filter(([, n]) => n > 0n).sort(([a], [b]) => a - b)
    const lines = rows.map(([type, n]) => {
      const percent = size === 0n ? 0 : (Number(n) * 100) / Number(size)
      const d = describeType(context, type)
      return json
        ? `{ "size": ${n}, "percent": ${g(percent)}, "type": ${type}${d !== undefined ? `, "description": ${q(d)}` : ""} }`
        : `${String(n).padStart(10)} ${percent.toFixed(1).padStart(5)}% ${String(type).padStart(3)}${d !== undefined ? ` ${d}` : ""}\n`
    })
    return json ? `[\n${lines.join(",\n")}\n]\n` : lines.join("")
  })

/** The exit status of a test: 0 when the answer is the one asked for, 2 when not. */
const answer = (yes: boolean, negated: boolean): Effect.Effect<void, Common.ExitStatus> =>
  yes !== negated ? Effect.void : Effect.fail(new Common.ExitStatus({ code: 2 }))

/** A meta context named where a feature is expected (`--has base:allocation`): whether the server has it. */
const testContext = (
  uri: string,
  context: string,
  negated: boolean
): Effect.Effect<void, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    const h = yield* Common.connect(uri, { metaContexts: [context] })
    return yield* answer(yield* Effect.orElseSucceed(Nbd.canMetaContext(h, context), () => false), negated)
  })

/**
 * `--can` / `--is` / `--has FEATURE` and their negations `--cannot` / `--isnt` / `--hasnt`: as nbdinfo, a
 * connection in option mode asks for the export's info (a refusal is kept for the questions that need it),
 * then the answer is the exit status alone, nothing on stdout.
 */
const testFeature = (uri: string, text: string, negated: boolean): Effect.Effect<void, Common.Failure, Scope.Scope> =>
  Effect.gen(function* () {
    const name = featureName(text)
    if (name === undefined) {
      if (text.includes(":")) return yield* testContext(uri, text, negated)
      const options = negated ? "--cannot/--isnt/--hasnt" : "--can/--is/--has"
      return yield* new Common.CliError({
        message: `unknown ${options} feature '${text}': expected one of ${Object.keys(features).join(", ")}, or a meta context NAMESPACE:NAME (EINVAL)`
      })
    }
    const feature = features[name]!
    const h = yield* Common.connect(uri, { optMode: true })
    if (yield* Nbd.aioIsNegotiating(h)) {
      const info = yield* Effect.result(Nbd.optInfo(h))
      if (feature.export && Result.isFailure(info)) return yield* info.failure
    }
    return yield* answer(yield* feature.question(h), negated)
  })

/** nbdinfo's spellings of `--can` (`--is`, `--has`, `--have`: the one question) and of `--cannot`. */
const canAliases = ["is", "has", "have"]
const cannotAliases = [
  "can-not",
  "cant",
  "isnt",
  "isnot",
  "is-not",
  "hasnt",
  "hasnot",
  "has-not",
  "havent",
  "havenot",
  "have-not"
]

const withAliases =
  (aliases: ReadonlyArray<string>) =>
  <A>(flag: Flag.Flag<A>): Flag.Flag<A> =>
    aliases.reduce((f, alias) => Flag.withAlias(f, alias), flag)

const description = `Display information and metadata about NBD servers and exports, like nbdinfo:

  --map alone maps base:allocation; qemu's contexts work too
  (qemu:dirty-bitmap:NAME, qemu:allocation-depth). --can FEATURE (or --is,
  --has, --have) exits 0 when true, 2 when false, 1 on error; --cannot (--isnt,
  --hasnt, --cant, ...) 0 when false, 2 when true. As in nbdinfo, they are one
  question: each takes any feature (connect, read, open, tls, structured-reply,
  extended-headers, read-only, write, rotational, block-status-payload, cache,
  df, fast-zero, flush, fua, multi-conn, trim, zero) or a meta context
  (base:allocation, qemu:dirty-bitmap:NAME). connect: the handshake works;
  open: the server opens the export; read: always, once connected; write: not
  read-only; tls: TLS was negotiated. --content (the default without --list)
  runs the first 8K through file(1). [ CMD ARGS ... ] starts a server by socket
  activation (nbdkit memory 1G); -- CMD ARGS ... runs a server on stdin/stdout
  (nbdkit -s memory 1G). Without a URI: an embedded test server (1M).`

/**
 * The `info` subcommand.
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "info",
  {
    json: CliHelp.boolean("json"),
    list: CliHelp.boolean("list").pipe(Flag.withAlias("L")),
    map: Flag.String("map").pipe(Flag.withOptionalValue("base:allocation"), Flag.withMetavar("CONTEXT"), Flag.optional),
    size: CliHelp.boolean("size"),
    can: Flag.String("can").pipe(withAliases(canAliases), Flag.withMetavar("FEATURE"), Flag.optional),
    cannot: Flag.String("cannot").pipe(withAliases(cannotAliases), Flag.withMetavar("FEATURE"), Flag.optional),
    totals: CliHelp.boolean("totals"),
    content: CliHelp.boolean("content"),
    noContent: CliHelp.boolean("no-content"),
    uri: Common.optionalUri
  },
  (o) =>
    Effect.scoped(
      Effect.gen(function* () {
        const modes = [o.list, Option.isSome(o.map), o.size, Option.isSome(o.can), Option.isSome(o.cannot)]
        if (modes.filter(Boolean).length > 1)
          return yield* new Common.CliError({
            message: "you cannot use --can, --cannot, --list, --map and --size together (EINVAL)"
          })
        if (o.totals && Option.isNone(o.map))
          return yield* new Common.CliError({ message: "you must use --totals only with --map option (EINVAL)" })
        if (o.content && o.noContent)
          return yield* new Common.CliError({ message: "you cannot use --content and --no-content together (EINVAL)" })
        if (Option.isSome(o.map) && o.map.value === "")
          return yield* new Common.CliError({ message: "--map=: the meta context name is empty (EINVAL)" })
        const uri = yield* Common.uriOrEmbedded(o.uri)
        if (Option.isSome(o.can)) return yield* testFeature(uri, o.can.value, false)
        if (Option.isSome(o.cannot)) return yield* testFeature(uri, o.cannot.value, true)
        let output: string
        if (o.size) output = `${yield* Nbd.getSize(yield* Common.connect(uri))}\n`
        else if (Option.isSome(o.map)) output = yield* (o.totals ? showTotals : showMap)(uri, o.map.value, o.json)
        else
          output = yield* showExports(uri, {
            json: o.json,
            list: o.list,
            content: o.noContent ? false : o.content || !o.list,
            explicitContent: o.content
          }).pipe(
            // As nbdinfo: a missing export suggests listing them.
            Effect.catchIf(
              (e): e is NbdError.NbdError => !o.list && e._tag === "OptionError" && e.errno === "ENOENT",
              (e) =>
                Effect.fail(
                  new Common.CliError({
                    message: Common.describe(e),
                    suggestion: "to list all exports on the server, use --list"
                  })
                )
            )
          )
        yield* Common.writeStdout(output)
      })
    )
).pipe(
  Command.withDescription(description),
  Command.withShortDescription("show an NBD server and its exports (like nbdinfo)"),
  Command.withExamples([
    { command: "effect-nbd info nbd://localhost" },
    { command: 'effect-nbd info "nbd+unix:///?socket=/tmp/unixsock"' },
    { command: "effect-nbd info --size nbd://example.com" },
    { command: "effect-nbd info --can connect nbd://example.com" },
    { command: "effect-nbd info --has extended-headers nbd://example.com" },
    { command: "effect-nbd info --map --totals nbd://example.com" },
    { command: "effect-nbd info --list --json nbd://example.com" },
    { command: "effect-nbd info -- nbdkit -s memory 1G" },
    { command: "effect-nbd info --map -- [ qemu-nbd -r -f qcow2 file.qcow2 ]" }
  ])
)
