// nbdcopy's remaining copy options in `effect-nbd copy`, checked against real results: --blkhash with any
// destination, -S N as the granularity of zero detection, --allocated, --queue-size and -T. Allocation is
// read back with qemu-img map (SEEK_DATA/SEEK_HOLE on a file) and nbdinfo --map; content by sha256; each
// beside the installed nbdcopy where it has the option.
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Blkhash from "../src/internal/cli/blkhash.js"
import { nbdinfoMap, nbdkit, run, tempDir } from "./util/peers.js"
import { bin, buildCli, proc, type Result } from "./util/cli.js"

vi.setConfig({ testTimeout: 90_000 })

beforeAll(buildCli, 120_000)

const KiB = 1024
const MiB = 1024 * KiB

const ours = (args: ReadonlyArray<string>, options?: { readonly stdin?: string }) =>
  proc(process.execPath, [bin, ...args], options)

/** Our run, which must succeed quietly (stderr only with -v); its stdout. */
const ok = (args: ReadonlyArray<string>, options?: { readonly stdin?: string }) =>
  Effect.map(ours(args, options), (r) => {
    if (!args.includes("-v")) expect(r.stderr, `effect-nbd ${args.join(" ")}`).toBe("")
    expect(r.code, `effect-nbd ${args.join(" ")}: ${r.stderr}`).toBe(0)
    return r
  })

/** nbdcopy's run, which must succeed. */
const theirs = (args: ReadonlyArray<string>) =>
  Effect.map(proc("nbdcopy", args), (r) => {
    expect(r.code, `nbdcopy ${args.join(" ")}: ${r.stderr}`).toBe(0)
    return r
  })

const sha256 = (path: string): string => Crypto.createHash("sha256").update(Fs.readFileSync(path)).digest("hex")

/** One line on stderr, "effect-nbd: ... (ERRNO)", nothing on stdout, exit status 1. */
const oneLine = (r: Result, pattern: RegExp) => {
  expect(r.code).toBe(1)
  expect(r.stdout).toBe("")
  expect(r.stderr).toMatch(pattern)
  expect(r.stderr.split("\n")).toHaveLength(2)
}

/** A file's allocation as qemu-img map sees it (SEEK_DATA / SEEK_HOLE): [start, length, data] runs. */
const fileMap = (path: string) =>
  Effect.map(run("qemu-img", ["map", "--output=json", "-f", "raw", path]), (out) =>
    (JSON.parse(out) as Array<{ start: number; length: number; data: boolean }>).map(
      (e) => [e.start, e.length, e.data] as const
    )
  )

/** Bytes allocated to a file on disk. */
const allocated = (path: string): number => Fs.statSync(path).blocks * 512

/** The block hash of a file's bytes, fed in order: the reference the copies are checked against. */
const blkhashOf = (path: string, spec: Blkhash.Spec, length?: number): string => {
  const h = new Blkhash.Blkhash(spec)
  const bytes = Fs.readFileSync(path)
  h.update(length === undefined ? bytes : bytes.subarray(0, length))
  return h.hexDigest()
}

/** 1 MiB where every 64K block holds 4K of data, 4K of zeroes, and so on: zero runs smaller than 64K. */
const stripes = (): Uint8Array => {
  const out = new Uint8Array(MiB)
  for (let at = 0; at < MiB; at += 8 * KiB) out.fill(0x41 + ((at / (8 * KiB)) % 26), at, at + 4 * KiB)
  return out
}

/** Whether the installed nbdcopy has --blkhash (libnbd 1.24 and later; Debian's 1.14 has not). */
const nbdcopyHasBlkhash = Effect.map(proc("nbdcopy", ["--help"]), (r) => r.stdout.includes("--blkhash"))

