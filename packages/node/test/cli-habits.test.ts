// The habits of libnbd's tools in `effect-nbd`, each beside the real nbdinfo / nbdcopy / nbddump 1.14 where
// they have it: glued short options, -V, subprocesses in place of a URI, plain help, one-line errors,
// --map --totals, --has, and nbdcopy's copy options.
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Blkhash from "../src/internal/cli/blkhash.js"
import { nbdkit, qcow2Image, qemuNbd, run, tempDir } from "./util/peers.js"
import { bin, buildCli, proc, type Result, manifest } from "./util/cli.js"

vi.setConfig({ testTimeout: 90_000 })

beforeAll(buildCli, 120_000)

const ours = (
  args: ReadonlyArray<string>,
  options?: { readonly fd3?: string; readonly env?: Record<string, string> }
) => proc(process.execPath, [bin, ...args], options)

const ok = (args: ReadonlyArray<string>) =>
  Effect.map(ours(args), (r) => {
    expect(r.stderr, `effect-nbd ${args.join(" ")}`).toBe("")
    expect(r.code, `effect-nbd ${args.join(" ")}`).toBe(0)
    return r.stdout
  })

const sha256 = (path: string): string => Crypto.createHash("sha256").update(Fs.readFileSync(path)).digest("hex")

/** One line on stderr, "effect-nbd: ... (ERRNO)", nothing on stdout, exit status 1. */
const oneLine = (r: Result, pattern: RegExp) => {
  expect(r.code).toBe(1)
  expect(r.stdout).toBe("")
  expect(r.stderr).toMatch(pattern)
  expect(r.stderr.split("\n")).toHaveLength(2)
}

describe("argument habits", () => {
  it.live("-C4 -R8 --request-size=64K copy as nbdcopy does; -n40 dumps as nbddump -n 40", () =>
    Effect.gen(function* () {
      const source = yield* nbdkit(["pattern", "3M"])
      const dir = yield* tempDir
      const a = Path.join(dir, "ours.img")
      const b = Path.join(dir, "theirs.img")
      yield* ok(["copy", "-C4", "-R8", "--request-size=64K", source.uri, a])
      expect((yield* proc("nbdcopy", ["-C4", "-R8", "--request-size=65536", source.uri, b])).code).toBe(0)
      expect(sha256(a)).toBe(sha256(b))
      expect(yield* ok(["dump", "-n40", source.uri])).toBe((yield* proc("nbddump", ["-n", "40", source.uri])).stdout)
    })
  )

  it.live("-V and --version print the command and the package with its version, as nbdinfo -V does", () =>
    Effect.gen(function* () {
      const expected = `effect-nbd ${manifest.version}\n@effect-nbd/node ${manifest.version}\n`
      for (const args of [["-V"], ["--version"], ["info", "-V"], ["copy", "--version"]]) {
        expect(yield* ok(args)).toBe(expected)
      }
      const theirs = yield* proc("nbdinfo", ["-V"])
      expect(theirs.code).toBe(0)
      expect(theirs.stdout.split("\n")).toHaveLength(3)
    })
  )

  it.live("[ CMD ARGS ... ] starts a server by socket activation, as nbdinfo and nbdcopy do", () =>
    Effect.gen(function* () {
      const kit = ["[", "nbdkit", "memory", "1G", "]"]
      expect(yield* ok(["info", "--size", ...kit])).toBe((yield* proc("nbdinfo", ["--size", ...kit])).stdout)
      // The text is nbdinfo's but for the uri line, which names a socket in a fresh directory each run.
      const withoutUri = (s: string) => s.replace(/\turi: .*\n/, "")
      const theirs = yield* proc("nbdinfo", ["--", ...kit])
      expect(theirs.code).toBe(0)
      expect(withoutUri(yield* ok(["info", "--", ...kit]))).toBe(withoutUri(theirs.stdout))
      expect(yield* ok(["info", "--map", ...kit])).toBe((yield* proc("nbdinfo", ["--map", ...kit])).stdout)
      // nbdkit -s refuses socket activation, and both tools fail.
      const bad = ["--size", "[", "nbdkit", "-s", "memory", "1G", "]"]
      const [a, b] = yield* Effect.all([ours(bad), proc("nbdinfo", bad)], { concurrency: 2 })
      expect(a.code).toBe(1)
      expect(b.code).toBe(1)
    })
  )

  it.live("-- CMD ARGS ... runs a server on stdin/stdout (nbdkit -s); copy takes [ CMD ] on either side", () =>
    Effect.gen(function* () {
      expect(yield* ok(["info", "--size", "--", "nbdkit", "-s", "memory", "1G"])).toBe("1073741824\n")
      const text = yield* ok(["info", "--", "nbdkit", "-s", "memory", "1G"])
      expect(text).toContain("\texport-size: 1073741824 (1G)\n")
      const dump = ["--", "nbdkit", "-s", "data", "1 2 3 @1000 4 5", "size=4K"]
      expect(yield* ok(["dump", ...dump])).toBe(
        (yield* proc("nbddump", ["--", "[", "nbdkit", "data", "1 2 3 @1000 4 5", "size=4K", "]"])).stdout
      )
      const dir = yield* tempDir
      const src = ["[", "nbdkit", "data", "@1048576 1 2 3 @3000000 9", "size=4M", "]"]
      yield* ok(["copy", ...src, Path.join(dir, "ours.img")])
      expect((yield* proc("nbdcopy", [...src, Path.join(dir, "theirs.img")])).code).toBe(0)
      expect(sha256(Path.join(dir, "ours.img"))).toBe(sha256(Path.join(dir, "theirs.img")))
      // From a file into a server started for the copy, then reading that server is not possible: check the
      // exit status against nbdcopy's.
      const dst = ["[", "nbdkit", "memory", "4M", "]"]
      expect((yield* ours(["copy", "--", Path.join(dir, "ours.img"), ...dst])).code).toBe(0)
      expect((yield* proc("nbdcopy", ["--", Path.join(dir, "ours.img"), ...dst])).code).toBe(0)
    })
  )
})

