import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Cli from "../src/internal/cli.js"
import { buildServerBin, makeTlsCredentials, run, runOk, serverBin as bin, toolEnv } from "./helpers.js"

/** The Node that runs the tests: the bins need Node 22.19 or later, which the PATH's node may not be. */
const node = process.execPath

const cli = (args: ReadonlyArray<string>) => run(node, [bin, ...args], { env: toolEnv() })

describe("effect-nbd-server CLI", () => {
  beforeAll(buildServerBin, 120_000)

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

  it.live("serves in the foreground (-f) until SIGTERM without --run", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-cli-"))
      const socket = Path.join(dir, "s.sock")
      const pidfile = Path.join(dir, "pid")
      const child = spawn(node, [bin, "-f", "-U", socket, "-P", pidfile], { stdio: "ignore" })
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

  it.live("--fault and --delay per export reach libnbd's client", () =>
    Effect.gen(function* () {
      const check = [
        "import errno, os, time",
        "bad = nbd.NBD()",
        "bad.connect_uri('nbd+unix:///bad?socket=' + os.environ['unixsocket'])",
        "try:\n  bad.pread(512, 0)\n  raise SystemExit(3)\nexcept nbd.Error as e:\n  assert e.errnum == errno.EIO, e",
        "bad.flush()",
        "slow = nbd.NBD()",
        "slow.connect_uri('nbd+unix:///slow?socket=' + os.environ['unixsocket'])",
        "t = time.monotonic()\nslow.pread(512, 0)\nassert time.monotonic() - t >= 0.19, time.monotonic() - t",
        "t = time.monotonic()\nbad.pwrite(b'x', 0)\nassert time.monotonic() - t < 0.15"
      ].join("\n")
      const r = yield* run(
        node,
        [
          bin,
          "-U",
          "-",
          "--export",
          "bad=1M",
          "--fault",
          "read:EIO",
          "--export",
          "slow=1M",
          "--delay",
          "read:200ms",
          "--run",
          'nbdsh -c "$CHECK"'
        ],
        { env: toolEnv({ CHECK: check }) }
      )
      expect(r.code, r.stderr + r.stdout).toBe(0)
      const help = yield* cli(["--help"])
      expect(help.stdout).toContain("--fault COMMAND:ERRNO[:RATE]")
      expect(help.stdout).toContain("--delay COMMAND:TIME[:RATE]")
    })
  )

  it.live("--tls=require with --tls-psk or --tls-certificates serves libnbd over TLS only", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-cli-tls-"))),
        (d) => Effect.sync(() => Fs.rmSync(d, { recursive: true, force: true }))
      )
      const { pki, psk } = yield* makeTlsCredentials(dir)
      const withPsk = yield* cli([
        "-U",
        "-",
        "--tls=require",
        "--tls-psk",
        psk,
        "--run",
        `nbdinfo --json "nbds+unix://alice@/?socket=$unixsocket&tls-psk-file=${psk}" && ! nbdinfo --size "$uri"`
      ])
      expect(withPsk.code, withPsk.stderr).toBe(0)
      expect((JSON.parse(withPsk.stdout) as { TLS: boolean }).TLS).toBe(true)
      const withCerts = yield* cli([
        "-p",
        "0",
        "--tls",
        "on",
        "--tls-certificates",
        pki,
        "--run",
        `nbdinfo --size "nbds://127.0.0.1:$port/?tls-certificates=${pki}" && nbdinfo --size "$uri"`
      ])
      expect(withCerts.code, withCerts.stderr).toBe(0)
      expect(withCerts.stdout.trim().split("\n")).toEqual([String(1 << 30), String(1 << 30)])
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
        expect(help.stdout).toContain("--tls=off|on|require")
      }),
    60_000
  )

  it.live("the help page carries no colour through a pipe, with NO_COLOR or with FORCE_COLOR, as nbdkit's", () =>
    Effect.gen(function* () {
      for (const flag of ["--help", "-h"])
        for (const env of [{}, { NO_COLOR: "1" }, { FORCE_COLOR: "1", TERM: "xterm-256color" }]) {
          const r = yield* run(node, [bin, flag], { env: toolEnv(env) })
          expect([r.code, r.stderr], `${flag} ${JSON.stringify(env)}`).toEqual([0, ""])
          expect(r.stdout).not.toMatch(/\x1b/)
          expect(r.stdout).toContain("effect-nbd-server [-U PATH|--unix=PATH]")
          expect(r.stdout).toContain("Examples:")
        }
    })
  )
})

describe("effect-nbd-server argv parsing", () => {
  const config = (args: ReadonlyArray<string>) => {
    const parsed = Cli.parse(args)
    if (parsed._tag !== "Serve") throw new Error(`not Serve: ${parsed._tag}`)
    return parsed.options.config
  }

  it("--fault and --delay before any --export apply to every export, after one to that export", () => {
    const c = config([
      "--fault",
      "flush:EIO",
      "--delay",
      "zero:2s:50%",
      "--export",
      "a=1M",
      "--fault",
      "read:eio:0.5",
      "--delay",
      "read:200",
      "--export",
      "b=1M",
      "--delay=write:150ms:0.25"
    ])
    expect(c.faults).toEqual([
      { command: "flush", errno: "EIO" },
      { command: "write-zeroes", delayMs: 2000, rate: 0.5 }
    ])
    expect(c.exports?.map((e) => [e.name, e.faults])).toEqual([
      [
        "a",
        [
          { command: "read", errno: "EIO", rate: 0.5 },
          { command: "read", delayMs: 200 }
        ]
      ],
      ["b", [{ command: "write", delayMs: 150, rate: 0.25 }]]
    ])
    expect(config([]).faults).toBeUndefined()
    expect(config(["--fault", "block-status:ENOTSUP"]).faults).toEqual([{ command: "block-status", errno: "ENOTSUP" }])
    expect(config(["--tls=require", "--tls-psk", "keys.psk", "--tls-certificates", "pki"])).toMatchObject({
      tls: "require",
      tlsPsk: "keys.psk",
      tlsCertificates: "pki"
    })
    expect(config(["--tls=off"]).tls).toBe("off")
  })

  it("bad fault specifications are one-line errors", () => {
    for (const [args, message] of [
      [["--fault", "read"], /COMMAND:ERRNO/],
      [["--fault", "read:EFOO"], /unknown errno "EFOO"/],
      [["--fault", "nope:EIO"], /unknown command "nope"/],
      [["--fault", "read:EIO:1.5"], /invalid rate "1.5"/],
      [["--fault", "read:EIO:0.5:x"], /COMMAND:ERRNO/],
      [["--delay", "read"], /COMMAND:TIME/],
      [["--delay", "read:soon"], /invalid delay "soon"/],
      [["--delay", "read:-5"], /invalid delay/],
      [["--delay", "read:10:200%"], /invalid rate/],
      [["--tls=require"], /needs --tls-certificates DIR or --tls-psk FILE/],
      [["--tls=maybe", "--tls-psk", "f"], /expected off, on or require/],
      [["--tls=on", "--tls-certificates", "d", "-o"], /fixed newstyle/]
    ] as const) {
      expect(() => Cli.parse(args), args.join(" ")).toThrow(message)
    }
  })
})
