import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Cli from "../src/internal/cli.js"
import { buildServerBin, nbdsh, root, run, runOk, serverBin as bin, toolEnv } from "./helpers.js"

/** The Node that runs the tests: the bins need Node 22.19 or later, which the PATH's node may not be. */
const node = process.execPath

const cli = (args: ReadonlyArray<string>) => run(node, [bin, ...args], { env: toolEnv() })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-plugins-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const sha256 = (file: string): string => Crypto.createHash("sha256").update(Fs.readFileSync(file)).digest("hex")

/** nbdsh with libnbd's connect_command: the server on a socketpair as its stdin and stdout. */
const connectCommand = (argv: ReadonlyArray<string>, script: string) =>
  run("nbdsh", ["-c", `h.connect_command(${JSON.stringify([node, bin, ...argv])})`, "-c", script])

/**
 * Socket activation as systemd and libnbd do it, without either: python binds and listens on `path`, moves
 * the socket to fd 3 and execs `argv` with LISTEN_PID (its own pid, through the shell) and LISTEN_FDS=1.
 * Python execs into the server, so nothing else accepts on the socket.
 */
const ACTIVATE = [
  "import os, socket, sys",
  "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
  "s.bind(sys.argv[1])",
  "s.listen(16)",
  "if s.fileno() != 3: os.dup2(s.fileno(), 3)",
  "os.set_inheritable(3, True)",
  `os.execvp("sh", ["sh", "-c", 'LISTEN_PID=$$; LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$@"', "sh"] + sys.argv[2:])`
].join("\n")

const activate = (path: string, argv: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => spawn("python3", ["-c", ACTIVATE, path, ...argv], { stdio: ["ignore", "pipe", "inherit"] })),
    (child) => Effect.sync(() => child.kill("SIGKILL"))
  ).pipe(
    // Clients may connect once the socket exists: it listens from the moment python binds it.
    Effect.tap(() => Effect.repeat(Effect.sleep("20 millis"), { until: () => Fs.existsSync(path), times: 500 }))
  )

/** The first line a child writes on stdout. */
const firstLine = (stream: NodeJS.ReadableStream) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve) => {
        let out = ""
        stream.on("data", (d: Buffer) => {
          out += d.toString()
          if (out.includes("\n")) resolve(out.split("\n")[0]!)
        })
      })
  )

