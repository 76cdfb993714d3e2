/**
 * `pnpm bench`: our NBD client and server against libnbd's and nbdkit's, on one 2-core box, in one run.
 *
 *   1. sequential read of 1 GiB from `nbdkit memory 1G` (filled, not sparse): ours vs `nbdcopy ... null:`, three
 *      ways: the aio loop (reused buffers), `NbdStream.readStream`, and `Effect.forEach` of `Nbd.pread` into
 *      fresh buffers (what a user writes first); the last two again with glibc told to keep freed memory
 *      (the README's GLIBC_TUNABLES)
 *   2. sequential write of 1 GiB into it: ours vs `nbdcopy FILE URI` (FILE in /dev/shm)
 *   3. 4 KiB random reads, 64 in flight, for a fixed time: ours vs `fio --ioengine=nbd`
 *   4. our server: `nbdcopy URI null:` from `effect-nbd-server` (filled first) vs from nbdkit; and, as whole
 *      processes, each server started with `--run` for one nbdcopy of a 1 GiB file into a fresh memory export
 *   5. whole processes: `effect-nbd copy` vs `nbdcopy` (URI to null: at the defaults, -C 1 and -C 4; URI to a
 *      file; a file to URI), and the start-up of `effect-nbd info --size` and `effect-nbd-server --run true`
 *   6. the socket: the aio read loop and the random reads through our Node socket vs through
 *      `@effect/platform-node`'s `NodeSocket.layerNet` (the same client otherwise)
 *   7. threads: Node's floor reading 1 GiB split over 2 and over 4 worker threads (one connection each) vs
 *      the floor on one thread, and nbdcopy at `-C N -T N` vs `-C 1 -T 1`: whether a thread per connection
 *      pays on this machine, for Node and for libnbd
 *
 * Node's floor (floor.ts: a raw `net` NBD reader and writer, no Effect, no library code) runs beside the
 * sequential reads and writes and the `copy URI null:` rows, and those rows print ours / floor as well.
 *
 * The sides alternate run by run. Every side runs in its own child process, so peak RSS (GNU time's %M; VmHWM for the servers) compares
 * like with like. Our client's runs time the whole session (connect, transfer, disconnect) inside the
 * child, not node's start-up; the peers' runs are timed from spawn to exit. Medians are reported, the
 * ratios are ours / peer, and everything is saved to bench-results/bench-<timestamp>.json.
 *
 * Modes: `node examples/dist/bench.js` (the benchmark), `--profile` (CPU-profiles our client's
 * sequential read and summarises the top self-time functions), `--worker JSON` (internal: one client
 * side, prints its result as JSON).
 *
 * Knobs (environment): BENCH_REPS (5), BENCH_RANDOM_SECONDS (5), BENCH_RANDOM_REPS (3).
 */
import { Nbd, NbdStream } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as Duration from "effect/Duration"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import type { FloorTask } from "./floor.js"

/** A shipped bin: the bundle the package.json's `bin` names (`pnpm build` writes it). */
const shippedBin = (pkg: string, name: string): string => {
  const manifest = fileURLToPath(import.meta.resolve(`${pkg}/package.json`))
  const bin = (JSON.parse(Fs.readFileSync(manifest, "utf8")) as { bin: Record<string, string> }).bin
  return Path.join(Path.dirname(manifest), bin[name]!)
}

const serverBin = (): string => shippedBin("@effect-nbd/test-server", "effect-nbd-server")
const clientBin = (): string => shippedBin("@effect-nbd/node", "effect-nbd")

// ---------------------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------------------

const GiB = 1024 * 1024 * 1024
const SIZE = GiB
const REQUEST_SIZE = 256 * 1024
const DEPTH = 64
const RANDOM_BLOCK = 4096
const WARMUP_BYTES = 256 * 1024 * 1024
const envInt = (name: string, fallback: number): number => {
  const v = Number(process.env[name])
  return Number.isFinite(v) && v > 0 ? v : fallback
}
const REPS = envInt("BENCH_REPS", 5)
const RANDOM_SECONDS = envInt("BENCH_RANDOM_SECONDS", 5)
const RANDOM_REPS = envInt("BENCH_RANDOM_REPS", 3)
const NBDCOPY_FLAGS = ["-C", "1", "-R", String(DEPTH), `--request-size=${REQUEST_SIZE}`]

const SELF = fileURLToPath(import.meta.url)
const ROOT = Path.resolve(Path.dirname(SELF), "../..")
const RESULTS_DIR = Path.join(ROOT, "bench-results")
const FLOOR = Path.join(Path.dirname(SELF), "floor.js")

// ---------------------------------------------------------------------------------------------------------------
// The client side (a child process: `bench.js --worker JSON`)
// ---------------------------------------------------------------------------------------------------------------

type WorkerTask =
  | {
      /** read/write: the aio loop; pread: `Effect.forEach` of `Nbd.pread` into fresh buffers; stream: `NbdStream.readStream`. */
      readonly mode: "read" | "write" | "pread" | "stream"
      readonly uri: string
      readonly reps: number
      /** An untimed session of this many bytes first, so the timed ones run on warm (JIT-compiled) code. */
      readonly warmupBytes: number
      readonly socket?: SocketKind
    }
  | { readonly mode: "randread"; readonly uri: string; readonly seconds: number; readonly socket?: SocketKind }

/**
 * How the worker connects: "ours" through `NodeNbd.connectUri` (our Node socket: reused read buffers,
 * synchronous writes), "effect" through `Nbd.connectSocket` on `@effect/platform-node`'s `NodeSocket.layerNet`
 * (a fresh buffer per read, no synchronous write), for a Unix socket URI.
 */
type SocketKind = "ours" | "effect"

interface WorkerRun {
  /** The whole session: make, connect, transfer, close. */
  readonly seconds: number
  /** The transfer alone. */
  readonly transferSeconds: number
  readonly bytes: number
  readonly requests: number
}

/**
 * Keeps `depth` commands in flight: issue `depth`, then await them in order, issuing the next as each one
 * completes. `issue(i, slot)` queues request i; `slot` (i mod depth) names a buffer that is free again.
 * `more(i)` says whether request i should be issued.
 */