describe("--blkhash with any destination", () => {
  // libnbd 1.24's known answers (copy/copy-blkhash-known.sh), as cli-habits.test.ts checks them to null:.
  const hello = {
    data: '"hello" @1048576 "goodbye"',
    sha256: "61b8f3a8cea76e16eeff7ce27f1b7711c1f1e437f5038cec17773772a4bded28"
  }
  const repeats = { data: '"12345678"*512*256', md5: "84fc21ac2f49ac283ff399378d834d1a" }

  it.live("to a file and to an NBD export, the hash is libnbd's known answer, as to null:", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = Path.join(dir, "hello.img")
      const printed = yield* ok(["copy", "--blkhash", "[", "nbdkit", "data", hello.data, "]", file])
      expect(printed.stdout).toBe(`${hello.sha256}\n`)
      // The copy is right too, and its own bytes hash the same.
      expect(Fs.statSync(file).size).toBe(1048576 + 7)
      expect(blkhashOf(file, Blkhash.defaults)).toBe(hello.sha256)
      // An NBD destination over four connections; the hash goes to its file.
      const memory = yield* nbdkit(["memory", "2M"])
      const hashFile = Path.join(dir, "hash")
      yield* ok([
        "copy",
        "-C4",
        "--request-size=64K",
        "--blkhash=md5",
        `--blkhash-file=${hashFile}`,
        "[",
        "nbdkit",
        "data",
        repeats.data,
        "]",
        memory.uri
      ])
      expect(Fs.readFileSync(hashFile, "utf8")).toBe(`${repeats.md5}\n`)
      const back = Path.join(dir, "back.img")
      yield* theirs([memory.uri, back])
      // What landed on the export: the 1M image (with its known hash), then the export's own zeroes.
      expect(blkhashOf(back, { digest: "md5", blockSize: 64 * KiB }, MiB)).toBe(repeats.md5)
      expect(sha256(back)).toBe(
        Crypto.createHash("sha256")
          .update(Buffer.concat([Buffer.from("12345678".repeat(512 * 256)), Buffer.alloc(MiB)]))
          .digest("hex")
      )
    })
  )

  it.live("many connections and requests out of order: the hash of the data copied, whatever the destination", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Random data with holes: the source map has zero extents that are never read.
      const source = yield* nbdkit([
        "data",
        "@0 (0x5a 0xc3 0x01)*100000 @8388608 (1 2 3 4)*300000 @16777216 9",
        "size=24M"
      ])
      const destination = yield* nbdkit(["memory", "24M"])
      const reference = Path.join(dir, "reference.img")
      yield* theirs([source.uri, reference])
      const cases: ReadonlyArray<{ readonly flags: ReadonlyArray<string>; readonly spec: Blkhash.Spec }> = [
        { flags: ["--blkhash"], spec: Blkhash.defaults },
        // Blocks larger than the requests: each block is put together from pieces that finish in any order.
        { flags: ["--blkhash=sha512/1M", "--request-size=64K"], spec: { digest: "sha512", blockSize: MiB } },
        // Requests that do not line up with the blocks.
        { flags: ["--blkhash=sha256/64K", "--request-size=100000"], spec: { digest: "sha256", blockSize: 64 * KiB } }
      ]
      for (const { flags, spec } of cases) {
        const toNull = (yield* ok(["copy", ...flags, source.uri, "null:"])).stdout
        const file = Path.join(dir, "copy.img")
        const toFile = (yield* ok(["copy", ...flags, source.uri, file])).stdout
        const toNbd = (yield* ok(["copy", "-C4", ...flags, source.uri, destination.uri])).stdout
        expect(toFile, flags.join(" ")).toBe(toNull)
        expect(toNbd, flags.join(" ")).toBe(toNull)
        // The reference: the block hash of the copied bytes, in order.
        expect(toNull, flags.join(" ")).toBe(`${blkhashOf(file, spec)}\n`)
        expect(sha256(file)).toBe(sha256(reference))
        if (yield* nbdcopyHasBlkhash) {
          const nbdcopyHash = yield* theirs([...flags.filter((f) => f.startsWith("--blkhash")), source.uri, "null:"])
          expect(nbdcopyHash.stdout).toBe(toNull)
        }
      }
      // stdin to a file: the bytes arrive in order, and hash the same.
      const file = Path.join(dir, "copy.img")
      const fromStdin = (yield* ok(["copy", "--blkhash", "-", Path.join(dir, "stdin.img")], { stdin: file })).stdout
      expect(fromStdin).toBe(`${blkhashOf(file, Blkhash.defaults)}\n`)
      expect(sha256(Path.join(dir, "stdin.img"))).toBe(sha256(file))
    })
  )

  it("a block hash fed out of order, with zero ranges, is the one fed in order", () => {
    const image = new Uint8Array(3 * MiB + 12345)
    for (let i = 0; i < image.length; i++) image[i] = i % 4096 < 1000 ? (i * 7) & 0xff : 0
    image.fill(0, MiB, 2 * MiB)
    for (const blockSize of [512, 64 * KiB, MiB]) {
      const spec = { digest: "sha256", blockSize }
      const inOrder = new Blkhash.Blkhash(spec)
      inOrder.update(image)
      const expected = inOrder.hexDigest()
      for (const cut of [4096, 65536, 100_000, 300_001]) {
        const pieces: Array<readonly [number, number]> = []
        for (let at = 0; at < image.length; at += cut) pieces.push([at, Math.min(cut, image.length - at)])
        // A fixed shuffle, so a failure repeats.
        let x = cut
        for (let i = pieces.length - 1; i > 0; i--) {
          x = (x * 1103515245 + 12345) & 0x7fffffff
          const j = x % (i + 1)
          ;[pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!]
        }
        const h = new Blkhash.Blkhash(spec)
        for (const [at, n] of pieces) {
          const bytes = image.subarray(at, at + n)
          // Pieces inside the zeroed MiB come as zero ranges, as block status reports them.
          if (at >= MiB && at + n <= 2 * MiB) h.zero(at, n)
          else h.write(at, bytes)
        }
        expect(h.hexDigest(), `blocks of ${blockSize}, pieces of ${cut}`).toBe(expected)
      }
    }
    // A missing piece is a bug in the caller, not a wrong hash.
    const h = new Blkhash.Blkhash(Blkhash.defaults)
    h.write(65536, new Uint8Array(10))
    expect(() => h.hexDigest()).toThrow(/missing/)
  })
})

