import { Nbd, Transport } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Net from "node:net"
import { noise } from "./util/bytes.js"
import { scriptedServer } from "./util/scripted.js"

// A connection's one sender: tryWrite batches from a microtask while the transport keeps up, the socket's
// writer when it is full or has no tryWrite. Both transports are run here: NodeNbd's (with tryWrite) and
// the platform socket (without).

const KiB = 1024
const MiB = 1024 * KiB

/** A simple reply to `cookie`: success. */
const simpleReply = (cookie: Buffer): Buffer => {
  const reply = Buffer.alloc(16)
  reply.writeUInt32BE(0x67446698, 0)
  cookie.copy(reply, 8)
  return reply
}

type Kind = "tryWrite" | "writer only"

/** Connects `h` over a Unix socket: NodeNbd's transport, or the platform socket with no tryWrite. */
const connect = (h: Nbd.Handle, path: string, kind: Kind) =>
  kind === "tryWrite"
    ? NodeNbd.connectUnix(h, path)
    : Nbd.connectSocket(h).pipe(
        Effect.provide(
          Layer.merge(NodeSocket.layerNet({ path }), Layer.succeed(Transport.Transport, Transport.make({})))
        )
      )

describe("the sender", () => {
  for (const kind of ["tryWrite", "writer only"] as const) {
    it.live(`${kind}: a peer that stops reading holds what we send to the socket's buffers, not the queue`, () =>
      Effect.gen(function* () {
        let held: Net.Socket | undefined
        const server = yield* scriptedServer({
          exportSize: BigInt(64 * MiB),
          // The first write stops the server reading, until the test lets it go on.
          onRequest: (request, socket) => {
            if (held === undefined) {
              held = socket
              socket.pause()
            }
            return simpleReply(request.cookie)
          }
        })
        const h = yield* Nbd.make()
        yield* connect(h, server.path, kind)
        const before = (yield* Nbd.stats(h)).bytesSent
        const block = noise(256 * KiB, 1)
        // 32 MiB of writes, one at a time: each finds the sender idle again, or waiting for the socket to drain.
        const writes: Array<Nbd.Command<void>> = []
        for (let i = 0; i < 128; i++) {
          writes.push(yield* Nbd.aioPwrite(h, block, i * 256 * KiB))
          yield* Effect.sleep("1 millis")
        }
        yield* Effect.sleep("300 millis")
        const stuck = (yield* Nbd.stats(h)).bytesSent - before
        // Handed to the socket: what its buffers and the kernel's hold, and one batch; the rest waits unsent.
        expect(stuck).toBeGreaterThan(0)
        expect(stuck).toBeLessThan(8 * MiB)
        expect(held).toBeDefined()
        held!.resume()
        yield* Effect.forEach(writes, (w) => w.await, { discard: true })
        expect((yield* Nbd.stats(h)).bytesSent - before).toBeGreaterThanOrEqual(32 * MiB)
        yield* Nbd.shutdown(h)
      })
    )

    it.live(`${kind}: the end of writes follows everything queued before it`, () =>
      Effect.gen(function* () {
        const server = yield* TestServer.make({ exports: [{ name: "", size: 4 * MiB }] }).pipe(Effect.orDie)
        const path = server.address._tag === "Unix" ? server.address.path : ""
        const h = yield* Nbd.make()
        yield* connect(h, path, kind)
        const data = noise(256 * KiB, 3)
        // Small writes queued in one go, not awaited: NBD_CMD_DISC and the end of writes go after them, in
        // the same socket write.
        for (let i = 0; i < 64; i++) yield* Nbd.aioPwrite(h, data.subarray(i * 4 * KiB, (i + 1) * 4 * KiB), i * 4 * KiB)
        yield* Nbd.shutdown(h)
        const check = yield* Nbd.make()
        yield* NodeNbd.connectUnix(check, path)
        expect(Buffer.compare(yield* Nbd.pread(check, 256 * KiB, 0), data)).toBe(0)
      })
    )

    it.live(`${kind}: NBD_CMD_DISC and the end of writes queued in one turn both reach the server`, () =>
      Effect.gen(function* () {
        // The server closes only once the client shuts its write side: a close that never sent its FIN would
        // wait here for the whole (long) grace, and the test would time out.
        const server = yield* scriptedServer({ closeOnFin: true })
        const h = yield* Nbd.make({ closeGrace: "1 hour" })
        yield* connect(h, server.path, kind)
        yield* Nbd.shutdown(h)
        yield* server.allClosed
        expect(yield* Nbd.aioIsClosed(h)).toBe(true)
      })
    )
  }
})