describe("help and errors", () => {
  it.live("--help is a short plain usage with examples, no colour through a pipe or with NO_COLOR", () =>
    Effect.gen(function* () {
      for (const args of [["--help"], ["-h"], ["info", "--help"], ["copy", "--help"], ["dump", "-h"]]) {
        for (const env of [{}, { NO_COLOR: "1" }]) {
          const r = yield* ours(args, { env })
          expect(r.code, args.join(" ")).toBe(0)
          expect(r.stderr).toBe("")
          expect(r.stdout).not.toMatch(/\x1b/)
          expect(r.stdout).toContain("Examples:")
          expect(r.stdout.split("\n").length).toBeLessThan(50)
        }
      }
      expect((yield* ok(["copy", "--help"])).replace(/\s+/g, " ")).toContain(
        "4 connections (when the server advertises multi-conn), 64 requests in flight each, 256K per request"
      )
      // nbdinfo --help exits 0 on stdout too.
      expect((yield* proc("nbdinfo", ["--help"])).code).toBe(0)
      // No arguments at all: the usage on stderr and exit status 1, as nbdinfo.
      const bare = yield* ours([])
      expect([bare.code, bare.stdout]).toEqual([1, ""])
      expect(bare.stderr).toContain("Examples:")
      const theirs = yield* proc("nbdinfo", [])
      expect([theirs.code, theirs.stdout]).toEqual([1, ""])
    })
  )

  it.live("an unknown option or a bad value is one line with EINVAL and exit status 1, as nbdinfo's 1", () =>
    Effect.gen(function* () {
      oneLine(yield* ours(["info", "--bogus"]), /^effect-nbd: unrecognized option '--bogus' \(EINVAL\)\n$/)
      expect((yield* proc("nbdinfo", ["--bogus"])).code).toBe(1)
      oneLine(yield* ours(["copy", "-Cx", "a", "b"]), /^effect-nbd: .*integer.* \(EINVAL\)\n$/)
      oneLine(yield* ours(["info", "--size", "[", "nbdkit"]), /^effect-nbd: '\[' without a matching '\]' \(EINVAL\)\n$/)
      oneLine(yield* ours(["info", "--totals", "nbd://localhost"]), /--totals only with --map .*\(EINVAL\)\n$/)
      expect((yield* proc("nbdinfo", ["--totals", "nbd://localhost"])).code).toBe(1)
      // A missing value is getopt's "requires an argument", as nbdinfo says it.
      oneLine(yield* ours(["info", "--can"]), /^effect-nbd: option '--can' requires an argument \(EINVAL\)\n$/)
      const theirs = yield* proc("nbdinfo", ["--can"])
      expect(theirs.code).toBe(1)
      expect(theirs.stderr).toContain("option '--can' requires an argument")
      oneLine(yield* ours(["dump", "-n"]), /^effect-nbd: option '-n' requires an argument \(EINVAL\)\n$/)
      // An extra argument names the subprocess as it was written.
      oneLine(
        yield* ours(["info", "nbd://localhost", "[", "nbdkit", "memory", "1M", "]"]),
        /^effect-nbd: Received unknown argument: '\[ nbdkit memory 1M \]' \(EINVAL\)\n$/
      )
    })
  )

  it.live("a missing socket says connect: No such file or directory (ENOENT), as nbdinfo", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const uri = `nbd+unix:///?socket=${Path.join(dir, "nope.sock")}`
      const r = yield* ours(["info", uri])
      oneLine(r, /^effect-nbd: .*connect: No such file or directory \(ENOENT\)\n$/)
      const theirs = yield* proc("nbdinfo", [uri])
      expect(theirs.code).toBe(1)
      expect(theirs.stderr).toContain("connect: No such file or directory")
      // --can connect fails the same way (1, not 2), as nbdinfo's does.
      expect((yield* ours(["info", "--can", "connect", uri])).code).toBe(1)
      expect((yield* proc("nbdinfo", ["--can", "connect", uri])).code).toBe(1)
    })
  )

  it.live("an unknown export suggests --list, in nbdinfo's words", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["--filter=exportname", "memory", "1M", "exportname=good", "exportname-strict=true"])
      const uri = kit.uri.replace(/^(nbd\+unix:\/\/\/)[^?]*/, "$1wrong")
      const [a, b] = yield* Effect.all([ours(["info", uri]), proc("nbdinfo", [uri])], { concurrency: 2 })
      expect(a.code).toBe(1)
      expect(b.code).toBe(1)
      const lines = a.stderr.trimEnd().split("\n")
      expect(lines).toEqual([
        expect.stringMatching(/^effect-nbd: nbd_opt_go: .*'wrong'.* \(ENOENT\)$/),
        "effect-nbd: suggestion: to list all exports on the server, use --list"
      ])
      expect(b.stderr).toContain("nbdinfo: suggestion: to list all exports on the server, use --list\n")
    })
  )
})

