/**
 * The hostile-client fuzz of the test server: many connections, each sending a case from mutate.ts to one of
 * the server configurations in servers.ts. Every connection must end within a bound (the server closes it,
 * or the client finishes and the server closes after its FIN); the server must never crash or log a defect;
 * afterwards a well-behaved client is served within 50 ms by every server, no file descriptor is left open
 * and memory stayed bounded. A case that breaks a rule is saved under regressions/ as its exact plan, and the
 * test suite replays it from then on.
 */
import { TestServer } from "@effect-nbd/test-server"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as References from "effect/References"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { CMD_FLUSH, CMD_READ, handshakeSimple, memoryInUse, RawClient, request, simpleReply } from "../raw.js"
import { type Case, makeCase, type Plan, Rng } from "./mutate.js"
import { serverConfig } from "./servers.js"
import { fromHex, fuzzDirectory, loadTranscripts, type ServerKind, serverKinds, toHex } from "./transcript.js"

/** Verdicts that break the rules: each is saved as a regression. */
export const BAD = ["timeout", "refused", "defect"] as const

export interface CaseResult {
  /** "closed-by-server", "closed-after-fin", "destroyed", or one of `BAD`. */
  readonly outcome: string
  readonly ms: number
}

export interface FuzzOptions {
  readonly seed: number
  /** Stop after this many cases... */
  readonly iterations?: number
  /** ... or after this long, whichever comes first. */
  readonly durationMs?: number
  /** Connections at once. Default 8. */
  readonly concurrency?: number
  /** How long one connection may take, connect to close. Default 5 s. */
  readonly boundMs?: number
  /** Save failing cases under regressions/. Default true. */
  readonly saveRegressions?: boolean
}

export interface Failure {
  readonly index: number
  readonly outcome: string
  readonly origin: string
  readonly kinds: ReadonlyArray<string>
  readonly detail: string
  readonly file: string | undefined
}

export interface FuzzReport {
  readonly seed: number
  readonly iterations: number
  readonly durationMs: number
  /** Connections by how they ended. */
  readonly outcomes: Record<string, number>
  /** Cases by how they were made (a case with several mutations counts for each). */
  readonly kinds: Record<string, number>
  readonly failures: ReadonlyArray<Failure>
  /** Defects the servers logged or threw, whatever case they belong to. */
  readonly defects: ReadonlyArray<string>
  readonly slowestCaseMs: number
  /** How long a well-behaved client took afterwards (connect, handshake, a read, a flush), per server. */
  readonly politeMs: Record<ServerKind, number>
  /** File descriptors open before the servers started and after they stopped. */
  readonly fdsBefore: number
  readonly fdsAfter: number
  /** The largest growth of heap plus array buffers over the start. */
  readonly peakMemoryGrowthBytes: number
  readonly startRssBytes: number
  readonly peakRssBytes: number
}

// -----------------------------------------------------------------------------
// regressions: the exact plan, as JSON with hex
// -----------------------------------------------------------------------------

interface PlanJson {
  readonly server: ServerKind
  readonly writes: ReadonlyArray<{ readonly hex: string; readonly delayMs: number }>
  readonly end: Plan["end"]
  readonly holdMs: number
}

export interface Regression {
  readonly origin: string
  readonly kinds: ReadonlyArray<string>
  readonly found: string
  readonly plan: Plan
  readonly file: string
}

const encodePlan = (plan: Plan): PlanJson => ({
  server: plan.server,
  writes: plan.writes.map((w) => ({ hex: toHex(w.bytes), delayMs: w.delayMs })),
  end: plan.end,
  holdMs: plan.holdMs
})

const decodePlan = (json: PlanJson): Plan => ({
  server: json.server,
  writes: json.writes.map((w) => ({ bytes: fromHex(w.hex), delayMs: w.delayMs })),
  end: json.end,
  holdMs: json.holdMs
})

export const regressionsDirectory = (): string => Path.join(fuzzDirectory(), "regressions")

/** Saves a failing case; its name is the verdict and a digest of the plan, so a case is saved once. */
export const saveRegression = async (c: Case, found: string, dir = regressionsDirectory()): Promise<string> => {
  const plan = encodePlan(c.plan)
  const digest = Crypto.createHash("sha256").update(JSON.stringify(plan)).digest("hex").slice(0, 12)
  Fs.mkdirSync(dir, { recursive: true })
  const file = Path.join(dir, `${found}-${digest}.json`)
  const prettier = await import("prettier")
  const options = (await prettier.resolveConfig(file)) ?? {}
  const json = JSON.stringify({ origin: c.origin, kinds: c.kinds, found, plan })
  Fs.writeFileSync(file, await prettier.format(json, { ...options, parser: "json" }))
  return file
}

