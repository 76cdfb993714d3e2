// `effect-nbd info`'s tests of a server, after nbdinfo 1.24: --can / --is / --has FEATURE and their negations
// --cannot / --isnt / --hasnt. Where the installed nbdinfo (1.14) has the feature, our exit status is checked
// against its own on the same server; the features it lacks (open, extended-headers, block-status-payload,
// the negated options) against nbdinfo 1.24's definitions: 0 when true, 2 when false, 1 for an error, the
// negations the other way round, nothing on stdout.
import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Path from "node:path"
import { nbdkit, run, tempDir } from "./util/peers.js"
import { bin, buildCli, proc, type Result } from "./util/cli.js"

vi.setConfig({ testTimeout: 120_000 })

beforeAll(buildCli, 120_000)

const ours = (args: ReadonlyArray<string>) => proc(process.execPath, [bin, "info", ...args])

/** Our exit status, with the rule of every test: nothing on stdout, and no message unless it failed. */
const status = (args: ReadonlyArray<string>) =>
  Effect.map(ours(args), (r: Result) => {
    expect(r.stdout, args.join(" ")).toBe("")
    if (r.code !== 1) expect(r.stderr, args.join(" ")).toBe("")
    return r.code
  })

/** What a negated test answers for a status of the plain one. */
const negation = (code: number): number => (code === 0 ? 2 : code === 2 ? 0 : code)

/** The features nbdinfo 1.14 already answers (with --can and --is, which it takes as one option). */
const known = [
  "cache",
  "connect",
  "df",
  "fast-zero",
  "flush",
  "fua",
  "multi-conn",
  "read",
  "trim",
  "write",
  "zero",
  "read-only",
  "rotational",
  "tls",
  "structured-reply"
]

const pskKeys = Effect.gen(function* () {
  const file = Path.join(yield* tempDir, "keys.psk")
  yield* run("psktool", ["-u", "alice", "-p", file])
  return file
})

const socketUri = (server: TestServer.Service, name: string): string =>
  `nbd+unix:///${name}?socket=${server.address._tag === "Unix" ? server.address.path : ""}`

