import { Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { directoryWith, nbdinfoMap, nbdkit, qcow2Image, qemuNbd, run, tempDir } from "./util/peers.js"
import { bin, buildCli } from "./util/cli.js"

vi.setConfig({ testTimeout: 90_000 })

// The tests run the built CLI as a real process: build it (incrementally) and bundle it first.
beforeAll(buildCli, 120_000)

interface Result {
  readonly code: number
  readonly stdout: Buffer
  readonly stderr: string
}

/** Runs `effect-nbd ARGS` to completion, optionally feeding stdin. */
const cli = (args: ReadonlyArray<string>, input?: Uint8Array): Effect.Effect<Result> =>
  Effect.callback<Result>((resume) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["pipe", "pipe", "pipe"] })
    const out: Array<Buffer> = []
    let err = ""
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => (err += b.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err })))
    child.stdin.on("error", () => {})
    if (input !== undefined) child.stdin.end(input)
    else child.stdin.end()
  })

/** Runs the CLI and expects exit status 0; gives stdout as text. */
const ok = (args: ReadonlyArray<string>, input?: Uint8Array): Effect.Effect<string> =>
  Effect.map(cli(args, input), (r) => {
    expect(r.stderr, `effect-nbd ${args.join(" ")}`).toBe("")
    expect(r.code).toBe(0)
    return r.stdout.toString()
  })

const sha256 = (data: Uint8Array): string => Crypto.createHash("sha256").update(data).digest("hex")

/** Deterministic test content: random-looking data in the first part, a hole, a zero run, more data. */
const image = (size: number): Uint8Array => {
  const out = new Uint8Array(size)
  let x = 12345
  for (let i = 0; i < size / 4; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  out.fill(0x5a, size / 2, size / 2 + 70_000)
  out.set(Buffer.from("the end"), size - 7)
  return out
}

/** Reads a whole export with our own client. */
const readExport = (uri: string): Effect.Effect<Uint8Array> =>
  Effect.scoped(
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, uri)
      const size = Number(yield* Nbd.getSize(h))
      const out = new Uint8Array(size)
      for (let off = 0; off < size; off += 1 << 20)
        yield* Nbd.pread(h, Math.min(1 << 20, size - off), off, { buffer: out.subarray(off, off + (1 << 20)) })
      return out
    })
  ).pipe(Effect.orDie)

const writeExport = (uri: string, data: Uint8Array): Effect.Effect<void> =>
  Effect.scoped(
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* NodeNbd.connectUri(h, uri)
      yield* Nbd.pwrite(h, data, 0)
      yield* Nbd.flush(h)
    })
  ).pipe(Effect.orDie)

/** Compares two nbdinfo-style JSON objects key by key, recursing into "exports". */
const compareInfo = (ours: Record<string, unknown>, theirs: Record<string, unknown>, where: string) => {
  const keys = new Set([...Object.keys(ours), ...Object.keys(theirs)])
  for (const key of keys) {
    if (key === "exports") {
      const a = ours[key] as Array<Record<string, unknown>>
      const b = theirs[key] as Array<Record<string, unknown>>
      expect(a.length, `${where}: number of exports`).toBe(b.length)
      a.forEach((e, i) => compareInfo(e, b[i]!, `${where}: exports[${i}]`))
    } else expect(ours[key], `${where}: key ${key}`).toEqual(theirs[key])
  }
}

const SIZE = 4 << 20