describe("-S N, the granularity of zero detection", () => {
  it.live("4K zero runs become holes in a file with -S 4096 (the default), and data with -S 65536, as nbdcopy's", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "stripes.img")
      Fs.writeFileSync(source, stripes())
      const cases: ReadonlyArray<ReadonlyArray<string>> = [["-S", "4096"], ["-S65536"], ["--sparse=4096"], []]
      for (const [i, flags] of cases.entries()) {
        const a = Path.join(dir, `ours${i}.img`)
        const b = Path.join(dir, `theirs${i}.img`)
        yield* ok(["copy", ...flags, source, a])
        yield* theirs([...flags, source, b])
        expect(sha256(a), flags.join(" ")).toBe(sha256(source))
        expect(yield* fileMap(a), flags.join(" ")).toEqual(yield* fileMap(b))
      }
      const fine = yield* fileMap(Path.join(dir, "ours0.img"))
      // 16 blocks of 64K, each 8 data and 8 zero runs of 4K.
      expect(fine).toHaveLength(256)
      expect(fine.filter(([, length, data]) => !data && length === 4096)).toHaveLength(128)
      expect(allocated(Path.join(dir, "ours0.img"))).toBe(MiB / 2)
      expect(yield* fileMap(Path.join(dir, "ours1.img"))).toEqual([[0, MiB, true]])
      expect(allocated(Path.join(dir, "ours1.img"))).toBe(MiB)
      // The default is -S 4096.
      expect(yield* fileMap(Path.join(dir, "ours3.img"))).toEqual(fine)
      // From stdin, where the bytes come in order through another path, -S cuts the same.
      const piped = Path.join(dir, "piped.img")
      yield* ok(["copy", "-S", "4096", "-", piped], { stdin: source })
      expect(yield* fileMap(piped)).toEqual(fine)
      const coarse = Path.join(dir, "coarse.img")
      yield* ok(["copy", "-S", "65536", "-", coarse], { stdin: source })
      expect(yield* fileMap(coarse)).toEqual([[0, MiB, true]])
    })
  )

  it.live("to an NBD export, the zero runs become NBD_CMD_WRITE_ZEROES holes with -S 4096 only", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "stripes.img")
      Fs.writeFileSync(source, stripes())
      const maps: Array<ReadonlyArray<{ readonly offset: number; readonly length: number; readonly flags: number }>> =
        []
      for (const [i, size] of ["4096", "65536"].entries()) {
        for (const tool of ["ours", "theirs"]) {
          const image = Path.join(dir, `${tool}${i}.img`)
          Fs.writeFileSync(image, new Uint8Array(MiB).fill(0xff))
          const kit = yield* nbdkit(["file", image])
          if (tool === "ours") yield* ok(["copy", "-S", size, source, kit.uri])
          else yield* theirs(["-S", size, source, kit.uri])
          expect(sha256(image), `${tool} -S ${size}`).toBe(sha256(source))
          maps.push(yield* nbdinfoMap(kit.uri))
        }
      }
      const [fine, fineTheirs, coarse, coarseTheirs] = maps
      expect(fine).toEqual(fineTheirs)
      expect(coarse).toEqual(coarseTheirs)
      // -S 4096: every other 4K is a hole reading as zeroes (flags 3); -S 65536: all data.
      expect(fine).toHaveLength(256)
      expect(fine!.filter((e) => e.flags === 3 && e.length === 4096)).toHaveLength(128)
      expect(coarse).toEqual([{ offset: 0, length: MiB, flags: 0 }])
    })
  )

  it.live("without -S, an NBD destination's preferred block size when larger than 4096, as nbdcopy's", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "stripes.img")
      Fs.writeFileSync(source, stripes())
      const maps: Array<ReadonlyArray<{ readonly offset: number; readonly length: number; readonly flags: number }>> =
        []
      for (const preferred of ["4096", "65536"])
        for (const tool of ["ours", "theirs"]) {
          const image = Path.join(dir, `${tool}${preferred}.img`)
          Fs.writeFileSync(image, new Uint8Array(MiB).fill(0xff))
          const kit = yield* nbdkit(["--filter=blocksize-policy", "file", image, `blocksize-preferred=${preferred}`])
          if (tool === "ours") {
            const r = yield* ours(["copy", "-v", source, kit.uri])
            expect(r.code, r.stderr).toBe(0)
            expect(r.stderr).toContain(` sparse=${preferred} `)
          } else yield* theirs([source, kit.uri])
          expect(sha256(image), `${tool}, preferred ${preferred}`).toBe(sha256(source))
          maps.push(yield* nbdinfoMap(kit.uri))
        }
      const [fine, fineTheirs, coarse, coarseTheirs] = maps
      expect(fine).toEqual(fineTheirs)
      expect(coarse).toEqual(coarseTheirs)
      expect(fine!.filter((e) => e.flags === 3 && e.length === 4096)).toHaveLength(128)
      expect(coarse).toEqual([{ offset: 0, length: MiB, flags: 0 }])
    })
  )
})

