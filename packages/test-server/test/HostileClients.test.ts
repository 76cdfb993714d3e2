/**
 * Hostile clients against the test server (issue 7, the mirror image of the hostile-server fuzz): a fixed
 * seed of mutated and random client streams, every saved regression, and the harness's own checks.
 * `fuzz/run.ts` runs the same fuzz for as long as asked.
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { BAD, loadRegressions, politeClient, runFuzz, runPlan, saveRegression } from "./fuzz/hostile-clients.js"
import { makeCase, Rng } from "./fuzz/mutate.js"
import { serverConfig } from "./fuzz/servers.js"
import { loadTranscripts, serverKinds, toHex } from "./fuzz/transcript.js"

const MiB = 1024 * 1024
const SEED = 0x5eed7

describe("hostile clients", () => {
  it.live(
    "a fixed seed: every connection ends in bounds, no defect, no leak, bounded memory, then polite clients are served within 50 ms",
    () =>
      Effect.gen(function* () {
        const report = yield* Effect.promise(() => runFuzz({ seed: SEED, iterations: 800, boundMs: 5000 }))
        expect(report.iterations).toBe(800)
        expect(report.failures).toEqual([])
        expect(report.defects).toEqual([])
        // The streams were hostile enough: the server refused some outright, and finished others after a FIN.
        expect((report.outcomes["closed-by-server"] ?? 0) + (report.outcomes["reset-by-server"] ?? 0)).toBeGreaterThan(
          20
        )
        expect(report.outcomes["closed-after-fin"] ?? 0).toBeGreaterThan(100)
        expect(report.outcomes["destroyed"] ?? 0).toBeGreaterThan(50)
        for (const kind of serverKinds) expect(report.politeMs[kind], kind).toBeLessThan(50)
        expect(report.fdsAfter).toBeLessThanOrEqual(report.fdsBefore)
        expect(report.peakMemoryGrowthBytes).toBeLessThan(256 * MiB)
        expect(report.durationMs).toBeLessThan(20_000)
      }),
    60_000
  )
})

// Every input that ever broke a rule, replayed alone against a fresh server of its kind.
const regressions = loadRegressions()
if (regressions.length > 0)
  describe("saved regressions", () => {
    for (const r of regressions) {
      it.live(`${Path.basename(r.file)} (${r.origin}: ${r.kinds.join(", ")})`, () =>
        Effect.scoped(
          Effect.gen(function* () {
            const server = yield* TestServer.make(serverConfig(r.plan.server))
            if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
            const path = server.address.path
            const result = yield* Effect.promise(() => runPlan(path, r.plan, 5000))
            expect(BAD).not.toContain(result.outcome)
            expect(yield* Effect.promise(() => politeClient(path))).toBeLessThan(50)
          })
        )
      )
    }
  })

describe("the hostile-client harness", () => {
  it("the same seed makes the same cases", () => {
    const transcripts = loadTranscripts()
    const cases = (seed: number) => {
      const rng = new Rng(seed)
      return Array.from({ length: 30 }, () => {
        const c = makeCase(rng, transcripts)
        return JSON.stringify({
          ...c,
          plan: { ...c.plan, writes: c.plan.writes.map((w) => [toHex(w.bytes), w.delayMs]) }
        })
      })
    }
    expect(cases(42)).toEqual(cases(42))
    expect(cases(43)).not.toEqual(cases(42))
  })

  it("the recorded transcripts cover every server configuration and several clients", () => {
    const transcripts = loadTranscripts()
    for (const kind of serverKinds)
      expect(
        transcripts.some((t) => t.server === kind),
        kind
      ).toBe(true)
    const clients = new Set(transcripts.map((t) => t.client.split(" ")[0]))
    expect([...clients].sort()).toEqual(["effect-nbd", "nbdcopy", "nbdinfo", "nbdsh", "qemu-img", "qemu-io"])
    // Every message was placed: nothing was left over as unparsed bytes.
    for (const t of transcripts)
      expect(
        t.messages.filter((m) => m.kind === "rest"),
        t.name
      ).toEqual([])
  })

  it.live("a server that never closes after the client's FIN is reported as a timeout", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-hostile-"))
      const path = Path.join(dir, "silent.sock")
      const held: Array<Net.Socket> = []
      const silent = Net.createServer({ allowHalfOpen: true }, (s) => {
        held.push(s)
      })
      yield* Effect.promise(() => new Promise<void>((resolve) => silent.listen(path, resolve)))
      const result = yield* Effect.promise(() =>
        runPlan(
          path,
          { server: "extended", writes: [{ bytes: new Uint8Array(4), delayMs: 0 }], end: "fin", holdMs: 0 },
          300
        )
      )
      for (const s of held) s.destroy()
      silent.close()
      Fs.rmSync(dir, { recursive: true, force: true })
      expect(result.outcome).toBe("timeout")
    })
  )

  it.live("a failing case is saved as its exact plan and loads back", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-regressions-"))
      const c = makeCase(new Rng(7), loadTranscripts())
      const file = yield* Effect.promise(() => saveRegression(c, "timeout", dir))
      const loaded = loadRegressions(dir)
      Fs.rmSync(dir, { recursive: true, force: true })
      expect(Path.basename(file)).toMatch(/^timeout-[0-9a-f]{12}\.json$/)
      expect(loaded).toHaveLength(1)
      expect(loaded[0]!.plan).toEqual(c.plan)
      expect(loaded[0]!.origin).toBe(c.origin)
    })
  )
})