describe("effect-nbd info", () => {
  it.live("--json matches nbdinfo --json against nbdkit and qemu-nbd, key by key", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["memory", "4M"])
      yield* writeExport(kit.uri, image(SIZE))
      const ro = yield* nbdkit(["-r", "--filter=blocksize", "null", "123456", "minblock=512"])
      const qcow2 = yield* qcow2Image("4M", ["write -P 0xab 1M 64k", "write -z 2M 128k"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2"])
      for (const [name, uri] of [
        ["nbdkit", kit.uri],
        ["nbdkit -r null", ro.uri],
        ["qemu-nbd", qemu.uri]
      ] as const) {
        const [ours, theirs] = yield* Effect.all([ok(["info", "--json", uri]), run("nbdinfo", ["--json", uri])], {
          concurrency: 2
        })
        compareInfo(JSON.parse(ours), JSON.parse(theirs), name)
        // The text form is the same too.
        expect(yield* ok(["info", uri]), name).toBe(yield* run("nbdinfo", [uri]))
      }
    })
  )

  it.live("--map matches nbdinfo --map (text and JSON)", () =>
    Effect.gen(function* () {
      const qcow2 = yield* qcow2Image("8M", ["write -P 0xab 1M 64k", "write -z 2M 128k", "write -P 1 7M 4k"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2"])
      const data = yield* nbdkit(["data", "@1048576 1 2 3 @536870912 4 5 6", "size=1G"])
      for (const uri of [qemu.uri, data.uri]) {
        expect(yield* ok(["info", "--map", uri])).toBe(yield* run("nbdinfo", ["--map", uri]))
        const ours = JSON.parse(yield* ok(["info", "--map", "--json", uri])) as Array<{ type: number }>
        expect(ours).toEqual(JSON.parse(yield* run("nbdinfo", ["--map", "--json", uri])))
        expect(ours.length).toBeGreaterThan(2)
        expect(ours.map((e: any) => ({ offset: e.offset, length: e.length, flags: e.type }))).toEqual(
          yield* nbdinfoMap(uri)
        )
      }
      // A context the server lacks is a one-line error.
      const r = yield* cli(["info", "--map=qemu:allocation-depth", data.uri])
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/^effect-nbd: --map: server does not support metadata context .*\n$/)
    })
  )

  it.live("--size, and --can / --is exit with 0 for true, 2 for false, 1 for errors", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["memory", "1234567"])
      const ro = yield* nbdkit(["-r", "memory", "1M"])
      const qcow2 = yield* qcow2Image("1M", [])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2"])
      expect(yield* ok(["info", "--size", kit.uri])).toBe("1234567\n")
      expect(yield* ok(["info", "--size", qemu.uri])).toBe("1048576\n")
      const code = (args: ReadonlyArray<string>) => Effect.map(cli(args), (r) => r.code)
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
        [["--can", "write"], ro.uri],
        [["--is", "read-only"], ro.uri],
        [["--is", "read-only"], kit.uri],
        [["--can", "multi-conn"], kit.uri],
        [["--can", "multi-conn"], qemu.uri],
        [["--can", "zero"], qemu.uri],
        [["--is", "rotational"], kit.uri]
      ]
      const results = yield* Effect.forEach(
        cases,
        ([flag, uri]) =>
          Effect.all([
            code(["info", ...flag, uri]),
            Effect.callback<number>((resume) => {
              spawn("nbdinfo", [...flag, uri]).on("close", (c) => resume(Effect.succeed(c ?? -1)))
            })
          ]),
        { concurrency: 3 }
      )
      results.forEach(([ours, theirs], i) => expect(ours, cases[i]![0].join(" ")).toBe(theirs))
      expect(results.map(([ours]) => ours)).toEqual([2, 0, 2, 0, 2, 0, 2])
      const bad = yield* cli(["info", "--can", "teleport", kit.uri])
      expect(bad.code).toBe(1)
      expect(bad.stderr.trim().split("\n")).toHaveLength(1)
    })
  )

  it.live("--list shows every export, as nbdinfo --list does", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({
        exports: [
          { name: "", size: 1 << 20, description: "the default" },
          { name: "alpha", size: 2 << 20, description: "first disk" },
          { name: "beta/β", size: 3 << 20, readOnly: true }
        ]
      })
      const ours = JSON.parse(yield* ok(["info", "--list", "--json", server.uri]))
      expect(ours.exports.map((e: any) => [e["export-name"], e["export-size"], e.is_read_only, e.description])).toEqual(
        [
          ["", 1048576, false, "the default"],
          ["alpha", 2097152, false, "first disk"],
          ["beta/β", 3145728, true, undefined]
        ]
      )
      expect(ours.exports[1].uri).toBe(server.uriFor("alpha"))
      // The same keys and values as libnbd's nbdinfo (which lacks extended headers, so skip what depends on them).
      const theirs = JSON.parse(yield* run("nbdinfo", ["--list", "--json", server.uri]))
      compareInfo(ours, theirs, "test server --list")
      // And against nbdkit's file plugin serving a directory.
      const dir = yield* directoryWith({ "one.img": 65536, "two.img": 131072 })
      const kit = yield* nbdkit(["file", `dir=${dir}`])
      compareInfo(
        JSON.parse(yield* ok(["info", "--list", "--json", kit.uri])),
        JSON.parse(yield* run("nbdinfo", ["--list", "--json", kit.uri])),
        "nbdkit file dir= --list"
      )
      expect(yield* ok(["info", "--list", kit.uri])).toBe(yield* run("nbdinfo", ["--list", kit.uri]))
    })
  )

  it.live("with no URI it shows an embedded test server", () =>
    Effect.gen(function* () {
      const text = yield* ok(["info"])
      expect(text).toMatch(/^protocol: newstyle-fixed without TLS, using extended packets\n/)
      expect(text).toContain("\texport-size: 1048576 (1M)\n")
      expect(text).toContain("\tdescription: effect-nbd embedded test server\n")
      const map = yield* ok(["info", "--map"])
      expect(map).toContain("data")
      expect(map).toContain("hole,zero")
    })
  )
})

