/**
 * Hostile servers against the client (issue 7, "fuzzing as part of the project"): a fixed seed of mutated and
 * random replays, and every case that ever broke a rule (regressions/). Each run must end within 5 s in
 * success or typed NbdErrors, with no defect, no unhandled rejection, no file descriptor left open, and RSS
 * bounded. The long run is `pnpm fuzz`.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Fs from "node:fs"
import { afterAll, beforeAll } from "vitest"
import { BAD, loadRegressions, runFuzz, runPlan } from "./hostile-server.js"
import { makeCase } from "./mutate.js"
import { makeReplayServer, type ReplayServer } from "./replay-server.js"
import { loadTranscripts } from "./transcript.js"

const SEED = 0x7e57
const ITERATIONS = 300
const MiB = 1024 * 1024

const openFds = (): number => Fs.readdirSync("/proc/self/fd").length

describe("hostile servers against the client", () => {
  it("cases are a function of the seed and the index", () => {
    const transcripts = loadTranscripts()
    for (let i = 0; i < 50; i++) expect(makeCase(transcripts, SEED, i)).toEqual(makeCase(transcripts, SEED, i))
    expect(makeCase(transcripts, SEED, 1)).not.toEqual(makeCase(transcripts, SEED, 2))
  })

  it(`seed ${SEED}: ${ITERATIONS} runs end in success or a typed error, in time, without defects, leaks or unhandled rejections`, async () => {
    const fdsBefore = openFds()
    const report = await runFuzz({ seed: SEED, iterations: ITERATIONS, maxFailures: 3 })
    expect(report.failures).toEqual([])
    expect(report.iterations).toBe(ITERATIONS)
    expect(report.peakRssBytes - report.startRssBytes).toBeLessThan(256 * MiB)
    for (const bad of BAD) expect(report.outcomes[bad]).toBeUndefined()
    // Hostile input: most runs fail, in many different typed ways, and every kind of case was made.
    expect(report.outcomes["success"] ?? 0).toBeLessThan(ITERATIONS / 2)
    expect(Object.keys(report.outcomes).length).toBeGreaterThanOrEqual(5)
    expect(Object.keys(report.kinds).sort()).toEqual([
      "bitflip",
      "drop",
      "duplicate",
      "field",
      "garbage",
      "plausible",
      "random",
      "reorder",
      "splice",
      "truncate"
    ])
    expect(openFds()).toBeLessThanOrEqual(fdsBefore)
  }, 180_000)

  describe("regressions: every case that ever broke a rule", () => {
    let server: ReplayServer
    let unhandled = 0
    const onUnhandled = (): void => {
      unhandled += 1
    }
    beforeAll(async () => {
      process.on("unhandledRejection", onUnhandled)
      server = await makeReplayServer()
    })
    afterAll(async () => {
      process.off("unhandledRejection", onUnhandled)
      await server.close()
    })

    for (const r of loadRegressions()) {
      it(`${r.file}: ${r.origin}`, async () => {
        const result = await runPlan(server, r.plan)
        expect(BAD, result.detail).not.toContain(result.outcome)
        expect(server.openConnections()).toBe(0)
        expect(unhandled).toBe(0)
      })
    }
  })
})
