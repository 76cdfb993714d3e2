/**
 * The command line before effect/cli parses it: the few habits of libnbd's tools it has no words for.
 *
 * - A subprocess in place of a URI: `[ CMD ARGS ... ]` (systemd socket activation, as nbdinfo and nbdcopy
 *   start it) or, for every subcommand but `copy`, `-- CMD ARGS ...` (the command speaks NBD on its stdin and
 *   stdout, e.g. `nbdkit -s`). Its words are not options of ours, so the subprocess becomes one placeholder
 *   argument that no real argument can equal (it holds a NUL), resolved by `Common.connect`.
 * - A short option glued to its value, getopt's `-C4` and `-n40`: effect/cli reads `-C4` as `-C -4`, so it
 *   becomes `-C=4`.
 * - The subcommand first, as before: `effect-nbd bogus --help` is an unknown subcommand, not the help page.
 *
 * Everything else (options, values, `--opt=value`, `--progress[=FD]`, `-h`, `-V`) is effect/cli's.
 *
 * @since 0.2.0
 */
import * as CliHelp from "@effect-nbd/test-server/CliHelp"

/**
 * A server the CLI starts itself, in place of a URI.
 * @since 0.2.0
 * @category models
 */
export interface Subprocess {
  /** `Command`: NBD on the child's stdin/stdout (`-- CMD`); `SocketActivation`: `[ CMD ]`, as libnbd's tools. */
  readonly _tag: "Command" | "SocketActivation"
  readonly argv: ReadonlyArray<string>
}

/**
 * The command line effect/cli parses, or what is wrong with it.
 * @since 0.2.0
 * @category models
 */
export type Prepared =
  { readonly _tag: "Run"; readonly argv: ReadonlyArray<string> } | { readonly _tag: "Error"; readonly message: string }

/**
 * The subcommands.
 * @since 0.2.0
 * @category models
 */
export const subcommands = ["info", "copy", "dump", "discard", "zero"] as const

/** The short options that take a value, in every subcommand: these may be glued to it (`-C4`). */
const valueShorts: ReadonlySet<string> = new Set(["C", "R", "S", "T", "n", "o", "l"])

const PLACEHOLDER = "\u0000subprocess:"
const subprocesses: Array<Subprocess> = []

/**
 * The subprocess a placeholder argument stands for, or undefined for an ordinary argument.
 * @since 0.2.0
 * @category subprocess
 */
export const subprocessOf = (arg: string): Subprocess | undefined =>
  arg.startsWith(PLACEHOLDER) ? subprocesses[Number(arg.slice(PLACEHOLDER.length))] : undefined

/**
 * An argument as a message shows it: a subprocess placeholder as the command it stands for.
 * @since 0.2.0
 * @category subprocess
 */
export const show = (text: string): string =>
  text.replace(/\u0000subprocess:(\d+)/g, (_, i: string) => {
    const s = subprocesses[Number(i)]
    return s === undefined ? "[ ]" : s._tag === "Command" ? `-- ${s.argv.join(" ")}` : `[ ${s.argv.join(" ")} ]`
  })

const placeholder = (s: Subprocess): string => {
  subprocesses.push(s)
  return `${PLACEHOLDER}${subprocesses.length - 1}`
}

/**
 * Rewrites `args` (the arguments after the script) into what effect/cli parses.
 * @since 0.2.0
 * @category parsing
 */
export const prepare = (args: ReadonlyArray<string>): Prepared => {
  const first = args[0]
  if (first !== undefined && !first.startsWith("-") && !(subcommands as ReadonlyArray<string>).includes(first))
    return {
      _tag: "Error",
      message: `unknown subcommand '${first}': expected one of ${subcommands.join(", ")} (EINVAL)`
    }
  const out: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === "[") {
      const end = args.indexOf("]", i + 1)
      if (end < 0) return { _tag: "Error", message: "'[' without a matching ']' (EINVAL)" }
      if (end === i + 1) return { _tag: "Error", message: "'[ ]' needs a command between the brackets (EINVAL)" }
      out.push(placeholder({ _tag: "SocketActivation", argv: args.slice(i + 1, end) }))
      i = end
      continue
    }
    if (a === "--") {
      const rest = args.slice(i + 1)
      // `-- CMD ARGS ...`: the rest is a command on stdin/stdout, where one URI is expected. For copy, `--`
      // only ends the options (`copy -- - [ CMD ]`).
      if (first !== "copy" && rest.length > 0 && rest[0] !== "[") {
        out.push(placeholder({ _tag: "Command", argv: rest }))
        break
      }
      out.push(a)
      continue
    }
    out.push(a)
  }
  return { _tag: "Run", argv: CliHelp.attachShortValues(out, valueShorts) }
}