describe("effect-nbd copy", () => {
  type Kind = "file" | "nbdkit" | "test-server" | "qemu-nbd"
  const kinds: ReadonlyArray<Kind> = ["file", "nbdkit", "test-server", "qemu-nbd"]

  /** A place holding `content` (or empty, of the same size): its argument for the CLI and how to read it back. */
  const place = (kind: Kind, content: Uint8Array | undefined) =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      switch (kind) {
        case "file": {
          const path = Path.join(dir, "disk.img")
          if (content !== undefined) Fs.writeFileSync(path, content)
          return { arg: path, read: Effect.sync(() => new Uint8Array(Fs.readFileSync(path))) }
        }
        case "nbdkit": {
          const peer = yield* nbdkit(["memory", String(SIZE)])
          if (content !== undefined) yield* writeExport(peer.uri, content)
          return { arg: peer.uri, read: readExport(peer.uri) }
        }
        case "test-server": {
          const server = yield* Effect.orDie(TestServer.make({ exports: [{ name: "disk", size: SIZE }] }))
          if (content !== undefined) yield* writeExport(server.uri, content)
          return { arg: server.uri, read: readExport(server.uri) }
        }
        case "qemu-nbd": {
          const path = Path.join(dir, "raw.img")
          Fs.writeFileSync(path, content ?? new Uint8Array(SIZE))
          const peer = yield* qemuNbd(path, ["--format=raw"])
          return { arg: peer.uri, read: readExport(peer.uri) }
        }
      }
    })

  it.live(
    "between every pair of file, nbdkit, our test server and qemu-nbd (sha256)",
    () =>
      Effect.gen(function* () {
        const content = image(SIZE)
        const expected = sha256(content)
        const pairs = kinds.flatMap((s) => kinds.map((d) => [s, d] as const))
        yield* Effect.forEach(
          pairs,
          ([s, d]) =>
            Effect.gen(function* () {
              const src = yield* place(s, content)
              const dst = yield* place(d, undefined)
              yield* ok(["copy", "-C", "2", "-R", "8", "--request-size", "64K", src.arg, dst.arg])
              expect(sha256(yield* dst.read), `${s} -> ${d}`).toBe(expected)
            }).pipe(Effect.scoped),
          { concurrency: 4 }
        )
      }),
    // Sixteen CLI runs, each a fresh Node process.
    120_000
  )

  it.live("a qcow2 image served by qemu-nbd copies to a file with its holes kept", () =>
    Effect.gen(function* () {
      const qcow2 = yield* qcow2Image("16M", ["write -P 0xab 1M 64k", "write -P 0xcd 9M 1M"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2", "-r"])
      const dir = yield* tempDir
      const out = Path.join(dir, "out.raw")
      yield* ok(["copy", qemu.uri, out])
      yield* run("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", out, qcow2])
      // Only the written 1 MiB + 64 KiB are allocated in the copy.
      expect(Fs.statSync(out).blocks * 512).toBeLessThan(4 << 20)
    })
  )

  it.live("a sparse 1 GiB image copies without reading its holes (nbdkit log filter)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const log = Path.join(dir, "nbdkit.log")
      const source = yield* nbdkit([
        "--filter=log",
        "data",
        "@1048576 1 2 3 @536870912 4 5 6 @1073741820 7 8 9 10",
        "size=1G",
        `logfile=${log}`
      ])
      const readBytes = () =>
        Fs.readFileSync(log, "utf8")
          .split("\n")
          .filter((l) => / Read id=\d+ offset=/.test(l))
          .reduce((n, l) => n + Number(/count=(0x[0-9a-f]+)/.exec(l)![1]), 0)
      const out = Path.join(dir, "big.img")
      yield* ok(["copy", source.uri, out])
      expect(Fs.statSync(out).size).toBe(1 << 30)
      expect(Fs.statSync(out).blocks * 512).toBeLessThan(1 << 20)
      const fd = Fs.openSync(out, "r")
      const probe = (offset: number, n: number) => {
        const b = Buffer.alloc(n)
        Fs.readSync(fd, b, 0, n, offset)
        return [...b]
      }
      expect(probe(1048575, 5)).toEqual([0, 1, 2, 3, 0])
      expect(probe(536870912, 3)).toEqual([4, 5, 6])
      expect(probe(1073741820, 4)).toEqual([7, 8, 9, 10])
      Fs.closeSync(fd)
      const afterFile = readBytes()
      expect(afterFile).toBeGreaterThan(0)
      expect(afterFile).toBeLessThan(1 << 20)
      // To null: and to an NBD destination (zeroes become NBD_CMD_WRITE_ZEROES): still no hole is read.
      yield* ok(["copy", source.uri, "null:"])
      const memory = yield* nbdkit(["memory", "1G"])
      yield* ok(["copy", source.uri, memory.uri])
      expect(readBytes()).toBeLessThan(3 << 20)
      const check = yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          yield* NodeNbd.connectUri(h, memory.uri)
          return [...(yield* Nbd.pread(h, 4, 1073741820)), ...(yield* Nbd.pread(h, 3, 536870912))]
        })
      ).pipe(Effect.orDie)
      expect(check).toEqual([7, 8, 9, 10, 4, 5, 6])
    })
  )

  it.live("- reads stdin and writes stdout; null: discards", () =>
    Effect.gen(function* () {
      const content = image(SIZE)
      const kit = yield* nbdkit(["memory", String(SIZE)])
      yield* ok(["copy", "-", kit.uri], content)
      expect(sha256(yield* readExport(kit.uri))).toBe(sha256(content))
      const r = yield* cli(["copy", kit.uri, "-"])
      expect(r.code).toBe(0)
      expect(sha256(r.stdout)).toBe(sha256(content))
      const dir = yield* tempDir
      const out = Path.join(dir, "from-stdin.img")
      yield* ok(["copy", "-", out], content)
      expect(sha256(Fs.readFileSync(out))).toBe(sha256(content))
      expect(yield* ok(["copy", kit.uri, "null:"])).toBe("")
      // A destination that is not a regular file (no holes possible) is written in full.
      expect(yield* ok(["copy", kit.uri, "/dev/null"])).toBe("")
      const piped = yield* cli(["copy", "-", "-"], content)
      expect(sha256(piped.stdout)).toBe(sha256(content))
    })
  )

  it.live("a destination smaller than the source is an error", () =>
    Effect.gen(function* () {
      const big = yield* nbdkit(["memory", "2M"])
      const small = yield* nbdkit(["memory", "1M"])
      const r = yield* cli(["copy", big.uri, small.uri])
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/^effect-nbd: copy: .*smaller than the source.*\(ENOSPC\)\n$/)
    })
  )
})

