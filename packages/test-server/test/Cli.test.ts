import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { run, runOk, toolEnv } from "./helpers.js"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "../../..")
const bin = Path.join(root, "packages/test-server/dist/bin.js")

const cli = (args: ReadonlyArray<string>) => run("node", [bin, ...args], { env: toolEnv() })

describe("effect-nbd-server CLI", () => {
  beforeAll(() => {
    // The CLI runs from its build: build this package (and what it references) first.
    execFileSync("npx", ["tsc", "-b", "packages/test-server/tsconfig.src.json"], { cwd: root, stdio: "inherit" })
  }, 120_000)

  it.live("--run 'nbdinfo --json \"$uri\"' works and exits with the command's status", () =>
    Effect.gen(function* () {
      const r = yield* cli(["-U", "-", "--export", "disk=64M:my disk", "--run", 'nbdinfo --json "$uri"'])
      expect(r.code, r.stderr).toBe(0)
      const info = JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }
      expect(info.exports[0]!["export-name"]).toBe("disk")
      expect(info.exports[0]!["export-size"]).toBe(64 << 20)
      expect(info.exports[0]!.description).toBe("my disk")
      const status = yield* cli(["-U", "-", "--run", 'test -S "$unixsocket" && exit 42'])
      expect(status.code).toBe(42)
    })
  )

  it.live("TCP with -p 0 sets $port, -r serves read-only, and -P writes the pid file", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-cli-"))
      try {
        const pidfile = Path.join(dir, "server.pid")
        const r = yield* cli([
          "-p",
          "0",
          "-r",
          "-f",
          "-P",
          pidfile,
          "--run",
          `echo "port=$port uri=$uri pid=$(cat ${pidfile})"; nbdinfo --json "$uri"`
        ])
        expect(r.code, r.stderr).toBe(0)
        const [first, ...rest] = r.stdout.split("\n")
        const m = /^port=(\d+) uri=nbd:\/\/127\.0\.0\.1:(\d+)\/ pid=(\d+)$/.exec(first!)
        expect(m, first).not.toBeNull()
        expect(m![1]).toBe(m![2])
        expect(Number(m![3])).toBeGreaterThan(0)
        const info = JSON.parse(rest.join("\n")) as { exports: Array<Record<string, unknown>> }
        expect(info.exports[0]!.is_read_only).toBe(true)
        expect(info.exports[0]!["export-size"]).toBe(1 << 30)
      } finally {
        Fs.rmSync(dir, { recursive: true, force: true })
      }
    })
  )

  it.live("oldstyle (-o) and non-fixed newstyle (--mask-handshake 0)", () =>
    Effect.gen(function* () {
      const old = yield* cli(["-U", "-", "-o", "--run", 'nbdinfo --json "$uri"'])
      expect(old.code, old.stderr).toBe(0)
      expect((JSON.parse(old.stdout) as { protocol: string }).protocol).toBe("oldstyle")
      const ns = yield* cli(["-U", "-", "--mask-handshake", "0", "--run", 'nbdinfo --json "$uri"'])
      expect(ns.code, ns.stderr).toBe(0)
      expect((JSON.parse(ns.stdout) as { protocol: string }).protocol).toBe("newstyle")
    })
  )

  it.live("serves until SIGTERM without --run", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-cli-"))
      const socket = Path.join(dir, "s.sock")
      const pidfile = Path.join(dir, "pid")
      const child = spawn("node", [bin, "-U", socket, "-P", pidfile], { stdio: "ignore" })
      try {
        for (let i = 0; i < 100 && !Fs.existsSync(pidfile); i++) yield* Effect.sleep("50 millis")
        expect(Fs.readFileSync(pidfile, "utf8").trim()).toBe(String(child.pid))
        const info = yield* runOk("nbdinfo", ["--size", `nbd+unix:///?socket=${socket}`])
        expect(info.stdout.trim()).toBe(String(1 << 30))
        const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
        child.kill("SIGTERM")
        expect(yield* Effect.promise(() => exited)).toBe(0)
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL")
        Fs.rmSync(dir, { recursive: true, force: true })
      }
    })
  )

  it.live(
    "bad input gives a one-line error and exit code 1",
    () =>
      Effect.gen(function* () {
        for (const args of [["--export", "x=12Q"], ["-p", "70000"], ["--bogus"], ["--export", "nosize"], ["-U"]]) {
          const r = yield* cli(args)
          expect(r.code, args.join(" ")).toBe(1)
          expect(r.stderr.trim().split("\n")).toHaveLength(1)
          expect(r.stderr).toMatch(/^effect-nbd-server: error: /)
        }
        const help = yield* cli(["--help"])
        expect(help.code).toBe(0)
        expect(help.stdout).toContain("--export NAME=SIZE[:DESCRIPTION]")
      }),
    60_000
  )
})