/** Every saved regression, in file name order. */
export const loadRegressions = (dir = regressionsDirectory()): ReadonlyArray<Regression> => {
  if (!Fs.existsSync(dir)) return []
  return Fs.readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => {
      const file = Path.join(dir, f)
      const json = JSON.parse(Fs.readFileSync(file, "utf8")) as {
        origin: string
        kinds: ReadonlyArray<string>
        found: string
        plan: PlanJson
      }
      return { origin: json.origin, kinds: json.kinds, found: json.found, plan: decodePlan(json.plan), file }
    })
}

// -----------------------------------------------------------------------------
// one connection
// -----------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Runs one plan against the server on `path`: writes, then ends as the plan says, reading (and dropping)
 * whatever the server sends except while holding. Gives how the connection ended.
 */
export const runPlan = (path: string, plan: Plan, boundMs = 5000): Promise<CaseResult> =>
  new Promise((resolve) => {
    const started = performance.now()
    const socket = Net.createConnection({ path })
    let closed = false
    let serverEnded = false
    let ending = false
    let refused = false
    let settled = false
    const settle = (outcome: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ outcome, ms: performance.now() - started })
    }
    const timer = setTimeout(() => settle("timeout"), boundMs)
    socket.on("data", () => {})
    socket.on("end", () => {
      serverEnded = true
    })
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED" || error.code === "ENOENT") refused = true
    })
    socket.on("close", () => {
      closed = true
      if (refused) return settle("refused")
      if (ending) return settle(plan.end.endsWith("destroy") ? "destroyed" : "closed-after-fin")
      // The server closed before the client was done: it refused the stream.
      settle(serverEnded ? "closed-by-server" : "reset-by-server")
    })
    const write = (bytes: Uint8Array): Promise<void> =>
      new Promise((done) => {
        if (closed || socket.destroyed) return done()
        if (socket.write(bytes)) return done()
        const go = (): void => {
          socket.off("drain", go)
          socket.off("close", go)
          done()
        }
        socket.on("drain", go)
        socket.on("close", go)
      })
    socket.once("connect", () => {
      void (async () => {
        for (const w of plan.writes) {
          if (closed) return
          if (w.delayMs > 0) await sleep(w.delayMs)
          await write(w.bytes)
        }
        if (closed) return
        if (plan.end.startsWith("hold")) {
          socket.pause()
          await sleep(plan.holdMs)
          if (closed) return
        }
        ending = true
        if (plan.end.endsWith("destroy")) return socket.destroy()
        socket.end()
        socket.resume()
      })()
    })
  })

// -----------------------------------------------------------------------------
// the servers, a well-behaved client, and the run
// -----------------------------------------------------------------------------

/** A well-behaved client: connect, handshake, read 4 KiB, flush. Gives the milliseconds it took. */
export const politeClient = async (path: string): Promise<number> => {
  const started = performance.now()
  const client = await RawClient.connect(path)
  try {
    await handshakeSimple(client)
    await client.write(Buffer.concat([request(CMD_READ, 1, 0, 4096), request(CMD_FLUSH, 2, 0, 0)]))
    for (let i = 0; i < 2; i++) {
      const reply = await simpleReply(client)
      if (reply.error !== 0) throw new Error(`polite request ${reply.cookie} failed with ${reply.error}`)
      if (reply.cookie === 1) await client.read(4096)
    }
    return performance.now() - started
  } finally {
    client.destroy()
  }
}

/** The median of three polite runs, so one scheduling hiccup of a shared machine does not decide. */
const politeMedian = async (path: string): Promise<number> => {
  const runs: Array<number> = []
  for (let i = 0; i < 3; i++) runs.push(await politeClient(path))
  return runs.sort((a, b) => a - b)[1]!
}

const openFds = (): number => {
  try {
    return Fs.readdirSync("/proc/self/fd").length
  } catch {
    return -1
  }
}

