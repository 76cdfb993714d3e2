/**
 * Split invariance through the real Node transport (issue 7, item 1): every recorded session, replayed by a
 * server that writes each answer in random pieces an event-loop turn or a few milliseconds apart (so the
 * client's transport reads them separately into its reused buffer), gives exactly what the live session gave,
 * and the client sends exactly the bytes it sent live.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "fast-check"
import { afterAll, beforeAll } from "vitest"
import { type Cut, makeReplayServer, type Plan, type ReplayServer, splitPlan, wholePlan } from "./replay-server.js"
import * as Session from "./session.js"
import { loadTranscripts, toHex, type Transcript } from "./transcript.js"

const SEED = 0x5917
const transcripts = loadTranscripts()

let server: ReplayServer
beforeAll(async () => {
  server = await makeReplayServer()
})
afterAll(() => server.close())

/** Runs the session against the replay of `plan`; gives what the session returned and what the client sent. */
const replay = async (plan: Plan) => {
  const served = server.serve(plan)
  const result = await Effect.runPromise(Effect.scoped(Session.run(server.path)))
  return { result, sent: toHex((await served).received) }
}

const clientBytes = (t: Transcript): string => t.exchanges.map((e) => toHex(e.client)).join("")

/** Cuts for every answer of a transcript: up to 8 per answer, each piece after a turn, 1-2 ms, or at once. */
const cutsFor = (t: Transcript): fc.Arbitrary<ReadonlyArray<ReadonlyArray<Cut>>> =>
  fc.tuple(
    ...t.exchanges.map(() =>
      fc.array(fc.record({ at: fc.nat(), delayMs: fc.constantFrom(-1, 0, 0, 0, 1, 2) }), { maxLength: 8 })
    )
  )

/** The index of the exchange whose client message is the option `option`. */
const optionExchange = (t: Transcript, option: number): number =>
  t.exchanges.findIndex(
    (e) =>
      e.client.length >= 16 &&
      Buffer.from(e.client.subarray(0, 8)).toString("latin1") === "IHAVEOPT" &&
      Buffer.from(e.client).readUInt32BE(8) === option
  )

const OPT_GO = 7

describe("replayed transcripts through the Node transport", () => {
  it("there is a transcript of every peer kind", () => {
    expect(transcripts.map((t) => t.name)).toEqual(
      expect.arrayContaining([
        "nbdkit-memory",
        "nbdkit-memory-no-sr",
        "nbdkit-oldstyle",
        "nbdkit-newstyle-not-fixed",
        "qemu-nbd-raw",
        "testserver-extended"
      ])
    )
  })

  for (const t of transcripts) {
    describe(t.name, () => {
      it("delivered whole, the session returns what it returned live and sends the same bytes", async () => {
        const { result, sent } = await replay(wholePlan(t.exchanges))
        expect(result).toEqual(t.result)
        expect(Session.outcomeOf(result)).not.toMatch(/^(ProtocolError|ConnectionError)/)
        expect(sent).toBe(clientBytes(t))
      })

      it("delivered in random pieces, the session returns exactly the same", async () => {
        await fc.assert(
          fc.asyncProperty(cutsFor(t), async (cuts) => {
            const { result, sent } = await replay(splitPlan(t.exchanges, cuts))
            expect(result).toEqual(t.result)
            expect(sent).toBe(clientBytes(t))
          }),
          { seed: SEED, numRuns: 20 }
        )
      })

      it("delivered one byte per read (the first 400 bytes of every answer), the session returns exactly the same", async () => {
        const bytewise = t.exchanges.map((e) =>
          Array.from({ length: Math.min(e.server.length, 400) }, (_, i) => ({ at: i + 1, delayMs: 0 }))
        )
        const { result, sent } = await replay(splitPlan(t.exchanges, bytewise))
        expect(result).toEqual(t.result)
        expect(sent).toBe(clientBytes(t))
      })
    })
  }

  // The splits issue 7 reported: a GO reply split at byte 24 connected with size 281474977759232, at byte 10
  // it failed "invalid option reply magic"; a greeting split at byte 8 failed "did not send expected NBD magic".
  for (const t of transcripts.filter((t) => optionExchange(t, OPT_GO) > 0)) {
    it(`${t.name}: the GO reply split at byte 10 or 24, and the greeting at byte 8`, async () => {
      const go = optionExchange(t, OPT_GO)
      for (const [exchange, at] of [
        [go, 24],
        [go, 10],
        [0, 8]
      ] as const) {
        const cuts = t.exchanges.map((_, i) => (i === exchange ? [{ at, delayMs: 0 }] : []))
        const { result } = await replay(splitPlan(t.exchanges, cuts))
        expect(result, `split at byte ${at} of exchange ${exchange}`).toEqual(t.result)
      }
    })
  }
})
