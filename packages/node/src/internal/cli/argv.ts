/**
 * The command line before @effect/cli parses it, so the habits of libnbd's tools work: `-C4` and `-R64`
 * (a short option glued to its value), `--progress=FD` beside `--progress`, `--map` with an optional
 * value, `-h`/`--help` and `-V`/`--version` anywhere, and a subprocess in place of a URI: `[ CMD ARGS ... ]`
 * (systemd socket activation, as nbdinfo and nbdcopy start it) or, for `info` and `dump`, `-- CMD ARGS ...`
 * (the command speaks NBD on its stdin and stdout, e.g. `nbdkit -s`). A subprocess becomes a placeholder
 * argument that no real argument can equal (it holds a NUL), resolved by `Common.connect`.
 *
 * @since 0.2.0
 */

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
 * What the command line asks for.
 * @since 0.2.0
 * @category models
 */
export type Prepared =
  | { readonly _tag: "Run"; readonly argv: ReadonlyArray<string> }
  | { readonly _tag: "Help"; readonly subcommand: string | undefined }
  | { readonly _tag: "Usage" }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Error"; readonly message: string }

/** The subcommands. */
export const subcommands = ["info", "copy", "dump", "discard", "zero"] as const

/** Short options that take a value, per subcommand: these may be glued to it (`-C4`). */
const valueShorts: Record<string, ReadonlySet<string>> = {
  copy: new Set(["C", "R", "S", "T"]),
  dump: new Set(["n"]),
  info: new Set([]),
  discard: new Set(["o", "l"]),
  zero: new Set(["o", "l"])
}

/** The options nbddiscard and nbdzero share; nbddiscard alone has `-z`. */
const eraseOptions: Readonly<Record<string, boolean>> = {
  "--check": false,
  "-c": false,
  "--fast-zero": false,
  "--quiet": false,
  "-q": false,
  "--verbose": false,
  "-v": false,
  "--yes": false,
  "-y": false,
  "--offset": true,
  "-o": true,
  "--length": true,
  "-l": true
}

/**
 * nbdinfo's spellings of its tests, each to the one option it is: `--can`, `--is`, `--has` and `--have` ask
 * the same question, their negations (`--cannot`, `--isnt`, `--hasnt`, ...) its opposite.
 */
const infoTests: Readonly<Record<string, "--can" | "--cannot">> = {
  "--can": "--can",
  "--is": "--can",
  "--has": "--can",
  "--have": "--can",
  "--cannot": "--cannot",
  "--can-not": "--cannot",
  "--cant": "--cannot",
  "--isnt": "--cannot",
  "--isnot": "--cannot",
  "--is-not": "--cannot",
  "--hasnt": "--cannot",
  "--hasnot": "--cannot",
  "--has-not": "--cannot",
  "--havent": "--cannot",
  "--havenot": "--cannot",
  "--have-not": "--cannot"
}

/** Every option of each subcommand: true when it takes a value (the next argument, or after `=`). */
const known: Record<string, Readonly<Record<string, boolean>>> = {
  info: {
    "--json": false,
    "--list": false,
    "-L": false,
    "--map": false,
    "--totals": false,
    "--size": false,
    ...Object.fromEntries(Object.keys(infoTests).map((name) => [name, true])),
    "--content": false,
    "--no-content": false
  },
  copy: {
    "--connections": true,
    "-C": true,
    "--requests": true,
    "-R": true,
    "--request-size": true,
    "--progress": false,
    "-p": false,
    "--destination-is-zero": false,
    "--target-is-zero": false,
    "--flush": false,
    "--no-extents": false,
    "--sparse": true,
    "-S": true,
    "--allocated": false,
    "--queue-size": true,
    "--threads": true,
    "-T": true,
    "--synchronous": false,
    "--blkhash": false,
    "--blkhash-file": true,
    "--reconnect-delay": true,
    "--verbose": false,
    "-v": false
  },
  dump: { "--length": true, "-n": true },
  discard: { ...eraseOptions, "--zero": false, "-z": false },
  zero: eraseOptions
}

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
 * Rewrites `args` (the arguments after the script) into what @effect/cli parses, or says that help,
 * the version or an error is wanted instead.
 * @since 0.2.0
 * @category parsing
 */
