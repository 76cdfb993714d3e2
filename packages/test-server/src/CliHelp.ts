/**
 * The help and error layout both effect-nbd command lines share (`effect-nbd` and `effect-nbd-server`), on
 * `effect/cli`: help pages in the manner of libnbd's tools and nbdkit (a synopsis, prose, options, examples),
 * plain text whatever the terminal, so `--help | grep` and `--help | cat` read as they should; and a bad
 * command line as one line in getopt's words instead of the help page with an error block.
 *
 * @since 1.0.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as CliConfig from "effect/cli/CliConfig"
import type * as CliError from "effect/cli/CliError"
import * as CliOutput from "effect/cli/CliOutput"
import * as Flag from "effect/cli/Flag"
import * as GlobalFlag from "effect/cli/GlobalFlag"
import type * as HelpDoc from "effect/cli/HelpDoc"

/**
 * A group of options on a help page, with its title and a note printed after its options.
 * @since 1.0.0
 * @category models
 */
export interface Section {
  readonly title: string
  /** The options' long names, in the order the page lists them. */
  readonly flags: ReadonlyArray<string>
  readonly note?: string | undefined
}

/**
 * The annotation of a command (`Command.annotate(CliHelp.Sections, [...])`) that groups its options on its
 * help page, as nbdkit's and our server's page does; options in no section are listed under "Options:".
 * @since 1.0.0
 * @category annotations
 */
export class Sections extends Context.Service<Sections, ReadonlyArray<Section>>()(
  "@effect-nbd/test-server/CliHelp/Sections"
) {}

/** The width the pages are wrapped to. */
const WIDTH = 80

/** Words joined into lines of at most `WIDTH` columns, the lines after the first indented by `indent`. */
const wrap = (words: ReadonlyArray<string>, first: string, indent: number): Array<string> => {
  const lines: Array<string> = []
  let line = first
  for (const word of words) {
    if (line.trim() !== "" && line.length + 1 + word.length > WIDTH && line.length > indent) {
      lines.push(line)
      line = " ".repeat(indent) + word
    } else line = line.endsWith(" ") || line === "" ? line + word : `${line} ${word}`
  }
  lines.push(line)
  return lines
}

const isShort = (alias: string): boolean => /^-[^-]$/.test(alias)

/** The value a flag takes ("N"), whether it is optional (`--map[=CONTEXT]`), or none for a switch. */
const valueOf = (flag: HelpDoc.FlagDoc): { readonly metavar: string; readonly optional: boolean } | undefined =>
  flag.type === "boolean"
    ? undefined
    : flag.type.startsWith("[=")
      ? { metavar: flag.type.slice(2, -1), optional: true }
      : { metavar: flag.type, optional: false }

/** One option in a synopsis, as libnbd's tools write it: `[-C N|--connections=N]`, `[-p|--progress[=FD]]`. */
const synopsisOf = (flag: HelpDoc.FlagDoc): string => {
  const shorts = flag.aliases.filter(isShort)
  const value = valueOf(flag)
  if (value === undefined) return `[${[...shorts, `--${flag.name}`].join("|")}]`
  if (value.optional) return `[${[...shorts, `--${flag.name}[=${value.metavar}]`].join("|")}]`
  return `[${[...shorts.map((s) => `${s} ${value.metavar}`), `--${flag.name}=${value.metavar}`].join("|")}]`
}

/** The left column of an option in a table: `-U, --unix PATH`, `--map[=CONTEXT]`. */
const labelOf = (flag: HelpDoc.FlagDoc): string => {
  const value = valueOf(flag)
  const names = [...flag.aliases.filter(isShort), `--${flag.name}`, ...flag.aliases.filter((a) => !isShort(a))]
  const suffix = value === undefined ? "" : value.optional ? `[=${value.metavar}]` : ` ${value.metavar}`
  return names.join(", ") + suffix
}

const argumentOf = (arg: HelpDoc.ArgDoc): string => {
  const text = arg.variadic && !arg.type.includes("...") ? `${arg.type} ...` : arg.type
  return arg.required ? text : `[${text}]`
}

/** The column an option's description starts at. */
const COLUMN = 27

const table = (flags: ReadonlyArray<HelpDoc.FlagDoc>): Array<string> =>
  flags.flatMap((flag) => {
    const label = `  ${labelOf(flag)}`
    const words = Option.getOrElse(flag.description, () => "")
      .split(/\s+/)
      .filter((w) => w !== "")
    return label.length + 1 > COLUMN
      ? [label, ...wrap(words, " ".repeat(COLUMN), COLUMN)]
      : wrap(words, label.padEnd(COLUMN), COLUMN)
  })

const block = (title: string, lines: ReadonlyArray<string>): string => `${title}\n\n${lines.join("\n")}\n`