describe("--allocated", () => {
  const sparse = ["nbdkit", "data", '"hello" @1048576 "goodbye"', "size=4M"]

  it.live("a file destination is fully allocated, with the content of a sparse copy", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const full = Path.join(dir, "full.img")
      const holes = Path.join(dir, "holes.img")
      yield* ok(["copy", "--allocated", "[", ...sparse, "]", full])
      yield* ok(["copy", "[", ...sparse, "]", holes])
      expect(sha256(full)).toBe(sha256(holes))
      expect(yield* fileMap(full)).toEqual([[0, 4 * MiB, true]])
      expect(allocated(full)).toBe(4 * MiB)
      expect(allocated(holes)).toBeLessThan(MiB)
      // From stdin too: zeroes in the data are written, not skipped.
      const piped = Path.join(dir, "piped.img")
      yield* ok(["copy", "--allocated", "-", piped], { stdin: holes })
      expect(allocated(piped)).toBe(4 * MiB)
      expect(sha256(piped)).toBe(sha256(holes))
    })
  )

  it.live("an NBD destination gets NBD_CMD_WRITE_ZEROES with NO_HOLE and ends allocated, as nbdcopy's", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const copyInto = (tool: "ours" | "theirs", flags: ReadonlyArray<string>) =>
        Effect.gen(function* () {
          const image = Path.join(dir, `${tool}${flags.length}.img`)
          const log = Path.join(dir, `${tool}${flags.length}.log`)
          Fs.writeFileSync(image, "")
          Fs.truncateSync(image, 4 * MiB)
          const kit = yield* nbdkit(["--filter=log", "file", image, `logfile=${log}`])
          const args = [...flags, "--", "[", ...sparse, "]", kit.uri]
          if (tool === "ours") yield* ok(["copy", ...args])
          else yield* theirs(args)
          const zeroes = Fs.readFileSync(log, "utf8")
            .split("\n")
            .filter((l) => / Zero id=/.test(l))
          return { image, zeroes }
        })
      const full = yield* copyInto("ours", ["--allocated"])
      const fullTheirs = yield* copyInto("theirs", ["--allocated"])
      const holes = yield* copyInto("ours", [])
      expect(full.zeroes.length).toBeGreaterThan(0)
      for (const l of full.zeroes) expect(l).toContain(" trim=0 ")
      for (const l of holes.zeroes) expect(l).toContain(" trim=1 ")
      // Zeroed with NO_HOLE, the file plugin allocates the range (as unwritten extents, which SEEK_DATA
      // may still call holes, so the blocks on disk tell).
      expect(allocated(full.image)).toBe(4 * MiB)
      expect(allocated(fullTheirs.image)).toBe(4 * MiB)
      expect(allocated(holes.image)).toBeLessThan(MiB)
      expect(sha256(full.image)).toBe(sha256(holes.image))
      expect(sha256(full.image)).toBe(sha256(fullTheirs.image))
    })
  )
})

