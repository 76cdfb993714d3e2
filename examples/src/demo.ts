/**
 * The demo: start the embedded NBD server, connect to it while printing the handle's state as it changes,
 * print what the server says of its export, write some data and read it back.
 */
import { HandleState, Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"

const MiB = 1024 * 1024

class DemoMismatch extends Data.TaggedError("DemoMismatch")<{ readonly message: string }> {}

const describeState = (s: HandleState.HandleState): string =>
  s._tag === "Dead" ? `Dead (${NbdError.format(s.error)})` : s._tag

const program = Effect.gen(function* () {
  const server = yield* TestServer.TestServer
  yield* Console.log(`embedded server listening at ${server.uri}`)

  const h = yield* Nbd.make({ exportName: "disk", metaContexts: ["base:allocation"], fullInfo: true })
  const watcher = yield* Nbd.stateChanges(h).pipe(
    Stream.runForEach((s) => Console.log(`  state: ${describeState(s)}`)),
    Effect.forkChild
  )

  yield* Console.log("connecting (aioConnectSocket returns at once, the handshake runs in the background)")
  yield* NodeNbd.aioConnectUri(h, server.uriFor("disk"))
  yield* Nbd.awaitConnected(h)

  const size = yield* Nbd.getSize(h)
  yield* Console.log(`export "disk": ${size} bytes (${Number(size) / MiB} MiB)`)
  yield* Console.log(`  description:        ${yield* Nbd.getExportDescription(h)}`)
  yield* Console.log(`  protocol:           ${yield* Nbd.getProtocol(h)}`)
  yield* Console.log(`  structured replies: ${yield* Nbd.getStructuredRepliesNegotiated(h)}`)
  yield* Console.log(`  extended headers:   ${yield* Nbd.getExtendedHeadersNegotiated(h)}`)
  yield* Console.log(`  read-only:          ${yield* Nbd.isReadOnly(h)}`)
  yield* Console.log(
    `  can flush/trim/zero: ${yield* Nbd.canFlush(h)}/${yield* Nbd.canTrim(h)}/${yield* Nbd.canZero(h)}`
  )
  yield* Console.log(`  multi-conn:         ${yield* Nbd.canMultiConn(h)}`)
  yield* Console.log(
    `  block sizes:        min ${yield* Nbd.getBlockSize(h, "minimum")}, preferred ${yield* Nbd.getBlockSize(h, "preferred")}, max ${yield* Nbd.getBlockSize(h, "maximum")}`
  )
  yield* Console.log(`  base:allocation:    ${yield* Nbd.canMetaContext(h, "base:allocation")}`)

  const message = new TextEncoder().encode("Hello from effect-nbd! ".repeat(178)) // 4094 bytes
  yield* Console.log(`writing ${message.length} bytes at offset 1 MiB, and 64 blocks of 64 KiB with 64 in flight`)
  yield* Nbd.pwrite(h, message, MiB)
  const blocks = Array.from({ length: 64 }, (_, i) => new Uint8Array(64 * 1024).fill(i + 1))
  const writes = yield* Effect.forEach(blocks, (block, i) => Nbd.aioPwrite(h, block, 8 * MiB + i * block.length))
  yield* Console.log(`  in flight after queueing: ${yield* Nbd.aioInFlight(h)}`)
  yield* Effect.forEach(writes, (w) => w.await)
  yield* Nbd.flush(h)

  const back = yield* Nbd.pread(h, message.length, MiB)
  const same = back.every((b, i) => b === message[i])
  yield* Console.log(
    `read back: "${new TextDecoder().decode(back.subarray(0, 22))}..." (${same ? "identical" : "DIFFERENT"})`
  )
  const reads = yield* Effect.forEach(blocks, (block, i) => Nbd.aioPread(h, block.length, 8 * MiB + i * block.length))
  const got = yield* Effect.forEach(reads, (r) => r.await)
  const allSame = got.every((g, i) => g.every((b) => b === i + 1))
  yield* Console.log(`read back 64 blocks: ${allSame ? "identical" : "DIFFERENT"}`)

  const status = yield* Nbd.blockStatus(h, 16 * MiB, 0)
  for (const entry of status) {
    yield* Console.log(`block status (${entry.context}) of the first 16 MiB:`)
    let at = entry.offset
    for (const extent of entry.extents) {
      const kind = extent.flags === 0 ? "data" : extent.flags === 3 ? "hole,zero" : `flags ${extent.flags}`
      yield* Console.log(`  ${at.toString().padStart(9)} +${extent.length.toString().padStart(9)}  ${kind}`)
      at += extent.length
    }
  }

  const stats = yield* Nbd.stats(h)
  yield* Console.log(
    `sent ${stats.bytesSent} bytes in ${stats.chunksSent} messages, received ${stats.bytesReceived} bytes`
  )
  yield* Console.log("disconnecting")
  yield* Nbd.shutdown(h)
  yield* Effect.sleep("10 millis")
  yield* Fiber.interrupt(watcher)
  if (!same || !allSame) return yield* new DemoMismatch({ message: "data read back differs from what was written" })
})

const main = program.pipe(
  Effect.scoped,
  Effect.provide(
    TestServer.layer({
      exports: [
        { name: "disk", size: 64 * MiB, description: "a sparse 64 MiB disk in memory" },
        { name: "", size: MiB }
      ]
    })
  )
)

Effect.runPromise(main).then(
  () => process.exit(0),
  (error) => {
    console.error(
      NbdError.isNbdError(error)
        ? NbdError.format(error)
        : error instanceof DemoMismatch
          ? error.message
          : String(error)
    )
    process.exit(1)
  }
)
