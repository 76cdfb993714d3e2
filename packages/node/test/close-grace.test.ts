import { Nbd, NbdPool } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import { nbdkit } from "./util/peers.js"
import { type Scripted, scriptedServer } from "./util/scripted.js"

/** Connects a handle in a scope of its own, so a test can time the close. */
const openHandle = (path: string, settings: Nbd.Settings = {}) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const h = yield* Scope.provide(Nbd.make(settings), scope)
    yield* NodeNbd.connectUnix(h, path)
    return { h, scope }
  })

const openFds = (): number => Fs.readdirSync("/proc/self/fd").length

/**
 * Polls, for at most 3 seconds, until this process holds no more descriptors than `baseline` plus the server
 * side's sockets (the scripted server runs in this process, and may keep its end open on purpose).
 */
const fdsBackTo = (baseline: () => number): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (let i = 0; i < 3000 && openFds() > baseline(); i++) yield* Effect.sleep("1 millis")
  })

/** Closes the scope and tells how long the close took, and how long until the socket's descriptor was gone. */
const timeClose = (scope: Scope.Closeable, before: number, server: Scripted) =>
  Effect.gen(function* () {
    const started = performance.now()
    yield* Scope.close(scope, Exit.void)
    const closed = performance.now() - started
    const baseline = () => before + server.connections()
    yield* fdsBackTo(baseline)
    expect(openFds()).toBeLessThanOrEqual(baseline())
    return { closed, released: performance.now() - started }
  })

describe("closing a handle", () => {
  it.live("after a timed-out command on a server that ignores the FIN releases the socket at once", () =>
    Effect.gen(function* () {
      const server = yield* scriptedServer({ ignoreDisconnect: true })
      const baseline = openFds()
      const { h, scope } = yield* openHandle(server.path)
      const read = yield* Effect.result(Effect.timeout(Nbd.pread(h, 4096, 0), "100 millis"))
      expect(read._tag).toBe("Failure")
      const { closed, released } = yield* timeClose(scope, baseline, server)
      expect(closed).toBeLessThan(100)
      expect(released).toBeLessThan(100)
    })
  )

  it.live("after a write stuck on a server that stopped reading releases the socket at once", () =>
    Effect.gen(function* () {
      const server = yield* scriptedServer({ stopReading: true })
      const baseline = openFds()
      const { h, scope } = yield* openHandle(server.path)
      const write = yield* Effect.result(Effect.timeout(Nbd.pwrite(h, new Uint8Array(32 << 20), 0), "200 millis"))
      expect(write._tag).toBe("Failure")
      const { closed, released } = yield* timeClose(scope, baseline, server)
      expect(closed).toBeLessThan(100)
      expect(released).toBeLessThan(100)
    })
  )

  it.live("with nothing pending sends NBD_CMD_DISC and waits at most the configured grace", () =>
    Effect.gen(function* () {
      let requests = 0
      const server = yield* scriptedServer({ ignoreDisconnect: true, onRequest: () => void (requests += 1) })
      const baseline = openFds()
      const { h, scope } = yield* openHandle(server.path, { closeGrace: "300 millis" })
      expect(yield* Nbd.aioInFlight(h)).toBe(0)
      const { closed } = yield* timeClose(scope, baseline, server)
      expect(requests).toBe(0)
      expect(closed).toBeGreaterThanOrEqual(250)
      expect(closed).toBeLessThan(1500)
    })
  )

  it.live("with nothing pending ends as soon as the server closes after NBD_CMD_DISC", () =>
    Effect.gen(function* () {
      const server = yield* scriptedServer()
      const baseline = openFds()
      const { scope } = yield* openHandle(server.path, { closeGrace: "10 seconds" })
      const { closed, released } = yield* timeClose(scope, baseline, server)
      expect(closed).toBeLessThan(1000)
      expect(released).toBeLessThan(1000)
    })
  )

  it.live("in a scope that closes in parallel (a pool's) still ends as soon as the server closes", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["memory", "1M"])
      // A grace far beyond the test's timeout: a close that waited it out would fail the test.
      const settings = { closeGrace: "60 seconds" } as const
      const scope = yield* Scope.make("parallel")
      const h = yield* Scope.provide(Nbd.make(settings), scope)
      yield* NodeNbd.connectUri(h, peer.uri)
      const pool = yield* Scope.provide(
        NbdPool.make({ connect: (p) => NodeNbd.connectUri(p, peer.uri), connections: 4, settings }),
        scope
      )
      expect(NbdPool.size(pool)).toBe(4)
      yield* Nbd.pread(h, 4096, 0)
      yield* NbdPool.pread(pool, 4096, 0)
      const started = performance.now()
      yield* Scope.close(scope, Exit.void)
      expect(performance.now() - started).toBeLessThan(5000)
      for (const handle of [h, ...pool.handles]) expect((yield* Nbd.state(handle))._tag).toBe("Closed")
    })
  )
})
