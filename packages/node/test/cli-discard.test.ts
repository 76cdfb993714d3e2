// `effect-nbd discard` and `effect-nbd zero`, after libnbd 1.22+'s nbddiscard(1) and nbdzero(1), which the
// installed libnbd (1.14) lacks: the requests each sends are read from nbdkit's log filter, the bytes left
// from the export itself, and the exit statuses are the ones the help states.
import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { Backend, TestServer } from "@effect-nbd/test-server"
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { nbdkit, tempDir } from "./util/peers.js"
import { bin, buildCli, proc, type Result } from "./util/cli.js"

vi.setConfig({ testTimeout: 90_000 })

beforeAll(buildCli, 120_000)

const ours = (
  args: ReadonlyArray<string>,
  options?: { readonly stdin?: string; readonly env?: Record<string, string> }
) => proc(process.execPath, [bin, ...args], options)

/** Exit status 0, nothing on stdout; gives stderr. */
const ok = (args: ReadonlyArray<string>) =>
  Effect.map(ours(args), (r) => {
    expect([r.code, r.stdout], `${args.join(" ")}: ${r.stderr}`).toEqual([0, ""])
    return r.stderr
  })

/** One line on stderr, "effect-nbd: ... (ERRNO)", nothing on stdout, exit status 1. */
const oneLine = (r: Result, pattern: RegExp) => {
  expect(r.code).toBe(1)
  expect(r.stdout).toBe("")
  expect(r.stderr).toMatch(pattern)
  expect(r.stderr.split("\n")).toHaveLength(2)
}

/** The export's bytes, read by the library. */
const contents = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make()
    yield* NodeNbd.connectUri(h, uri)
    return Buffer.from(yield* Nbd.pread(h, Number(yield* Nbd.getSize(h)), 0))
  })

/** nbdkit with its log filter: the URI, and the trim/zero/write requests logged so far. */
const logged = (args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const log = Path.join(yield* tempDir, "nbdkit.log")
    const peer = yield* nbdkit(["--filter=log", ...args, `logfile=${log}`])
    const requests = () =>
      (Fs.existsSync(log) ? Fs.readFileSync(log, "utf8") : "")
        .split("\n")
        .filter((l) => / (Trim|Zero|Write) id=\d+ offset=/.test(l))
        .map((l) => l.replace(/^.* (Trim|Zero|Write) id=\d+ /, "$1 ").replace(/ \.\.\.$/, ""))
    return { uri: peer.uri, requests }
  })

const file = (dir: string, name: string, text: string): string => {
  const path = Path.join(dir, name)
  Fs.writeFileSync(path, text)
  return path
}

