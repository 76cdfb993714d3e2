import { describe, expect, it, layer } from "@effect/vitest"
import { Backend, Filter, TestServer } from "@effect-nbd/test-server"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { createHash, randomBytes } from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { nbdsh, run, runOk } from "./helpers.js"
import { CMD_FLUSH, CMD_READ, handshakeSimple, RawClient, request, simpleReply, sleep } from "./raw.js"

const withServer = <A, E>(config: TestServer.Config, f: (server: TestServer.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(TestServer.make(config), f))

const nbdinfoJson = (uri: string) =>
  Effect.map(runOk("nbdinfo", ["--json", uri]), (r) => JSON.parse(r.stdout) as Record<string, unknown>)

const firstExport = (info: Record<string, unknown>) => (info.exports as Array<Record<string, unknown>>)[0]!

const tempDir = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-test-"))),
  (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
)

const sha256 = (file: string) => createHash("sha256").update(Fs.readFileSync(file)).digest("hex")

describe("TestServer against libnbd's tools", () => {
  it.live("the tools are installed", () =>
    Effect.gen(function* () {
      for (const tool of ["nbdinfo", "nbdcopy", "nbdsh"]) {
        const r = yield* run(tool, ["--version"])
        expect(r.code, `${tool} --version: ${r.stderr}`).toBe(0)
      }
    })
  )

  it.live("nbdinfo --json shows size, flags and base:allocation (default config, Unix socket)", () =>
    withServer({}, (server) =>
      Effect.gen(function* () {
        expect(server.uri).toMatch(/^nbd\+unix:\/\/\/\?socket=\//)
        expect(server.address._tag).toBe("Unix")
        const info = yield* nbdinfoJson(server.uri)
        expect(info.protocol).toBe("newstyle-fixed")
        const e = firstExport(info)
        expect(e["export-size"]).toBe(1073741824)
        expect(e.is_read_only).toBe(false)
        expect(e.can_flush).toBe(true)
        expect(e.can_fua).toBe(true)
        expect(e.can_trim).toBe(true)
        expect(e.can_zero).toBe(true)
        expect(e.can_fast_zero).toBe(true)
        expect(e.can_cache).toBe(true)
        expect(e.can_df).toBe(true)
        expect(e.can_multi_conn).toBe(true)
        expect(e.contexts).toContain("base:allocation")
        expect(e.block_size_minimum).toBe(1)
        expect(e.block_size_preferred).toBe(4096)
        expect(e.block_size_maximum).toBe(33554432)
      })
    )
  )

  it.live("nbdinfo --json over TCP, a read-only export, and a 2^63-1 byte export", () =>
    withServer(
      {
        listen: { _tag: "Tcp", port: 0 },
        exports: [
          { name: "ro", size: 1 << 20, readOnly: true, description: "read only" },
          { name: "huge", size: (1n << 63n) - 1n }
        ]
      },
      (server) =>
        Effect.gen(function* () {
          expect(server.address._tag).toBe("Tcp")
          expect(server.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/ro$/)
          const ro = firstExport(yield* nbdinfoJson(server.uri))
          expect(ro["export-size"]).toBe(1 << 20)
          expect(ro.is_read_only).toBe(true)
          expect(ro.can_trim).toBe(false)
          expect(ro.can_zero).toBe(false)
          expect(ro.description).toBe("read only")
          const huge = yield* runOk("nbdinfo", ["--size", server.uriFor("huge")])
          expect(huge.stdout.trim()).toBe(((1n << 63n) - 1n).toString())
          // writes to the read-only export fail with EPERM
          const w = yield* nbdsh(
            server.uri,
            "import errno",
            "try:\n  h.pwrite(b'x', 0, nbd.CMD_FLAG_FUA)\n  raise SystemExit(3)\nexcept nbd.Error as e:\n  assert e.errnum == errno.EPERM, e"
          )
          expect(w.code, w.stderr).toBe(0)
        })
    )
  )

  it.live("nbdinfo --list shows every export with its description", () =>
    withServer(
      {
        exports: [
          { name: "", size: 4096, description: "the default" },
          { name: "disk1", size: 1 << 20, description: "first disk" },
          { name: "disk2", size: 1n << 40n, description: "a terabyte" }
        ]
      },
      (server) =>
        Effect.gen(function* () {
          const r = yield* runOk("nbdinfo", ["--list", "--json", server.uri])
          const info = JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }
          const byName = new Map(info.exports.map((e) => [e["export-name"], e]))
          expect([...byName.keys()].sort()).toEqual(["", "disk1", "disk2"])
          expect(byName.get("disk1")!.description).toBe("first disk")
          expect(byName.get("disk2")!.description).toBe("a terabyte")
          expect(byName.get("disk2")!["export-size"]).toBe(2 ** 40)
          const plain = yield* runOk("nbdinfo", ["--list", server.uri])
          expect(plain.stdout).toContain("first disk")
          const unknown = yield* run("nbdinfo", [server.uriFor("nosuch")])
          expect(unknown.code).not.toBe(0)
          expect(unknown.stderr).toMatch(/nosuch/)
        })
    )
  )

  it.live("nbdsh writes, reads back, zeroes, trims, flushes and reads block status", () =>
    withServer({ exports: [{ name: "", size: 1 << 24 }] }, (server) =>
      nbdsh(
        server.uri,
        [
          "h.pwrite(b'hello', 0)",
          "assert h.pread(5, 0) == b'hello'",
          "h.pwrite(b'x' * 100000, 70000, nbd.CMD_FLAG_FUA)",
          "assert h.pread(100000, 70000) == b'x' * 100000",
          "assert h.pread(10, 69995) == b'\\0' * 5 + b'x' * 5",
          "h.flush()",
          "h.zero(1000, 70500)",
          "assert h.pread(1000, 70500) == b'\\0' * 1000",
          "h.trim(65536, 131072)",
          "assert h.pread(65536, 131072) == b'\\0' * 65536",
          "h.cache(4096, 0)",
          "assert h.get_structured_replies_negotiated()"
        ].join("\n")
      ).pipe(
        Effect.tap((r) => Effect.sync(() => expect(r.code, r.stderr).toBe(0))),
        Effect.andThen(
          nbdsh(
            server.uri,
            [
              "h2 = nbd.NBD()",
              "h2.add_meta_context('base:allocation')",
              `h2.connect_uri(${JSON.stringify(server.uri)})`,
              "assert h2.can_meta_context('base:allocation')",
              "h2.pwrite(b'y' * 65536, 1 << 20)",
              "seen = []",
              "def f(ctx, off, entries, err):\n  seen.append((ctx, off, list(entries)))\n  return 0",
              "h2.block_status(3 << 20, 0, f)",
              "assert seen[0][0] == 'base:allocation', seen",
              "e = seen[0][2]",
              "assert e[0:2] == [131072, 0], e",
              "assert e[2:4] == [(1 << 20) - 131072, 3], e",
              "assert e[4:6] == [65536, 0], e",
              "assert e[6:8] == [(2 << 20) - 65536, 3], e",
              "seen.clear()",
              "h2.block_status(3 << 20, 1 << 20, f, nbd.CMD_FLAG_REQ_ONE)",
              "assert seen[0][2] == [65536, 0], seen",
              "h2.shutdown()"
            ].join("\n")
          )
        ),
        Effect.tap((r) => Effect.sync(() => expect(r.code, r.stderr).toBe(0)))
      )
    )
  )

  it.live("nbdcopy copies a file into an export and back unchanged", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const input = Path.join(dir, "in.img")
        const output = Path.join(dir, "out.img")
        // 24 MiB: random data with a 4 MiB hole in the middle and unaligned tail data
        const data = Buffer.alloc(24 << 20)
        randomBytes(8 << 20).copy(data, 0)
        randomBytes((12 << 20) - 12345).copy(data, 12 << 20)
        Fs.writeFileSync(input, data)
        const server = yield* TestServer.make({ exports: [{ name: "", size: data.length }] })
        yield* runOk("nbdcopy", [input, server.uri])
        yield* runOk("nbdcopy", [server.uri, output])
        expect(sha256(output)).toBe(sha256(input))
        // the hole stayed a hole in the sparse backend
        const map = yield* runOk("nbdinfo", ["--map", "--json", server.uri])
        const extents = JSON.parse(map.stdout) as Array<{ offset: number; length: number; type: number }>
        expect(extents.some((e) => e.type === 3 && e.offset <= 9 << 20 && e.offset + e.length >= 11 << 20)).toBe(true)
      })
    )
  )

  it.live("writes served inline and writes that wait each keep their own data", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const input = Path.join(dir, "in.img")
        Fs.writeFileSync(input, randomBytes(12 << 20))
        // A memory export's writes are served as they are decoded; a delayed one's wait in fibers, many
        // at once, while later payloads keep arriving.
        const size = 12 << 20
        const delayed = Filter.apply(Backend.memory(size), Filter.delay({ write: 2 }))
        for (const backend of [Backend.memory(size), delayed]) {
          const server = yield* TestServer.make({ exports: [{ name: "", size, backend }] })
          yield* runOk("nbdcopy", [input, server.uri])
          const output = Path.join(dir, `out-${backend === delayed ? "delayed" : "inline"}.img`)
          yield* runOk("nbdcopy", [server.uri, output])
          expect(sha256(output)).toBe(sha256(input))
        }
      })
    )
  )

  it.live("nbdcopy round trip with out-of-order replies, without extended headers", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const dir = yield* tempDir
        const input = Path.join(dir, "in.img")
        const output = Path.join(dir, "out.img")
        Fs.writeFileSync(input, randomBytes(6 << 20))
        const server = yield* TestServer.make({
          exports: [{ name: "x", size: 6 << 20 }],
          outOfOrder: true,
          extendedHeaders: false
        })
        yield* runOk("nbdcopy", ["--request-size=65536", input, server.uri])
        yield* runOk("nbdcopy", [server.uri, output])
        expect(sha256(output)).toBe(sha256(input))
      })
    )
  )

  it.live("out of order, requests that arrive together are answered in reverse, each once", () =>
    withServer({ outOfOrder: true }, (server) =>
      Effect.promise(async () => {
        if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
        const client = await RawClient.connect(server.address.path)
        await handshakeSimple(client)
        const cookies = [1, 2, 3, 4, 5, 6, 7, 8]
        await client.write(Buffer.concat(cookies.map((cookie) => request(CMD_FLUSH, cookie, 0, 0))))
        const answered: Array<number> = []
        for (const _ of cookies) {
          const reply = await simpleReply(client)
          expect(reply.error).toBe(0)
          answered.push(reply.cookie)
        }
        client.destroy()
        expect(answered).toEqual([...cookies].reverse())
      })
    )
  )

  it.live("simple replies only (structured replies disabled)", () =>
    withServer({ structuredReplies: false }, (server) =>
      Effect.gen(function* () {
        const e = firstExport(yield* nbdinfoJson(server.uri))
        expect(e.can_df).toBe(false)
        const r = yield* nbdsh(
          server.uri,
          "assert not h.get_structured_replies_negotiated()\nh.pwrite(b'abc' * 1000, 7)\nassert h.pread(3000, 7) == b'abc' * 1000\nassert h.pread(10, 1 << 29) == bytes(10)"
        )
        expect(r.code, r.stderr).toBe(0)
      })
    )
  )

  it.live("oldstyle servers work with nbdinfo and nbdsh", () =>
    withServer({ protocol: "oldstyle", exports: [{ name: "", size: 1 << 20 }] }, (server) =>
      Effect.gen(function* () {
        const info = yield* nbdinfoJson(server.uri)
        expect(info.protocol).toBe("oldstyle")
        expect(firstExport(info)["export-size"]).toBe(1 << 20)
        const r = yield* nbdsh(server.uri, "h.pwrite(b'old', 100)\nassert h.pread(3, 100) == b'old'")
        expect(r.code, r.stderr).toBe(0)
      })
    )
  )

  it.live("non-fixed newstyle servers work with nbdinfo and nbdsh", () =>
    withServer({ protocol: "newstyle", exports: [{ name: "", size: 2 << 20 }] }, (server) =>
      Effect.gen(function* () {
        const info = yield* nbdinfoJson(server.uri)
        expect(info.protocol).toBe("newstyle")
        expect(firstExport(info)["export-size"]).toBe(2 << 20)
        const r = yield* nbdsh(server.uri, "h.pwrite(b'new', 100)\nassert h.pread(3, 100) == b'new'")
        expect(r.code, r.stderr).toBe(0)
      })
    )
  )

  it.live("injected faults fail the command with the configured errno", () =>
    withServer({ faults: [{ command: "read", errno: "EIO" }] }, (server) =>
      Effect.gen(function* () {
        const r = yield* nbdsh(
          server.uri,
          "import errno\nh.pwrite(b'ok', 0)\ntry:\n  h.pread(2, 0)\n  raise SystemExit(3)\nexcept nbd.Error as e:\n  assert e.errnum == errno.EIO, e"
        )
        expect(r.code, r.stderr).toBe(0)
      })
    )
  )

  it.live("a fault with a delay and an errno draws its rate once: a late error or a prompt success", () =>
    withServer({ faults: [{ command: "read", errno: "EIO", delayMs: 100, rate: 0.5 }] }, (server) =>
      Effect.gen(function* () {
        const r = yield* nbdsh(
          server.uri,
          [
            "import errno, time",
            "seen = set()",
            "for i in range(24):",
            "  t = time.monotonic()",
            "  try:",
            "    h.pread(1, 0)",
            "    r = 'ok'",
            "  except nbd.Error as e:",
            "    r = 'EIO' if e.errnum == errno.EIO else str(e)",
            "  seen.add(r + ('/late' if time.monotonic() - t >= 0.08 else ''))",
            "print(*sorted(seen))"
          ].join("\n")
        )
        expect(r.code, r.stderr).toBe(0)
        expect(r.stdout.trim()).toBe("EIO/late ok")
      })
    )
  )

  it.live("a fault with a delay and an errno acts on its own command only", () =>
    withServer({ faults: [{ command: "read", errno: "EPERM", delayMs: 1, rate: 0.5 }] }, (server) =>
      Effect.gen(function* () {
        const r = yield* nbdsh(
          server.uri,
          [
            "import errno",
            "def outcome(f):",
            "  try:",
            "    f()",
            "    return 'ok'",
            "  except nbd.Error as e:",
            "    return 'EPERM' if e.errnum == errno.EPERM else str(e)",
            "writes = [outcome(lambda: h.pwrite(b'w', 0)) for _ in range(200)]",
            "reads = [outcome(lambda: h.pread(1, 0)) for _ in range(200)]",
            "print(writes.count('ok'), reads.count('ok'), reads.count('EPERM'))"
          ].join("\n")
        )
        expect(r.code, r.stderr).toBe(0)
        const [writesOk, readsOk, readsFailed] = r.stdout.trim().split(" ").map(Number)
        expect(writesOk).toBe(200)
        // Every read either succeeds or fails with the fault's errno, at about the rate: 200 draws at 0.5
        // land outside [40, 160] with a chance far below 1e-15.
        expect(readsOk! + readsFailed!).toBe(200)
        expect(readsFailed).toBeGreaterThanOrEqual(40)
        expect(readsFailed).toBeLessThanOrEqual(160)
      })
    )
  )

  it.live("a malformed reply that replaces a write: the delay faults still add up, the write is not done", () =>
    withServer(
      {
        exports: [
          {
            name: "",
            size: 1 << 20,
            faults: [
              { command: "write", delayMs: 300 },
              { command: "write", malformed: "read-data-for-non-read", nth: 1 }
            ]
          }
        ]
      },
      (server) =>
        Effect.gen(function* () {
          const first = yield* nbdsh(
            server.uri,
            [
              "import time",
              "t = time.monotonic()",
              "try:",
              "  h.pwrite(b'a' * 512, 0)",
              "  r = 'ok'",
              "except nbd.Error as e:",
              "  r = 'failed'",
              "print(r, time.monotonic() - t >= 0.29)"
            ].join("\n")
          )
          expect(first.code, first.stderr).toBe(0)
          expect(first.stdout.trim()).toBe("failed True")
          // A new connection: its first write is the malformed one again; the storage kept zeroes.
          const after = yield* nbdsh(server.uri, "print(h.pread(512, 0) == bytearray(512))")
          expect(after.code, after.stderr).toBe(0)
          expect(after.stdout.trim()).toBe("True")
        })
    )
  )

  it.live("out-of-bounds requests fail with EINVAL for reads and ENOSPC for writes", () =>
    withServer({ exports: [{ name: "", size: 4096 }] }, (server) =>
      Effect.gen(function* () {
        const r = yield* nbdsh(
          server.uri,
          [
            "import errno",
            "h.set_strict_mode(0)",
            "try:\n  h.pread(2, 4095)\n  raise SystemExit(3)\nexcept nbd.Error as e:\n  assert e.errnum == errno.EINVAL, e",
            "try:\n  h.pwrite(b'ab', 4095)\n  raise SystemExit(4)\nexcept nbd.Error as e:\n  assert e.errnum == errno.ENOSPC, e",
            "assert h.pread(1, 4095) == b'\\0'"
          ].join("\n")
        )
        expect(r.code, r.stderr).toBe(0)
      })
    )
  )

  it.effect("memory backend: a page trimmed away comes back zeroed when another page is written", () =>
    Effect.gen(function* () {
      const backend = Backend.memory(1 << 20, { pageSize: 4096 })
      yield* backend.write(0, new Uint8Array(4096).fill(0xff), false)
      yield* backend.trim(0, 4096)
      expect(yield* backend.extents(0, 8192)).toEqual([{ length: 8192, flags: 3 }])
      yield* backend.write(8192 + 100, Uint8Array.of(1, 2, 3), false)
      const bytes = Buffer.concat(
        (yield* backend.read(8192, 4096)).map((c) => (c instanceof Uint8Array ? c : new Uint8Array(c.length)))
      )
      const expected = new Uint8Array(4096)
      expected.set([1, 2, 3], 100)
      expect(new Uint8Array(bytes)).toEqual(expected)
      expect(yield* backend.extents(0, 12288)).toEqual([
        { length: 8192, flags: 3 },
        { length: 4096, flags: 0 }
      ])
    })
  )

  it.live("a custom backend instance is shared by every connection", () =>
    Effect.gen(function* () {
      const backend = Backend.memory(1 << 20)
      yield* withServer({ exports: [{ name: "", size: 1 << 20, backend }] }, (server) =>
        Effect.gen(function* () {
          yield* runOk("nbdsh", ["-u", server.uri, "-c", "h.pwrite(b'shared', 10)"])
          const r = yield* nbdsh(server.uri, "assert h.pread(6, 10) == b'shared'")
          expect(r.code, r.stderr).toBe(0)
        })
      )
      const chunks = yield* backend.read(10, 6)
      expect(Buffer.from(chunks[0] as Uint8Array).toString()).toBe("shared")
    })
  )

  it.live("anyName: an export answers to names no other export has; exact names still win", () =>
    withServer(
      {
        exports: [
          { name: "disk", size: 1 << 20, anyName: true },
          { name: "other", size: 2 << 20 }
        ]
      },
      (server) =>
        Effect.gen(function* () {
          const foo = firstExport(yield* nbdinfoJson(server.uriFor("foo")))
          expect(foo["export-name"]).toBe("foo")
          expect(foo["export-size"]).toBe(1 << 20)
          expect(firstExport(yield* nbdinfoJson(server.uriFor("other")))["export-size"]).toBe(2 << 20)
          const list = yield* runOk("nbdinfo", ["--list", "--json", server.uri])
          const names = (JSON.parse(list.stdout) as { exports: Array<Record<string, unknown>> }).exports.map(
            (e) => e["export-name"]
          )
          expect(names).toEqual(["disk", "other"])
        })
    )
  )

  it.live("without anyName an unknown export name is refused", () =>
    withServer({ exports: [{ name: "disk", size: 1 << 20 }] }, (server) =>
      Effect.gen(function* () {
        const r = yield* run("nbdinfo", [server.uriFor("foo")])
        expect(r.code).not.toBe(0)
        expect(r.stderr).toMatch(/export: foo/)
      })
    )
  )

  it.live("clients that leave mid-request, and a server closed under open connections, log nothing", () => {
    const logs: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      logs.push(`${logLevel}: ${String(message)}`)
    })
    return Effect.gen(function* () {
      // The logger is the one the server's fibers log to: a probe reaches it.
      yield* Effect.logWarning("probe")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const server = yield* TestServer.make({ faults: [{ command: "read", delayMs: 10_000 }] })
          if (server.address._tag !== "Unix") throw new Error("expected a Unix socket")
          const path = server.address.path
          yield* Effect.promise(async () => {
            // One client goes away while its read is in service.
            const gone = await RawClient.connect(path)
            await handshakeSimple(gone)
            await gone.write(request(CMD_READ, 1, 0, 512))
            await sleep(50)
            gone.destroy()
            // One waits in the handshake, one has a read in service, when the server closes.
            const waiting = await RawClient.connect(path)
            await waiting.read(18)
            const serving = await RawClient.connect(path)
            await handshakeSimple(serving)
            await serving.write(request(CMD_READ, 2, 0, 512))
            await sleep(50)
          })
        })
      )
      yield* Effect.sleep(100)
      expect(logs).toEqual(["Warn: probe"])
    }).pipe(Effect.provide(Logger.layer([logger])))
  })

  it.live("invalid configuration fails with a TestServerError", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.scoped(TestServer.make({ exports: [{ name: "", size: -1 }] })))
      expect(error._tag).toBe("TestServerError")
      expect(error.reason).toBe("Config")
    })
  )
})