describe("info --can / --cannot, --is / --isnt, --has / --hasnt", () => {
  it.live("each feature nbdinfo 1.14 knows gets its exit status; the negated options the opposite", () =>
    Effect.gen(function* () {
      const keys = yield* pskKeys
      const rw = yield* nbdkit(["memory", "1M"])
      const ro = yield* nbdkit(["-r", "--filter=nozero", "--filter=nocache", "memory", "1M", "cachemode=none"])
      const tls = yield* nbdkit(["--tls=require", `--tls-psk=${keys}`, "memory", "1M"])
      const tlsUri = `nbds+unix://alice@/?socket=${tls.socket}&tls-psk-file=${keys}`
      const answers: Record<string, Set<number>> = {}
      for (const uri of [rw.uri, ro.uri, tlsUri])
        yield* Effect.forEach(
          known,
          (feature) =>
            Effect.gen(function* () {
              // --is and --isnt ask what --can and --cannot ask: spelled for the features they read best with.
              const [plain, negated] = ["read-only", "rotational", "tls"].includes(feature)
                ? ["--is", "--isnt"]
                : ["--can", "--cannot"]
              const [theirs, answer, opposite] = yield* Effect.all([
                Effect.map(proc("nbdinfo", ["--can", feature, uri]), (r) => r.code),
                status([plain, feature, uri]),
                status([negated, feature, uri])
              ])
              const what = `${plain} ${feature} on ${uri}`
              expect(answer, what).toBe(theirs)
              expect(opposite, what).toBe(negation(theirs))
              ;(answers[feature] ??= new Set()).add(theirs)
            }),
          { concurrency: 2 }
        )
      // The three servers tell the answers apart: these come out both true and false.
      for (const feature of ["write", "read-only", "tls", "zero", "cache"])
        expect([...answers[feature]!].sort(), feature).toEqual([0, 2])
    })
  )

  it.live("--has / --hasnt extended-headers, structured-reply and block-status-payload, as negotiated", () =>
    Effect.gen(function* () {
      for (const extendedHeaders of [true, false]) {
        const server = yield* TestServer.make({ exports: [{ name: "", size: 1 << 20 }], extendedHeaders })
        // The library's own answer on a connection of its own.
        const h = yield* Nbd.make()
        yield* NodeNbd.connectUri(h, server.uri)
        const payload = yield* Nbd.canBlockStatusPayload(h)
        expect(payload).toBe(extendedHeaders)
        const yes = (b: boolean) => (b ? 0 : 2)
        expect(yield* status(["--has", "extended-headers", server.uri])).toBe(yes(extendedHeaders))
        expect(yield* status(["--hasnt", "extended-headers", server.uri])).toBe(yes(!extendedHeaders))
        expect(yield* status(["--has", "structured-reply", server.uri])).toBe(0)
        expect(yield* status(["--hasnt", "structured-reply", server.uri])).toBe(2)
        expect(yield* status(["--can", "block-status-payload", server.uri])).toBe(yes(payload))
        expect(yield* status(["--cannot", "block-status-payload", server.uri])).toBe(yes(!payload))
      }
      // nbdkit 1.32 has no extended headers: nbdinfo 1.14's JSON says so, and --hasnt answers 0.
      const kit = yield* nbdkit(["memory", "1M"])
      expect(JSON.parse((yield* proc("nbdinfo", ["--json", kit.uri])).stdout).extended).toBeUndefined()
      expect(yield* status(["--hasnt", "extended-headers", kit.uri])).toBe(0)
      expect(yield* status(["--has", "extended-headers", kit.uri])).toBe(2)
    })
  )

  it.live("--can open tells a refused export from a working connection; --can connect is the handshake", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "disk", size: 1 << 20 }] })
      const good = socketUri(server, "disk")
      const missing = socketUri(server, "nope")
      expect(yield* status(["--can", "open", good])).toBe(0)
      expect(yield* status(["--cannot", "open", good])).toBe(2)
      expect(yield* status(["--can", "open", missing])).toBe(2)
      expect(yield* status(["--cannot", "open", missing])).toBe(0)
      // nbdinfo 1.24's connect: the connection works, whether or not the export opens.
      expect(yield* status(["--can", "connect", missing])).toBe(0)
      expect(yield* status(["--cannot", "connect", missing])).toBe(2)
      // A question about the export itself is an error when the server refuses it.
      const trim = yield* ours(["--can", "trim", missing])
      expect([trim.code, trim.stdout]).toEqual([1, ""])
      expect(trim.stderr).toMatch(/^effect-nbd: nbd_opt_info: .*'nope'.* \(ENOENT\)\n$/)
      // No server at all: 1 for every form, as nbdinfo's --can connect.
      const nowhere = `nbd+unix:///?socket=${Path.join(yield* tempDir, "none.sock")}`
      for (const form of ["--can", "--cannot", "--is", "--isnt"])
        expect((yield* ours([form, "connect", nowhere])).code, form).toBe(1)
      expect((yield* proc("nbdinfo", ["--can", "connect", nowhere])).code).toBe(1)
      // An oldstyle server opens its export at once.
      const old = yield* nbdkit(["-o", "memory", "1M"])
      expect(yield* status(["--can", "open", old.uri])).toBe(0)
      expect(yield* status(["--hasnt", "extended-headers", old.uri])).toBe(0)
    })
  )

  it.live("--has / --hasnt CONTEXT test a meta context; nbdinfo's other spellings ask the same", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["memory", "1M"])
      expect(yield* status(["--has", "base:allocation", kit.uri])).toBe(0)
      expect(yield* status(["--hasnt", "base:allocation", kit.uri])).toBe(2)
      expect(yield* status(["--has", "qemu:allocation-depth", kit.uri])).toBe(2)
      expect(yield* status(["--hasnt", "qemu:allocation-depth", kit.uri])).toBe(0)
      // Any case, _ or a space for -, nbdinfo's aliases, --opt=VALUE: each is the feature it names.
      // [ours, the feature as nbdinfo 1.14 is asked it with --can, negated]
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string, boolean]> = [
        [["--can", "TRIM"], "TRIM", false],
        [["--can", "fast_zero"], "fast_zero", false],
        [["--has", "sr"], "sr", false],
        [["--have", "structured replies"], "structured replies", false],
        [["--is=read_only"], "read_only", false],
        [["--cant", "trim"], "trim", true],
        [["--is-not", "read-only"], "read-only", true],
        [["--has-not", "tls"], "tls", true]
      ]
      for (const [args, feature, negated] of cases) {
        const theirs = (yield* proc("nbdinfo", ["--can", feature, kit.uri])).code
        expect(theirs, feature).not.toBe(1)
        expect(yield* status([...args, kit.uri]), args.join(" ")).toBe(negated ? negation(theirs) : theirs)
      }
    })
  )

  it.live("an unknown feature or two tests at once is one line and exit status 1, as nbdinfo's", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["memory", "1M"])
      for (const form of ["--can", "--cannot", "--has", "--hasnt"]) {
        const r = yield* ours([form, "teleport", kit.uri])
        expect([r.code, r.stdout], form).toEqual([1, ""])
        expect(r.stderr).toMatch(
          /^effect-nbd: unknown --can(not)?\/--is(nt)?\/--has(nt)? feature 'teleport': .*\(EINVAL\)\n$/
        )
      }
      expect((yield* proc("nbdinfo", ["--can", "teleport", kit.uri])).code).toBe(1)
      const both = yield* ours(["--can", "trim", "--size", kit.uri])
      expect([both.code, both.stdout]).toEqual([1, ""])
      expect(both.stderr).toMatch(/you cannot use .* together \(EINVAL\)\n$/)
      expect((yield* proc("nbdinfo", ["--can", "trim", "--size", kit.uri])).code).toBe(1)
    })
  )
})