describe("discard and zero", () => {
  it.live("discard -y trims the range, zero -y writes allocated zeroes; -o and -l take size suffixes", () =>
    Effect.gen(function* () {
      const kit = yield* logged(["memory", "2M"])
      const data = Buffer.alloc(2 << 20, 0x5a)
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, kit.uri)
      yield* Nbd.pwrite(h, data, 0)
      const writes = kit.requests().length
      expect(yield* ok(["discard", "-y", "-o", "64K", "-l", "128K", kit.uri])).toBe("")
      expect(yield* ok(["zero", "-y", "--offset=1M", "--length=64KiB", kit.uri])).toBe("")
      expect(yield* ok(["zero", "-y", "--fast-zero", "-o1536K", "-l4K", kit.uri])).toBe("")
      expect(yield* ok(["discard", "-y", "-z", "-o", "1792K", "-l", "4096", kit.uri])).toBe("")
      expect(kit.requests().slice(writes)).toEqual([
        "Trim offset=0x10000 count=0x20000 fua=0",
        "Zero offset=0x100000 count=0x10000 trim=0 fua=0 fast=0",
        "Zero offset=0x180000 count=0x1000 trim=0 fua=0 fast=1",
        "Zero offset=0x1c0000 count=0x1000 trim=0 fua=0 fast=0"
      ])
      for (const [at, n] of [
        [0x10000, 0x20000],
        [0x100000, 0x10000],
        [0x180000, 0x1000],
        [0x1c0000, 0x1000]
      ] as const)
        data.fill(0, at, at + n)
      expect((yield* contents(kit.uri)).equals(data)).toBe(true)
      // Without -o and -l: the whole export, in one request.
      expect(yield* ok(["discard", "-y", kit.uri])).toBe("")
      expect(kit.requests().at(-1)).toBe("Trim offset=0x0 count=0x200000 fua=0")
      expect((yield* contents(kit.uri)).equals(Buffer.alloc(2 << 20))).toBe(true)
      // -v says what it does, on stderr.
      const said = yield* ok(["zero", "-y", "-v", "-l", "1M", kit.uri])
      expect(said).toMatch(/^effect-nbd: zero: zeroing bytes 0 - 1048575 in 1 request\(s\)\neffect-nbd: zero: done\n$/)
    })
  )

  it.live("without -y it asks on stderr and erases only after y or yes on stdin", () =>
    Effect.gen(function* () {
      const kit = yield* logged(["memory", "1M"])
      const dir = yield* tempDir
      for (const answer of ["", "n\n", "no\n", "yess\n"]) {
        const r = yield* ours(["discard", kit.uri], { stdin: file(dir, "answer", answer) })
        expect([r.code, r.stdout], JSON.stringify(answer)).toEqual([1, ""])
        expect(r.stderr).toBe(
          `PERMANENTLY ERASE everything on ${kit.uri} bytes 0 - 1048575\n(y/N)? ` +
            "effect-nbd: discard: not confirmed: nothing was erased (ECANCELED)\n"
        )
      }
      expect(kit.requests()).toEqual([])
      for (const answer of ["y\n", "YES\n"]) {
        const r = yield* ours(["zero", "-l", "4K", kit.uri], { stdin: file(dir, "answer", answer) })
        expect([r.code, r.stdout, r.stderr]).toEqual([
          0,
          "",
          `PERMANENTLY ERASE everything on ${kit.uri} bytes 0 - 4095\n(y/N)? `
        ])
      }
      expect(kit.requests()).toEqual([
        "Zero offset=0x0 count=0x1000 trim=0 fua=0 fast=0",
        "Zero offset=0x0 count=0x1000 trim=0 fua=0 fast=0"
      ])
    })
  )

  it.live("-c changes nothing and answers 0 when already sparse (or zero), 2 when not, even read-only", () =>
    Effect.gen(function* () {
      const kit = yield* logged(["-r", "data", "1 2 3 @1048576 4 5 6", "size=2M"])
      const answer = (args: ReadonlyArray<string>) =>
        Effect.map(ours(args), (r) => {
          expect([r.stdout, r.stderr], args.join(" ")).toEqual(["", ""])
          return r.code
        })
      expect(yield* answer(["discard", "-c", kit.uri])).toBe(2)
      expect(yield* answer(["discard", "--check", "-o", "64K", "-l", "64K", kit.uri])).toBe(0)
      expect(yield* answer(["zero", "-c", kit.uri])).toBe(2)
      expect(yield* answer(["zero", "-c", "-o", "4K", "-l", "1020K", kit.uri])).toBe(0)
      expect(yield* answer(["discard", "-c", "-z", "-o", "4K", "-l", "1020K", kit.uri])).toBe(0)
      expect(yield* answer(["zero", "-c", "-o", "1M", "-l", "4K", kit.uri])).toBe(2)
      expect(kit.requests()).toEqual([])
      // Without base:allocation nothing is known to be a hole; zeroes are found by reading.
      const flat = yield* nbdkit(["--filter=noextents", "data", "1 2 3", "size=1M"])
      expect(yield* answer(["discard", "-c", "-o", "64K", flat.uri])).toBe(2)
      expect(yield* answer(["zero", "-c", "-o", "64K", flat.uri])).toBe(0)
      expect(yield* answer(["zero", "-c", flat.uri])).toBe(2)
    })
  )

  it.live("a server without trim keeps its data with a warning; without zero, zeroes are written", () =>
    Effect.gen(function* () {
      const size = 1 << 20
      const writes: Array<readonly [number, number]> = []
      const memory = Backend.memory(size)
      const backend: Backend.Backend = {
        ...memory,
        canTrim: false,
        canZero: false,
        write: (offset, data, fua) => {
          writes.push([offset, data.length])
          return memory.write(offset, data, fua)
        }
      }
      const server = yield* TestServer.make({ exports: [{ name: "", backend }] })
      yield* Effect.orDie(memory.write(0, new Uint8Array(size).fill(7), false))
      expect(yield* ok(["discard", "-y", server.uri])).toBe(
        "effect-nbd: discard: warning: the server does not support trim: nothing was discarded\n"
      )
      expect(yield* ok(["discard", "-y", "-q", server.uri])).toBe("")
      expect((yield* contents(server.uri)).equals(Buffer.alloc(size, 7))).toBe(true)
      expect(yield* ok(["zero", "-y", "-o", "512K", server.uri])).toBe("")
      expect(writes.reduce((n, [, length]) => n + length, 0)).toBe(512 << 10)
      const expected = Buffer.alloc(size, 7).fill(0, 512 << 10)
      expect((yield* contents(server.uri)).equals(expected)).toBe(true)
    })
  )

  it.live("errors are one line with exit status 1: read-only, out of range, bad size, no fast zero", () =>
    Effect.gen(function* () {
      const ro = yield* nbdkit(["-r", "memory", "1M"])
      oneLine(yield* ours(["discard", "-y", ro.uri]), /^effect-nbd: discard: .*: the export is read-only \(EPERM\)\n$/)
      oneLine(yield* ours(["zero", "-y", ro.uri]), /^effect-nbd: zero: .*: the export is read-only \(EPERM\)\n$/)
      const kit = yield* logged(["--filter=nozero", "memory", "1M", "fastzeromode=none"])
      oneLine(
        yield* ours(["zero", "-y", "-o", "2M", kit.uri]),
        /^effect-nbd: --offset: 2097152 is past the end of the export \(1048576 bytes\) \(EINVAL\)\n$/
      )
      oneLine(
        yield* ours(["discard", "-y", "-o", "512K", "-l", "1M", kit.uri]),
        /^effect-nbd: --offset\/--length: bytes 524288 - 1572863 end past the end of the export \(1048576 bytes\) \(EINVAL\)\n$/
      )
      oneLine(
        yield* ours(["zero", "-y", "-l", "12Q", kit.uri]),
        /^effect-nbd: --length: cannot parse size '12Q' \(EINVAL\)\n$/
      )
      oneLine(yield* ours(["zero", "-y", "--fast-zero", kit.uri]), /^effect-nbd: --fast-zero: .* \(ENOTSUP\)\n$/)
      oneLine(yield* ours(["zero", "--bogus", kit.uri]), /^effect-nbd: unrecognized option '--bogus' \(EINVAL\)\n$/)
      oneLine(yield* ours(["zero", "-z", kit.uri]), /^effect-nbd: unrecognized option '-z' \(EINVAL\)\n$/)
      oneLine(yield* ours(["discard", "-y"]), /^effect-nbd: .* \(EINVAL\)\n$/)
      expect(kit.requests()).toEqual([])
    })
  )
})

