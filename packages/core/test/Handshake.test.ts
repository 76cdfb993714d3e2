/**
 * The handshake machine alone (engine/handshake.ts), with no socket and no Effect: the server's messages built
 * with the server's own encoders, the client's read back from what the machine queued. These are the paths the
 * recorded sessions (Replay.test.ts) do not take: TLS by each setting, option mode, refusals and NBD_OPT_ABORT,
 * GO's fallback to EXPORT_NAME, the export info libnbd rejects or fixes up.
 */
import { describe, expect, it } from "vitest"
import { Protocol } from "@effect-nbd/core"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import { Handshake, type HandshakeSettings, type HandshakeStart, type Step } from "../src/internal/engine/handshake.js"
import { handshakeSettings } from "./util/handshake.js"

const { Opt, Rep, TFlag } = Protocol

const defaults: HandshakeSettings = handshakeSettings({ exportName: "disk" })

const FIXED = Protocol.FLAG_FIXED_NEWSTYLE | Protocol.FLAG_NO_ZEROES
const FLAGS = TFlag.HAS_FLAGS | TFlag.SEND_FLUSH | TFlag.SEND_DF | TFlag.SEND_FAST_ZERO

/** A machine, started, with what it sent: "flags", an option's name, or "end" for the end of writes. */
const machine = (settings: Partial<HandshakeSettings> = {}, how: Partial<HandshakeStart> = {}) => {
  const sent: Array<string> = []
  const m = new Handshake({
    send: (b) => {
      const view = new DataView(b.buffer, b.byteOffset, b.length)
      sent.push(b.length === 4 ? "flags" : Protocol.optionName(view.getUint32(8)))
    },
    endWrites: () => sent.push("end"),
    received: () => {}
  })
  m.start({ ...defaults, ...settings }, { operation: "nbd_connect", optionMode: false, tlsAvailable: false, ...how })
  /** Feeds server messages, then answers the next step. */
  const answer = (...messages: ReadonlyArray<Uint8Array>): Step => {
    for (const message of messages) m.receive(message)
    return m.next()
  }
  return { m, sent, answer }
}

/** Past the greeting and the two features: EXTENDED_HEADERS refused, STRUCTURED_REPLY accepted. */
const toGo = (t: ReturnType<typeof machine>) => {
  expect(t.answer(ServerCodec.newstyleGreeting(FIXED))).toEqual({ _tag: "Read" })
  expect(t.answer(ServerCodec.optionError(Opt.EXTENDED_HEADERS, Rep.ERR_UNSUP))).toEqual({ _tag: "Read" })
  expect(t.answer(ServerCodec.optionAck(Opt.STRUCTURED_REPLY))).toEqual({ _tag: "Read" })
}

const failedWith = (step: Step) => {
  expect(step._tag).toBe("Failed")
  return step._tag === "Failed" ? step : expect.unreachable()
}