/** The synopsis: each subcommand with what it does, or the command with every option and argument. */
const synopsis = (doc: HelpDoc.HelpDoc, path: string): string => {
  const subcommands = (doc.subcommands ?? []).flatMap((group) => group.commands)
  if (subcommands.length === 0) {
    const words = [...doc.flags.map(synopsisOf), ...(doc.args ?? []).map(argumentOf)]
    return wrap(words, `    ${path} `, 5 + path.length).join("\n") + "\n"
  }
  const width = Math.max(...subcommands.map((s) => s.name.length)) + 2
  return (
    subcommands
      .map((s) => `    ${path} ${s.name.padEnd(width)}${s.shortDescription ?? s.description.split("\n")[0]}`)
      .join("\n") + "\n"
  )
}

/** The options that have a description, in a table per section (the rest under "Options:"). */
const optionTables = (doc: HelpDoc.HelpDoc): Array<string> => {
  const described = doc.flags.filter((f) => Option.isSome(f.description))
  const sections = Option.getOrElse(Context.getOption(doc.annotations, Sections), () => [])
  const placed = new Set(sections.flatMap((s) => s.flags))
  const blocks = sections.map((section) => {
    const flags = section.flags.flatMap((name) => described.filter((f) => f.name === name))
    const note = section.note === undefined ? [] : section.note.replace(/\s+$/, "").split("\n")
    return block(`${section.title}:`, [...table(flags), ...note])
  })
  const rest = described.filter((f) => !placed.has(f.name))
  return rest.length > 0 ? [...blocks, block("Options:", table(rest))] : blocks
}

/**
 * A help page: the description's first paragraph, the synopsis (every option, as nbdkit's and libnbd's
 * pages give it), the rest of the description, the options that have a description in a table, by section,
 * the global options and the examples.
 */
const page = (doc: HelpDoc.HelpDoc): string => {
  const path = (doc.commandPath ?? [doc.usage.split(" ")[0] ?? ""]).join(" ")
  const [title = "", ...body] = doc.description.split(/\n\s*\n/)
  const globals = doc.globalFlags ?? []
  const examples = doc.examples ?? []
  return [
    `${title.trim()}\n`,
    synopsis(doc, path),
    ...(body.length > 0 ? [`${body.join("\n\n").replace(/\s+$/, "")}\n`] : []),
    ...optionTables(doc),
    ...(globals.length > 0
      ? [
          block(
            "Other options:",
            globals.map((f) => `    ${path} ${[...f.aliases.filter(isShort), `--${f.name}`].join("|")}`)
          )
        ]
      : []),
    ...(examples.length > 0
      ? [
          block(
            "Examples:",
            examples.flatMap((e) => [
              ...(e.description === undefined ? [] : [`    # ${e.description}`]),
              `    ${e.command}`
            ])
          )
        ]
      : [])
  ].join("\n")
}

/** A message on one line, control characters shown rather than sent to the terminal. */
const oneLine = (text: string): string =>
  text
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)
    .replace(/\s+/g, " ")
    .trim()

/**
 * The formatter of both command lines: plain text, never colour (libnbd's tools and nbdkit print none, and
 * a page read through a pipe or with NO_COLOR must carry no escape codes).
 * @since 1.0.0
 * @category formatting
 */
export const formatter: CliOutput.Formatter = {
  formatHelpDoc: page,
  formatCliError: (error) => oneLine(error.message),
  formatError: (error) => oneLine(error.message),
  formatErrors: (errors) => errors.map((e) => oneLine(e.message)).join("\n"),
  formatVersion: (name, version) => `${name} ${version}`
}

/**
 * The spelling of a flag the command line used: `-n` when it said `-n`, else `--length`.
 */
const spelling = (name: string, doc: HelpDoc.HelpDoc, argv: ReadonlyArray<string>): string => {
  const flag = [...doc.flags, ...(doc.globalFlags ?? [])].find((f) => f.name === name)
  const names = [`--${name}`, ...(flag?.aliases ?? [])]
  const end = argv.indexOf("--")
  const options = end < 0 ? argv : argv.slice(0, end)
  // The last time the flag was given is the one a missing or bad value belongs to.
  for (let i = options.length - 1; i >= 0; i--) {
    const a = options[i]!
    const used = names.find((n) => a === n || a.startsWith(`${n}=`) || (isShort(n) && a.startsWith(n)))
    if (used !== undefined) return used
  }
  return `--${name}`
}

/**
 * What went wrong with a command line, in getopt's words where it has them ("unrecognized option '--bogus'",
 * "option '-n' requires an argument"), on one line. `show` turns an argument back into what was typed.
 * @since 1.0.0
 * @category formatting
 */
