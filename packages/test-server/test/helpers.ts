import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Debian's python first, so nbdsh finds its `nbd` module. */
export const toolEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...process.env,
  PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ""}`,
  ...extra
})

/** Runs a real process to completion (never fails: the exit code is in the result). */
export const run = (
  file: string,
  args: ReadonlyArray<string>,
  options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}
): Effect.Effect<RunResult> =>
  Effect.async<RunResult>((resume) => {
    const child = execFile(
      file,
      args,
      { env: options.env ?? toolEnv(), timeout: options.timeout ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code =
          error === null
            ? 0
            : typeof (error as { code?: unknown }).code === "number"
              ? (error as { code: number }).code
              : -1
        resume(Effect.succeed({ code, stdout: String(stdout), stderr: String(stderr) }))
      }
    )
    return Effect.sync(() => {
      child.kill()
    })
  })

/** Runs a tool and fails the effect unless it exits 0. */
export const runOk = (file: string, args: ReadonlyArray<string>, options?: { env?: NodeJS.ProcessEnv }) =>
  Effect.flatMap(run(file, args, options), (result) =>
    result.code === 0
      ? Effect.succeed(result)
      : Effect.die(new Error(`${file} ${args.join(" ")} exited ${result.code}: ${result.stderr}${result.stdout}`))
  )

/** nbdsh with a python snippet. */
export const nbdsh = (uri: string, ...commands: ReadonlyArray<string>) =>
  run("nbdsh", ["-u", uri, ...commands.flatMap((c) => ["-c", c])])
