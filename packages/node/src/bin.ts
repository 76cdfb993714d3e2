#!/usr/bin/env node
/**
 * The `effect-nbd` command: `info`, `copy`, `dump`, `discard` and `zero`, in the manner of nbdinfo, nbdcopy,
 * nbddump, nbddiscard and nbdzero, on effect/cli.
 *
 * @since 0.1.0
 */
import * as CliHelp from "@effect-nbd/test-server/CliHelp"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as CliError from "effect/cli/CliError"
import * as Command from "effect/cli/Command"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Argv from "./internal/cli/argv.js"
import * as Common from "./internal/cli/common.js"
import * as Copy from "./internal/cli/copy.js"
import * as Discard from "./internal/cli/discard.js"
import * as Dump from "./internal/cli/dump.js"
import * as Info from "./internal/cli/info.js"
import * as NodePositionalFile from "./NodePositionalFile.js"

/**
 * The package.json of @effect-nbd/node, found upwards from the script that runs (dist/bin.js, or the bin in
 * dist/cli/, through any node_modules/.bin link); the bundle is CommonJS, so `import.meta` is not at hand.
 */
const manifest = (): { readonly name: string; readonly version: string } => {
  let dir = Path.dirname(Fs.realpathSync(process.argv[1] ?? "."))
  for (let i = 0; i < 5; i++) {
    const file = Path.join(dir, "package.json")
    if (Fs.existsSync(file)) {
      const json = JSON.parse(Fs.readFileSync(file, "utf8")) as { name?: string; version?: string }
      if (json.name === "@effect-nbd/node" && json.version !== undefined)
        return { name: json.name, version: json.version }
    }
    dir = Path.dirname(dir)
  }
  return { name: "@effect-nbd/node", version: "unknown" }
}

/** What `-V` prints: the command, then its package, each with the version (as nbdinfo prints itself and libnbd). */
const printVersion = Effect.sync(() => {
  const m = manifest()
  process.stdout.write(`effect-nbd ${m.version}\n${m.name} ${m.version}\n`)
})

const root = Command.make("effect-nbd").pipe(
  Command.withDescription(`NBD tools on effect-nbd, in the manner of libnbd's nbdinfo, nbdcopy, nbddump,
nbddiscard and nbdzero:

Without a URI, info and dump start an embedded test server (1M). Each
subcommand's page: effect-nbd SUBCOMMAND --help.`),
  Command.withGlobalFlags([CliHelp.version(printVersion)]),
  Command.withSubcommands([Info.command, Copy.command, Dump.command, Discard.discard, Discard.zero]),
  Command.withExamples([
    { command: "effect-nbd info nbd://localhost" },
    { command: "effect-nbd copy nbd://example.com local.img" },
    { command: "effect-nbd dump -- nbdkit -s memory 1G" },
    { command: "effect-nbd discard -y nbd://localhost" }
  ])
)

/** A one-line error on stderr: "effect-nbd: MESSAGE". */
const report = (message: string): void => void process.stderr.write(`effect-nbd: ${message}\n`)

/**
 * Exit status of a run: 0; the status a command chose (`--can` answering false is 2); 1 after a bad command
 * line (effect/cli's presenter already wrote its one line, or the usage when nothing was asked for), or with
 * the failure's one line.
 */
const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return 0
  const failure = Cause.findErrorOption(exit.cause)
  if (Option.isNone(failure)) {
    if (Cause.hasInterruptsOnly(exit.cause)) return 130
    report(`internal error: ${Cause.pretty(exit.cause)}`)
    return 1
  }
  const error = failure.value
  if (CliError.isCliError(error)) {
    if (error._tag !== "ShowHelp") report(`${Argv.show(error.message).replace(/\s+/g, " ")} (EINVAL)`)
    return 1
  }
  const e = error as Common.Failure
  if (e._tag === "ExitStatus") return e.code
  report(Common.describe(e))
  if (e._tag === "CliError" && e.suggestion !== undefined) report(`suggestion: ${e.suggestion}`)
  return e._tag === "CliError" ? (e.exitCode ?? 1) : 1
}

/**
 * What effect/cli needs (NodeServices: file system, path, terminal, stdio, child processes), positional file
 * I/O so a copy from or to a file keeps many requests in flight, and the layout both command lines share.
 */
const environment = (argv: ReadonlyArray<string>) =>
  Layer.mergeAll(
    NodeServices.layer,
    NodePositionalFile.layer,
    CliHelp.layer({ argv, show: Argv.show, report: (message) => report(`${message} (EINVAL)`) })
  )

const prepared = Argv.prepare(process.argv.slice(2))

const main: Effect.Effect<void, unknown> =
  prepared._tag === "Error"
    ? Effect.fail(new Common.CliError({ message: prepared.message }))
    : Command.runWith(root, { version: manifest().version })(prepared.argv).pipe(
        Effect.provide(environment(prepared.argv))
      )

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(exitCodeOf(exit))
})