export const describe = (
  error: CliError.NonShowHelpErrors,
  context: {
    readonly doc: HelpDoc.HelpDoc
    readonly argv: ReadonlyArray<string>
    readonly show?: ((argument: string) => string) | undefined
  }
): string => {
  const show = context.show ?? ((a: string) => a)
  switch (error._tag) {
    case "UnrecognizedOption":
      return `unrecognized option '${show(error.option)}'`
    case "MissingOption":
      return `option '--${error.option}' is required`
    case "MissingArgument": {
      const arg = context.doc.args?.find((a) => a.name === error.argument)
      return `missing argument: ${arg?.type ?? error.argument}`
    }
    case "UnexpectedArgument":
      // @effect/cli's words, which scripts may already match.
      return `Received unknown argument: '${show(error.arguments[0] ?? "")}'`
    case "UnknownSubcommand": {
      const names = (context.doc.subcommands ?? []).flatMap((g) => g.commands.map((c) => c.name))
      return `unknown subcommand '${show(error.subcommand)}': expected one of ${names.join(", ")}`
    }
    case "InvalidValue": {
      if (error.kind === "argument") return `${error.option}: invalid value '${show(error.value)}'`
      const name = spelling(error.option, context.doc, context.argv)
      if (error.value === "") return `option '${name}' requires an argument`
      if (error.expected === "at most 1 value") return `option '${name}' is given more than once`
      return `${name}: '${show(error.value)}' is not ${error.expected.replace(/^Expected:? /, "")}`
    }
    default:
      return oneLine(error.message)
  }
}

/**
 * How a command line shows what it says: help on stdout when asked for (on stderr, and the run fails,
 * when the command line asked for nothing a command could do), the version on stdout, and a bad command
 * line as the one line `report` writes.
 * @since 1.0.0
 * @category presenting
 */
export const presenter = (options: {
  readonly argv: ReadonlyArray<string>
  readonly report: (message: string) => void
  readonly show?: ((argument: string) => string) | undefined
}): CliOutput.Presenter => ({
  present: (event) =>
    Effect.sync(() => {
      switch (event._tag) {
        case "Help":
          ;(event.reason === "Requested" ? process.stdout : process.stderr).write(page(event.helpDoc))
          return
        case "Version":
          process.stdout.write(`${event.name} ${event.version}\n`)
          return
        case "InvalidInvocation": {
          const first = event.errors[0]
          if (first !== undefined)
            options.report(oneLine(describe(first, { doc: event.helpDoc, argv: options.argv, show: options.show })))
          return
        }
      }
    })
})

/**
 * `-V` / `--version` as libnbd's tools and nbdkit take it (effect/cli's own `--version` is `-v`, which is
 * `--verbose` here): `print` writes what it prints.
 * @since 1.0.0
 * @category flags
 */
export const version = (print: Effect.Effect<void>): GlobalFlag.Action<boolean> =>
  GlobalFlag.Action({
    flag: Flag.Boolean("version").pipe(Flag.withAlias("V"), Flag.withoutNegation, Flag.withDefault(false)),
    run: (given) => (given ? print : Effect.void)
  })

/**
 * What both command lines run with: this layout, the presenter, and of effect/cli's built-in flags only
 * `-h`/`--help` (no `--wizard`, `--completions` or `--log-level`, which nbdkit and libnbd's tools lack).
 * @since 1.0.0
 * @category layers
 */
export const layer = (options: Parameters<typeof presenter>[0]): Layer.Layer<never> =>
  Layer.mergeAll(
    CliOutput.layer(formatter),
    CliOutput.layerPresenter(presenter(options)),
    CliConfig.layer({ builtIns: [GlobalFlag.Help] })
  )

/**
 * A switch: false unless given, and no `--no-NAME` beside it.
 * @since 1.0.0
 * @category flags
 */
export const boolean = (name: string): Flag.Flag<boolean> =>
  Flag.Boolean(name).pipe(Flag.withoutNegation, Flag.withDefault(false))

/**
 * A whole number, negative ones included (a range is the command's to check, with its own words), that
 * says "is not an integer" of anything else.
 * @since 1.0.0
 * @category flags
 */
export const integer = (name: string): Flag.Flag<number> =>
  Flag.String(name).pipe(
    Flag.filterMap(
      (text) => (/^\s*-?[0-9]+\s*$/.test(text) ? Option.some(Number(text)) : Option.none()),
      () => "an integer"
    )
  )

/**
 * The command line with a short option's glued value (`-C4`, getopt's habit) given with `=` (`-C=4`), which
 * effect/cli reads as the option's value; `shorts` are the short options that take a value. Arguments after
 * `--` are left alone.
 * @since 1.0.0
 * @category argv
 */
export const attachShortValues = (argv: ReadonlyArray<string>, shorts: ReadonlySet<string>): Array<string> => {
  const end = argv.indexOf("--")
  return argv.map((a, i) =>
    (end < 0 || i < end) && /^-[A-Za-z][^=]/.test(a) && shorts.has(a[1]!) ? `${a.slice(0, 2)}=${a.slice(2)}` : a
  )
}