const pipeline = (
  depth: number,
  more: (i: number) => boolean,
  issue: (i: number, slot: number) => Effect.Effect<Nbd.Command<unknown>, unknown>
): Effect.Effect<number, unknown> =>
  Effect.gen(function* () {
    const inflight: Array<Nbd.Command<unknown> | undefined> = new Array(depth)
    let issued = 0
    while (issued < depth && more(issued)) {
      inflight[issued] = yield* issue(issued, issued)
      issued++
    }
    for (let done = 0; done < issued; done++) {
      const slot = done % depth
      yield* inflight[slot]!.await
      inflight[slot] = undefined
      if (more(issued)) {
        inflight[slot] = yield* issue(issued, slot)
        issued++
      }
    }
    return issued
  })

/** Connects `h` to `uri` through the socket `kind` names. */
const connect = (h: Nbd.Handle, uri: string, kind: SocketKind = "ours"): Effect.Effect<void, unknown> => {
  if (kind === "ours") return NodeNbd.connectUri(h, uri)
  const path = new URL(uri).searchParams.get("socket")
  if (path === null) return Effect.fail(new BenchError({ message: `not a Unix socket URI: ${uri}` }))
  return Nbd.connectSocket(h).pipe(Effect.provide(NodeSocket.layerNet({ path })))
}

const session = (
  uri: string,
  transfer: (h: Nbd.Handle, size: number) => Effect.Effect<{ bytes: number; requests: number }, unknown>,
  socket?: SocketKind
): Effect.Effect<WorkerRun, unknown> =>
  Effect.gen(function* () {
    const t0 = performance.now()
    let t1 = 0
    let t2 = 0
    const result = yield* Effect.scoped(
      Effect.gen(function* () {
        const h = yield* Nbd.make()
        yield* connect(h, uri, socket)
        const size = Number(yield* Nbd.getSize(h))
        t1 = performance.now()
        const r = yield* transfer(h, size)
        t2 = performance.now()
        return r
      })
    )
    const t3 = performance.now()
    return { seconds: (t3 - t0) / 1000, transferSeconds: (t2 - t1) / 1000, ...result }
  })

const sequential =
  (mode: "read" | "write", limit = Infinity) =>
  (h: Nbd.Handle, exportSize: number): Effect.Effect<{ bytes: number; requests: number }, unknown> => {
    const size = Math.min(exportSize, limit)
    const buffers = Array.from({ length: DEPTH }, () => {
      const b = new Uint8Array(REQUEST_SIZE)
      if (mode === "write") Crypto.randomFillSync(b)
      return b
    })
    const count = Math.ceil(size / REQUEST_SIZE)
    return Effect.map(
      pipeline(
        DEPTH,
        (i) => i < count,
        (i, slot) => {
          const offset = i * REQUEST_SIZE
          const len = Math.min(REQUEST_SIZE, size - offset)
          const buffer = len === REQUEST_SIZE ? buffers[slot]! : buffers[slot]!.subarray(0, len)
          return mode === "read" ? Nbd.aioPread(h, len, offset, { buffer }) : Nbd.aioPwrite(h, buffer, offset)
        }
      ),
      (requests) => ({ bytes: size, requests })
    )
  }

/** What a user writes first: every block read with `Nbd.pread`, 64 at a time, each into a fresh buffer. */
const plainPreads =
  (limit = Infinity) =>
  (h: Nbd.Handle, exportSize: number): Effect.Effect<{ bytes: number; requests: number }, unknown> => {
    const size = Math.min(exportSize, limit)
    const blocks = Array.from({ length: Math.ceil(size / REQUEST_SIZE) }, (_, i) => i)
    return Effect.as(
      Effect.forEach(blocks, (i) => Nbd.pread(h, Math.min(REQUEST_SIZE, size - i * REQUEST_SIZE), i * REQUEST_SIZE), {
        concurrency: DEPTH,
        discard: true
      }),
      { bytes: size, requests: blocks.length }
    )
  }

/** The export as a stream of fresh buffers, in order, 64 requests in flight, drained. */
const streamRead =
  (limit = Infinity) =>
  (h: Nbd.Handle, exportSize: number): Effect.Effect<{ bytes: number; requests: number }, unknown> => {
    const size = Math.min(exportSize, limit)
    return Effect.map(
      Stream.runFold(
        NbdStream.readStream(h, { length: size, requestSize: REQUEST_SIZE, requests: DEPTH }),
        () => 0,
        (n, chunk) => n + chunk.length
      ),
      (bytes) => ({ bytes, requests: Math.ceil(bytes / REQUEST_SIZE) })
    )
  }

/** The transfer a sequential mode runs, on the whole export or on its first `limit` bytes (the warm-up). */
const transferOf = (mode: "read" | "write" | "pread" | "stream", limit?: number) =>
  mode === "pread" ? plainPreads(limit) : mode === "stream" ? streamRead(limit) : sequential(mode, limit)

/** xorshift32: the same offsets every run, and no allocation per request. */
const randomOffsets = (size: number, block: number) => {
  let x = 0x9e3779b9
  const blocks = Math.floor(size / block)
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return ((x >>> 0) % blocks) * block
  }
}

const randomRead =
  (seconds: number) =>
  (h: Nbd.Handle, size: number): Effect.Effect<{ bytes: number; requests: number }, unknown> => {
    const buffers = Array.from({ length: DEPTH }, () => new Uint8Array(RANDOM_BLOCK))
    const next = randomOffsets(size, RANDOM_BLOCK)
    const deadline = performance.now() + seconds * 1000
    return Effect.map(
      pipeline(
        DEPTH,
        // Checking the clock every 256 requests keeps it off the hot path.
        (i) => (i & 255) !== 0 || performance.now() < deadline,
        (_, slot) => Nbd.aioPread(h, RANDOM_BLOCK, next(), { buffer: buffers[slot]! })
      ),
      (requests) => ({ bytes: requests * RANDOM_BLOCK, requests })
    )
  }