describe("effect-nbd-server: -s, plugins and the file backend", () => {
  beforeAll(buildServerBin, 120_000)

  it.live("-s serves libnbd's nbd_connect_command, with nbdkit's plugin syntax", () =>
    Effect.gen(function* () {
      const memory = yield* connectCommand(
        ["-s", "memory", "1G"],
        [
          "assert h.get_size() == 1 << 30, h.get_size()",
          "h.pwrite(b'abc', 4096)",
          "assert h.pread(3, 4096) == b'abc'",
          "assert h.pread(3, 0) == bytearray(3)",
          "print('ok')"
        ].join("\n")
      )
      expect(memory.code, memory.stderr).toBe(0)
      expect(memory.stdout.trim()).toBe("ok")
      const pattern = yield* connectCommand(
        ["-s", "pattern", "size=1M"],
        "assert h.is_read_only()\nprint(h.get_size(), h.pread(8, 65536).hex())"
      )
      expect(pattern.code, pattern.stderr).toBe(0)
      expect(pattern.stdout.trim()).toBe(`${1 << 20} 0000000000010000`)
      const nul = yield* connectCommand(["-s", "null", "1G"], "print(h.get_size(), h.pread(4, 512).hex())")
      expect(nul.code, nul.stderr).toBe(0)
      expect(nul.stdout.trim()).toBe(`${1 << 30} 00000000`)
    })
  )

  it.live("-s refuses a stdin that is not a socket, in one line", () =>
    Effect.gen(function* () {
      // Not a pipe from Node either: libuv's pipes are socketpairs.
      const r = yield* run("/bin/sh", ["-c", `${node} ${bin} -s memory 1M < /dev/null`])
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/^effect-nbd-server: error: -s: stdin is not a socket/)
    })
  )

  it.live("plugin syntax with --run, as nbdkit takes it, and its errors", () =>
    Effect.gen(function* () {
      for (const [args, size] of [
        [["memory", "64M"], 64 << 20],
        [["null", "size=1G"], 1 << 30],
        [["pattern", "1G"], 1 << 30]
      ] as const) {
        const r = yield* cli(["-U", "-", ...args, "--run", 'nbdinfo --size "$uri"'])
        expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0)
        expect(r.stdout.trim()).toBe(String(size))
      }
      for (const [args, message] of [
        [["bogus", "1G"], /unknown plugin "bogus"/],
        [["memory"], /memory: needs a size/],
        [["memory", "1G", "2G"], /size is given twice/],
        [["memory", "color=red"], /unknown parameter "color"/],
        [["file"], /file: needs a path/],
        [["--export", "a=1M", "memory", "1G"], /--export cannot be used together/],
        [["size=1G"], /unexpected argument "size=1G"/],
        [["-s", "-U", "/tmp/x", "memory", "1G"], /-s serves stdin/]
      ] as const) {
        expect(() => Cli.parse(args), args.join(" ")).toThrow(message)
      }
    })
  )

  it.live("a plugin answers to any export name and NBD_OPT_LIST lists it as nbdkit does", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = Path.join(dir, "disk.img")
      Fs.writeFileSync(file, Buffer.alloc(1 << 20, 0x55))
      // nbdinfo on a named export, then --list through another name; the same script against each server.
      const script =
        'nbdinfo --json "nbd+unix:///foo?socket=$unixsocket" && nbdinfo --list --json "nbd+unix:///bar?socket=$unixsocket"'
      type Info = { protocol: string; exports: Array<Record<string, unknown>> }
      /** What the two JSON documents say about the exports' names and contents (capabilities aside). */
      const facts = (stdout: string) =>
        stdout.split(/\n(?=\{)/).map((doc) => {
          const info = JSON.parse(doc) as Info
          return {
            protocol: info.protocol,
            exports: info.exports.map((e) => ({
              name: e["export-name"],
              size: e["export-size"],
              readOnly: e["is_read_only"],
              content: e["content"],
              contexts: e["contexts"],
              uri: String(e["uri"]).replace(/socket=.*/, "")
            }))
          }
        })
      for (const plugin of [
        ["memory", "1M"],
        ["null", "1M"],
        ["pattern", "1M"],
        ["file", file]
      ]) {
        const theirs = yield* run("nbdkit", ["-U", "-", ...plugin, "--run", script])
        expect(theirs.code, theirs.stderr).toBe(0)
        const ours = yield* cli(["-U", "-", ...plugin, "--run", script])
        expect(ours.code, `${plugin.join(" ")}: ${ours.stderr}`).toBe(0)
        const [named, list] = facts(ours.stdout)
        expect(named!.exports.map((e) => e.name)).toEqual(["foo"])
        expect(list!.exports.map((e) => e.name)).toEqual([""])
        expect(facts(ours.stdout), plugin.join(" ")).toEqual(facts(theirs.stdout))
      }
      // One export behind every name: what is written through one name reads back through another, and
      // NBD_INFO_NAME tells the name asked for (nbdkit's canonical name).
      const shared = yield* cli([
        "-U",
        "-",
        "memory",
        "1M",
        "--run",
        [
          `nbdsh -u "nbd+unix:///a?socket=$unixsocket" -c "h.pwrite(b'named', 4096)"`,
          `nbdsh -c "h.set_full_info(True)" -c "h.set_export_name('b')" -c "h.connect_unix('$unixsocket')" -c "print(h.get_canonical_export_name(), h.pread(5, 4096).decode())"`
        ].join(" && ")
      ])
      expect(shared.code, shared.stderr).toBe(0)
      expect(shared.stdout.trim()).toBe("b named")
      // --export keeps its names exact: an unknown name is refused.
      const exact = yield* cli(["-U", "-", "--export", "a=1M", "--run", 'nbdinfo "nbd+unix:///foo?socket=$unixsocket"'])
      expect(exact.code).not.toBe(0)
      expect(exact.stderr).toMatch(/export: foo/)
    })
  )

  it.live("-p 0 prints the URI of the port it chose", () =>
    Effect.gen(function* () {
      const child = spawn(node, [bin, "-p", "0", "-f", "memory", "1M"], { stdio: ["ignore", "pipe", "inherit"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      const line = yield* Effect.promise(
        () =>
          new Promise<string>((resolve) => {
            let out = ""
            child.stdout.on("data", (d: Buffer) => {
              out += d.toString()
              if (out.includes("\n")) resolve(out.split("\n")[0]!)
            })
          })
      )
      expect(line).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/$/)
      const info = yield* runOk("nbdinfo", ["--size", line])
      expect(info.stdout.trim()).toBe(String(1 << 20))
    })
  )

  it.live("without -f it goes to the background once listening: a script runs it, then nbdinfo, as with nbdkit", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const script = (server: string) =>
        [
          "set -e",
          `rm -f ${dir}/s.sock`,
          `${server} -U ${dir}/s.sock -P ${dir}/pid memory 1G`,
          `nbdinfo --size "nbd+unix:///?socket=${dir}/s.sock"`,
          `kill $(cat ${dir}/pid)`,
          `while kill -0 $(cat ${dir}/pid) 2>/dev/null; do sleep 0.1; done`,
          "echo stopped"
        ].join("\n")
      // The same script with nbdkit, then with ours; $(...) returns: the server holds no stdout.
      for (const server of ["nbdkit", `${node} ${bin}`]) {
        const r = yield* run("/bin/sh", ["-c", `out=$(${script(server).replace(/\n/g, "; ")}); echo "$out"`])
        expect(r.code, `${server}: ${r.stderr}`).toBe(0)
        expect(r.stdout.trim().split("\n"), server).toEqual([String(1 << 30), "stopped"])
      }
      // -p 0 in the background prints the URI it chose, then returns; an error comes back from the child.
      const uri = yield* run("/bin/sh", ["-c", `${node} ${bin} -p 0 -P ${dir}/pid2 null 1M`])
      expect(uri.code, uri.stderr).toBe(0)
      const pid = Number(Fs.readFileSync(Path.join(dir, "pid2"), "utf8"))
      try {
        expect(uri.stdout).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/\n$/)
        expect((yield* runOk("nbdinfo", ["--size", uri.stdout.trim()])).stdout.trim()).toBe(String(1 << 20))
      } finally {
        process.kill(pid, "SIGTERM")
      }
      const bad = yield* run(node, [bin, "-U", Path.join(dir, "no/such/dir/s.sock"), "memory", "1M"])
      expect(bad.code).toBe(1)
      expect(bad.stderr).toMatch(/^effect-nbd-server: error: cannot listen: /)
    })
  )

  it.live("--exit-with-parent: the server stops when the process that started it exits", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const pidfile = Path.join(dir, "pid")
      const socket = Path.join(dir, "s.sock")
      // The parent, a shell, starts the server in the background and exits after a second.
      const r = yield* run("/bin/sh", [
        "-c",
        `${node} ${bin} --exit-with-parent -U ${socket} -P ${pidfile} memory 1M & sleep 1; nbdinfo --size "nbd+unix:///?socket=${socket}"`
      ])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(String(1 << 20))
      const pid = Number(Fs.readFileSync(pidfile, "utf8"))
      const alive = () => {
        try {
          process.kill(pid, 0)
          return true
        } catch {
          return false
        }
      }
      for (let i = 0; i < 50 && alive(); i++) yield* Effect.sleep("100 millis")
      expect(alive()).toBe(false)
    })
  )

  it.live("file: nbdcopy in and out keeps the checksum, and qemu-img compare agrees", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const src = Path.join(dir, "src.img")
      const dst = Path.join(dir, "dst.img")
      const back = Path.join(dir, "back.img")
      // 8 MiB: random data with a zero run in the middle and a tail that is not a whole block.
      const data = Crypto.randomBytes(8 * 1024 * 1024 + 1234)
      data.fill(0, 2 << 20, 5 << 20)
      Fs.writeFileSync(src, data)
      Fs.writeFileSync(dst, Buffer.alloc(data.length, 0xaa))
      const copy = yield* cli([
        "-U",
        "-",
        "file",
        dst,
        "--run",
        `nbdcopy ${src} "$uri" && nbdcopy "$uri" ${back} && qemu-img compare -f raw -F raw ${src} "$uri"`
      ])
      expect(copy.code, copy.stderr + copy.stdout).toBe(0)
      expect(copy.stdout).toContain("Images are identical")
      expect(sha256(dst)).toBe(sha256(src))
      expect(sha256(back)).toBe(sha256(src))
      // A change through NBD reaches the file; qemu-img compare sees the difference.
      const changed = yield* cli([
        "-U",
        "-",
        "file",
        dst,
        "--run",
        `nbdsh -u "$uri" -c "h.pwrite(b'x' * 512, 4096, nbd.CMD_FLAG_FUA); h.flush()" && qemu-img compare -f raw -F raw ${src} "$uri"`
      ])
      expect(changed.code).toBe(1)
      expect(changed.stdout).toContain("Content mismatch at offset 4096")
      expect(Fs.readFileSync(dst).subarray(4096, 4096 + 512)).toEqual(Buffer.alloc(512, "x"))
    })
  )

  it.live("file: zero and trim, read-only, and block status of a file with no block allocated", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = Path.join(dir, "disk.img")
      Fs.writeFileSync(file, Buffer.alloc(4 << 20, 0x55))
      const zero = yield* connectCommand(
        ["-s", "file", file],
        [
          "assert h.can_flush() and h.can_fua() and h.can_zero() and h.can_trim()",
          "h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE)",
          "h.zero(1 << 20, 3 << 20)",
          "assert h.pread(4096, 8192) == bytearray(4096)",
          "assert h.pread(1 << 20, 3 << 20) == bytearray(1 << 20)",
          "assert h.pread(1, 8191) == b'\\x55' and h.pread(1, 12288) == b'\\x55'",
          "h.flush()"
        ].join("\n")
      )
      expect(zero.code, zero.stderr).toBe(0)
      const content = Fs.readFileSync(file)
      expect(content.length).toBe(4 << 20)
      expect(content.subarray(8192, 12288).every((b) => b === 0)).toBe(true)
      expect(content.subarray(3 << 20).every((b) => b === 0)).toBe(true)
      expect(content[12288]).toBe(0x55)

      const readOnly = yield* connectCommand(
        ["-s", "-r", "file", file],
        [
          "import errno",
          "assert h.is_read_only()",
          "try:\n  h.pwrite(b'x', 0)\n  raise SystemExit(3)\nexcept nbd.Error as e:\n  assert e.errnum == errno.EPERM, e"
        ].join("\n")
      )
      expect(readOnly.code, readOnly.stderr).toBe(0)

      // All data where holes cannot be located (no SEEK_HOLE in Node); a file with no block: one hole.
      const map = yield* cli(["-U", "-", "file", file, "--run", 'nbdinfo --map "$uri"'])
      expect(map.code, map.stderr).toBe(0)
      expect(map.stdout.trim().split(/\s+/)).toEqual(["0", String(4 << 20), "0", "data"])
      const sparse = Path.join(dir, "sparse.img")
      Fs.writeFileSync(sparse, "")
      Fs.truncateSync(sparse, 4 << 20)
      const holes = yield* cli(["-U", "-", "file", sparse, "--run", 'nbdinfo --map "$uri"'])
      expect(holes.code, holes.stderr).toBe(0)
      expect(holes.stdout.trim().split(/\s+/)).toEqual(["0", String(4 << 20), "3", "hole,zero"])
      const missing = yield* cli(["-U", "-", "file", Path.join(dir, "nope.img")])
      expect(missing.code).toBe(1)
      expect(missing.stderr).toMatch(/^effect-nbd-server: error: cannot open .*nope\.img/)
    })
  )

  it.live("socket activation: nbdinfo, nbdsh and nbdcopy start it as they start nbdkit", () =>
    Effect.gen(function* () {
      // nbdinfo [ CMD ]: libnbd binds a socket, passes it as fd 3 with LISTEN_PID and LISTEN_FDS, connects.
      const info = (argv: ReadonlyArray<string>) => runOk("nbdinfo", ["--json", "[", ...argv, "]"])
      const ours = JSON.parse((yield* info([node, bin, "memory", "1G"])).stdout) as Record<string, unknown>
      const theirs = JSON.parse((yield* info(["nbdkit", "memory", "1G"])).stdout) as Record<string, unknown>
      expect(ours.protocol).toBe(theirs.protocol)
      const [e] = ours.exports as Array<Record<string, unknown>>
      expect(e!["export-size"]).toBe(1 << 30)
      expect(e!.is_read_only).toBe(false)
      const list = yield* runOk("nbdinfo", ["--list", "--json", "[", node, bin, "pattern", "1M", "]"])
      const listed = (JSON.parse(list.stdout) as { exports: Array<Record<string, unknown>> }).exports
      expect(listed.map((x) => [x["export-name"], x["export-size"], x.is_read_only])).toEqual([["", 1 << 20, true]])
      const sh = yield* run("nbdsh", [
        "-c",
        `h.connect_systemd_socket_activation(${JSON.stringify([node, bin, "memory", "1M"])})`,
        "-c",
        "h.pwrite(b'activated', 512)\nprint(h.pread(9, 512).decode(), h.get_size())"
      ])
      expect(sh.code, sh.stderr).toBe(0)
      expect(sh.stdout.trim()).toBe(`activated ${1 << 20}`)
      // nbdcopy to stdout: the server shares that pipe, and must leave it blocking for nbdcopy's writes.
      const copy = (server: string) => run("/bin/sh", ["-c", `nbdcopy -- [ ${server} pattern 1M ] - | sha256sum`])
      const copied = yield* copy(`${node} ${bin}`)
      expect(copied.code, copied.stderr).toBe(0)
      expect(copied.stdout).toBe((yield* copy("nbdkit")).stdout)
    })
  )

  it.live("socket activation: the activated server serves every client on its socket, in the foreground", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const socket = Path.join(dir, "activated.sock")
      const child = yield* activate(socket, [node, bin, "memory", "1M"])
      const uri = `nbd+unix:///?socket=${socket}`
      yield* runOk("nbdsh", ["-u", uri, "-c", "h.pwrite(b'kept', 0)"])
      const again = yield* nbdsh(uri, "print(h.pread(4, 0).decode())")
      expect(again.code, again.stderr).toBe(0)
      expect(again.stdout.trim()).toBe("kept")
      // Any export name, as for a plugin served on its own socket.
      expect((yield* runOk("nbdinfo", ["--size", `nbd+unix:///other?socket=${socket}`])).stdout.trim()).toBe(
        String(1 << 20)
      )
      // Still the same process, in the foreground: it did not go to the background.
      expect(child.exitCode).toBe(null)
      child.kill("SIGTERM")
      const code = yield* Effect.promise(() => new Promise<number | null>((resolve) => child.on("exit", resolve)))
      expect(code).toBe(0)
    })
  )

  it.live('socket activation in the library: listen { _tag: "Fd" } tells the socket\'s path', () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const socket = Path.join(dir, "lib.sock")
      const index = Path.join(root, "packages/test-server/dist/index.js")
      const script = [
        `import { TestServer } from ${JSON.stringify(index)}`,
        `import * as Effect from "effect/Effect"`,
        `Effect.runFork(Effect.scoped(Effect.flatMap(TestServer.make({ listen: { _tag: "Fd", fds: [3] } }),`,
        `  (server) => Effect.andThen(Effect.sync(() => console.log(server.uri)), Effect.never))))`
      ].join("\n")
      const file = Path.join(root, "packages/test-server/dist", `activation-${process.pid}.mjs`)
      Fs.writeFileSync(file, script)
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(file, { force: true })))
      const child = yield* activate(socket, [node, file])
      const uri = yield* firstLine(child.stdout)
      expect(uri).toBe(`nbd+unix:///?socket=${socket}`)
      expect((yield* runOk("nbdinfo", ["--size", uri])).stdout.trim()).toBe(String(1 << 30))
    })
  )

  it.live("socket activation refuses -U, -p, -i, -s and --run, and ignores LISTEN_PID of another process", () =>
    Effect.gen(function* () {
      const refused = yield* run("nbdinfo", ["--size", "--", "[", node, bin, "-U", "/tmp/x.sock", "memory", "1G", "]"])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toContain("effect-nbd-server: error: cannot use socket activation with -U flag")
      for (const [args, flag] of [
        [["-p", "0"], "-p"],
        [["-i", "::1"], "-i"],
        [["-s"], "-s"],
        [["--run", "true"], "--run"]
      ] as const)
        expect(() => Cli.parse([...args, "memory", "1G"], [3])).toThrow(
          `cannot use socket activation with ${flag} flag`
        )
      const parsed = Cli.parse(["memory", "1G"], [3, 4])
      expect(parsed._tag === "Serve" && parsed.options.config.listen).toEqual({ _tag: "Fd", fds: [3, 4] })
      expect(parsed._tag === "Serve" && parsed.options.foreground).toBe(true)
      expect(Cli.activatedFds({ LISTEN_PID: "42", LISTEN_FDS: "2" }, 42)).toEqual({ fds: [3, 4] })
      expect(Cli.activatedFds({ LISTEN_FDS: "1" }, 42)).toEqual({ fds: [] })
      expect(Cli.activatedFds({ LISTEN_PID: "41", LISTEN_FDS: "1" }, 42).fds).toEqual([])
      expect(Cli.activatedFds({ LISTEN_PID: "42", LISTEN_FDS: "x" }, 42)).toMatchObject({ fds: [] })
      // nbdkit's range: 1 to 16 sockets; outside it, the server does not start.
      const none = yield* run("/bin/sh", ["-c", `LISTEN_PID=$$ LISTEN_FDS=0 exec ${node} ${bin} memory 1M`])
      expect(none.code).toBe(1)
      expect(none.stderr).toBe("effect-nbd-server: error: socket activation: LISTEN_FDS=0 out of range\n")
      // As nbdkit: variables meant for another process are ignored, with a note.
      const ignored = yield* run("/bin/sh", [
        "-c",
        `LISTEN_PID=1 LISTEN_FDS=1 ${node} ${bin} -U - memory 1M --run 'nbdinfo --size "$uri"'`
      ])
      expect(ignored.code, ignored.stderr).toBe(0)
      expect(ignored.stdout.trim()).toBe(String(1 << 20))
      expect(ignored.stderr).toContain("effect-nbd-server: LISTEN_PID was not for us (ignored)")
    })
  )
})