describe("nbdinfo's options", () => {
  it.live("--map --totals (text and JSON) is nbdinfo's, on nbdkit and qemu-nbd", () =>
    Effect.gen(function* () {
      const data = yield* nbdkit(["data", "@1048576 1 2 3 @536870912 4 5 6", "size=1G"])
      const qcow2 = yield* qcow2Image("8M", ["write -P 0xab 1M 64k", "write -z 2M 128k", "write -P 1 7M 4k"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2"])
      for (const uri of [data.uri, qemu.uri]) {
        for (const flags of [
          ["--map", "--totals"],
          ["--map", "--totals", "--json"],
          ["--totals", "--map"]
        ]) {
          const theirs = yield* proc("nbdinfo", [...flags, uri])
          expect(theirs.code).toBe(0)
          expect(yield* ok(["info", ...flags, uri]), flags.join(" ")).toBe(theirs.stdout)
        }
      }
    })
  )

  it.live(
    "--map=CONTEXT for qemu's contexts (allocation depth, a dirty bitmap) is nbdinfo's, with --totals and --json",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const base = Path.join(dir, "base.qcow2")
        const top = Path.join(dir, "top.qcow2")
        yield* run("qemu-img", ["create", "-q", "-f", "qcow2", base, "4M"])
        yield* run("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 1M", base])
        yield* run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top])
        yield* run("qemu-io", ["-f", "qcow2", "-c", "write -P 2 2M 64k", top])
        yield* run("qemu-img", ["bitmap", "--add", top, "b0"])
        yield* run("qemu-io", ["-f", "qcow2", "-c", "write -P 3 3M 64k", top])
        const qemu = yield* qemuNbd(top, ["--format=qcow2", "-r", "-A", "-B", "b0"])
        for (const context of ["qemu:allocation-depth", "qemu:dirty-bitmap:b0"])
          for (const flags of [[], ["--totals"], ["--json"], ["--totals", "--json"]]) {
            const args = [`--map=${context}`, ...flags, qemu.uri]
            const theirs = yield* proc("nbdinfo", args)
            expect(theirs.code).toBe(0)
            expect(yield* ok(["info", ...args]), args.join(" ")).toBe(theirs.stdout)
          }
        expect((yield* ours(["info", "--has", "qemu:dirty-bitmap:b0", qemu.uri])).code).toBe(0)
        expect((yield* ours(["info", "--has", "qemu:dirty-bitmap:nope", qemu.uri])).code).toBe(2)
      })
  )

  it.live("--content is file(1)'s, as nbdinfo's; without file(1), --content says so plainly", () =>
    Effect.gen(function* () {
      const qcow2 = yield* qcow2Image("1M", ["write -P 1 0 64k"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2", "-r"])
      const kit = yield* nbdkit(["pattern", "1M"])
      for (const uri of [qemu.uri, kit.uri]) {
        const theirs = yield* proc("nbdinfo", ["--list", "--content", uri])
        expect(theirs.stdout).toContain("\tcontent: ")
        expect(yield* ok(["info", "--list", "--content", uri])).toBe(theirs.stdout)
      }
      const empty = yield* tempDir
      const r = yield* ours(["info", "--content", kit.uri], { env: { PATH: empty } })
      expect(r.code).toBe(0)
      expect(r.stdout).not.toContain("content:")
      expect(r.stderr).toBe("effect-nbd: warning: --content: cannot run file(1), content not shown (ENOENT)\n")
    })
  )

  it.live("--is tls and --can answer with nbdinfo's exit status; --has CONTEXT with 0 or 2", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["memory", "1M"])
      for (const flags of [
        ["--is", "tls"],
        ["--can", "connect"],
        ["--can", "fua"]
      ]) {
        const [a, b] = yield* Effect.all([ours(["info", ...flags, kit.uri]), proc("nbdinfo", [...flags, kit.uri])])
        expect(a.code, flags.join(" ")).toBe(b.code)
      }
      // nbdinfo 1.14 has no --has (libnbd 1.16 added it): the answers come from the contexts nbdinfo lists.
      const listed = (yield* proc("nbdinfo", ["--json", kit.uri])).stdout
      expect(JSON.parse(listed).exports[0].contexts).toEqual(["base:allocation"])
      expect((yield* ours(["info", "--has", "base:allocation", kit.uri])).code).toBe(0)
      expect((yield* ours(["info", "--has", "qemu:allocation-depth", kit.uri])).code).toBe(2)
    })
  )
})

