#!/usr/bin/env node
/**
 * The `effect-nbd` command: `info`, `copy`, `dump`, `discard` and `zero`, in the manner of nbdinfo, nbdcopy,
 * nbddump, nbddiscard and nbdzero.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Console from "effect/Console"
import * as Argv from "./internal/cli/argv.js"
import * as NodePositionalFile from "./NodePositionalFile.js"
import * as Common from "./internal/cli/common.js"
import * as Copy from "./internal/cli/copy.js"
import * as Discard from "./internal/cli/discard.js"
import * as Dump from "./internal/cli/dump.js"
import * as Help from "./internal/cli/help.js"
import * as Info from "./internal/cli/info.js"

const root = Command.make("effect-nbd").pipe(
  Command.withDescription("NBD tools on effect-nbd: info, copy, dump, discard, zero"),
  Command.withSubcommands([Info.command, Copy.command, Dump.command, Discard.discard, Discard.zero])
)

const cli = Command.run(root, { name: "effect-nbd", version: "0.1.0" })

/** @effect/cli's own account of a bad command line, as one plain line: "effect-nbd: ... (EINVAL)". */
const validationMessage = (error: ValidationError.ValidationError): string => {
  const text = HelpDoc.toAnsiText(error.error)
  // eslint-disable-next-line no-control-regex
  const plain = text
    .replace(/\x1b\[[0-9;]*m/g, "")
    .replace(/\s+/g, " ")
    .trim()
  return `${Argv.show(plain) || "invalid command line"} (EINVAL)`
}

/** Exit status of a run: 0, the failure's own status, or 1 with its one-line message on stderr. */
const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return 0
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) {
    if (Cause.isInterruptedOnly(exit.cause)) return 130
    process.stderr.write(`effect-nbd: internal error: ${Cause.pretty(exit.cause)}\n`)
    return 1
  }
  const error = failure.value
  if (ValidationError.isValidationError(error)) {
    process.stderr.write(`effect-nbd: ${validationMessage(error)}\n`)
    return 1
  }
  const e = error as Common.Failure
  if (e._tag === "ExitStatus") return e.code
  process.stderr.write(`effect-nbd: ${Common.describe(e)}\n`)
  if (e._tag === "CliError" && e.suggestion !== undefined)
    process.stderr.write(`effect-nbd: suggestion: ${e.suggestion}\n`)
  return e._tag === "CliError" ? (e.exitCode ?? 1) : 1
}

/**
 * What @effect/cli needs, without the rest of NodeContext (workers, subprocesses), which only slows start-up;
 * and positional file I/O, so a copy from or to a file keeps many requests in flight.
 */
const environment = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer, NodePositionalFile.layer)

/** @effect/cli prints its parse errors, in colour and over several lines: `exitCodeOf` reports them instead. */
const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.console, (console) =>
    Effect.withConsole(effect, { ...console, error: () => Effect.void } as Console.Console)
  )

const prepared = Argv.prepare(process.argv.slice(2))

const main: Effect.Effect<void, unknown> =
  prepared._tag === "Help"
    ? Effect.sync(() => void process.stdout.write(Help.text(prepared.subcommand)))
    : prepared._tag === "Usage"
      ? Effect.zipRight(
          Effect.sync(() => void process.stderr.write(Help.text(undefined))),
          Effect.fail(new Common.ExitStatus({ code: 1 }))
        )
      : prepared._tag === "Version"
        ? Effect.sync(() => void process.stdout.write(Help.version()))
        : prepared._tag === "Error"
          ? Effect.fail(new Common.CliError({ message: prepared.message }))
          : quiet(cli([...process.argv.slice(0, 2), ...prepared.argv])).pipe(Effect.provide(environment))

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(exitCodeOf(exit))
})