describe("effect-nbd dump", () => {
  it.live("prints what nbddump prints", () =>
    Effect.gen(function* () {
      const dir = yield* directoryWith({
        "small.bin": Buffer.from("Hello, world! 0123456789abcdefXYZ\n".padEnd(100, "\0"))
      })
      const file = yield* nbdkit(["file", Path.join(dir, "small.bin")])
      const qcow2 = yield* qcow2Image("4M", ["write -P 0xab 1M 64k"])
      const qemu = yield* qemuNbd(qcow2, ["--format=qcow2"])
      for (const uri of [file.uri, qemu.uri]) expect(yield* ok(["dump", uri])).toBe(yield* run("nbddump", [uri]))
      expect(yield* ok(["dump", "-n", "40", file.uri])).toBe(yield* run("nbddump", ["-n", "40", file.uri]))
    })
  )

  it.live("with no URI it dumps the embedded test server", () =>
    Effect.gen(function* () {
      const lines = (yield* ok(["dump"])).trimEnd().split("\n")
      expect(lines[0]).toBe("0000000000: 48 65 6c 6c 6f 20 66 72  6f 6d 20 74 68 65 20 65 |Hello from the e|")
      for (const line of lines)
        expect(line).toMatch(/^(\*|[0-9a-f]{10}: ([0-9a-f]{2} ){8} ([0-9a-f]{2} ){8}\|.{16}\|)$/)
      expect(lines).toContain("*")
      expect(lines).toContain("0000080000: ab ab ab ab ab ab ab ab  ab ab ab ab ab ab ab ab |................|")
      expect(lines[lines.length - 1]).toMatch(/^00000ffff0: /)
    })
  )
})

