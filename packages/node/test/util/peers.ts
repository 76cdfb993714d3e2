import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

/** A fresh private directory for sockets and files, removed with the scope. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-test-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

export interface Peer {
  readonly socket: string
  readonly uri: string
  readonly pid: number
  /** Kills the server process now (SIGKILL), as a crash would. */
  readonly kill: Effect.Effect<void>
}

const waitForFile = (path: string, what: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (let i = 0; i < 200; i++) {
      if (Fs.existsSync(path) && Fs.statSync(path).size > 0) return
      yield* Effect.sleep("25 millis")
    }
    return yield* Effect.die(new Error(`${what} did not start within 5 seconds`))
  })

/**
 * Starts a real server process listening on a Unix socket in a private directory; it is killed when the
 * scope closes. `argv` gets the socket path through `{socket}` and the pid file through `{pidfile}`.
 */
export const startServer = (
  command: string,
  argv: ReadonlyArray<string>,
  options: { readonly exportName?: string; readonly readyFile?: "pidfile" | "socket" } = {}
): Effect.Effect<Peer, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const socket = Path.join(dir, "nbd.sock")
    const pidfile = Path.join(dir, "server.pid")
    const args = argv.map((a) => a.replaceAll("{socket}", socket).replaceAll("{pidfile}", pidfile).replaceAll("{dir}", dir))
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(command, args, { stdio: ["ignore", "ignore", "inherit"] })),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.once("exit", () => resume(Effect.void))
          child.kill("SIGTERM")
        })
    )
    yield* waitForFile(options.readyFile === "socket" ? socket : pidfile, command)
    const name = options.exportName ?? ""
    return {
      socket,
      pid: child.pid!,
      uri: `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
      kill: Effect.sync(() => {
        child.kill("SIGKILL")
      })
    }
  })

/** nbdkit in the foreground on a Unix socket: `nbdkit(["memory", "1M"])`. */
export const nbdkit = (args: ReadonlyArray<string>, options?: { readonly exportName?: string }) =>
  startServer("nbdkit", ["-f", "-U", "{socket}", "-P", "{pidfile}", ...args], options)

/** Writes files into a fresh directory and returns its path. */
export const directoryWith = (files: Record<string, Uint8Array | number>): Effect.Effect<string, never, Scope.Scope> =>
  Effect.map(tempDir, (dir) => {
    for (const [name, content] of Object.entries(files)) {
      Fs.writeFileSync(Path.join(dir, name), typeof content === "number" ? new Uint8Array(content) : content)
    }
    return dir
  })