export const prepare = (args: ReadonlyArray<string>): Prepared => {
  // Nothing at all: the usage on stderr and exit status 1, as nbdinfo and nbdcopy without arguments.
  if (args.length === 0) return { _tag: "Usage" }
  const first = args[0]
  const subcommand = (subcommands as ReadonlyArray<string>).includes(first ?? "") ? first : undefined
  // Without a subcommand there is only the help and the version: nothing else reaches @effect/cli, whose own
  // help and wizard are in colour.
  if (subcommand === undefined)
    return first === "-h" || first === "--help"
      ? { _tag: "Help", subcommand }
      : first === "-V" || first === "--version"
        ? { _tag: "Version" }
        : {
            _tag: "Error",
            message: first!.startsWith("-")
              ? `unrecognized option '${first}' (EINVAL)`
              : `unknown subcommand '${first}': expected one of ${subcommands.join(", ")} (EINVAL)`
          }
  const out: Array<string> = []
  let positional = false
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!
    if (a === "[") {
      const end = args.indexOf("]", i + 1)
      if (end < 0) return { _tag: "Error", message: "'[' without a matching ']' (EINVAL)" }
      if (end === i + 1) return { _tag: "Error", message: "'[ ]' needs a command between the brackets (EINVAL)" }
      out.push(placeholder({ _tag: "SocketActivation", argv: args.slice(i + 1, end) }))
      i = end
      continue
    }
    if (positional) {
      out.push(a)
      continue
    }
    if (a === "--") {
      positional = true
      const rest = args.slice(i + 1)
      // `-- CMD ARGS ...`: the rest is a command on stdin/stdout, where one URI is expected.
      if (subcommand !== "copy" && rest.length > 0 && rest[0] !== "[") {
        out.push(placeholder({ _tag: "Command", argv: rest }))
        break
      }
      if (subcommand === "copy") out.push(a)
      continue
    }
    if (a === "-h" || a === "--help") return { _tag: "Help", subcommand }
    if (a === "-V" || a === "--version") return { _tag: "Version" }
    if (a.startsWith("-") && a !== "-") {
      const name = a.startsWith("--") ? a.split("=")[0]! : a.slice(0, 2)
      const takesValue = known[subcommand]![name]
      if (takesValue === undefined) return { _tag: "Error", message: `unrecognized option '${a}' (EINVAL)` }
      // The value of `--can X` or `-C 4` is not an option, even when it starts with "-".
      if (takesValue && !a.includes("=") && a.length === name.length) {
        if (i + 1 >= args.length) return { _tag: "Error", message: `option '${a}' requires an argument (EINVAL)` }
        out.push(subcommand === "info" ? (infoTests[a] ?? a) : a, args[++i]!)
        continue
      }
      const test = subcommand === "info" ? infoTests[name] : undefined
      if (test !== undefined) {
        // `--is=tls`: the question's one spelling, with its value.
        out.push(test, a.slice(name.length + 1))
        continue
      }
    }
    if (a === "--map=" && subcommand === "info")
      return { _tag: "Error", message: "--map=: the meta context name is empty (EINVAL)" }
    if (a === "--map" && subcommand === "info") out.push("--map=base:allocation")
    else if (a === "--blkhash" && subcommand === "copy") out.push("--blkhash=sha256")
    else if (a.startsWith("--progress=") && subcommand === "copy") out.push("--progress-fd", a.slice(11))
    else if (/^-[A-Za-z]./.test(a) && valueShorts[subcommand]!.has(a[1]!))
      out.push(a.slice(0, 2), a.slice(a[2] === "=" ? 3 : 2))
    else out.push(a)
  }
  return { _tag: "Run", argv: [subcommand, ...out] }
}