describe("nbdcopy's options", () => {
  it.live("--progress=FD writes nbdcopy's N/100 lines; -p draws a bar with rate on a non-terminal stderr", () =>
    Effect.gen(function* () {
      const source = yield* nbdkit(["--filter=delay", "pattern", "8M", "delay-read=5ms"])
      const dir = yield* tempDir
      const oursFile = Path.join(dir, "ours.progress")
      const theirsFile = Path.join(dir, "theirs.progress")
      const a = yield* ours(["copy", "--progress=3", source.uri, "null:"], { fd3: oursFile })
      const b = yield* proc("nbdcopy", ["--progress=3", source.uri, "null:"], { fd3: theirsFile })
      expect([a.code, b.code]).toEqual([0, 0])
      const lines = (file: string) => Fs.readFileSync(file, "utf8").trimEnd().split("\n")
      for (const l of [...lines(oursFile), ...lines(theirsFile)]) expect(l).toMatch(/^\d{1,3}\/100$/)
      expect(lines(oursFile).at(-1)).toBe(lines(theirsFile).at(-1))
      const percents = lines(oursFile).map((l) => Number(l.split("/")[0]))
      expect([...percents].sort((x, y) => x - y)).toEqual(percents)
      const bar = yield* ours(["copy", "-p", source.uri, "null:"])
      expect(bar.code).toBe(0)
      expect(bar.stderr).toMatch(/ 100% \[\*{40}\] [\d.]+ [KMG]?i?B\/s\n$/)
      const theirsBar = yield* proc("nbdcopy", ["-p", source.uri, "null:"])
      expect(theirsBar.stderr).toMatch(/ 100% \[\*{40}\]\n$/)
    })
  )

  it.live(
    "--destination-is-zero, --target-is-zero, --flush, --no-extents, -S 0, --synchronous, -v copy what nbdcopy copies",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const log = Path.join(dir, "nbdkit.log")
        const source = yield* nbdkit([
          "--filter=log",
          "data",
          "@65536 1 2 3 @1048576 4 5 6 @2097150 7 8",
          "size=2M",
          `logfile=${log}`
        ])
        const reference = Path.join(dir, "reference.img")
        expect((yield* proc("nbdcopy", [source.uri, reference])).code).toBe(0)
        const cases: ReadonlyArray<ReadonlyArray<string>> = [
          ["--destination-is-zero"],
          ["--target-is-zero"],
          ["--flush"],
          ["--no-extents"],
          ["-S", "0"],
          ["--sparse=0"],
          ["--synchronous"],
          ["-v"]
        ]
        for (const [i, flags] of cases.entries()) {
          const out = Path.join(dir, `out${i}.img`)
          const theirs = Path.join(dir, `theirs${i}.img`)
          const r = yield* ours(["copy", ...flags, source.uri, out])
          expect(r.code, flags.join(" ")).toBe(0)
          expect((yield* proc("nbdcopy", [...flags, source.uri, theirs])).code, flags.join(" ")).toBe(0)
          expect(sha256(out), flags.join(" ")).toBe(sha256(reference))
          expect(sha256(theirs), flags.join(" ")).toBe(sha256(reference))
          if (flags[0] === "-v") expect(r.stderr).toMatch(/^effect-nbd: copy: .* 2097152 bytes: /s)
          else expect(r.stderr).toBe("")
        }
        // -S 0 writes every byte as data, so the file is fully allocated; the default keeps holes.
        expect(Fs.statSync(Path.join(dir, "out4.img")).blocks * 512).toBeGreaterThanOrEqual(2 << 20)
        expect(Fs.statSync(Path.join(dir, "out0.img")).blocks * 512).toBeLessThan(1 << 20)
        // --no-extents: the source is asked for no block status.
        const count = (what: RegExp) =>
          Fs.readFileSync(log, "utf8")
            .split("\n")
            .filter((l) => what.test(l)).length
        const before = [count(/ Extents /), count(/ Read /)]
        yield* ok(["copy", "--no-extents", source.uri, "null:"])
        expect(count(/ Extents /)).toBe(before[0])
        expect(count(/ Read /)).toBeGreaterThan(before[1]!)
        yield* ok(["copy", source.uri, "null:"])
        expect(count(/ Extents /)).toBeGreaterThan(before[0]!)
      }),
    120_000
  )

  // libnbd 1.24's known answers (copy/copy-blkhash-known.sh and copy-blkhash-pattern.sh, cross-checked there
  // against blkhash's reference implementation); the installed nbdcopy 1.14 has no --blkhash.
  const known: ReadonlyArray<readonly [string, string, string]> = [
    ["", "sha256", "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"],
    ['"hello"', "md5", "f741ac9ce55f5325906bb14e9c05d467"],
    ['"hello"', "sha256", "337355feb53a5309d5aba92796223c2c84ffab930e706c01fef573a2722545e6"],
    [
      '"hello"',
      "sha512",
      "eca04a593cf12ec4132993da709048e25a2f1be3526e132fb521ec9d41f023ec4018b3fd07b014a33e36bb5fa145b36991f431e62f9e1a93bebea6c9565682c1"
    ],
    ['"hello"', "md5/4", "8262896de34125dec173722c920e8bd0"],
    ['"hello" @1048576 "goodbye"', "sha256", "61b8f3a8cea76e16eeff7ce27f1b7711c1f1e437f5038cec17773772a4bded28"],
    ['"12345678"*512*256', "md5", "84fc21ac2f49ac283ff399378d834d1a"],
    ['"12345678"*512*256', "sha256", "cbb388edd25e567b85f504c7b345497f9fb4f6bbf4e39768809184b9f9e678f8"],
    [
      '"12345678"*512*256',
      "sha512/512k",
      "379f7eb1628058c7abbc4c96941ac972074815ea9ef4aca95eefb2b4f9c29f64023fff8d966e9fddf08d07bdba548e75298917f10268fdf9ba636c2321a2214e"
    ]
  ]

  it.live("--blkhash=DIGEST[/SIZE] and --blkhash-file give libnbd 1.24's known block hashes", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const results = yield* Effect.forEach(
        known,
        ([data, digest], i) => {
          const file = Path.join(dir, `hash${i}`)
          return Effect.map(
            ours(["copy", `--blkhash=${digest}`, `--blkhash-file=${file}`, "[", "nbdkit", "data", data, "]", "null:"]),
            (r) => ({ r, file })
          )
        },
        { concurrency: 3 }
      )
      results.forEach(({ file, r }, i) => {
        expect(r.code, known[i]!.join(" ")).toBe(0)
        expect(Fs.readFileSync(file, "utf8"), known[i]!.join(" ")).toBe(`${known[i]![2]}\n`)
      })
      // Alone, --blkhash is sha256 over 64K blocks, printed on stdout (copy-blkhash-pattern.sh's 1G vector).
      expect(yield* ok(["copy", "--blkhash", "[", "nbdkit", "pattern", "1G", "]", "null:"])).toBe(
        "6750a1c3d78e46eaffb0d094624825dea88f0c7098b2424fce776c0748442649\n"
      )
      // To -, the data still goes to stdout and the hash to its file.
      const file = Path.join(dir, "tee")
      const tee = yield* ours([
        "copy",
        "--blkhash=md5",
        `--blkhash-file=${file}`,
        "[",
        "nbdkit",
        "data",
        '"hello"',
        "]",
        "-"
      ])
      expect([tee.code, tee.stdout]).toEqual([0, "hello"])
      expect(Fs.readFileSync(file, "utf8")).toBe("f741ac9ce55f5325906bb14e9c05d467\n")
      oneLine(yield* ours(["copy", "--blkhash=nosuch", "-", "null:"]), /unknown digest 'nosuch' \(EINVAL\)\n$/)
      // Any destination: the hash is of the data copied (cli-copy-options.test.ts has the rest).
      const kit = ["[", "nbdkit", "data", '"hello"', "]"]
      expect(yield* ok(["copy", "--blkhash=md5", ...kit, Path.join(dir, "x.img")])).toBe(
        "f741ac9ce55f5325906bb14e9c05d467\n"
      )
      expect(Fs.readFileSync(Path.join(dir, "x.img"), "utf8")).toBe("hello")
    })
  )

  it("the block hash does not depend on how the bytes are cut into chunks", () => {
    const image = new Uint8Array(1048576 + 7)
    image.set(Buffer.from("hello"), 0)
    image.set(Buffer.from("goodbye"), 1048576)
    const expected = "61b8f3a8cea76e16eeff7ce27f1b7711c1f1e437f5038cec17773772a4bded28"
    for (const cut of [1, 7, 4096, 65535, 65536, 65537, 300_000, image.length]) {
      const h = new Blkhash.Blkhash(Blkhash.defaults)
      for (let at = 0; at < image.length; at += cut) h.update(image.subarray(at, Math.min(at + cut, image.length)))
      expect(h.hexDigest(), `chunks of ${cut}`).toBe(expected)
    }
  })
})
