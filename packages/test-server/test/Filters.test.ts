import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Backend from "../src/Backend.js"
import * as Filter from "../src/Filter.js"
import * as Cli from "../src/internal/cli.js"
import { buildServerBin, run, serverBin as bin, toolEnv } from "./helpers.js"

/** libnbd's client on `effect-nbd-server -s ARGS` (nbd_connect_command); the script prints or asserts. */
const nbdsh = (args: ReadonlyArray<string>, script: string) =>
  Effect.flatMap(
    run("nbdsh", [
      "-c",
      `import errno, time\nh.connect_command(${JSON.stringify(["node", bin, "-s", ...args])})`,
      "-c",
      script
    ]),
    (r) => (r.code === 0 ? Effect.succeed(r.stdout.trim()) : Effect.die(new Error(`nbdsh: ${r.stderr}${r.stdout}`)))
  )

const fails = (call: string, errno: string) =>
  `try:\n  ${call}\n  raise SystemExit(${JSON.stringify(`${call}: no error`)})\nexcept nbd.Error as e:\n  assert e.errnum == errno.${errno}, e`

/** What a script's calls give: "ok" or the errno's name, and "/slow" when the call took 250 ms or more. */
const PRELUDE = `import errno, os, time
def connect():
  c = nbd.NBD()
  c.connect_uri(os.environ["uri"])
  return c
def outcome(f):
  t = time.monotonic()
  try:
    f()
    r = "ok"
  except nbd.Error as e:
    r = errno.errorcode[e.errnum]
  return r + ("/slow" if time.monotonic() - t >= 0.25 else "")
`

/** Runs a python script (after PRELUDE) in nbdsh against one `effect-nbd-server -U - ARGS`, so its connections share the server. */
const onServer = (args: ReadonlyArray<string>, script: string) =>
  Effect.gen(function* () {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-faults-"))
    try {
      const file = Path.join(dir, "script.py")
      Fs.writeFileSync(file, PRELUDE + script)
      const r = yield* run("node", [bin, "-U", "-", ...args, "--run", `nbdsh -c "exec(open('${file}').read())"`], {
        env: toolEnv()
      })
      if (r.code !== 0) return yield* Effect.die(new Error(`${args.join(" ")}: ${r.stderr}${r.stdout}`))
      return r.stdout.trim()
    } finally {
      Fs.rmSync(dir, { recursive: true, force: true })
    }
  })

/** The same script against the old flags and against the filters they stand for: both give `expected`. */
const same = (old: ReadonlyArray<string>, filters: ReadonlyArray<string>, script: string, expected: string) =>
  Effect.gen(function* () {
    expect(yield* onServer([...old, "memory", "1M"], script), old.join(" ")).toBe(expected)
    expect(yield* onServer([...filters, "memory", "1M"], script), filters.join(" ")).toBe(expected)
  })