describe("--queue-size and -T", () => {
  /** What -v says: the settings line and the result line. */
  const verbose = (stderr: string) => ({
    requests: Number(/ requests=(\d+) /.exec(stderr)?.[1]),
    connections: Number(/ (\d+) connection\(s\)/.exec(stderr)?.[1]),
    buffers: Number(/ (\d+) buffer\(s\)/.exec(stderr)?.[1])
  })

  it.live("--queue-size bounds the bytes in flight per connection: requests x request size", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = yield* nbdkit(["pattern", "16M"])
      const reference = Path.join(dir, "reference.img")
      yield* theirs([source.uri, reference])
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, number]> = [
        // 512K of 256K requests: two in flight.
        [["--queue-size=512K"], 2],
        [["--queue-size", "1M", "--request-size=64K"], 16],
        // Smaller than one request: still one at a time.
        [["--queue-size=100"], 1],
        // The default 16M allows -R's 64 requests of 256K, and 16 of 1M.
        [[], 64],
        [["--request-size=1M"], 16],
        // -R stays the bound when it is the smaller.
        [["-R8", "--queue-size=64M"], 8]
      ]
      for (const [flags, requests] of cases) {
        const out = Path.join(dir, "out.img")
        const r = yield* ok(["copy", "-v", "-C1", ...flags, source.uri, out])
        const v = verbose(r.stderr)
        expect(v.requests, flags.join(" ")).toBe(requests)
        // Buffers are only made for requests in flight at once.
        expect(v.buffers, flags.join(" ")).toBeLessThanOrEqual(requests)
        expect(sha256(out), flags.join(" ")).toBe(sha256(reference))
        if (requests > 2) expect(v.buffers, flags.join(" ")).toBeGreaterThan(2)
      }
    })
  )

  it.live("-T N caps the connections at N and -T 0 at the processors, as nbdcopy's threads do", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = yield* nbdkit(["pattern", "8M"])
      const reference = Path.join(dir, "reference.img")
      yield* theirs(["-T1", source.uri, reference])
      // nbdcopy's -T 0 is the processors online; ours the processors this process may run on (the same
      // unless an affinity mask narrows them).
      const processors = Os.availableParallelism()
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, number]> = [
        [["-T1"], 1],
        [["-T", "2"], 2],
        [["--threads=3"], 3],
        [["-T0"], Math.min(4, processors)],
        [[], Math.min(4, processors)],
        [["-C8"], Math.min(8, processors)],
        [["-C2", "-T3"], 2],
        [["-T2", "--synchronous"], 1]
      ]
      // A server without multi-conn gets one connection whatever -C and -T say, as nbdcopy gives it.
      const single = yield* nbdkit(["--filter=multi-conn", "pattern", "8M", "multi-conn-mode=disable"])
      for (const flags of [[], ["-C8"], ["-T4"]]) {
        const r = yield* ok(["copy", "-v", ...flags, single.uri, "null:"])
        expect(verbose(r.stderr).connections, flags.join(" ")).toBe(1)
      }
      for (const [flags, connections] of cases) {
        const out = Path.join(dir, "out.img")
        const r = yield* ok(["copy", "-v", ...flags, source.uri, out])
        expect(verbose(r.stderr).connections, flags.join(" ")).toBe(connections)
        expect(sha256(out), flags.join(" ")).toBe(sha256(reference))
        const peer = yield* theirs(["-v", ...flags, source.uri, Path.join(dir, "theirs.img")])
        expect(sha256(Path.join(dir, "theirs.img")), flags.join(" ")).toBe(sha256(reference))
        // nbdcopy -v says what it runs with: the same number of connections.
        if (Os.cpus().length === processors)
          expect(Number(/connections=(\d+) /.exec(peer.stderr)?.[1]), flags.join(" ")).toBe(connections)
      }
    })
  )
})