/** One layer value, provided several times below. */
const oneMiB = TestServer.layer({ exports: [{ name: "", size: 1 << 20 }] })

/** The export size nbdinfo reads from the server of the context: it is up and serving. */
const servedSize = Effect.flatMap(Effect.service(TestServer.TestServer), (server) =>
  Effect.map(nbdinfoJson(server.uri), (info) => firstExport(info)["export-size"])
)

/** What a layer built beside the server saw of it. */
class SeenUri extends Context.Service<SeenUri, string>()("test/SeenUri") {}

describe("TestServer.layer: one server per provide", () => {
  it.live("two Effect.provide of the same layer value give two servers, each serving", () =>
    Effect.gen(function* () {
      const outer = yield* TestServer.TestServer
      const inner = yield* Effect.provide(
        Effect.gen(function* () {
          const inner = yield* TestServer.TestServer
          expect(yield* servedSize).toBe(1 << 20)
          return inner
        }),
        oneMiB
      )
      expect(inner.uri).not.toBe(outer.uri)
      expect(yield* servedSize).toBe(1 << 20)
    }).pipe(Effect.provide(oneMiB))
  )

  it.live("one build shares one server wherever the layer appears in it", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.TestServer
      expect(yield* SeenUri).toBe(server.uri)
    }).pipe(
      Effect.provide(
        Layer.merge(
          oneMiB,
          Layer.effect(
            SeenUri,
            Effect.map(Effect.service(TestServer.TestServer), (s) => s.uri)
          ).pipe(Layer.provide(oneMiB))
        )
      )
    )
  )
})

/** The URIs the tests of the block below saw, in order. */
const blockUris: Array<string> = []

layer(oneMiB)("TestServer.layer in a layer(...) block: its tests share one server", (it) => {
  it.effect("the first test sees the block's server", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.TestServer
      expect(blockUris).toEqual([])
      blockUris.push(server.uri)
      expect(yield* servedSize).toBe(1 << 20)
    })
  )

  it.effect("the second test sees the same server, still serving", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.TestServer
      expect(blockUris).toEqual([server.uri])
      blockUris.push(server.uri)
      expect(yield* servedSize).toBe(1 << 20)
    })
  )
})
