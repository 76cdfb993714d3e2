// effect-nbd-server -s as NodeNbd.connectCommand runs it, in place of `nbdkit -s`: the shipped bin (the
// bundle `pnpm build` writes), with nbdkit's plugin syntax, a file export and --exit-with-parent.
import { Nbd, Protocol } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const root = Path.resolve(__dirname, "../../..")
const manifest = Path.join(root, "packages/test-server/package.json")
const bin = Path.join(
  Path.dirname(manifest),
  (JSON.parse(Fs.readFileSync(manifest, "utf8")) as { bin: Record<string, string> }).bin["effect-nbd-server"]!
)

describe("NodeNbd.connectCommand with effect-nbd-server -s", () => {
  it.live("memory 1G: a write reads back, and the subprocess ends with the handle", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      yield* NodeNbd.connectCommand(h, ["node", bin, "-s", "--exit-with-parent", "memory", "1G"])
      expect(yield* Nbd.getSize(h)).toBe(1n << 30n)
      const data = new Uint8Array(65536).map((_, i) => (i * 13) & 0xff)
      yield* Nbd.pwrite(h, data, 1 << 20)
      expect(Buffer.from(yield* Nbd.pread(h, 65536, 1 << 20)).equals(data)).toBe(true)
      expect(yield* NodeNbd.getSubprocessPid(h)).toBeGreaterThan(0)
    })
  )

  it.live("file PATH: writes with FUA and a flush reach the file", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-stdin-"))),
        (d) => Effect.sync(() => Fs.rmSync(d, { recursive: true, force: true }))
      )
      const file = Path.join(dir, "disk.img")
      Fs.writeFileSync(file, Buffer.alloc(1 << 20))
      yield* Effect.scoped(
        Effect.gen(function* () {
          const h = yield* Nbd.make()
          yield* NodeNbd.connectCommand(h, ["node", bin, "-s", "file", file])
          expect(yield* Nbd.getSize(h)).toBe(1n << 20n)
          expect(yield* Nbd.canFua(h)).toBe(true)
          yield* Nbd.pwrite(h, new Uint8Array(4096).fill(7), 8192, { flags: Protocol.CmdFlag.FUA })
          yield* Nbd.flush(h)
          expect(
            Fs.readFileSync(file)
              .subarray(8192, 8192 + 4096)
              .every((b) => b === 7)
          ).toBe(true)
        })
      )
    })
  )
})
