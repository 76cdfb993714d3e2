import * as Effect from "effect/Effect"
import { execFileSync, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

/** The repository's root. */
export const root = Path.resolve(__dirname, "../../../..")

/** packages/node/package.json: the version and the bins it ships. */
export const manifest = JSON.parse(Fs.readFileSync(Path.join(root, "packages/node/package.json"), "utf8")) as {
  readonly version: string
  readonly bin: Record<string, string>
}

/** The shipped bin: package.json's, the esbuild bundle `pnpm build` writes. */
export const bin = Path.join(root, "packages/node", manifest.bin["effect-nbd"]!)

/**
 * Builds the CLI (incrementally) and bundles it, for a `beforeAll`: the tests run the built CLI as a real
 * process.
 */
export const buildCli = (): void => {
  execFileSync(
    process.execPath,
    [Path.join(root, "node_modules/typescript/bin/tsc"), "-b", "packages/node/tsconfig.src.json"],
    { cwd: root, stdio: "inherit" }
  )
  execFileSync(process.execPath, ["scripts/bundle-bins.mjs", "packages/node"], { cwd: root, stdio: "inherit" })
}

/** What a finished process said. */
export interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs a command to completion (never fails: the exit status is in the result). `stdin` (a path) becomes
 * its standard input, `fd3` (a path, opened for writing) its file descriptor 3.
 */
export const proc = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly stdin?: string; readonly fd3?: string; readonly env?: Record<string, string> } = {}
): Effect.Effect<Result> =>
  Effect.callback<Result>((resume) => {
    const input = options.stdin === undefined ? "ignore" : Fs.openSync(options.stdin, "r")
    const fd = options.fd3 === undefined ? undefined : Fs.openSync(options.fd3, "w")
    const child = spawn(command, [...args], {
      stdio: fd === undefined ? [input, "pipe", "pipe"] : [input, "pipe", "pipe", fd],
      env: { ...process.env, ...options.env }
    })
    if (typeof input === "number") Fs.closeSync(input)
    if (fd !== undefined) Fs.closeSync(fd)
    let out = ""
    let err = ""
    child.stdout!.on("data", (b: Buffer) => (out += b.toString()))
    child.stderr!.on("data", (b: Buffer) => (err += b.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code: code ?? -1, stdout: out, stderr: err })))
  })
