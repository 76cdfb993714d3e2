#!/usr/bin/env node
/**
 * The `effect-nbd-server` command: an NBD test server with nbdkit's habits (`-U`, `-p`, `-s`, `-r`, `-P`,
 * `-f`, `--run`, `--exit-with-parent`, `PLUGIN ARG`), its command line on effect/cli (`internal/cli.ts`).
 * See `effect-nbd-server --help`.
 *
 * @since 0.1.0
 */
// First: it sets stdout aside under socket activation before Effect's modules read process.stdout.
import * as Activation from "./internal/activation.js"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { spawn } from "node:child_process"
import type * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as FileBackend from "./FileBackend.js"
import * as Cli from "./internal/cli.js"
import * as TestServer from "./TestServer.js"

const VERSION = "1.0.0"

const fail = (message: string): never => {
  process.stderr.write(`effect-nbd-server: error: ${message}\n`)
  process.exit(1)
}

const activation = Activation.activation
if (activation.ignored !== undefined) process.stderr.write(`effect-nbd-server: ${activation.ignored}\n`)
if (activation.error !== undefined) fail(activation.error)
// As sd_listen_fds(unset_environment = 1) does: what was meant for this process is not passed on.
delete process.env["LISTEN_PID"]
delete process.env["LISTEN_FDS"]
delete process.env["LISTEN_FDNAMES"]

let parsed: Cli.Parsed
try {
  parsed = Cli.parse(process.argv.slice(2), activation.fds)
} catch (error) {
  parsed = fail(error instanceof Cli.CliError ? error.message : String(error))
}

/** Runs CMD through /bin/sh -c and gives its exit status (128 + signal number if it was killed). */
const runCommand = (command: string, env: Record<string, string>): Effect.Effect<number> =>
  Effect.callback<number>((resume) => {
    const child = spawn("/bin/sh", ["-c", command], { stdio: "inherit", env: { ...process.env, ...env } })
    child.on("error", (error) => {
      process.stderr.write(`effect-nbd-server: --run: ${error.message}\n`)
      resume(Effect.succeed(127))
    })
    child.on("exit", (code, signal) => {
      const signals: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }
      resume(Effect.succeed(code ?? 128 + (signal !== null ? (signals[signal] ?? 1) : 1)))
    })
    return Effect.sync(() => {
      if (child.exitCode === null) child.kill("SIGTERM")
    })
  })

const writePidfile = (pidfile: string | undefined) =>
  pidfile === undefined
    ? Effect.void
    : Effect.try({
        try: () => Fs.writeFileSync(pidfile, `${process.pid}\n`),
        catch: (error) =>
          new TestServer.TestServerError({ reason: "Listen", message: `cannot write pidfile: ${String(error)}` })
      })

/** The configuration, with the file plugin's export opened for the scope. */
const configOf = (options: Cli.Options): Effect.Effect<TestServer.Config, TestServer.TestServerError, Scope.Scope> =>
  options.file === undefined
    ? Effect.succeed(options.config)
    : FileBackend.make(options.file, { readOnly: options.config.exports?.[0]?.readOnly ?? false }).pipe(
        Effect.mapError((error) => new TestServer.TestServerError({ reason: "Config", message: error.message })),
        Effect.map((backend) => ({
          ...options.config,
          exports: (options.config.exports ?? [{ name: "" }]).map((e) => ({ ...e, backend }))
        }))
      )

/** `-s`: one client on stdin, which must be a socket (stdin and stdout are the same socket). */
const serveStdin = (options: Cli.Options): Effect.Effect<number, TestServer.TestServerError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const config = yield* configOf(options)
      const isSocket = yield* Effect.try({
        try: () => Fs.fstatSync(0).isSocket(),
        catch: (error) => new TestServer.TestServerError({ reason: "Listen", message: `-s: stdin: ${String(error)}` })
      })
      if (!isSocket)
        return yield* new TestServer.TestServerError({
          reason: "Listen",
          message: "-s: stdin is not a socket (run the server through nbd_connect_command or NodeNbd.connectCommand)"
        })
      yield* writePidfile(options.pidfile)
      const socket = new Net.Socket({ fd: 0, readable: true, writable: true, allowHalfOpen: true })
      yield* TestServer.serveSocket(config, socket)
      return 0
    })
  )

