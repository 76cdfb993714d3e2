import { Nbd, NbdCopy, NbdPool } from "@effect-nbd/core"
import { NodeNbd, NodePositionalFile } from "@effect-nbd/node"
import * as PlatformError from "effect/PlatformError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { noise, sha256 } from "./util/bytes.js"
import { nbdkit, tempDir } from "./util/peers.js"

// A copy from or to a file with NodePositionalFile: one descriptor, many requests in flight on it.

const MiB = 1024 * 1024

const positional = Layer.merge(NodeFileSystem.layer, NodePositionalFile.layer)

const poolOf = (uri: string, connections: number) =>
  NbdPool.make({
    connections,
    settings: { metaContexts: ["base:allocation"] },
    connect: (h) => NodeNbd.connectUri(h, uri)
  }).pipe(Effect.orDie)

const connect = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
    yield* NodeNbd.connectUri(h, uri)
    return h
  }).pipe(Effect.orDie)

const failureOf = (exit: Exit.Exit<unknown, unknown>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

describe("NbdCopy with NodePositionalFile", () => {
  it.live("file to NBD and back over 4 connections: the same bytes, the holes kept, an odd size", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Data, a hole, data: not a multiple of the request size, so the last piece is short.
      const size = 24 * MiB + 12345
      const data = new Uint8Array(size)
      data.set(noise(5 * MiB + 7, 1), 0)
      data.set(noise(3 * MiB, 2), 16 * MiB)
      const input = Path.join(dir, "in.img")
      Fs.writeFileSync(input, data)
      const kit = yield* nbdkit(["memory", "32M"])
      const into = yield* NbdCopy.copy(NbdCopy.file(input), yield* poolOf(kit.uri, 4))
      expect(into.bytes).toBe(BigInt(size))
      expect(into.connections).toBe(4)
      // With a file side the 64 requests are shared by the 4 connections: at most 64 buffers, not 4 x 64.
      expect(into.buffers).toBeLessThanOrEqual(64)
      const output = Path.join(dir, "out.img")
      // The export is 32 MiB: copy back exactly the file's size through a reader of the same export.
      const back = yield* NbdCopy.copy(yield* connect(kit.uri), NbdCopy.file(output))
      expect(back.bytes).toBe(BigInt(32 * MiB))
      const copied = Fs.readFileSync(output)
      expect(copied.length).toBe(32 * MiB)
      expect(sha256(copied.subarray(0, size))).toBe(sha256(data))
      expect(copied.subarray(size).every((b) => b === 0)).toBe(true)
      // The zero ranges became holes: only about the 8 MiB of data is allocated.
      expect(Fs.statSync(output).blocks * 512).toBeLessThan(12 * MiB)
    }).pipe(Effect.provide(positional))
  )

  it.live("gives the same file as the FileSystem path", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const kit = yield* nbdkit(["pattern", "9M"])
      const h = yield* connect(kit.uri)
      const a = Path.join(dir, "a.img")
      const b = Path.join(dir, "b.img")
      yield* Effect.provide(NbdCopy.copy(h, NbdCopy.file(a)), positional)
      yield* Effect.provide(NbdCopy.copy(h, NbdCopy.file(b)), NodeFileSystem.layer)
      expect(sha256(Fs.readFileSync(a))).toBe(sha256(Fs.readFileSync(b)))
    })
  )

  it.live("a write error fails the copy with the file's PlatformError", () =>
    Effect.gen(function* () {
      const kit = yield* nbdkit(["pattern", "4M"])
      // /dev/full takes nothing: every write fails ENOSPC, and it is no regular file, so nothing is a hole.
      const exit = yield* Effect.exit(NbdCopy.copy(yield* connect(kit.uri), NbdCopy.file("/dev/full")))
      const error = failureOf(exit)
      expect(error).toBeInstanceOf(PlatformError.PlatformError)
      const reason = (error as PlatformError.PlatformError).reason
      expect(reason).toBeInstanceOf(PlatformError.SystemError)
      expect((reason as PlatformError.SystemError).method).toBe("write")
      expect(String((reason as PlatformError.SystemError).description)).toMatch(/ENOSPC/)
    }).pipe(Effect.provide(positional))
  )

  it.live("an interrupted copy to a file stops promptly and writes nothing after it returns", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const kit = yield* nbdkit(["--filter=delay", "pattern", "64M", "delay-read=20ms"])
      const out = Path.join(dir, "out.img")
      const fiber = yield* Effect.forkChild(NbdCopy.copy(yield* connect(kit.uri), NbdCopy.file(out), { requests: 4 }))
      yield* Effect.sleep("300 millis")
      const started = Date.now()
      yield* Fiber.interrupt(fiber)
      expect(Date.now() - started).toBeLessThan(2000)
      const allocated = Fs.statSync(out).blocks
      yield* Effect.sleep("200 millis")
      expect(Fs.statSync(out).blocks).toBe(allocated)
    }).pipe(Effect.provide(positional))
  )
})
