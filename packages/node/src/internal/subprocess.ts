/**
 * Child processes for the command and socket-activation transports: spawned for a scope, reaped when it
 * closes (waited for, then SIGTERM, then SIGKILL), so no child outlives its handle.
 */
import type * as Socket from "effect/socket/Socket"
import * as Effect from "effect/Effect"
import * as NodeSocket from "./socket.js"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

/** How long a child gets to exit on its own, and after SIGTERM, before the next step. */
const GRACE_MILLIS = 2000

const openError = NodeSocket.openError

const exited = (child: ChildProcess.ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

/** Waits for the child to exit, at most `millis`; true when it has. */
const waitExit = (child: ChildProcess.ChildProcess, millis: number): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    if (exited(child)) return resume(Effect.succeed(true))
    const onExit = () => {
      clearTimeout(timer)
      resume(Effect.succeed(true))
    }
    const timer = setTimeout(() => {
      child.off("exit", onExit)
      resume(Effect.succeed(exited(child)))
    }, millis)
    child.once("exit", onExit)
    return Effect.sync(() => {
      clearTimeout(timer)
      child.off("exit", onExit)
    })
  })

/**
 * Reaps a child: `"wait"` lets it exit on its own first (a `connect_command` server exits at EOF), `"term"`
 * sends SIGTERM at once (socket activation); either way SIGTERM and then SIGKILL follow if it lingers.
 */
export const reap = (child: ChildProcess.ChildProcess, how: "wait" | "term"): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (how === "wait" && (yield* waitExit(child, GRACE_MILLIS))) return
    if (exited(child)) return
    child.kill("SIGTERM")
    if (yield* waitExit(child, GRACE_MILLIS)) return
    child.kill("SIGKILL")
    yield* waitExit(child, GRACE_MILLIS)
  }).pipe(Effect.uninterruptible)

/**
 * Spawns `argv`, succeeding once the process runs (failing with the spawn error, e.g. ENOENT, otherwise).
 * `before` runs in the scope first; the child's finalizer runs `beforeReap` (closing our end of its socket)
 * and then reaps it.
 */
export const spawn = (
  argv: ReadonlyArray<string>,
  options: ChildProcess.SpawnOptions,
  how: "wait" | "term",
  beforeReap: Effect.Effect<void>
): Effect.Effect<ChildProcess.ChildProcess, Socket.SocketError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<ChildProcess.ChildProcess, Socket.SocketError>((resume) => {
      const [command, ...args] = argv
      let child: ChildProcess.ChildProcess
      try {
        child = ChildProcess.spawn(command!, args, options)
      } catch (cause) {
        return resume(Effect.fail(openError(cause)))
      }
      // Keep a listener: a later error (a failed kill) must not become an uncaught exception.
      child.on("error", () => {})
      const onSpawn = () => {
        child.off("error", onError)
        resume(Effect.succeed(child))
      }
      const onError = (cause: Error) => {
        child.off("spawn", onSpawn)
        resume(Effect.fail(openError(cause)))
      }
      child.once("spawn", onSpawn)
      child.once("error", onError)
    }),
    (child) => Effect.andThen(beforeReap, reap(child, how))
  )

/** A fresh private (0700) directory for the scope, removed when it closes. */
export const tempDir: Effect.Effect<string, Socket.SocketError, Scope.Scope> = Effect.acquireRelease(
  Effect.try({
    try: () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-")),
    catch: openError
  }),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)
