import { HandleState, Nbd } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"

// nbd_can_meta_context as libnbd 1.22 answers it (lib/flags.c): permitted while negotiating, connected or
// closed; it never needs the export's size and flags; it fails EINVAL only while contexts were added and
// the "meta contexts valid" flag is still unset (no SET_META_CONTEXT acknowledged, and no INFO/GO that made
// "none" the answer because structured replies are off or no contexts were added).

const NEED_SET = "need a successful server meta context request first"

const server = (config: TestServer.Config = {}) =>
  TestServer.make({ exports: [{ name: "", size: 1024 * 1024 }], ...config }).pipe(Effect.orDie)

describe("canMetaContext follows libnbd", () => {
  it.live("option mode: contexts added, before any SET, fails EINVAL asking for a SET first", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ optMode: true, metaContexts: ["base:allocation"] })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      const error = yield* Effect.flip(Nbd.canMetaContext(h, "base:allocation"))
      expect(error._tag).toBe("InvalidArgumentError")
      expect(error.errno).toBe("EINVAL")
      expect(error.operation).toBe("nbd_can_meta_context")
      expect(error.message).toBe(NEED_SET)
      // A LIST is stateless: still no answer.
      expect(yield* Nbd.optListMetaContext(h)).toEqual(["base:allocation"])
      expect((yield* Effect.flip(Nbd.canMetaContext(h, "base:allocation"))).message).toBe(NEED_SET)
    })
  )

  it.live("option mode: right after a successful optSetMetaContext, no export info needed", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ optMode: true, metaContexts: ["base:allocation", "qemu:nothing-here"] })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.optSetMetaContext(h)).toEqual(["base:allocation"])
      // The export's size is unknown yet (no INFO or GO), and the question is still answered.
      expect((yield* Effect.flip(Nbd.getSize(h))).errno).toBe("EINVAL")
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      expect(yield* Nbd.canMetaContext(h, "qemu:nothing-here")).toBe(false)
    })
  )

  it.live("option mode with no contexts added: false at once, nothing to wait for", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ optMode: true })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(false)
      // An explicit SET with queries of its own makes the context negotiated.
      expect(yield* Nbd.optSetMetaContext(h, ["base:allocation"])).toEqual(["base:allocation"])
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
    })
  )

  it.live("contexts added but never requested (requestMetaContext off): EINVAL, where false was answered", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ metaContexts: ["base:allocation"], requestMetaContext: false })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      const error = yield* Effect.flip(Nbd.canMetaContext(h, "base:allocation"))
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toBe(NEED_SET)
    })
  )

  it.live("structured replies off: GO makes 'none' the valid answer", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ metaContexts: ["base:allocation"], requestStructuredReplies: false })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(false)
    })
  )

  it.live("a SET the server answers with no context: valid, and false", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ metaContexts: ["qemu:dirty-bitmap:none"] })
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.canMetaContext(h, "qemu:dirty-bitmap:none")).toBe(false)
    })
  )

  it.live("changing the export name forgets the answer until the next SET", () =>
    Effect.gen(function* () {
      const s = yield* server({
        exports: [
          { name: "a", size: 65536 },
          { name: "b", size: 65536 }
        ]
      })
      const h = yield* Nbd.make({ optMode: true, exportName: "a", metaContexts: ["base:allocation"] })
      yield* NodeNbd.connectUri(h, s.uriFor("a"))
      yield* Nbd.optSetMetaContext(h)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      yield* Nbd.setExportName(h, "b")
      expect((yield* Effect.flip(Nbd.canMetaContext(h, "base:allocation"))).message).toBe(NEED_SET)
      // GO sends the automatic SET for the new export.
      yield* Nbd.optGo(h)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
    })
  )

  it.live("states: ENOTCONN while created, and still answered once closed", () =>
    Effect.gen(function* () {
      const s = yield* server()
      const h = yield* Nbd.make({ metaContexts: ["base:allocation"] })
      const created = yield* Effect.flip(Nbd.canMetaContext(h, "base:allocation"))
      expect(created._tag).toBe("InvalidStateError")
      expect(created.errno).toBe("ENOTCONN")
      yield* NodeNbd.connectUri(h, s.uri)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
      yield* Nbd.shutdown(h)
      expect(HandleState.isClosed(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.canMetaContext(h, "base:allocation")).toBe(true)
    })
  )
})