describe("effect-nbd errors", () => {
  const oneLine = (r: Result, pattern: RegExp) => {
    expect(r.code).toBe(1)
    expect(r.stdout.length).toBe(0)
    expect(r.stderr).toMatch(pattern)
    expect(r.stderr.trim().split("\n")).toHaveLength(1)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  }

  it.live("bad URI, missing socket, refused connection, missing file, bad flags", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const [badUri, missing, refused, missingFile, badSize] = yield* Effect.all(
        [
          cli(["info", "nbd://host:notaport/"]),
          cli(["info", `nbd+unix:///?socket=${Path.join(dir, "nope.sock")}`]),
          cli(["dump", "nbd://127.0.0.1:1/"]),
          cli(["copy", Path.join(dir, "nope.img"), "null:"]),
          cli(["copy", "--request-size", "lots", "-", "null:"])
        ],
        { concurrency: "unbounded" }
      )
      oneLine(badUri, /^effect-nbd: .*\(EINVAL\)\n$/)
      oneLine(missing, /^effect-nbd: .*\(ENOENT\)\n$/)
      oneLine(refused, /^effect-nbd: .*\(ECONNREFUSED\)\n$/)
      oneLine(missingFile, /^effect-nbd: open: .*nope\.img: no such file or directory \(ENOENT\)\n$/)
      oneLine(badSize, /^effect-nbd: --request-size: cannot parse size 'lots' \(EINVAL\)\n$/)
      const badFlag = yield* cli(["copy", "-C", "x", "a", "b"])
      expect(badFlag.code).toBe(1)
      expect(badFlag.stderr).not.toMatch(/\n\s+at /)
    })
  )
})