describe("help and bad values", () => {
  it.live("--help names the options with their defaults and the -T mapping", () =>
    Effect.gen(function* () {
      const help = (yield* ok(["copy", "--help"])).stdout
      for (const s of ["[--allocated]", "[--queue-size=N]", "[-T N|--threads=N]", "[-S N|--sparse=N]"])
        expect(help).toContain(s)
      const flat = help.replace(/\s+/g, " ")
      expect(flat).toContain("--queue-size=16M in flight per connection")
      expect(flat).toContain(
        "-T N caps the connections at N and -T 0 at the processors this process may run on (so -C 4 is 2 connections on a 2-core machine)"
      )
      expect(flat).toContain(
        "4 connections (when the server advertises multi-conn), 64 requests in flight each, 256K per request (--request-size at most 32M)"
      )
      expect(flat).toContain(
        "-S 4096 (or an NBD destination's preferred block size, if larger): zero blocks of that size become holes or zeroes"
      )
      expect(flat).toContain("with any destination")
    })
  )

  it.live("a bad -S, --queue-size or -T is one line with EINVAL and exit status 1", () =>
    Effect.gen(function* () {
      const bad: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
        [["-S", "100"], /^effect-nbd: --sparse: must be 0 or a power of 2 between 512 and \d+, got 100 \(EINVAL\)\n$/],
        [["-S4097"], /--sparse: must be 0 or a power of 2 .*, got 4097 \(EINVAL\)\n$/],
        [["--sparse=64M"], /--sparse: must be 0 or a power of 2 .*, got 67108864 \(EINVAL\)\n$/],
        [["--sparse=x"], /^effect-nbd: --sparse: cannot parse size 'x' \(EINVAL\)\n$/],
        [["--queue-size=0"], /^effect-nbd: --queue-size: must be 1 or more, got 0 \(EINVAL\)\n$/],
        [["--queue-size=lots"], /^effect-nbd: --queue-size: cannot parse size 'lots' \(EINVAL\)\n$/],
        [["-T", "-1"], /^effect-nbd: --threads: must be between 0 and 64, got -1 \(EINVAL\)\n$/],
        [["--threads=65"], /^effect-nbd: --threads: must be between 0 and 64, got 65 \(EINVAL\)\n$/],
        [["-Tx"], /^effect-nbd: .*integer.* \(EINVAL\)\n$/],
        [["--queue-size"], /^effect-nbd: option '--queue-size' requires an argument \(EINVAL\)\n$/]
      ]
      for (const [flags, pattern] of bad) {
        const args =
          flags[0] === "--queue-size" && flags.length === 1 ? ["copy", ...flags] : ["copy", ...flags, "a", "b"]
        oneLine(yield* ours(args), pattern)
      }
      // nbdcopy refuses the same -S values.
      for (const s of ["100", "4097"]) expect((yield* proc("nbdcopy", ["-S", s, "a", "b"])).code).toBe(1)
    })
  )
})