const worker = (task: WorkerTask): Effect.Effect<ReadonlyArray<WorkerRun>, unknown> =>
  task.mode === "randread"
    ? Effect.map(session(task.uri, randomRead(task.seconds), task.socket), (r) => [r])
    : Effect.andThen(
        task.warmupBytes > 0
          ? Effect.asVoid(session(task.uri, transferOf(task.mode, task.warmupBytes), task.socket))
          : Effect.void,
        Effect.forEach(Array.from({ length: task.reps }), () => session(task.uri, transferOf(task.mode), task.socket), {
          concurrency: 1
        })
      )

// ---------------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------------

class BenchError extends Data.TaggedError("BenchError")<{ readonly message: string }> {}

interface ProcessResult {
  readonly stdout: string
  readonly stderr: string
  readonly wallSeconds: number
  /** GNU time's %M: the child's peak RSS in KiB. */
  readonly peakRssKiB: number
}

/** Runs a command under GNU time and fails on a non-zero exit. */
const runTimed = (
  file: string,
  args: ReadonlyArray<string>,
  env?: Record<string, string>
): Effect.Effect<ProcessResult, BenchError> =>
  Effect.callback<ProcessResult, BenchError>((resume) => {
    const rssFile = Path.join(Os.tmpdir(), `effect-nbd-bench-rss-${process.pid}-${Crypto.randomUUID()}`)
    const t0 = performance.now()
    const child = spawn("/usr/bin/time", ["-f", "%M", "-o", rssFile, file, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env }
    })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => err.push(b))
    child.on("error", (e) => resume(Effect.fail(new BenchError({ message: `${file}: ${e.message}` }))))
    child.on("close", (code) => {
      const wallSeconds = (performance.now() - t0) / 1000
      let rss = NaN
      try {
        rss = Number(Fs.readFileSync(rssFile, "utf8").trim().split("\n").pop())
        Fs.rmSync(rssFile, { force: true })
      } catch {
        // no figure
      }
      const stdout = Buffer.concat(out).toString()
      const stderr = Buffer.concat(err).toString()
      if (code !== 0)
        resume(
          Effect.fail(
            new BenchError({ message: `${file} ${args.join(" ")} exited with ${code}:\n${stderr.slice(-2000)}` })
          )
        )
      else resume(Effect.succeed({ stdout, stderr, wallSeconds, peakRssKiB: rss }))
    })
    return Effect.sync(() => {
      if (child.exitCode === null) child.kill("SIGTERM")
    })
  })

interface WorkerResult {
  readonly runs: ReadonlyArray<WorkerRun>
  readonly peakRssKiB: number
  /** The whole child process, spawn to exit (node's start-up and any warm-up included). */
  readonly processSeconds: number
}

const workerResult = (r: ProcessResult): WorkerResult => ({
  runs: JSON.parse(r.stdout) as ReadonlyArray<WorkerRun>,
  peakRssKiB: r.peakRssKiB,
  processSeconds: r.wallSeconds
})

/** Runs our client side in a child node process. */
const runWorker = (
  task: WorkerTask,
  nodeArgs: ReadonlyArray<string> = [],
  env?: Record<string, string>
): Effect.Effect<WorkerResult, BenchError> =>
  Effect.map(runTimed(process.execPath, [...nodeArgs, SELF, "--worker", JSON.stringify(task)], env), workerResult)

/**
 * The README's setting for fresh buffers: glibc keeps freed memory rather than handing it back to the kernel,
 * so the next fresh buffers reuse pages instead of faulting new ones in.
 */
const GLIBC_KEEPS_MEMORY = {
  GLIBC_TUNABLES: "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=268435456"
}

/** Runs Node's floor (floor.js) in a child node process, timed the same way as our client. */
const runFloor = (task: FloorTask): Effect.Effect<WorkerResult, BenchError> =>
  Effect.map(runTimed(process.execPath, [FLOOR, "--worker", JSON.stringify(task)]), workerResult)

const peakRssOf = (pid: number): number => {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))
    return m ? Number(m[1]) : NaN
  } catch {
    return NaN
  }
}

const cpuSecondsOf = (pid: number): number => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100 // utime + stime, in clock ticks (USER_HZ = 100)
  } catch {
    return NaN
  }
}

interface Server {
  readonly name: string
  readonly uri: string
  readonly pid: number
}

/** Starts a server in the foreground listening on `socket`; stops it (SIGTERM, then SIGKILL) with the scope. */
const startServer = (
  name: string,
  file: string,
  args: ReadonlyArray<string>,
  socket: string
): Effect.Effect<Server, BenchError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const child: ChildProcess = spawn(file, [...args], { stdio: ["ignore", "ignore", "inherit"] })
      const exited = () => child.exitCode !== null || child.signalCode !== null
      yield* Effect.suspend(() =>
        exited()
          ? Effect.fail(new BenchError({ message: `${name} exited early` }))
          : Fs.existsSync(socket)
            ? Effect.void
            : Effect.fail(new BenchError({ message: `${name} is not listening on ${socket}` }))
      ).pipe(
        Effect.retry({
          schedule: Schedule.spaced(Duration.millis(50)),
          until: (e) => e.message.endsWith("exited early"),
          times: 400
        }),
        Effect.tapError(() => Effect.sync(() => child.kill("SIGKILL")))
      )
      return { child, server: { name, uri: `nbd+unix:///?socket=${socket}`, pid: child.pid! } }
    }),
    ({ child }) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000)
        child.once("exit", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        child.kill("SIGTERM")
      })
  ).pipe(Effect.map(({ server }) => server))

const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-bench-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

