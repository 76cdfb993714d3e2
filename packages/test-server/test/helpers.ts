import * as Effect from "effect/Effect"
import { execFile, execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

/** The repository's root. */
export const root = Path.resolve(__dirname, "../../..")

/** The shipped `effect-nbd-server` bin: package.json's, the esbuild bundle `pnpm build` writes. */
export const serverBin = Path.join(
  root,
  "packages/test-server",
  (
    JSON.parse(Fs.readFileSync(Path.join(root, "packages/test-server/package.json"), "utf8")) as {
      bin: Record<string, string>
    }
  ).bin["effect-nbd-server"]!
)

/**
 * Builds this package (and what it references) and bundles its bin, for a `beforeAll`: the CLI tests run
 * the bin from its build.
 */
export const buildServerBin = (): void => {
  execFileSync(
    process.execPath,
    [Path.join(root, "node_modules/typescript/bin/tsc"), "-b", "packages/test-server/tsconfig.src.json"],
    { cwd: root, stdio: "inherit" }
  )
  execFileSync(process.execPath, ["scripts/bundle-bins.mjs", "packages/test-server"], { cwd: root, stdio: "inherit" })
}

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * Debian's python first, so nbdsh finds its `nbd` module, but the Node running the tests before it: the
 * bins that the tools start (`[ effect-nbd-server ... ]`) need that Node, not the system's.
 */
export const toolEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...process.env,
  PATH: `${Path.dirname(process.execPath)}:/usr/bin:/usr/sbin:${process.env.PATH ?? ""}`,
  ...extra
})

/** Runs a real process to completion (never fails: the exit code is in the result). */
export const run = (
  file: string,
  args: ReadonlyArray<string>,
  options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}
): Effect.Effect<RunResult> =>
  Effect.callback<RunResult>((resume) => {
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

/**
 * TLS credentials in `dir`, as nbdkit-tls(1) makes them: `pki/` with a CA and a server certificate for
 * localhost / 127.0.0.1 (certtool, with the man page's templates; ECDSA keys, which take no time to make),
 * and `keys.psk` with a key for "alice" (psktool).
 */
export const makeTlsCredentials = (dir: string) =>
  Effect.gen(function* () {
    const pki = Path.join(dir, "pki")
    Fs.mkdirSync(pki, { recursive: true })
    const file = (name: string) => Path.join(pki, name)
    Fs.writeFileSync(file("ca.info"), "cn = effect-nbd test CA\nca\ncert_signing_key\nexpiration_days = 2\n")
    Fs.writeFileSync(
      file("server.info"),
      [
        "organization = effect-nbd",
        "cn = localhost",
        "tls_www_server",
        "encryption_key",
        "signing_key",
        "dns_name = localhost",
        "ip_address = 127.0.0.1",
        "expiration_days = 2",
        ""
      ].join("\n")
    )
    yield* runOk("certtool", ["--generate-privkey", "--key-type=ecdsa", "--outfile", file("ca-key.pem")])
    yield* runOk("certtool", [
      "--generate-self-signed",
      "--load-privkey",
      file("ca-key.pem"),
      "--template",
      file("ca.info"),
      "--outfile",
      file("ca-cert.pem")
    ])
    yield* runOk("certtool", ["--generate-privkey", "--key-type=ecdsa", "--outfile", file("server-key.pem")])
    yield* runOk("certtool", [
      "--generate-certificate",
      "--load-ca-certificate",
      file("ca-cert.pem"),
      "--load-ca-privkey",
      file("ca-key.pem"),
      "--load-privkey",
      file("server-key.pem"),
      "--template",
      file("server.info"),
      "--outfile",
      file("server-cert.pem")
    ])
    const psk = Path.join(dir, "keys.psk")
    yield* runOk("psktool", ["-u", "alice", "-p", psk])
    return { pki, psk, ca: Fs.readFileSync(file("ca-cert.pem")) }
  })
