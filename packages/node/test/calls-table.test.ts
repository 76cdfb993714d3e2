import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { calls as table, type Spec } from "../../core/src/internal/api/calls.js"

const calls: Readonly<Record<string, Spec>> = table

// The table of calls is what the wrapper enforces; the reference is libnbd 1.22's API, call by call.

/**
 * libnbd's calls with their handle states and command flags, from libnbd's API documentation (libnbd 1.22),
 * kept with the tests.
 */
const referencePath = (): string =>
  Path.join(Path.dirname(fileURLToPath(import.meta.url)), "fixtures", "libnbd-calls.md")

const reference = Fs.readFileSync(referencePath(), "utf8")

const letters: Record<string, string> = {
  C: "created",
  Cg: "connecting",
  N: "negotiating",
  R: "connected",
  X: "closed",
  D: "dead"
}
const every = Object.values(letters)

/**
 * The calls libnbd 1.24 added that the 1.22 reference lacks, with the states their 1.24 man pages give
 * ("HANDLE STATE"; none there means any state).
 */
const since124: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ["nbd_get_version_extra", every],
  ["nbd_set_tls_priority", ["created"]],
  ["nbd_get_tls_priority", every]
]

/** Each call of the reference's tables, with the states its "states" column lists. */
const referenceStates = (): ReadonlyMap<string, ReadonlyArray<string>> => {
  const states = new Map<string, ReadonlyArray<string>>(since124)
  for (const line of reference.split("\n")) {
    if (!line.startsWith("| `")) continue
    const cells = line.split("|").map((c) => c.trim())
    const name = cells[1]!.replaceAll("`", "")
    const column = cells.slice(2).find((c) => /^(any|(C|Cg|N|R|X|D)(,(C|Cg|N|R|X|D))*)$/.test(c))
    if (column === undefined) continue
    states.set(`nbd_${name}`, column === "any" ? every : column.split(",").map((l) => letters[l]!))
  }
  return states
}

/** The reference's "allowed command-flag subset per call" line: `call`: FLAG, FLAG · ... */
const referenceFlags = (): ReadonlyMap<string, number> => {
  const line = reference.split("\n").find((l) => l.startsWith("Allowed command-flag subset per call"))!
  const flags = new Map<string, number>()
  for (const part of line.slice(line.indexOf(":") + 1).split("·")) {
    const match = /^\s*(.+?):\s*([^.]+?)\.?\s*$/.exec(part.split("Bits above")[0]!)
    if (match === null) continue
    const value =
      match[2]!.trim() === "none"
        ? 0
        : match[2]!.split(",").reduce((v, f) => v | Nbd.CmdFlag[f.trim() as keyof typeof Nbd.CmdFlag], 0)
    for (const name of match[1]!.split(",")) flags.set(`nbd_${name.replaceAll("`", "").trim()}`, value)
  }
  return flags
}

describe("the table of calls", () => {
  const states = referenceStates()

  it("gives every libnbd call the states libnbd permits it in", () => {
    for (const [key, spec] of Object.entries(calls)) {
      if (!spec.libnbd) continue
      const expected = states.get(spec.name)
      expect({ key, name: spec.name, known: expected !== undefined }).toEqual({ key, name: spec.name, known: true })
      const ours = spec.states === "any" ? every : spec.states
      expect({ key, states: [...ours].sort() }).toEqual({ key, states: [...expected!].sort() })
    }
  })

  it("gives every command the flags libnbd allows it, its aio form too", () => {
    const flags = referenceFlags()
    expect(flags.size).toBeGreaterThanOrEqual(10)
    for (const [name, allowed] of flags) {
      for (const spec of Object.values(calls).filter(
        (s) => s.name === name || s.name === name.replace("nbd_", "nbd_aio_")
      ))
        expect({ name: spec.name, flags: spec.flags }).toEqual({ name: spec.name, flags: allowed })
    }
  })

  it("names each row after its export, so no two exports share a libnbd name", () => {
    // The two calls whose libnbd name is not their export's: nbd_create makes a handle, nbd_connect waits.
    const renamed: Readonly<Record<string, string>> = { make: "nbd_create", awaitConnected: "nbd_connect" }
    const libnbdName = (key: string) => `nbd_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`
    for (const [key, spec] of Object.entries(calls))
      expect({ key, name: spec.name }).toEqual({ key, name: renamed[key] ?? libnbdName(key) })
  })

  it("names calls that exist: each row is an export of Nbd or NodeNbd", () => {
    const exported = new Set([...Object.keys(Nbd), ...Object.keys(NodeNbd)])
    for (const key of Object.keys(calls)) expect({ key, exported: exported.has(key) }).toEqual({ key, exported: true })
  })

  it("has a row for every call of Nbd that takes a handle", () => {
    const rowless = new Set(["TypeId", "Strict", "HandshakeFlag", "CmdFlag", "isHandle", "stateChanges"])
    for (const key of Object.keys(Nbd)) {
      if (rowless.has(key)) continue
      expect({ key, row: key in calls }).toEqual({ key, row: true })
    }
  })
})
