#!/usr/bin/env node
/**
 * The `effect-nbd` command: `info`, `copy` and `dump`, in the manner of nbdinfo, nbdcopy and nbddump.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
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
import * as Common from "./internal/cli/common.js"
import * as Copy from "./internal/cli/copy.js"
import * as Dump from "./internal/cli/dump.js"
import * as Info from "./internal/cli/info.js"

const root = Command.make("effect-nbd").pipe(
  Command.withDescription("NBD tools on effect-nbd: info, copy, dump"),
  Command.withSubcommands([Info.command, Copy.command, Dump.command])
)

const cli = Command.run(root, { name: "effect-nbd", version: "0.1.0" })

/** `--map` takes an optional value, as in nbdinfo: alone it means `--map=base:allocation`. */
const argv = process.argv.map((a, i) => (i >= 2 && a === "--map" ? "--map=base:allocation" : a))

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
  // @effect/cli has already printed what was wrong with the command line.
  if (ValidationError.isValidationError(error)) return 1
  const e = error as Common.Failure
  if (e._tag === "ExitStatus") return e.code
  process.stderr.write(`effect-nbd: ${Common.describe(e)}\n`)
  return e._tag === "CliError" ? (e.exitCode ?? 1) : 1
}

/** What @effect/cli needs, without the rest of NodeContext (workers, subprocesses), which only slows start-up. */
const environment = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)

NodeRuntime.runMain(cli(argv).pipe(Effect.provide(environment)), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(exitCodeOf(exit))
})