describe("the handshake machine", () => {
  it("fixed newstyle: client flags, EXTENDED_HEADERS, STRUCTURED_REPLY, SET_META_CONTEXT, GO, in libnbd's order", () => {
    const t = machine()
    expect(t.m.next()).toEqual({ _tag: "Read" })
    toGo(t)
    expect(
      t.answer(
        ServerCodec.optionMetaContext(Opt.SET_META_CONTEXT, 7, Protocol.CONTEXT_BASE_ALLOCATION),
        ServerCodec.optionAck(Opt.SET_META_CONTEXT)
      )
    ).toEqual({ _tag: "Read" })
    const step = t.answer(
      ServerCodec.optionInfoExport(Opt.GO, 1n << 20n, FLAGS),
      ServerCodec.optionInfoBlockSize(Opt.GO, { minimum: 3, preferred: 4096, maximum: 1 << 20 }),
      ServerCodec.optionAck(Opt.GO)
    )
    expect(step).toEqual({ _tag: "Done" })
    expect(t.sent).toEqual([
      "flags",
      "NBD_OPT_EXTENDED_HEADERS",
      "NBD_OPT_STRUCTURED_REPLY",
      "NBD_OPT_SET_META_CONTEXT",
      "NBD_OPT_GO"
    ])
    const a = t.m.agreement
    expect(a.protocol).toBe("newstyle-fixed")
    expect(a.handshakeFlags).toBe(FIXED)
    expect([a.structuredReplies, a.extendedHeaders, a.metaValid]).toEqual([true, false, true])
    expect([...a.metaContexts!]).toEqual([[7, Protocol.CONTEXT_BASE_ALLOCATION]])
    // FAST_ZERO without WRITE_ZEROES is dropped; DF stays (structured replies); a minimum of 3 is ignored.
    expect(a.info).toMatchObject({ size: 1n << 20n, flags: FLAGS & ~TFlag.SEND_FAST_ZERO, blockSizes: undefined })
  })

  it("GO not supported: EXPORT_NAME instead, and its reply is the export", () => {
    const t = machine({ metaContexts: [] })
    toGo(t)
    expect(t.answer(ServerCodec.optionError(Opt.GO, Rep.ERR_UNSUP))).toEqual({ _tag: "Read" })
    expect(t.answer(ServerCodec.exportNameReply(4096, TFlag.HAS_FLAGS, true))).toEqual({ _tag: "Done" })
    expect(t.sent.slice(-2)).toEqual(["NBD_OPT_GO", "NBD_OPT_EXPORT_NAME"])
    expect(t.m.agreement.info?.size).toBe(4096n)
    // No contexts were asked for: "none negotiated" is a valid answer.
    expect(t.m.agreement.metaValid).toBe(true)
  })

  it("GO refused: libnbd's errno and wording, NBD_OPT_ABORT and the end of writes", () => {
    const t = machine({ metaContexts: [] })
    toGo(t)
    const failed = failedWith(t.answer(ServerCodec.optionError(Opt.GO, Rep.ERR_UNKNOWN, "no such export")))
    expect(failed.error).toMatchObject({
      _tag: "OptionError",
      errno: "ENOENT",
      operation: "nbd_connect",
      message: "NBD_OPT_GO: the server has no export named 'disk': no such export"
    })
    expect(t.sent.slice(-3)).toEqual(["NBD_OPT_GO", "NBD_OPT_ABORT", "end"])
    expect(t.m.phase).toBe("Failed")
  })

  it("export flags of 0 fail with EINVAL", () => {
    const t = machine({ metaContexts: [] })
    toGo(t)
    const failed = failedWith(t.answer(ServerCodec.optionInfoExport(Opt.GO, 4096, 0), ServerCodec.optionAck(Opt.GO)))
    expect(failed.error).toMatchObject({ _tag: "ProtocolError", errno: "EINVAL" })
  })

  it("a malformed message fails with a typed error, and the machine stays failed", () => {
    const t = machine()
    const failed = failedWith(t.answer(new Uint8Array(18)))
    expect(failed.error).toMatchObject({
      _tag: "ProtocolError",
      message: "handshake: server did not send expected NBD magic"
    })
    expect(t.m.next()._tag).toBe("Failed")
  })

  describe("TLS", () => {
    it("require without a TLS transport: NBD_OPT_ABORT and nothing else in plaintext", () => {
      const t = machine({ tls: "require" })
      const failed = failedWith(t.answer(ServerCodec.newstyleGreeting(FIXED)))
      expect(failed.error.message).toBe(
        "handshake: TLS is not available on this transport, but handle TLS setting is 'require' (2)"
      )
      expect(t.sent).toEqual(["flags", "NBD_OPT_ABORT", "end"])
    })

    it("allow without a TLS transport goes on in plaintext without asking", () => {
      const t = machine({ tls: "allow" })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      expect(t.sent).toEqual(["flags", "NBD_OPT_EXTENDED_HEADERS"])
    })

    it("require, refused in option mode: NBD_OPT_ABORT, and the handle ends Closed", () => {
      const t = machine({ tls: "require", optMode: true }, { tlsAvailable: true, optionMode: true })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      const failed = failedWith(t.answer(ServerCodec.optionError(Opt.STARTTLS, Rep.ERR_POLICY)))
      expect(failed.close).toBe(true)
      expect(failed.error.message).toBe("handshake: server refused TLS, but handle TLS setting is 'require' (2)")
      expect(t.sent).toEqual(["flags", "NBD_OPT_STARTTLS", "NBD_OPT_ABORT", "end"])
    })

    it("require, refused outside option mode, ends Dead; a server that is not fixed newstyle is refused first", () => {
      const t = machine({ tls: "require" }, { tlsAvailable: true })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      expect(failedWith(t.answer(ServerCodec.optionError(Opt.STARTTLS, Rep.ERR_POLICY))).close).toBe(false)
      const plain = machine({ tls: "require" }, { tlsAvailable: true })
      expect(failedWith(plain.answer(ServerCodec.newstyleGreeting(0))).error.message).toBe(
        "handshake: server is not using fixed newstyle, but handle TLS setting is 'require' (2)"
      )
      expect(plain.sent).toEqual([])
    })

    it("accepted: the driver upgrades, the agreement says TLS, and the handshake goes on", () => {
      const t = machine({ tls: "allow" }, { tlsAvailable: true })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      expect(t.answer(ServerCodec.optionAck(Opt.STARTTLS))).toEqual({ _tag: "StartTls" })
      // Until the driver says the upgrade is done, the machine keeps asking for it.
      expect(t.m.next()).toEqual({ _tag: "StartTls" })
      expect(t.m.phase).toBe("Upgrading")
      t.m.tlsDone()
      expect(t.m.next()).toEqual({ _tag: "Read" })
      expect(t.m.agreement.tlsNegotiated).toBe(true)
      expect(t.sent).toEqual(["flags", "NBD_OPT_STARTTLS", "NBD_OPT_EXTENDED_HEADERS"])
    })

    it("bytes after the STARTTLS ACK, outside TLS, fail with EPROTO before any upgrade", () => {
      const t = machine({ tls: "allow" }, { tlsAvailable: true })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      const failed = failedWith(t.answer(ServerCodec.optionAck(Opt.STARTTLS), new Uint8Array([1, 2, 3])))
      expect(failed.error).toMatchObject({ _tag: "ProtocolError", errno: "EPROTO" })
    })
  })

  describe("option mode", () => {
    it("pauses after the features; each option is one exchange; a refusal leaves the negotiation as it was", () => {
      const t = machine({}, { optionMode: true })
      t.answer(ServerCodec.newstyleGreeting(FIXED))
      t.answer(ServerCodec.optionError(Opt.EXTENDED_HEADERS, Rep.ERR_UNSUP))
      expect(t.answer(ServerCodec.optionAck(Opt.STRUCTURED_REPLY))).toEqual({ _tag: "Negotiating", value: undefined })
      expect(t.m.phase).toBe("Negotiating")
      expect(t.sent).toEqual(["flags", "NBD_OPT_EXTENDED_HEADERS", "NBD_OPT_STRUCTURED_REPLY"])

      t.m.option("nbd_opt_list", { _tag: "List" })
      expect(
        t.answer(ServerCodec.optionServer(Opt.LIST, "a", "first"), ServerCodec.optionServer(Opt.LIST, "b"))
      ).toEqual({ _tag: "Read" })
      expect(t.answer(ServerCodec.optionAck(Opt.LIST))).toEqual({
        _tag: "Negotiating",
        value: [
          { name: "a", description: "first" },
          { name: "b", description: "" }
        ]
      })

      t.m.option("nbd_opt_info", { _tag: "Info" })
      t.answer(
        ServerCodec.optionMetaContext(Opt.SET_META_CONTEXT, 1, Protocol.CONTEXT_BASE_ALLOCATION),
        ServerCodec.optionAck(Opt.SET_META_CONTEXT)
      )
      const refused = failedWith(t.answer(ServerCodec.optionError(Opt.INFO, Rep.ERR_POLICY)))
      // A reply with no errno of its own is ENOTSUP, as libnbd reports it.
      expect(refused.error).toMatchObject({ _tag: "OptionError", errno: "ENOTSUP", operation: "nbd_opt_info" })
      expect(t.m.phase).toBe("Negotiating")
      expect(t.m.agreement.metaValid).toBe(false)

      t.m.option("nbd_opt_go", { _tag: "Go" })
      t.answer(ServerCodec.optionAck(Opt.SET_META_CONTEXT))
      expect(
        t.answer(ServerCodec.optionInfoExport(Opt.GO, 512, TFlag.HAS_FLAGS), ServerCodec.optionAck(Opt.GO))
      ).toEqual({
        _tag: "Done"
      })
      expect(t.m.phase).toBe("Done")
    })

    it("refuses what plain newstyle cannot do, and what was not agreed, before sending anything", () => {
      const t = machine({}, { optionMode: true })
      expect(t.answer(ServerCodec.newstyleGreeting(0))).toEqual({ _tag: "Negotiating", value: undefined })
      t.m.option("nbd_opt_list", { _tag: "List" })
      expect(failedWith(t.m.next()).error.message).toBe("server is not using fixed newstyle protocol")
      const fixed = machine({ requestStructuredReplies: false }, { optionMode: true })
      fixed.answer(ServerCodec.newstyleGreeting(FIXED))
      fixed.m.option("nbd_opt_set_meta_context", { _tag: "SetMetaContext", queries: ["base:allocation"] })
      expect(failedWith(fixed.m.next()).error).toMatchObject({
        _tag: "UnsupportedError",
        message: "server lacks structured replies"
      })
      fixed.m.option("nbd_opt_starttls", { _tag: "StartTls" })
      expect(failedWith(fixed.m.next()).error.message).toBe("TLS is not available on this transport")
      expect(fixed.sent).toEqual(["flags"])
      expect(fixed.m.phase).toBe("Negotiating")
    })
  })

  describe("oldstyle", () => {
    it("is the export at once; TLS require and global flags are refused", () => {
      const t = machine()
      expect(t.answer(ServerCodec.oldstyleGreeting(8192, TFlag.HAS_FLAGS | TFlag.SEND_DF))).toEqual({ _tag: "Done" })
      // DF needs structured replies, which oldstyle never has.
      expect(t.m.agreement).toMatchObject({ protocol: "oldstyle", handshakeFlags: 0, info: { size: 8192n, flags: 1 } })
      expect(t.sent).toEqual([])
      const greeting = ServerCodec.oldstyleGreeting(8192, 1)
      greeting[25] = 1
      expect(failedWith(machine().answer(greeting)).error.message).toBe(
        "handshake: oldstyle server should not set gflags"
      )
      const tls = machine({ tls: "require" })
      expect(failedWith(tls.answer(ServerCodec.oldstyleGreeting(8192, 1))).error.message).toBe(
        "handshake: server is oldstyle, but handle TLS setting is 'require' (2)"
      )
    })
  })

  it("collects debug lines only while debug is on", () => {
    const quiet = machine()
    toGo(quiet)
    expect(quiet.m.takeDebugLines()).toEqual([])
    const loud = machine({ debug: true })
    toGo(loud)
    expect(loud.m.takeDebugLines()).toEqual([
      { operation: "handshake", message: "sending option NBD_OPT_EXTENDED_HEADERS (0 bytes of data)" },
      { operation: "handshake", message: "received reply Error 0x80000001 to NBD_OPT_EXTENDED_HEADERS" },
      { operation: "handshake", message: "sending option NBD_OPT_STRUCTURED_REPLY (0 bytes of data)" },
      { operation: "handshake", message: "received reply Ack to NBD_OPT_STRUCTURED_REPLY" },
      { operation: "nbd_connect", message: "sending option NBD_OPT_SET_META_CONTEXT (31 bytes of data)" }
    ])
    expect(loud.m.takeDebugLines()).toEqual([])
  })
})