describe("help pages", () => {
  it.live("no help page carries colour through a pipe or with NO_COLOR; a bad subcommand is one plain line", () =>
    Effect.gen(function* () {
      for (const command of ["info", "copy", "dump", "discard", "zero"])
        for (const flag of ["--help", "-h"])
          for (const env of [{}, { NO_COLOR: "1" }]) {
            const r = yield* ours([command, flag], { env })
            expect([r.code, r.stderr], `${command} ${flag}`).toEqual([0, ""])
            expect(r.stdout).not.toMatch(/\x1b/)
            expect(r.stdout).toContain(`effect-nbd ${command} `)
            expect(r.stdout.split("\n").length).toBeLessThan(50)
          }
      // `effect-nbd discard --help | cat`, even where the environment asks for colour.
      for (const command of ["", "info", "copy", "dump", "discard", "zero"]) {
        const line = `"${process.execPath}" "${bin}" ${command} --help | cat`
        const r = yield* proc("/bin/sh", ["-c", line], { env: { FORCE_COLOR: "1", TERM: "xterm-256color" } })
        expect([r.code, r.stderr], line).toEqual([0, ""])
        expect(r.stdout, line).not.toMatch(/\x1b/)
        expect(r.stdout, line).toContain("Examples:")
      }
      expect((yield* ours(["--help"])).stdout).toMatch(/effect-nbd discard .*\n.*effect-nbd zero /)
      for (const args of [["bogus", "--help"], ["--wizard"], ["--completions", "bash"], ["discard", "--wizard"]]) {
        const r = yield* ours(args)
        oneLine(r, /^effect-nbd: (unknown subcommand|unrecognized option) .*\(EINVAL\)\n$/)
        expect(r.stderr).not.toMatch(/\x1b/)
      }
    })
  )
})
