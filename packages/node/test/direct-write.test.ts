import { Nbd, Transport } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { noise } from "./util/bytes.js"

// A connection writes straight to its transport (Transport.Service.tryWrite) while the transport takes the
// bytes, and through its writer fiber when it cannot: these run the second way on purpose.

const BLOCK = 64 * 1024
const BLOCKS = 64

/** A platform socket on `path`, beside a transport whose direct write refuses (or takes) as told. */
const socketWith = (path: string, tryWrite: Transport.TryWrite) =>
  Layer.merge(NodeSocket.layerNet({ path }), Layer.succeed(Transport.Transport, Transport.make({ tryWrite })))

describe("direct writes", () => {
  it.live("a transport that can take nothing now: every request goes through the writer, in order", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: BLOCK * BLOCKS }] }).pipe(Effect.orDie)
      const path = server.address._tag === "Unix" ? server.address.path : ""
      let refused = 0
      const h = yield* Nbd.make()
      yield* Nbd.connectSocket(h).pipe(
        Effect.provide(
          socketWith(path, () => {
            refused++
            return "unavailable"
          })
        )
      )
      const data = noise(BLOCK * BLOCKS, 9)
      // 64 writes and then 64 reads, all queued before the first is awaited.
      const writes = yield* Effect.forEach(
        Array.from({ length: BLOCKS }, (_, i) => i),
        (i) => Nbd.aioPwrite(h, data.subarray(i * BLOCK, (i + 1) * BLOCK), i * BLOCK)
      )
      const reads = yield* Effect.forEach(
        Array.from({ length: BLOCKS }, (_, i) => i),
        (i) => Nbd.aioPread(h, BLOCK, i * BLOCK)
      )
      yield* Effect.forEach(writes, (c) => c.await, { discard: true })
      const back = yield* Effect.forEach(reads, (c) => c.await)
      expect(refused).toBeGreaterThan(0)
      back.forEach((b, i) => expect(Buffer.compare(b, data.subarray(i * BLOCK, (i + 1) * BLOCK))).toBe(0))
      yield* Nbd.shutdown(h)
    })
  )

  it.live("the Node transport refusing every other batch: direct and writer sends interleave, nothing lost", () =>
    Effect.gen(function* () {
      const server = yield* TestServer.make({ exports: [{ name: "", size: BLOCK * BLOCKS }] }).pipe(Effect.orDie)
      const path = server.address._tag === "Unix" ? server.address.path : ""
      const outcomes: Array<string> = []
      // NodeNbd's own transport, its direct write made to refuse every other batch.
      const alternating = Layer.flatMap(NodeNbd.layerUnix(path), (context) => {
        const transport = Context.get(context, Transport.Transport)
        const direct = transport.tryWrite!
        let calls = 0
        return Layer.succeedContext(
          Context.add(context, Transport.Transport, {
            ...transport,
            tryWrite: (chunks) => {
              const outcome = calls++ % 2 === 0 ? "unavailable" : direct(chunks)
              outcomes.push(outcome)
              return outcome
            }
          })
        )
      })
      const h = yield* Nbd.make()
      yield* Nbd.connectSocket(h).pipe(Effect.provide(alternating))
      const data = noise(BLOCK * BLOCKS, 3)
      for (let round = 0; round < 4; round++) {
        // Small batches (one command each) and big ones (16 queued at once) in turn.
        const width = round % 2 === 0 ? 1 : 16
        for (let i = 0; i < BLOCKS; i += width) {
          const slice = Array.from({ length: width }, (_, k) => i + k)
          const writes = yield* Effect.forEach(slice, (j) =>
            Nbd.aioPwrite(h, data.subarray(j * BLOCK, (j + 1) * BLOCK), j * BLOCK)
          )
          yield* Effect.forEach(writes, (c) => c.await, { discard: true })
        }
        const reads = yield* Effect.forEach(
          Array.from({ length: BLOCKS }, (_, i) => i),
          (i) => Nbd.aioPread(h, BLOCK, i * BLOCK)
        )
        const back = yield* Effect.forEach(reads, (c) => c.await)
        back.forEach((b, i) => expect(Buffer.compare(b, data.subarray(i * BLOCK, (i + 1) * BLOCK))).toBe(0))
      }
      expect(outcomes).toContain("unavailable")
      expect(outcomes.some((o) => o === "taken" || o === "full")).toBe(true)
      yield* Nbd.shutdown(h)
    })
  )
})
