#!/usr/bin/env node
/**
 * The `effect-nbd-server` command: an NBD test server with nbdkit's habits (`-U`, `-p`, `-r`, `-P`, `-f`,
 * `--run`). See `effect-nbd-server --help`.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Cli from "./internal/cli.js"
import * as TestServer from "./TestServer.js"

const VERSION = "0.1.0"

const fail = (message: string): never => {
  process.stderr.write(`effect-nbd-server: error: ${message}\n`)
  process.exit(1)
}

let parsed: Cli.Parsed
try {
  parsed = Cli.parse(process.argv.slice(2))
} catch (error) {
  parsed = fail(error instanceof Cli.CliError ? error.message : String(error))
}

/** Runs CMD through /bin/sh -c and gives its exit status (128 + signal number if it was killed). */
const runCommand = (command: string, env: Record<string, string>): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
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

const serve = (options: Cli.Options): Effect.Effect<number, TestServer.TestServerError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* TestServer.make(options.config)
      if (options.pidfile !== undefined) {
        const pidfile = options.pidfile
        yield* Effect.try({
          try: () => Fs.writeFileSync(pidfile, `${process.pid}\n`),
          catch: (error) =>
            new TestServer.TestServerError({ reason: "Listen", message: `cannot write pidfile: ${String(error)}` })
        })
      }
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

switch (parsed._tag) {
  case "Help":
    process.stdout.write(Cli.usage)
    break
  case "Version":
    process.stdout.write(`effect-nbd-server ${VERSION}\n`)
    break
  case "Serve": {
    let code = 0
    const program = serve(parsed.options).pipe(
      Effect.catchAll((error) =>
        Effect.sync(() => {
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
      teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? code : Exit.isInterrupted(exit) ? 0 : 1)
    })
    break
  }
}
