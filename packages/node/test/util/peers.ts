import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFile, spawn } from "node:child_process"
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
    const args = argv.map((a) =>
      a.replaceAll("{socket}", socket).replaceAll("{pidfile}", pidfile).replaceAll("{dir}", dir)
    )
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(command, args, { stdio: ["ignore", "ignore", "inherit"] })),
      (child) =>
        Effect.callback<void>((resume) => {
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

/** Runs a command to completion and gives its stdout; a non-zero exit dies with its stderr. */
export const run = (command: string, args: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.callback<string>((resume) => {
    execFile(command, [...args], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) resume(Effect.die(new Error(`${command} ${args.join(" ")} failed: ${error.message}\n${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
  })

/** One extent of a map: where it starts, how long it is, its base:allocation flags (1 hole, 2 zero). */
export interface MapExtent {
  readonly offset: number
  readonly length: number
  readonly flags: number
}

/** Joins neighbouring extents with the same flags, so maps made with different granularity compare. */
export const mergeExtents = (extents: ReadonlyArray<MapExtent>): Array<MapExtent> => {
  const out: Array<MapExtent> = []
  for (const e of extents) {
    const last = out[out.length - 1]
    if (last !== undefined && last.flags === e.flags && last.offset + last.length === e.offset)
      out[out.length - 1] = { offset: last.offset, length: last.length + e.length, flags: last.flags }
    else out.push({ ...e })
  }
  return out
}

/** nbdkit's (or any server's) base:allocation map as libnbd's `nbdinfo --map --json` sees it, on its own connection. */
export const nbdinfoMap = (uri: string): Effect.Effect<Array<MapExtent>> =>
  Effect.map(run("nbdinfo", ["--map", "--json", uri]), (out) =>
    mergeExtents(
      (JSON.parse(out) as Array<{ offset: number; length: number; type: number }>).map((e) => ({
        offset: e.offset,
        length: e.length,
        flags: e.type
      }))
    )
  )

/**
 * `qemu-img map --output=json` of an image, as base:allocation flags: data:false is STATE_HOLE (1),
 * zero:true is STATE_ZERO (2).
 */
export const qemuImgMap = (image: string): Effect.Effect<Array<MapExtent>> =>
  Effect.map(run("qemu-img", ["map", "--force-share", "--output=json", image]), (out) =>
    mergeExtents(
      (JSON.parse(out) as Array<{ start: number; length: number; zero: boolean; data: boolean }>).map((e) => ({
        offset: e.start,
        length: e.length,
        flags: (e.data ? 0 : 1) | (e.zero ? 2 : 0)
      }))
    )
  )

/**
 * A qcow2 image in a fresh directory: `qemu-img create -f qcow2 IMG size`, then each `qemu-io` command
 * (`write -P 0xab 1M 64k`, `write -z 2M 128k`, ...).
 */
export const qcow2Image = (size: string, qemuIo: ReadonlyArray<string>): Effect.Effect<string, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const image = Path.join(dir, "disk.qcow2")
    yield* run("qemu-img", ["create", "-q", "-f", "qcow2", image, size])
    if (qemuIo.length > 0) yield* run("qemu-io", [...qemuIo.flatMap((c) => ["-c", c]), image])
    return image
  })

/** qemu-nbd serving an image on a Unix socket: `qemuNbd(image, ["--format=qcow2"])`. */
export const qemuNbd = (image: string, args: ReadonlyArray<string> = []) =>
  startServer("qemu-nbd", ["--socket={socket}", "--persistent", "--pid-file={pidfile}", ...args, image])

/**
 * nbdkit at a fixed Unix socket that a test can kill (SIGKILL, as a crash) and start again, as an operator
 * restarting a server would: same socket path, same arguments.
 */
export const restartable = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const dir = yield* tempDir
    const socket = Path.join(dir, "nbd.sock")
    const pidfile = Path.join(dir, "nbdkit.pid")
    let child: ReturnType<typeof spawn> | undefined
    const kill = Effect.callback<void>((resume) => {
      const c = child
      child = undefined
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
      c.once("exit", () => resume(Effect.void))
      c.kill("SIGKILL")
    })
    const start = Effect.gen(function* () {
      Fs.rmSync(socket, { force: true })
      Fs.rmSync(pidfile, { force: true })
      child = spawn("nbdkit", ["-f", "-U", socket, "-P", pidfile, ...args], { stdio: ["ignore", "ignore", "inherit"] })
      for (let i = 0; i < 500; i++) {
        if (Fs.existsSync(pidfile) && Fs.statSync(pidfile).size > 0) return
        yield* Effect.sleep("10 millis")
      }
      return yield* Effect.die(new Error(`nbdkit ${args.join(" ")} did not start within 5 seconds`))
    })
    yield* Effect.addFinalizer(() => kill)
    yield* start
    return { socket, uri: `nbd+unix:///?socket=${socket}`, start, kill }
  })

/** One qemu's tools: qemu-img, qemu-io and qemu-nbd, by path or by name on PATH. */
export interface Qemu {
  readonly name: string
  readonly img: string
  readonly io: string
  readonly nbd: string
}

/** The system qemu (Debian bookworm's 7.2: no extended headers). */
export const qemuSystem: Qemu = { name: "qemu 7.2", img: "qemu-img", io: "qemu-io", nbd: "qemu-nbd" }

/**
 * qemu 10 (extended headers), which scripts/install-peers.sh unpacks from bookworm-backports into
 * /opt/qemu10 beside the system qemu; QEMU10_BIN names another folder of its binaries.
 */
export const qemu10: Qemu = (() => {
  const dir = process.env.QEMU10_BIN ?? "/opt/qemu10/usr/bin"
  return {
    name: "qemu 10",
    img: Path.join(dir, "qemu-img"),
    io: Path.join(dir, "qemu-io"),
    nbd: Path.join(dir, "qemu-nbd")
  }
})()

/** The first line of `qemu-img --version`: which qemu a test ran. */
export const qemuVersion = (qemu: Qemu): Effect.Effect<string> =>
  Effect.map(run(qemu.img, ["--version"]), (out) => out.split("\n")[0]!)

/** qemu-nbd of the given qemu serving an image on a Unix socket. */
export const qemuNbdOf = (qemu: Qemu, image: string, args: ReadonlyArray<string> = []) =>
  startServer(qemu.nbd, ["--socket={socket}", "--persistent", "--pid-file={pidfile}", ...args, image])
