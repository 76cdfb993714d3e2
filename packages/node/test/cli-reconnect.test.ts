// `effect-nbd copy --reconnect-delay=SECONDS` as a whole process: nbdkit serving the source is killed in the
// middle of a 512 MiB copy and started again on the same socket and file; the copy finishes, exits 0, and
// the copy's checksum equals the source's.
import { beforeAll, describe, expect, it, vi } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { restartable, tempDir } from "./util/peers.js"
import { bin, buildCli } from "./util/cli.js"

vi.setConfig({ testTimeout: 120_000 })

beforeAll(buildCli, 120_000)

const MiB = 1024 * 1024

const sha256 = (path: string): string => Crypto.createHash("sha256").update(Fs.readFileSync(path)).digest("hex")

const randomFile = (path: string, size: number): void => {
  const fd = Fs.openSync(path, "w")
  for (let at = 0; at < size; at += 16 * MiB) Fs.writeSync(fd, Crypto.randomBytes(16 * MiB))
  Fs.closeSync(fd)
}

interface Copying {
  /** The last percentage the copy reported on its progress descriptor. */
  readonly percent: () => number
  readonly exit: Effect.Effect<{ readonly code: number; readonly stderr: string }>
}

/** Starts `effect-nbd copy ARGS --progress=3`, reading its progress lines from fd 3. */
const startCopy = (args: ReadonlyArray<string>): Effect.Effect<Copying> =>
  Effect.sync(() => {
    const child = spawn(process.execPath, [bin, "copy", "--progress=3", ...args], {
      stdio: ["ignore", "ignore", "pipe", "pipe"]
    })
    let percent = 0
    let stderr = ""
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()))
    ;(child.stdio[3] as NodeJS.ReadableStream).on("data", (b: Buffer) => {
      const lines = b.toString().trim().split("\n")
      const last = /^(\d+)\/100$/.exec(lines[lines.length - 1] ?? "")
      if (last) percent = Number(last[1])
    })
    const exit = Effect.callback<{ readonly code: number; readonly stderr: string }>((resume) => {
      if (child.exitCode !== null) return resume(Effect.succeed({ code: child.exitCode, stderr }))
      child.once("close", (code) => resume(Effect.succeed({ code: code ?? -1, stderr })))
    })
    return { percent: () => percent, exit }
  })

const waitUntil = (condition: () => boolean, what: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (let i = 0; i < 3000; i++) {
      if (condition()) return
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

describe("effect-nbd copy --reconnect-delay", () => {
  it.live("a source server killed mid-copy and started again: the copy finishes, byte for byte", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "source.img")
      const target = Path.join(dir, "target.img")
      randomFile(source, 512 * MiB)
      // The rate filter (in bits per second) lets its bucket, 2 s of the rate by default, go at full speed and
      // then keeps the copy going for some 2 s more, so the kill lands in its middle. (At 2G the bucket held
      // nearly the whole 512 MiB, and a fast copy could end before the kill.)
      const peer = yield* restartable(["--filter=rate", "file", source, "rate=1G"])
      const copying = yield* startCopy(["--reconnect-delay=20", peer.uri, target])
      yield* waitUntil(() => copying.percent() >= 10, "the copy to reach 10%")
      yield* peer.kill
      const atKill = copying.percent()
      yield* Effect.sleep("500 millis")
      yield* peer.start
      const { code, stderr } = yield* copying.exit
      expect(atKill).toBeLessThan(100)
      expect(stderr).toContain("connection dropped")
      expect(code).toBe(0)
      expect(sha256(target)).toBe(sha256(source))
    })
  )

  it.live("without --reconnect-delay the same kill fails the copy with ENOTCONN-class errors", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "source.img")
      const target = Path.join(dir, "target.img")
      randomFile(source, 64 * MiB)
      const peer = yield* restartable(["--filter=rate", "file", source, "rate=32M"])
      const copying = yield* startCopy([peer.uri, target])
      yield* waitUntil(() => copying.percent() >= 10, "the copy to reach 10%")
      yield* peer.kill
      const { code, stderr } = yield* copying.exit
      expect(code).toBe(1)
      expect(stderr.trim().split("\n")).toHaveLength(1)
      expect(stderr).toMatch(/^effect-nbd: .*\((ENOTCONN|ECONNRESET|EPIPE)\)\n$/)
    })
  )

  it.live("a server that never comes back fails the copy once the delay has passed", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const source = Path.join(dir, "source.img")
      randomFile(source, 64 * MiB)
      const peer = yield* restartable(["--filter=rate", "file", source, "rate=32M"])
      const copying = yield* startCopy(["--reconnect-delay=1", peer.uri, "null:"])
      yield* waitUntil(() => copying.percent() >= 10, "the copy to reach 10%")
      yield* peer.kill
      const killed = Date.now()
      const { code, stderr } = yield* copying.exit
      expect(code).toBe(1)
      expect(Date.now() - killed).toBeGreaterThanOrEqual(1000)
      expect(stderr).toContain("connection dropped")
      expect(stderr).toMatch(/gave up reconnecting.*\(ENOTCONN\)\n$/)
    })
  )

  it.live("--reconnect-delay takes seconds, 0 or more", () =>
    Effect.gen(function* () {
      const copying = yield* startCopy(["--reconnect-delay=-1", "nbd://localhost", "null:"])
      const { code, stderr } = yield* copying.exit
      expect(code).toBe(1)
      expect(stderr).toBe("effect-nbd: --reconnect-delay: must be a number of seconds, 0 or more, got -1 (EINVAL)\n")
    })
  )
})