describe("filters through libnbd's client", () => {
  beforeAll(buildServerBin, 120_000)

  it.live("error: per operation, at a rate, and while a trigger file exists", () =>
    Effect.gen(function* () {
      // nbdkit's own example: error=EIO error-pread-rate=10%; here 100% for reads, writes untouched.
      yield* nbdsh(
        ["--filter=error", "error=EIO", "error-pread-rate=100%", "memory", "1M"],
        [fails("h.pread(512, 0)", "EIO"), "h.pwrite(b'x', 0)", "h.flush()"].join("\n")
      )
      yield* nbdsh(
        ["--filter=error", "error-rate=1", "error-pwrite=ENOSPC", "memory", "1M"],
        [fails("h.pwrite(b'x', 0)", "ENOSPC"), fails("h.flush()", "EIO")].join("\n")
      )
      // A rate of 50% fails some of 200 reads, not all.
      const count = yield* nbdsh(
        ["--filter=error", "error-pread-rate=50%", "memory", "1M"],
        "n = 0\nfor i in range(200):\n  try:\n    h.pread(512, 0)\n  except nbd.Error:\n    n += 1\nprint(n)"
      )
      expect(Number(count)).toBeGreaterThan(40)
      expect(Number(count)).toBeLessThan(160)
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-filter-"))
      try {
        const trigger = Path.join(dir, "trigger")
        yield* nbdsh(
          ["--filter=error", "error-rate=100%", `error-file=${trigger}`, "memory", "1M"],
          [
            "h.pread(512, 0)",
            `open(${JSON.stringify(trigger)}, 'w').close()`,
            fails("h.pread(512, 0)", "EIO"),
            `import os\nos.unlink(${JSON.stringify(trigger)})`,
            "h.pread(512, 0)"
          ].join("\n")
        )
      } finally {
        Fs.rmSync(dir, { recursive: true, force: true })
      }
    })
  )

  it.live("delay: reads wait, writes do not", () =>
    Effect.gen(function* () {
      const out = yield* nbdsh(
        ["--filter=delay", "delay-read=300ms", "memory", "1M"],
        [
          "t = time.monotonic(); h.pread(512, 0); r = time.monotonic() - t",
          "t = time.monotonic(); h.pwrite(b'x', 0); w = time.monotonic() - t",
          "print(r >= 0.29, w < 0.2)"
        ].join("\n")
      )
      expect(out).toBe("True True")
    })
  )

  it.live("readonly, nozero, notrim, multi-conn and blocksize-policy change what is advertised, and refuse", () =>
    Effect.gen(function* () {
      const flags = yield* nbdsh(
        [
          "--filter=nozero",
          "--filter=notrim",
          "--filter=multi-conn",
          "multi-conn-mode=disable",
          "--filter=blocksize-policy",
          "blocksize-minimum=512",
          "blocksize-maximum=64K",
          "memory",
          "1M"
        ],
        [
          "print(h.can_zero(), h.can_trim(), h.can_multi_conn(), h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_MAXIMUM))",
          "h.set_strict_mode(0)",
          fails("h.zero(4096, 0)", "EINVAL"),
          fails("h.trim(4096, 0)", "EINVAL"),
          fails("h.pread(100, 0)", "EINVAL"),
          fails("h.pread(128 * 1024, 0)", "EOVERFLOW"),
          "h.pread(512, 512)"
        ].join("\n")
      )
      expect(flags).toBe("False False False 512 65536")
      const plain = yield* nbdsh(["memory", "1M"], "print(h.can_zero(), h.can_trim(), h.can_multi_conn())")
      expect(plain).toBe("True True True")
      yield* nbdsh(
        ["--filter=readonly", "memory", "1M"],
        ["assert h.is_read_only()", "h.set_strict_mode(0)", fails("h.pwrite(b'x', 0)", "EPERM")].join("\n")
      )
    })
  )

  it.live("noextents: every range is data", () =>
    Effect.gen(function* () {
      const map = yield* nbdsh(
        ["--filter=noextents", "memory", "1M"],
        [
          "h2 = nbd.NBD()",
          "h2.add_meta_context('base:allocation')",
          `h2.connect_command(${JSON.stringify(["node", bin, "-s", "--filter=noextents", "memory", "1M"])})`,
          "out = []",
          "h2.block_status(1 << 20, 0, lambda ctx, off, e, err: out.extend(e))",
          "print(out)"
        ].join("\n")
      )
      expect(map).toBe(`[${1 << 20}, 0]`)
    })
  )

  it.live("evil: bits flipped in reads at the seeded rate, the same for the same seed; stored data intact", () =>
    Effect.gen(function* () {
      const args = ["--filter=evil", "evil-probability=0.001", "evil-seed=7", "null", "1M"]
      const script =
        "b = h.pread(1 << 20, 0)\nimport hashlib\nprint(sum(bin(x).count('1') for x in b), hashlib.sha256(b).hexdigest())"
      const [ones, digest] = (yield* nbdsh(args, script)).split(" ")
      // 8 Mi bits at 1/1000: about 8389 flips (sd ~92).
      expect(Number(ones)).toBeGreaterThan(7900)
      expect(Number(ones)).toBeLessThan(8900)
      expect((yield* nbdsh(args, script)).split(" ")[1]).toBe(digest)
      const other = yield* nbdsh(["--filter=evil", "evil-probability=0.001", "evil-seed=8", "null", "1M"], script)
      expect(other.split(" ")[1]).not.toBe(digest)
    })
  )

  it.effect("Filter.apply: the first filter is the outermost; evil copies rather than corrupting storage", () =>
    Effect.gen(function* () {
      const memory = Backend.memory(1 << 20)
      yield* memory.write(0, new Uint8Array(4096).fill(0xff), false)
      const flipped = Filter.apply(memory, Filter.evil({ probability: 1, seed: 1 }))
      const chunks = yield* flipped.read(0, 4096)
      expect((chunks[0] as Uint8Array).every((b) => b === 0)).toBe(true)
      const stored = yield* memory.read(0, 4096)
      expect((stored[0] as Uint8Array).every((b) => b === 0xff)).toBe(true)
      // readonly outside error: the write is refused EPERM before the error filter is reached.
      const layered = Filter.apply(memory, Filter.readOnly, Filter.error({ rate: 1, errno: "ENOSPC" }))
      const e = yield* Effect.flip(layered.write(0, new Uint8Array(1), false))
      expect(e.errno).toBe("EPERM")
      const inner = Filter.apply(memory, Filter.error({ rate: 1, errno: "ENOSPC" }), Filter.readOnly)
      expect((yield* Effect.flip(inner.write(0, new Uint8Array(1), false))).errno).toBe("ENOSPC")
    })
  )

  it("bad filter arguments are one-line errors", () => {
    for (const [args, message] of [
      [["--filter=bogus", "memory", "1G"], /unknown filter "bogus"/],
      [["--filter=error", "error=EFOO", "memory", "1G"], /unknown errno "EFOO"/],
      [["--filter=error", "error-pread-rate=150%", "memory", "1G"], /invalid rate/],
      [["--filter=error", "error-bogus=1", "memory", "1G"], /unknown parameter "error-bogus"/],
      [["--filter=delay", "delay-read=soon", "memory", "1G"], /invalid delay/],
      [["error-rate=1", "memory", "1G"], /memory: unknown parameter "error-rate"/],
      [["--filter=blocksize-policy", "blocksize-minimum=3", "memory", "1G"], /power of two/],
      [["--filter=multi-conn", "multi-conn-mode=maybe", "memory", "1G"], /disable or unsafe/]
    ] as const) {
      expect(() => Cli.parse(args), args.join(" ")).toThrow(message)
    }
  })

  it.live("--fault and --delay are the error and delay filters: the same outcomes either way", () =>
    Effect.gen(function* () {
      // By command, every request.
      yield* same(
        ["--fault", "read:EIO", "--fault", "write:ENOSPC"],
        ["--filter=error", "error-pread=EIO", "error-pread-rate=1", "error-pwrite=ENOSPC", "error-pwrite-rate=1"],
        "c = connect()\nprint(outcome(lambda: c.pread(512, 0)), outcome(lambda: c.pwrite(b'x', 0)), outcome(c.flush))",
        "EIO ENOSPC ok"
      )
      // #N: the Nth request of its command on each connection, for errors and delays alike.
      yield* same(
        ["--fault", "write:ENOSPC:#2", "--delay", "read:300:#1"],
        [
          "--filter=error",
          "error-pwrite=ENOSPC",
          "error-pwrite-nth=2",
          "--filter=delay",
          "delay-read=300ms",
          "delay-read-nth=1"
        ],
        [
          "for c in [connect(), connect()]:",
          "  print(*[outcome(lambda: c.pwrite(b'x', 0)) for i in range(3)], *[outcome(lambda: c.pread(1, 0)) for i in range(2)])"
        ].join("\n"),
        "ok ENOSPC ok ok/slow ok\nok ENOSPC ok ok/slow ok"
      )
      // Delays come before errors: a delay and an error on one command give a late error, in either order.
      for (const old of [
        ["--fault", "read:EIO", "--delay", "read:300"],
        ["--delay", "read:300", "--fault", "read:EIO"]
      ])
        yield* same(
          old,
          ["--filter=delay", "delay-read=300ms", "--filter=error", "error-pread=EIO", "error-pread-rate=1"],
          "c = connect()\nprint(outcome(lambda: c.pread(1, 0)), outcome(lambda: c.pwrite(b'x', 0)))",
          "EIO/slow ok"
        )
      // ... while filters apply in their order: the error first answers before the delay.
      expect(
        yield* onServer(
          [
            "--filter=error",
            "error-pread=EIO",
            "error-pread-rate=1",
            "--filter=delay",
            "delay-read=300ms",
            "memory",
            "1M"
          ],
          "c = connect()\nprint(outcome(lambda: c.pread(1, 0)))"
        )
      ).toBe("EIO")
      // A rate: some of 200 reads fail, not all, with both forms.
      for (const args of [
        ["--fault", "read:EIO:50%"],
        ["--filter=error", "error-pread=EIO", "error-pread-rate=50%"]
      ]) {
        const failed = yield* onServer(
          [...args, "memory", "1M"],
          "c = connect()\nprint(sum(outcome(lambda: c.pread(1, 0)) == 'EIO' for i in range(200)))"
        )
        expect(Number(failed), args.join(" ")).toBeGreaterThan(40)
        expect(Number(failed), args.join(" ")).toBeLessThan(160)
      }
      // Per export: before any --export for every export, after one for that export only.
      const placed = yield* onServer(
        ["--fault", "flush:EIO", "--export", "a=1M", "--delay", "read:300:#2", "--export", "b=1M"],
        [
          "for name in ['a', 'b']:",
          "  c = nbd.NBD()",
          "  c.set_export_name(name)",
          "  c.connect_unix(os.environ['unixsocket'])",
          "  print(name, outcome(c.flush), *[outcome(lambda: c.pread(1, 0)) for i in range(3)])"
        ].join("\n")
      )
      expect(placed).toBe("a EIO ok ok/slow ok\nb EIO ok ok ok")
    })
  )

  it("the filters' nth and rate keys parse, and bad values are one-line errors", () => {
    for (const args of [
      ["--filter=error", "error-nth=2", "memory", "1M"],
      ["--filter=delay", "delay-read=1", "delay-rate=10%", "delay-read-nth=3", "memory", "1M"]
    ])
      expect(Cli.parse(args)._tag, args.join(" ")).toBe("Serve")
    for (const [args, message] of [
      [["--filter=error", "error-pread-nth=0"], /error-pread-nth: invalid nth "0"/],
      [["--filter=delay", "delay-read-nth=x"], /delay-read-nth: invalid nth "x"/],
      [["--filter=delay", "delay-write-rate=2"], /delay-write-rate: invalid rate "2"/],
      [["--filter=delay", "delay-bogus=1"], /delay filter: unknown parameter "delay-bogus"/]
    ] as const)
      expect(() => Cli.parse([...args, "memory", "1M"])).toThrow(message)
  })
})
