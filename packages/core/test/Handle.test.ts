import { describe, expect, it } from "@effect/vitest"
import { Nbd } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import { inspect } from "node:util"

describe("a handle is a value", () => {
  it.effect("it inspects and serialises as its name and state, and pipes", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make({ handleName: "disk0" })
      expect(Nbd.isHandle(h)).toBe(true)
      expect(Nbd.isHandle({})).toBe(false)
      expect(JSON.parse(JSON.stringify(h))).toEqual({ _id: "NbdHandle", name: "disk0", state: "START" })
      expect(inspect(h)).toContain("disk0")
      expect(String(h)).toContain("START")
      expect(yield* h.pipe(Nbd.getHandleName)).toBe("disk0")
    })
  )
})