/**
 * Resolves once the process that started the server is gone (the server is reparented). Node has no
 * prctl(PR_SET_PDEATHSIG): poll the parent's pid, as nbdkit does where the platform has no such call.
 */
const parentExited = Effect.suspend(() => {
  const parent = process.ppid
  return Effect.repeat(Effect.sleep("250 millis"), { until: () => process.ppid !== parent })
})

const serve = (options: Cli.Options): Effect.Effect<number, TestServer.TestServerError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* TestServer.make(yield* configOf(options))
      yield* writePidfile(options.pidfile)
      if (daemonChild) yield* tellParent({ _tag: "Listening", uri: server.uri })
      else if (options.printUri) process.stdout.write(`${server.uri}\n`)
      if (options.run === undefined) return yield* Effect.never
      const env: Record<string, string> = {
        uri: server.uri,
        exportname: server.exports[0]!.name
      }
      TestServer.Address.$match(server.address, {
        Unix: ({ path }) => {
          env.unixsocket = path
        },
        Tcp: ({ port }) => {
          env.port = String(port)
        }
      })
      return yield* runCommand(options.run, env)
    })
  )

/** Set in the background copy of the server, which tells its parent once it listens (over IPC). */
const DAEMON_ENV = "EFFECT_NBD_SERVER_BACKGROUND"
const daemonChild = process.env[DAEMON_ENV] === "1" && typeof process.send === "function"

type DaemonMessage =
  { readonly _tag: "Listening"; readonly uri: string } | { readonly _tag: "Failed"; readonly message: string }

const tellParent = (message: DaemonMessage): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    process.send!(message, undefined, {}, () => {
      if (message._tag === "Listening") process.disconnect()
      resume(Effect.void)
    })
  })

/**
 * nbdkit's default: go to the background once the socket listens. Node cannot fork, so the server runs
 * again as a detached child (its own session, stdio closed) that reports over IPC when it listens or fails;
 * this process then prints what the child says (the URI for -p 0 or -U -, or the error) and exits.
 */
const background = (options: Cli.Options): void => {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    detached: true,
    stdio: ["ignore", "ignore", "ignore", "ipc"],
    env: { ...process.env, [DAEMON_ENV]: "1" }
  })
  child.on("message", (message: DaemonMessage) => {
    if (message._tag === "Listening") {
      if (options.printUri) process.stdout.write(`${message.uri}\n`)
      child.unref()
      child.disconnect()
      process.exitCode = 0
    } else {
      process.stderr.write(`effect-nbd-server: error: ${message.message}\n`)
      process.exitCode = 1
    }
  })
  child.on("exit", (code) => {
    if (process.exitCode === undefined) {
      process.stderr.write(`effect-nbd-server: error: the server exited (status ${code}) before it listened\n`)
      process.exitCode = 1
    }
  })
  child.on("error", (error) => fail(`cannot start the server in the background: ${error.message}`))
}

switch (parsed._tag) {
  case "Help":
    process.stdout.write(parsed.text)
    break
  case "Version":
    process.stdout.write(`effect-nbd-server ${VERSION}\n`)
    break
  case "Serve": {
    let code = 0
    const options = parsed.options
    if (!options.foreground && !daemonChild) {
      background(options)
      break
    }
    const served = options.single ? serveStdin(options) : serve(options)
    const program = (options.exitWithParent ? Effect.raceFirst(served, Effect.as(parentExited, 0)) : served).pipe(
      Effect.catch((error) =>
        daemonChild
          ? Effect.as(tellParent({ _tag: "Failed", message: error.message }), 1)
          : Effect.sync(() => {
              process.stderr.write(`effect-nbd-server: error: ${error.message}\n`)
              return 1
            })
      ),
      Effect.tap((status) =>
        Effect.sync(() => {
          code = status
        })
      )
    )
    NodeRuntime.runMain(program, {
      disableErrorReporting: true,
      // Interrupted by SIGINT / SIGTERM: a normal stop.
      teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? code : Exit.hasInterrupts(exit) ? 0 : 1)
    })
    break
  }
}
