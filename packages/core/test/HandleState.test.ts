import { describe, expect, it } from "@effect/vitest"
import { HandleState, NbdError } from "@effect-nbd/core"

const error = new NbdError.ConnectionError({
  errno: "ECONNRESET",
  operation: "nbd_pread",
  message: "recv: Connection reset by peer"
})

const states: ReadonlyArray<readonly [string, HandleState.HandleState]> = [
  ["Created", HandleState.Created],
  ["Connecting", HandleState.Connecting],
  ["Negotiating", HandleState.Negotiating],
  ["Ready", HandleState.Ready],
  ["Processing", HandleState.Processing],
  ["Dead", HandleState.Dead(error)],
  ["Closed", HandleState.Closed]
]

const predicates: ReadonlyArray<readonly [string, (s: HandleState.HandleState) => boolean]> = [
  ["Created", HandleState.isCreated],
  ["Connecting", HandleState.isConnecting],
  ["Negotiating", HandleState.isNegotiating],
  ["Ready", HandleState.isReady],
  ["Processing", HandleState.isProcessing],
  ["Dead", HandleState.isDead],
  ["Closed", HandleState.isClosed]
]

describe("HandleState predicates", () => {
  for (const [name, predicate] of predicates) {
    it(`is${name} is true in ${name} and in no other state`, () => {
      const trueIn = states.filter(([, s]) => predicate(s)).map(([n]) => n)
      expect(trueIn).toEqual([name])
    })
  }

  for (const [name, state] of states) {
    it(`exactly one predicate holds in ${name}`, () => {
      const holding = predicates.filter(([, p]) => p(state)).map(([n]) => n)
      expect(holding).toEqual([name])
    })
  }

  it("isConnected: Ready or Processing only", () => {
    expect(states.filter(([, s]) => HandleState.isConnected(s)).map(([n]) => n)).toEqual(["Ready", "Processing"])
  })

  it("Dead carries its error", () => {
    const dead = HandleState.Dead(error)
    expect(dead._tag).toBe("Dead")
    if (dead._tag === "Dead") expect(dead.error).toBe(error)
  })

  it("shortName gives libnbd's state names", () => {
    expect(states.map(([, s]) => HandleState.shortName(s))).toEqual([
      "START",
      "CONNECTING",
      "NEGOTIATING",
      "READY",
      "PROCESSING",
      "DEAD",
      "CLOSED"
    ])
  })
})
