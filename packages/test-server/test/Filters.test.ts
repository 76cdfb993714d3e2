import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Backend from "../src/Backend.js"
import * as Filter from "../src/Filter.js"
import * as Cli from "../src/internal/cli.js"
import { run } from "./helpers.js"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "../../..")
const bin = Path.join(
  root,
  "packages/test-server",
  (
    JSON.parse(Fs.readFileSync(Path.join(root, "packages/test-server/package.json"), "utf8")) as {
      bin: Record<string, string>
    }
  ).bin["effect-nbd-server"]!
)

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

describe("filters through libnbd's client", () => {
  beforeAll(() => {
    execFileSync("npx", ["tsc", "-b", "packages/test-server/tsconfig.src.json"], { cwd: root, stdio: "inherit" })
    execFileSync(process.execPath, ["scripts/bundle-bins.mjs", "packages/test-server"], { cwd: root, stdio: "inherit" })
  }, 120_000)

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
})