/** 1 GiB of random bytes in a file, in /dev/shm when it has room: nbdcopy's source for writes. */
const dataFile = (dir: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      let base = dir
      try {
        const s = Fs.statfsSync("/dev/shm")
        if (s.bavail * s.bsize > SIZE * 1.25) base = Fs.mkdtempSync("/dev/shm/effect-nbd-bench-")
      } catch {
        // use the temp dir
      }
      const file = Path.join(base, "data.img")
      const fd = Fs.openSync(file, "w")
      const chunk = Buffer.allocUnsafe(64 * 1024 * 1024)
      for (let off = 0; off < SIZE; off += chunk.length) {
        Crypto.randomFillSync(chunk)
        Fs.writeSync(fd, chunk, 0, Math.min(chunk.length, SIZE - off))
      }
      Fs.closeSync(fd)
      return file
    }),
    (file) =>
      Effect.sync(() => {
        Fs.rmSync(file, { force: true })
        if (file.startsWith("/dev/shm/")) Fs.rmSync(Path.dirname(file), { recursive: true, force: true })
      })
  )

// ---------------------------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------------------------

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

interface Side {
  readonly label: string
  readonly tool: string
  /** Per repetition: seconds, and the bytes and requests moved. */
  readonly runs: ReadonlyArray<{ seconds: number; bytes: number; requests: number }>
  readonly medianSeconds: number
  readonly mbPerSecond: number
  readonly iops: number | undefined
  /** KiB; for a server, VmHWM at the end of the phase. */
  readonly peakRssKiB: number
  readonly cpuSeconds?: number
}

interface Comparison {
  readonly test: string
  readonly ours: Side
  readonly peer: Side
  /** ours / peer, by throughput. */
  readonly ratio: number
  readonly target?: number
  /** Node's floor on the same transfer, and ours / floor by throughput. */
  readonly floor?: Side
  readonly floorRatio?: number
}

const side = (
  label: string,
  tool: string,
  runs: ReadonlyArray<{ seconds: number; bytes: number; requests: number }>,
  peakRssKiB: number,
  withIops: boolean,
  extra: { cpuSeconds?: number } = {}
): Side => {
  const rates = runs.map((r) => r.bytes / r.seconds)
  const mbPerSecond = median(rates) / 1e6
  const medianSeconds = median(runs.map((r) => r.seconds))
  const iops = withIops ? median(runs.map((r) => r.requests / r.seconds)) : undefined
  return { label, tool, runs, medianSeconds, mbPerSecond, iops, peakRssKiB, ...extra }
}

const compare = (test: string, ours: Side, peer: Side, target?: number, floor?: Side): Comparison => ({
  test,
  ours,
  peer,
  ratio: ours.mbPerSecond / peer.mbPerSecond,
  ...(target !== undefined ? { target } : {}),
  ...(floor !== undefined ? { floor, floorRatio: ours.mbPerSecond / floor.mbPerSecond } : {})
})

const table = (rows: ReadonlyArray<Comparison>): string => {
  const head = ["test", "side", "median s", "MB/s", "IOPS", "peak RSS MiB", "ours/peer", "ours/floor"]
  const lines: Array<Array<string>> = [head]
  const f = (n: number | undefined, d: number) => (n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(d))
  for (const c of rows) {
    for (const [i, s] of [c.ours, c.peer, ...(c.floor ? [c.floor] : [])].entries()) {
      lines.push([
        i === 0 ? c.test : "",
        s.label,
        f(s.medianSeconds, 3),
        f(s.mbPerSecond, 0),
        s.iops === undefined ? "-" : f(s.iops, 0),
        f(s.peakRssKiB / 1024, 1),
        i === 0 ? `${c.ratio.toFixed(2)}${c.target !== undefined ? ` (target ≥ ${c.target})` : ""}` : "",
        i === 0 && c.floorRatio !== undefined ? c.floorRatio.toFixed(2) : ""
      ])
    }
  }
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)))
  const fmt = (l: ReadonlyArray<string>) =>
    l.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  const rule = widths.map((w) => "-".repeat(w)).join("  ")
  return [fmt(head), rule, ...lines.slice(1).map(fmt)].join("\n")
}

