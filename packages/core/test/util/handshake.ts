/**
 * The settings a handshake machine starts with in the engine's tests: `Nbd.make`'s defaults with
 * base:allocation asked for, as the recorded sessions used, and whatever a test changes.
 */
import { Protocol } from "@effect-nbd/core"
import type { HandshakeSettings } from "../../src/internal/engine/handshake.js"

export const handshakeSettings = (overrides: Partial<HandshakeSettings> = {}): HandshakeSettings => ({
  exportName: "",
  tls: "disable",
  requestStructuredReplies: true,
  requestExtendedHeaders: true,
  requestMetaContext: true,
  metaContexts: [Protocol.CONTEXT_BASE_ALLOCATION],
  fullInfo: false,
  requestBlockSize: true,
  handshakeFlags: Protocol.HANDSHAKE_FLAG_MASK,
  optMode: false,
  debug: false,
  ...overrides
})
