/**
 * The hostile-server fuzz of the client: each case (mutate.ts) is served by the replay server while the client
 * runs the recorded session against it through `Nbd.make` and `NodeNbd.connectUnix`. Every run must end, within
 * a bound, in success or typed NbdErrors, with no defect, no unhandled rejection, no file descriptor left open
 * and bounded memory. A case that breaks a rule is saved under regressions/ as the exact plan the server
 * followed, and replayed by the test suite from then on.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { captureLogs, withCapturedLogs } from "../util/logs.js"
import { type Case, makeCase } from "./mutate.js"
import { makeReplayServer, type Plan, type ReplayServer, type Served } from "./replay-server.js"
import * as Session from "./session.js"
import { fromHex, fuzzDirectory, loadTranscripts, toHex } from "./transcript.js"

/** Verdicts that break the rules: each is saved as a regression. */
export const BAD = ["timeout", "defect", "untyped", "lost", "leak", "unhandled"] as const

export interface CaseResult {
  /** "success", `Tag/errno` of the first error, or one of `BAD`. */
  readonly outcome: string
  readonly ms: number
  readonly detail: string
  /** What the client sent, as far as the server saw before the run ended. */
  readonly clientSent: Uint8Array
}

export interface FuzzOptions {
  readonly seed: number
  /** Stop after this many cases... */
  readonly iterations?: number
  /** ... or after this long, whichever comes first. */
  readonly durationMs?: number
  /** How long one run may take, connect to close. Default 5 s. */
  readonly boundMs?: number
  /** Save failing cases under regressions/. Default true. */
  readonly saveRegressions?: boolean
  /** Stop once this many cases failed. Default: never. */
  readonly maxFailures?: number
}

export interface Failure {
  readonly index: number
  readonly outcome: string
  readonly origin: string
  readonly detail: string
  readonly file: string | undefined
}

export interface FuzzReport {
  readonly seed: number
  readonly iterations: number
  readonly durationMs: number
  /** Cases by verdict: success, each `Tag/errno`, and the bad ones. */
  readonly outcomes: Record<string, number>
  /** Cases by how they were made (a case with several mutations counts for each). */
  readonly kinds: Record<string, number>
  readonly timeouts: number
  readonly defects: number
  readonly failures: ReadonlyArray<Failure>
  readonly slowestCaseMs: number
  readonly startRssBytes: number
  readonly peakRssBytes: number
}

// ---------------------------------------------------------------------------------------------------------------
// Regressions: the exact plan, as JSON with hex
// ---------------------------------------------------------------------------------------------------------------

interface PlanJson {
  readonly steps: ReadonlyArray<{
    readonly client: number
    readonly writes: ReadonlyArray<{ readonly bytes: string; readonly delayMs: number }>
  }>
  readonly end: Plan["end"]
  readonly idleMs: number
}

export interface Regression {
  readonly origin: string
  readonly found: string
  readonly plan: Plan
}

const encodePlan = (plan: Plan): PlanJson => ({
  steps: plan.steps.map((s) => ({
    client: s.client,
    writes: s.writes.map((w) => ({ bytes: toHex(w.bytes), delayMs: w.delayMs }))
  })),
  end: plan.end,
  idleMs: plan.idleMs
})

const decodePlan = (json: PlanJson): Plan => ({
  steps: json.steps.map((s) => ({
    client: s.client,
    writes: s.writes.map((w) => ({ bytes: fromHex(w.bytes), delayMs: w.delayMs }))
  })),
  end: json.end,
  idleMs: json.idleMs
})

export const regressionsDirectory = (): string => Path.join(fuzzDirectory(), "regressions")

/**
 * Saves a failing case: the plan the server followed and what the client sent it. The name is the verdict and
 * a digest of the plan, so a case is saved once.
 */
export const saveRegression = async (c: Case, found: string, clientSent: Uint8Array): Promise<string> => {
  const json = { origin: c.origin, found, clientSent: toHex(clientSent), plan: encodePlan(c.plan) }
  const digest = Crypto.createHash("sha256").update(JSON.stringify(json.plan)).digest("hex").slice(0, 12)
  const dir = regressionsDirectory()
  Fs.mkdirSync(dir, { recursive: true })
  const file = Path.join(dir, `${found.replace(/[^a-z0-9]+/gi, "-")}-${digest}.json`)
  Fs.writeFileSync(file, await formatJson(file, json))
  return file
}

/** JSON as the repository's prettier settings format it, so saved files pass the lint. */
export const formatJson = async (file: string, value: unknown): Promise<string> => {
  const prettier = await import("prettier")
  const options = (await prettier.resolveConfig(file)) ?? {}
  return prettier.format(JSON.stringify(value), { ...options, parser: "json" })
}

export const loadRegressions = (): ReadonlyArray<Regression & { readonly file: string }> => {
  const dir = regressionsDirectory()
  if (!Fs.existsSync(dir)) return []
  return Fs.readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => {
      const json = JSON.parse(Fs.readFileSync(Path.join(dir, f), "utf8")) as {
        origin: string
        found: string
        plan: PlanJson
      }
      return { file: f, origin: json.origin, found: json.found, plan: decodePlan(json.plan) }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------------------------

const openFds = (): number => Fs.readdirSync("/proc/self/fd").length

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits up to `ms` for the open descriptors to fall back to `count`; gives the count it saw last. */
const settleFds = async (count: number, ms: number): Promise<number> => {
  const until = Date.now() + ms
  let now = openFds()
  while (now > count && Date.now() < until) {
    await sleep(10)
    now = openFds()
  }
  return now
}

const withTimeout = <A>(promise: Promise<A>, ms: number): Promise<A | "timeout"> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve("timeout"), ms)
    promise.then(
      (a) => {
        clearTimeout(timer)
        resolve(a)
      },
      (e) => {
        clearTimeout(timer)
        reject(e)
      }
    )
  })