const version = (file: string, args: ReadonlyArray<string>): string => {
  try {
    return execFileSync(file, [...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
      .split("\n")
      .filter((l) => l.trim() !== "")
      .slice(0, 2)
      .join("; ")
  } catch {
    return "unavailable"
  }
}

const log = (message: string) => Effect.sync(() => process.stderr.write(`bench: ${message}\n`))

const nbdcopy = (args: ReadonlyArray<string>) =>
  Effect.map(runTimed("nbdcopy", [...NBDCOPY_FLAGS, ...args]), (r) => ({
    run: { seconds: r.wallSeconds, bytes: SIZE, requests: Math.ceil(SIZE / REQUEST_SIZE) },
    peakRssKiB: r.peakRssKiB
  }))

const maxOf = (xs: ReadonlyArray<number>) => Math.max(...xs.filter((x) => Number.isFinite(x)))

const fioAvailable = (): boolean => {
  try {
    execFileSync("fio", ["--enghelp=nbd"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------------------------

const benchmark = Effect.scoped(
  Effect.gen(function* () {
    const started = new Date()
    const loadBefore = Os.loadavg()
    const dir = yield* tempDir
    yield* log(`reps ${REPS}, random reads ${RANDOM_REPS} x ${RANDOM_SECONDS} s; temp dir ${dir}`)

    const nbdkit = yield* startServer(
      "nbdkit",
      "nbdkit",
      ["-f", "-U", Path.join(dir, "nbdkit.sock"), "memory", "1G"],
      Path.join(dir, "nbdkit.sock")
    )
    const t0 = performance.now()
    const file = yield* dataFile(dir)
    yield* log(`wrote 1 GiB of random data to ${file} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const fill = yield* nbdcopy([file, nbdkit.uri])
    yield* log(`filled nbdkit memory (first write, allocating) in ${fill.run.seconds.toFixed(2)} s`)

    // 2. sequential write (overwrites: the export is allocated already), then 1. sequential read. The sides
    // alternate run by run, so a change in the machine's load touches both; each of our runs is a fresh
    // process that warms up on 256 MiB first. Node's floor joins the plain read and write, warmed up the same
    // way; the read floor stands for the other read rows too (the same 1 GiB, the same 256K x 64).
    const pooled = (xs: ReadonlyArray<WorkerResult>) => ({
      runs: xs.flatMap((o) => o.runs),
      peakRssKiB: maxOf(xs.map((o) => o.peakRssKiB)),
      processSeconds: xs.map((o) => o.processSeconds)
    })
    const sequentialPhase = (
      mode: "read" | "write" | "pread" | "stream",
      peerArgs: ReadonlyArray<string>,
      floorMode?: "read" | "write",
      env?: Record<string, string>
    ) =>
      Effect.gen(function* () {
        const peer: Array<{ run: { seconds: number; bytes: number; requests: number }; peakRssKiB: number }> = []
        const ours: Array<WorkerResult> = []
        const floor: Array<WorkerResult> = []
        for (let i = 0; i < REPS; i++) {
          yield* log(`sequential ${mode} ${i + 1}/${REPS}`)
          peer.push(yield* nbdcopy(peerArgs))
          ours.push(yield* runWorker({ mode, uri: nbdkit.uri, reps: 1, warmupBytes: WARMUP_BYTES }, [], env))
          if (floorMode !== undefined)
            floor.push(yield* runFloor({ mode: floorMode, uri: nbdkit.uri, reps: 1, warmupBytes: WARMUP_BYTES }))
        }
        return { peer, ours: pooled(ours), floor: pooled(floor) }
      })
    const {
      floor: floorWrite,
      ours: oursWrite,
      peer: peerWrite
    } = yield* sequentialPhase("write", [file, nbdkit.uri], "write")
    const {
      floor: floorRead,
      ours: oursRead,
      peer: peerRead
    } = yield* sequentialPhase("read", [nbdkit.uri, "null:"], "read")
    const { ours: oursPread, peer: peerPread } = yield* sequentialPhase("pread", [nbdkit.uri, "null:"])
    const { ours: oursStream, peer: peerStream } = yield* sequentialPhase("stream", [nbdkit.uri, "null:"])
    const { ours: oursPreadTuned, peer: peerPreadTuned } = yield* sequentialPhase(
      "pread",
      [nbdkit.uri, "null:"],
      undefined,
      GLIBC_KEEPS_MEMORY
    )
    const { ours: oursStreamTuned, peer: peerStreamTuned } = yield* sequentialPhase(
      "stream",
      [nbdkit.uri, "null:"],
      undefined,
      GLIBC_KEEPS_MEMORY
    )

    // 3. random 4 KiB reads, alternating sides
    const haveFio = fioAvailable()
    const randomOurs: Array<{ runs: ReadonlyArray<WorkerRun>; peakRssKiB: number }> = []
    const randomPeer: Array<{ run: { seconds: number; bytes: number; requests: number }; peakRssKiB: number }> = []
    for (let i = 0; i < RANDOM_REPS; i++) {
      yield* log(`random 4 KiB reads ${i + 1}/${RANDOM_REPS}`)
      if (haveFio) {
        const r = yield* runTimed("fio", [
          "--name=randread",
          "--ioengine=nbd",
          `--uri=${nbdkit.uri}`,
          "--rw=randread",
          `--bs=${RANDOM_BLOCK}`,
          `--iodepth=${DEPTH}`,
          `--runtime=${RANDOM_SECONDS}`,
          "--time_based",
          "--randrepeat=1",
          "--output-format=json"
        ])
        const json = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))) as {
          jobs: Array<{ read: { io_bytes: number; total_ios: number; runtime: number } }>
        }
        const read = json.jobs[0]!.read
        randomPeer.push({
          run: { seconds: read.runtime / 1000, bytes: read.io_bytes, requests: read.total_ios },
          peakRssKiB: r.peakRssKiB
        })
      }
      randomOurs.push(yield* runWorker({ mode: "randread", uri: nbdkit.uri, seconds: RANDOM_SECONDS }))
    }

    // 6. the socket: our Node socket against @effect/platform-node's NodeSocket.layerNet, the same client
    // otherwise, alternating; what says whether our own socket still earns its place.
    const socketRuns = { ours: [] as Array<WorkerResult>, effect: [] as Array<WorkerResult> }
    const socketRandom = { ours: [] as Array<WorkerResult>, effect: [] as Array<WorkerResult> }
    for (let i = 0; i < REPS; i++) {
      yield* log(`socket: sequential read ${i + 1}/${REPS}`)
      for (const socket of ["ours", "effect"] as const)
        socketRuns[socket].push(
          yield* runWorker({ mode: "read", uri: nbdkit.uri, reps: 1, warmupBytes: WARMUP_BYTES, socket })
        )
    }
    for (let i = 0; i < RANDOM_REPS; i++) {
      yield* log(`socket: random 4 KiB reads ${i + 1}/${RANDOM_REPS}`)
      for (const socket of ["ours", "effect"] as const)
        socketRandom[socket].push(
          yield* runWorker({ mode: "randread", uri: nbdkit.uri, seconds: RANDOM_SECONDS, socket })
        )
    }

    type Run = { seconds: number; bytes: number; requests: number }
    // 7. threads: does a thread per connection pay on this machine? Node's floor split over N worker threads
    // (the transfer alone: thread start-up left out, in the threads' favour) against the floor on one thread,
    // and nbdcopy's own threads (whole processes) against one, alternating.
    const threadCounts = [2, 4] as const
    const threadRuns = new Map<number, { floor: Array<WorkerRun>; nbdcopy: Array<Run> }>()
    for (const n of [1, ...threadCounts]) threadRuns.set(n, { floor: [], nbdcopy: [] })
    for (let i = 0; i < REPS; i++) {
      yield* log(`threads ${i + 1}/${REPS}`)
      for (const n of [1, ...threadCounts]) {
        const floor = yield* runFloor({ mode: "read", uri: nbdkit.uri, reps: 1, warmupBytes: 0, threads: n })
        threadRuns.get(n)!.floor.push(...floor.runs.map((r) => ({ ...r, seconds: r.transferSeconds })))
        const peer = yield* runTimed("nbdcopy", ["-C", String(n), "-T", String(n), nbdkit.uri, "null:"])
        threadRuns.get(n)!.nbdcopy.push({ seconds: peer.wallSeconds, bytes: SIZE, requests: 1 })
      }
    }

    // 5. what users run, as whole processes, alternating with libnbd's tools: the CLI's copy at its
    // defaults (nbdcopy's), -C 1 and -C 4, NBD to null:, to a file and from a file; and start-up.
    const wholeProcesses = (
      test: string,
      ours: ReadonlyArray<string>,
      peer: readonly [string, ReadonlyArray<string>],
      bytes: number,
      target?: number,
      cleanup: () => void = () => {},
      floorTask?: FloorTask
    ) =>
      Effect.gen(function* () {
        const a: Array<Run> = []
        const b: Array<Run> = []
        const c: Array<Run> = []
        let rssA = 0
        let rssB = 0
        let rssC = 0
        for (let i = 0; i < REPS; i++) {
          yield* log(`${test} ${i + 1}/${REPS}`)
          const x = yield* runTimed(process.execPath, [clientBinOrServer(ours[0]!), ...ours.slice(1)])
          cleanup()
          const y = yield* runTimed(peer[0], peer[1])
          cleanup()
          a.push({ seconds: x.wallSeconds, bytes, requests: 1 })
          b.push({ seconds: y.wallSeconds, bytes, requests: 1 })
          rssA = Math.max(rssA, x.peakRssKiB)
          rssB = Math.max(rssB, y.peakRssKiB)
          if (floorTask !== undefined) {
            const z = yield* runFloor(floorTask)
            c.push({ seconds: z.processSeconds, bytes, requests: 1 })
            rssC = Math.max(rssC, z.peakRssKiB)
          }
        }
        return compare(
          test,
          side("effect-nbd", `${Path.basename(ours[0]!)} ${ours.slice(1).join(" ")}`, a, rssA, false),
          side(peer[0], `${peer[0]} ${peer[1].join(" ")}`, b, rssB, false),
          target,
          floorTask !== undefined
            ? side("node floor", "floor.js --worker (read, whole process)", c, rssC, false)
            : undefined
        )
      })
    const clientBinOrServer = (name: string) => (name === "effect-nbd-server" ? serverBin() : clientBin())
    const target = Path.join(Path.dirname(file), "copy-target.img")
    const removeTarget = () => Fs.rmSync(target, { force: true })
    const uri = nbdkit.uri
    const processRows: Array<Comparison> = []
    for (const flags of [[], ["-C", "1"], ["-C", "4"]])
      processRows.push(
        yield* wholeProcesses(
          `copy URI null: ${flags.join(" ") || "(defaults)"}`,
          ["effect-nbd", "copy", ...flags, uri, "null:"],
          ["nbdcopy", [...flags, uri, "null:"]],
          SIZE,
          0.9,
          undefined,
          { mode: "read", uri, reps: 1, warmupBytes: 0 }
        )
      )
    processRows.push(
      yield* wholeProcesses(
        "copy URI FILE",
        ["effect-nbd", "copy", uri, target],
        ["nbdcopy", [uri, target]],
        SIZE,
        0.9,
        removeTarget
      )
    )
    processRows.push(
      yield* wholeProcesses("copy FILE URI", ["effect-nbd", "copy", file, uri], ["nbdcopy", [file, uri]], SIZE, 0.9)
    )
    // Each server started for one nbdcopy into a fresh memory export: the first write, which allocates.
    const writeInto = ["-U", "-", "memory", "1G", "--run", `nbdcopy '${file}' "$uri"`]
    processRows.push(
      yield* wholeProcesses(
        "server: nbdcopy write 1 GiB (process)",
        ["effect-nbd-server", ...writeInto],
        ["nbdkit", writeInto],
        SIZE,
        0.8
      )
    )
    const startUp = [
      yield* wholeProcesses(
        "start-up: info --size URI",
        ["effect-nbd", "info", "--size", uri],
        ["nbdinfo", ["--size", uri]],
        1
      ),
      yield* wholeProcesses(
        "start-up: server --run true",
        ["effect-nbd-server", "--run", "true", "memory", "1G"],
        ["nbdkit", ["--run", "true", "memory", "1G"]],
        1
      )
    ]

    // 4. our server vs nbdkit, both read by nbdcopy
    const ours = yield* startServer(
      "effect-nbd-server",
      process.execPath,
      [serverBin(), "-f", "-U", Path.join(dir, "ours.sock"), "--export", "=1G"],
      Path.join(dir, "ours.sock")
    )
    yield* log("our server: filling it with nbdcopy")
    const oursFill = yield* nbdcopy([file, ours.uri])
    yield* log(`filled our server in ${oursFill.run.seconds.toFixed(2)} s`)
    const serverOurs: Array<{ run: { seconds: number; bytes: number; requests: number }; peakRssKiB: number }> = []
    const serverPeer: typeof serverOurs = []
    let cpuOurs = 0
    let cpuNbdkit = 0
    for (let i = 0; i < REPS; i++) {
      yield* log(`servers: nbdcopy reads ${i + 1}/${REPS}`)
      const a = cpuSecondsOf(ours.pid)
      serverOurs.push(yield* nbdcopy([ours.uri, "null:"]))
      cpuOurs += cpuSecondsOf(ours.pid) - a
      const b = cpuSecondsOf(nbdkit.pid)
      serverPeer.push(yield* nbdcopy([nbdkit.uri, "null:"]))
      cpuNbdkit += cpuSecondsOf(nbdkit.pid) - b
    }
    const serverRss = { ours: peakRssOf(ours.pid), nbdkit: peakRssOf(nbdkit.pid) }

    // Figures
    const libnbd = version("nbdcopy", ["--version"])
    const floorSide = (tool: string, floor: { runs: ReadonlyArray<WorkerRun>; peakRssKiB: number }) =>
      side("node floor", tool, floor.runs, floor.peakRssKiB, false)
    const readFloor = floorSide("floor.js (raw net, 256K x 64) URI read", floorRead)
    const readRow = (
      test: string,
      ours: { runs: ReadonlyArray<WorkerRun>; peakRssKiB: number },
      peer: ReadonlyArray<{ run: { seconds: number; bytes: number; requests: number }; peakRssKiB: number }>,
      target: number
    ) =>
      compare(
        test,
        side("effect-nbd client", "effect-nbd (node)", ours.runs, ours.peakRssKiB, false),
        side(
          "nbdcopy",
          "nbdcopy -C 1 -R 64 --request-size=262144 URI null:",
          peer.map((r) => r.run),
          maxOf(peer.map((r) => r.peakRssKiB)),
          false
        ),
        target,
        readFloor
      )
    const comparisons: Array<Comparison> = [
      readRow("seq read 1 GiB, aio loop 256K x 64", oursRead, peerRead, 0.9),
      readRow("seq read 1 GiB, NbdStream.readStream", oursStream, peerStream, 0.8),
      readRow("seq read 1 GiB, forEach Nbd.pread (fresh)", oursPread, peerPread, 0.5),
      readRow("seq read 1 GiB, NbdStream.readStream, glibc keeps memory", oursStreamTuned, peerStreamTuned, 0.8),
      readRow("seq read 1 GiB, forEach Nbd.pread (fresh), glibc keeps memory", oursPreadTuned, peerPreadTuned, 0.5),
      compare(
        "seq write 1 GiB, 256K x 64",
        side("effect-nbd client", "effect-nbd (node)", oursWrite.runs, oursWrite.peakRssKiB, false),
        side(
          "nbdcopy",
          "nbdcopy -C 1 -R 64 --request-size=262144 FILE URI",
          peerWrite.map((r) => r.run),
          maxOf(peerWrite.map((r) => r.peakRssKiB)),
          false
        ),
        undefined,
        floorSide("floor.js (raw net, 256K x 64) URI write", floorWrite)
      ),
      compare(
        `rand read 4K x 64, ${RANDOM_SECONDS} s`,
        side(
          "effect-nbd client",
          "effect-nbd (node)",
          randomOurs.flatMap((r) => r.runs),
          maxOf(randomOurs.map((r) => r.peakRssKiB)),
          true
        ),
        haveFio
          ? side(
              "fio (nbd engine)",
              "fio --ioengine=nbd --rw=randread --bs=4k --iodepth=64",
              randomPeer.map((r) => r.run),
              maxOf(randomPeer.map((r) => r.peakRssKiB)),
              true
            )
          : side("fio (unavailable)", "fio", [], NaN, true),
        0.8
      ),
      compare(
        "server: nbdcopy read 1 GiB",
        side(
          "effect-nbd-server",
          "nbdcopy from effect-nbd-server --export =1G",
          serverOurs.map((r) => r.run),
          serverRss.ours,
          false,
          {
            cpuSeconds: cpuOurs
          }
        ),
        side(
          "nbdkit memory",
          "nbdcopy from nbdkit memory 1G",
          serverPeer.map((r) => r.run),
          serverRss.nbdkit,
          false,
          {
            cpuSeconds: cpuNbdkit
          }
        ),
        0.9
      )
    ]
    const socketRow = (test: string, runs: typeof socketRuns, withIops: boolean) =>
      compare(
        test,
        side(
          "our Node socket",
          "NodeNbd.connectUri",
          runs.ours.flatMap((r) => r.runs),
          maxOf(runs.ours.map((r) => r.peakRssKiB)),
          withIops
        ),
        side(
          "NodeSocket.layerNet",
          "Nbd.connectSocket on @effect/platform-node's NodeSocket.layerNet",
          runs.effect.flatMap((r) => r.runs),
          maxOf(runs.effect.map((r) => r.peakRssKiB)),
          withIops
        )
      )
    comparisons.push(
      socketRow("socket: seq read 1 GiB, aio loop (ours vs NodeSocket)", socketRuns, false),
      socketRow(`socket: rand read 4K x 64, ${RANDOM_SECONDS} s (ours vs NodeSocket)`, socketRandom, true)
    )
    for (const n of threadCounts) {
      const one = threadRuns.get(1)!
      const many = threadRuns.get(n)!
      comparisons.push(
        compare(
          `threads: Node's floor read 1 GiB, ${n} threads / 1`,
          side(`floor x ${n} threads`, `floor.js --worker (read, threads ${n}, transfer)`, many.floor, NaN, false),
          side("floor x 1", "floor.js --worker (read, transfer)", one.floor, NaN, false)
        ),
        compare(
          `threads: nbdcopy -C ${n} -T ${n} / -C 1 -T 1`,
          side(`nbdcopy -T ${n}`, `nbdcopy -C ${n} -T ${n} URI null:`, many.nbdcopy, NaN, false),
          side("nbdcopy -T 1", "nbdcopy -C 1 -T 1 URI null:", one.nbdcopy, NaN, false)
        )
      )
    }
    comparisons.push(...processRows)
    const rendered = table(comparisons)
    const startUpLines = startUp.map(
      (c) =>
        `${c.test}: effect-nbd ${c.ours.medianSeconds.toFixed(3)} s, ${c.peer.label} ${c.peer.medianSeconds.toFixed(3)} s (target <= 0.2 s)`
    )
    const notes = [
      "MB/s = 10^6 bytes/s, medians over repetitions; ratio = ours / peer throughput.",
      "Our client runs in a child node process; its time covers connect + transfer + disconnect (not node start-up).",
      "Peers are timed from spawn to exit. Peak RSS: GNU time %M for clients, VmHWM for servers (includes 1 GiB of data).",
      `Load average (1 min) before / after: ${loadBefore[0]!.toFixed(2)} / ${Os.loadavg()[0]!.toFixed(2)} on ${Os.cpus().length} CPUs.`,
      `Server CPU over the ${REPS} reads: effect-nbd-server ${cpuOurs.toFixed(2)} s, nbdkit ${cpuNbdkit.toFixed(2)} s.`,
      "Node's floor: floor.js, a raw net NBD client (no Effect, no library code, simple replies, 256K x 64, payloads copied once into pooled buffers); ours/floor = ours / floor throughput. Sequential rows time its session like ours; copy rows time its whole process.",
      "threads rows: the first side over the second; the floor's time is its transfer alone (worker threads' start-up left out), nbdcopy's its whole process.",
      "The copy rows and the server write row time whole processes (node start-up included) from spawn to exit, alternating with the peer.",
      ...startUpLines
    ]
    process.stdout.write(`\n${rendered}\n\n${notes.join("\n")}\n`)

    const result = {
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      environment: {
        node: process.version,
        cpus: Os.cpus().length,
        cpuModel: Os.cpus()[0]?.model,
        kernel: Os.release(),
        memoryBytes: Os.totalmem(),
        loadAverageBefore: loadBefore,
        loadAverageAfter: Os.loadavg(),
        nbdcopy: libnbd,
        nbdkit: version("nbdkit", ["--version"]),
        fio: haveFio ? version("fio", ["--version"]) : "unavailable"
      },
      parameters: {
        sizeBytes: SIZE,
        requestSize: REQUEST_SIZE,
        inFlight: DEPTH,
        randomBlock: RANDOM_BLOCK,
        reps: REPS,
        randomReps: RANDOM_REPS,
        randomSeconds: RANDOM_SECONDS,
        dataFile: file
      },
      comparisons: comparisons.map((c) => ({
        ...c,
        meetsTarget: c.target === undefined ? undefined : c.ratio >= c.target
      })),
      clientTransferSeconds: {
        read: oursRead.runs.map((r) => r.transferSeconds),
        write: oursWrite.runs.map((r) => r.transferSeconds),
        floorRead: floorRead.runs.map((r) => r.transferSeconds),
        floorWrite: floorWrite.runs.map((r) => r.transferSeconds)
      },
      // Spawn to exit of each worker process (node start-up and the 256 MiB warm-up included).
      clientProcessSeconds: {
        read: oursRead.processSeconds,
        write: oursWrite.processSeconds,
        floorRead: floorRead.processSeconds,
        floorWrite: floorWrite.processSeconds
      },
      serverCpuSeconds: { effectNbdServer: cpuOurs, nbdkit: cpuNbdkit },
      startUp: startUp.map((c) => ({ test: c.test, ours: c.ours.medianSeconds, peer: c.peer.medianSeconds })),
      table: rendered,
      notes
    }
    Fs.mkdirSync(RESULTS_DIR, { recursive: true })
    const out = Path.join(RESULTS_DIR, `bench-${started.toISOString().replace(/[:.]/g, "-")}.json`)
    Fs.writeFileSync(out, JSON.stringify(result, null, 2) + "\n")
    process.stdout.write(`\nsaved ${Path.relative(process.cwd(), out)}\n`)
  })
)

// ---------------------------------------------------------------------------------------------------------------
// Profiling our client's sequential read
// ---------------------------------------------------------------------------------------------------------------

interface CpuProfile {
  readonly nodes: ReadonlyArray<{
    readonly id: number
    readonly callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }
  }>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** Self time per function and per file, from a .cpuprofile's samples. */
const summariseProfile = (profile: CpuProfile, top: number): string => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]))
  const byFunction = new Map<string, number>()
  const byFile = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0
    const frame = byId.get(id)
    if (frame === undefined) return
    total += dt
    const url = frame.url.replace(/^file:\/\//, "")
    const short = url.includes("/node_modules/")
      ? url.slice(url.lastIndexOf("/node_modules/") + 14).replace(/^\.pnpm\/[^/]+\/node_modules\//, "")
      : url.startsWith(ROOT)
        ? Path.relative(ROOT, url)
        : url
    const fn = `${frame.functionName || "(anonymous)"}  ${short}${short ? `:${frame.lineNumber + 1}` : ""}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + dt)
    const fileKey = short || frame.functionName
    byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + dt)
  })
  const rows = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `${((v / total) * 100).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`)
  return [
    `total sampled: ${(total / 1e6).toFixed(2)} s`,
    "",
    `top ${top} functions by self time:`,
    ...rows(byFunction, top),
    "",
    "self time by file:",
    ...rows(byFile, 15)
  ].join("\n")
}

const profile = Effect.scoped(
  Effect.gen(function* () {
    const dir = yield* tempDir
    const nbdkit = yield* startServer(
      "nbdkit",
      "nbdkit",
      ["-f", "-U", Path.join(dir, "nbdkit.sock"), "memory", "1G"],
      Path.join(dir, "nbdkit.sock")
    )
    // Fill with nbdkit's pattern plugin (non-zero, quick), so nothing is sparse.
    yield* runTimed("nbdkit", ["-U", "-", "pattern", "size=1G", "--run", `nbdcopy -C 1 "$uri" "${nbdkit.uri}"`])
    const profDir = Path.join(dir, "prof")
    const r = yield* runWorker({ mode: "read", uri: nbdkit.uri, reps: REPS, warmupBytes: 0 }, [
      "--cpu-prof",
      `--cpu-prof-dir=${profDir}`,
      "--cpu-prof-interval=200"
    ])
    const name = Fs.readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))
    if (name === undefined) return yield* new BenchError({ message: "no .cpuprofile was written" })
    Fs.mkdirSync(RESULTS_DIR, { recursive: true })
    const saved = Path.join(RESULTS_DIR, `read-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`)
    Fs.copyFileSync(Path.join(profDir, name), saved)
    const prof = JSON.parse(Fs.readFileSync(saved, "utf8")) as CpuProfile
    const rates = r.runs.map((x) => (x.bytes / x.seconds / 1e6).toFixed(0))
    process.stdout.write(
      `sequential read (profiled, 256K x 64): ${rates.join(", ")} MB/s\n\n${summariseProfile(prof, 30)}\n\nsaved ${Path.relative(process.cwd(), saved)}\n`
    )
  })
)

// ---------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------

const argv = process.argv.slice(2)
if (argv[0] === "--worker") {
  const task = JSON.parse(argv[1] ?? "{}") as WorkerTask
  Effect.runPromise(worker(task)).then(
    (runs) => process.stdout.write(JSON.stringify(runs)),
    (error: unknown) => {
      process.stderr.write(`bench worker: ${String(error)}\n`)
      process.exit(1)
    }
  )
} else {
  NodeRuntime.runMain(argv[0] === "--profile" ? profile : benchmark)
}