/** Where defects go: Effect logs with a cause (unhandled errors of the servers' fibers), and process errors. */
const defectLogger = (defects: Array<string>) =>
  Logger.make(({ cause, logLevel, message }) => {
    const noCause = cause.reasons.length === 0
    if (noCause && LogLevel.isLessThan(logLevel, "Warn")) return
    defects.push(`${logLevel}: ${String(message)} ${noCause ? "" : Cause.pretty(cause)}`)
  })

/**
 * Starts one server per configuration (in this process, with defects captured), runs `f` with their
 * socket paths, then stops them.
 */
const withServers = <A>(defects: Array<string>, f: (paths: Record<ServerKind, string>) => Promise<A>): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const paths = {} as Record<ServerKind, string>
        for (const kind of serverKinds) {
          const server = yield* TestServer.make(serverConfig(kind))
          if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
          paths[kind] = server.address.path
        }
        return yield* Effect.promise(() => f(paths))
      })
    ).pipe(
      Effect.provideService(References.UnhandledLogLevel, "Error"),
      Effect.provide(Logger.layer([defectLogger(defects)])),
      Effect.provideService(References.MinimumLogLevel, "All")
    )
  )

const count = (table: Record<string, number>, key: string): void => {
  table[key] = (table[key] ?? 0) + 1
}

/** Runs the fuzz: cases from `seed` until `iterations` or `durationMs` runs out (default 200 cases). */
export const runFuzz = async (options: FuzzOptions): Promise<FuzzReport> => {
  const transcripts = loadTranscripts()
  const rng = new Rng(options.seed)
  const boundMs = options.boundMs ?? 5000
  const concurrency = options.concurrency ?? 8
  const limit = options.iterations ?? (options.durationMs === undefined ? 200 : Number.POSITIVE_INFINITY)
  const deadline = options.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.durationMs
  const outcomes: Record<string, number> = {}
  const kinds: Record<string, number> = {}
  const failures: Array<Failure> = []
  const defects: Array<string> = []
  const started = Date.now()
  const startRss = process.memoryUsage().rss
  const startMemory = memoryInUse()
  let peakRss = startRss
  let peakGrowth = 0
  let slowest = 0
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss)
    peakGrowth = Math.max(peakGrowth, memoryInUse() - startMemory)
  }, 50)
  const onProcessError = (error: unknown): void => {
    defects.push(`process: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  }
  process.on("uncaughtException", onProcessError)
  process.on("unhandledRejection", onProcessError)
  const fdsBefore = openFds()
  let iterations = 0
  try {
    const politeMs = await withServers(defects, async (paths) => {
      // A bug of the harness itself stops every worker: the servers close with the run, and cases that
      // went on would only find them gone.
      let broken = false
      const worker = async (): Promise<void> => {
        while (!broken && iterations < limit && Date.now() < deadline) {
          const index = iterations++
          let c: Case
          try {
            c = makeCase(rng, transcripts)
          } catch (error) {
            broken = true
            throw error
          }
          for (const k of c.kinds) count(kinds, k)
          const defectsBefore = defects.length
          const result = await runPlan(paths[c.plan.server], c.plan, boundMs)
          if (broken) return
          slowest = Math.max(slowest, result.ms)
          const outcome = defects.length > defectsBefore ? "defect" : result.outcome
          count(outcomes, outcome)
          if ((BAD as ReadonlyArray<string>).includes(outcome)) {
            const file = options.saveRegressions === false ? undefined : await saveRegression(c, outcome)
            const detail = outcome === "defect" ? defects.slice(defectsBefore).join("\n") : `${result.ms.toFixed(0)} ms`
            failures.push({ index, outcome, origin: c.origin, kinds: c.kinds, detail, file })
          }
        }
      }
      await Promise.all(Array.from({ length: concurrency }, worker))
      // Let connections the clients destroyed finish closing on the server's side.
      await sleep(200)
      const polite = {} as Record<ServerKind, number>
      for (const kind of serverKinds) polite[kind] = await politeMedian(paths[kind])
      return polite
    })
    await sleep(100)
    return {
      seed: options.seed,
      iterations,
      durationMs: Date.now() - started,
      outcomes,
      kinds,
      failures,
      defects,
      slowestCaseMs: Math.round(slowest),
      politeMs,
      fdsBefore,
      fdsAfter: openFds(),
      peakMemoryGrowthBytes: peakGrowth,
      startRssBytes: startRss,
      peakRssBytes: peakRss
    }
  } finally {
    clearInterval(sampler)
    process.off("uncaughtException", onProcessError)
    process.off("unhandledRejection", onProcessError)
  }
}