/**
 * The session's verdict: an untyped error anywhere is a failure even when an earlier step failed typed, and so
 * is a command still in flight once the session is over.
 */
const verdict = (result: Session.SessionResult): { outcome: string; detail: string } => {
  const untyped = result.find((s) => "error" in s && !s.error.typed)
  if (untyped !== undefined && "error" in untyped)
    return { outcome: "untyped", detail: `${untyped.step}: ${untyped.error.message}` }
  const inFlight = result.find((s) => s.step === "in-flight")
  if (inFlight !== undefined && "ok" in inFlight && inFlight.ok !== 0)
    return { outcome: "lost", detail: `${String(inFlight.ok)} commands still in flight after the session` }
  return { outcome: Session.outcomeOf(result), detail: JSON.stringify(result) }
}

const sentBy = (served: Served | "timeout"): Uint8Array => (served === "timeout" ? new Uint8Array(0) : served.received)

/**
 * Runs the session once against `plan`. The bound is kept by a timer outside Effect, so a run that cannot be
 * interrupted still reports "timeout" instead of hanging the fuzz.
 */
export const runPlan = async (server: ReplayServer, plan: Plan, boundMs = 5000): Promise<CaseResult> => {
  const fdsBefore = openFds()
  const start = performance.now()
  const served = server.serve(plan)
  const logs = captureLogs()
  const fiber = Effect.runFork(withCapturedLogs(logs)(Effect.scoped(Session.run(server.path))))
  const exit = await withTimeout(Effect.runPromise(Fiber.await(fiber)), boundMs)
  const ms = performance.now() - start
  if (exit === "timeout") {
    Effect.runFork(Fiber.interrupt(fiber))
    const clientSent = sentBy(await withTimeout(served, 1000))
    return { outcome: "timeout", ms, detail: `the session did not end within ${boundMs} ms`, clientSent }
  }
  const clientSent = sentBy(await withTimeout(served, 2000))
  if (Exit.isFailure(exit)) return { outcome: "defect", ms, detail: Cause.pretty(exit.cause), clientSent }
  // The handle's fibers end when its scope closes, before the session's fiber does: what they logged is in.
  const unhandled = logs.unhandled()
  if (unhandled.length > 0) return { outcome: "unhandled", ms, detail: unhandled.join("\n"), clientSent }
  const { detail, outcome } = verdict(exit.value)
  const fdsAfter = await settleFds(fdsBefore, 500)
  if (fdsAfter > fdsBefore) {
    const leaked = `${fdsAfter - fdsBefore} more open file descriptors after the run`
    return { outcome: "leak", ms, detail: leaked, clientSent }
  }
  return { outcome, ms, detail, clientSent }
}

// ---------------------------------------------------------------------------------------------------------------
// The fuzz loop
// ---------------------------------------------------------------------------------------------------------------

const bump = (counts: Record<string, number>, key: string): void => {
  counts[key] = (counts[key] ?? 0) + 1
}

/** Runs cases from `seed` until `iterations` or `durationMs` is reached; see `FuzzReport`. */
export const runFuzz = async (options: FuzzOptions): Promise<FuzzReport> => {
  const transcripts = loadTranscripts()
  const boundMs = options.boundMs ?? 5000
  const limit = options.iterations ?? Number.POSITIVE_INFINITY
  const deadline = options.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.durationMs
  const outcomes: Record<string, number> = {}
  const kinds: Record<string, number> = {}
  const failures: Array<Failure> = []
  let unhandled = 0
  const onUnhandled = (): void => {
    unhandled += 1
  }
  process.on("unhandledRejection", onUnhandled)
  const startRssBytes = process.memoryUsage.rss()
  let peakRssBytes = startRssBytes
  const sampler = setInterval(() => {
    peakRssBytes = Math.max(peakRssBytes, process.memoryUsage.rss())
  }, 20)
  const server = await makeReplayServer()
  const started = Date.now()
  let index = 0
  let slowestCaseMs = 0
  try {
    for (; index < limit && Date.now() < deadline; index++) {
      const c = makeCase(transcripts, options.seed, index)
      for (const kind of new Set(c.kind.split("+"))) bump(kinds, kind)
      const before = unhandled
      const result = await runPlan(server, c.plan, boundMs)
      slowestCaseMs = Math.max(slowestCaseMs, result.ms)
      const outcome = unhandled > before && result.outcome !== "timeout" ? "unhandled" : result.outcome
      bump(outcomes, outcome)
      if ((BAD as ReadonlyArray<string>).includes(outcome)) {
        const file = options.saveRegressions === false ? undefined : await saveRegression(c, outcome, result.clientSent)
        failures.push({ index, outcome, origin: c.origin, detail: result.detail, file })
        if (failures.length >= (options.maxFailures ?? Number.POSITIVE_INFINITY)) {
          index++
          break
        }
      }
    }
  } finally {
    clearInterval(sampler)
    process.off("unhandledRejection", onUnhandled)
    await server.close()
  }
  peakRssBytes = Math.max(peakRssBytes, process.memoryUsage.rss())
  return {
    seed: options.seed,
    iterations: index,
    durationMs: Date.now() - started,
    outcomes,
    kinds,
    timeouts: outcomes["timeout"] ?? 0,
    defects: outcomes["defect"] ?? 0,
    failures,
    slowestCaseMs: Math.round(slowestCaseMs),
    startRssBytes,
    peakRssBytes
  }
}
