/**
 * The test-server configurations the hostile-client fuzz runs against: every protocol flavour, small
 * backpressure bounds (so pausing and resuming are exercised), and one with faults of every sort.
 */
import type { TestServer } from "@effect-nbd/test-server"
import type { ServerKind } from "./transcript.js"

const MiB = 1024 * 1024

/** The exports every configuration serves: a sparse memory disk, a pattern disk and a tiny one. */
const exports: TestServer.Config["exports"] = [
  { name: "", size: 16 * MiB, description: "the default" },
  { name: "pattern", size: 64 * MiB, backend: "pattern" },
  { name: "tiny", size: 4096, backend: "null" }
]

const backpressure = { maxReplyBytes: 4 * MiB, maxRequests: 16 }

export const serverConfig = (kind: ServerKind): TestServer.Config => {
  switch (kind) {
    case "extended":
      return { exports, backpressure }
    case "structured":
      return { exports, backpressure, extendedHeaders: false, outOfOrder: true }
    case "simple":
      return { exports, backpressure, structuredReplies: false }
    case "oldstyle":
      return { exports, backpressure, protocol: "oldstyle" }
    case "newstyle":
      return { exports, backpressure, protocol: "newstyle", noZeroes: false }
    case "faults":
      return {
        exports,
        backpressure: { maxReplyBytes: 256 * 1024, maxRequests: 2 },
        outOfOrder: true,
        blockSize: { minimum: 512, preferred: 4096, maximum: 4 * MiB },
        disconnectAfter: 40,
        faults: [
          { command: "read", delayMs: 3, rate: 0.3 },
          { command: "read", malformed: "hole-over-data", rate: 0.1 },
          { command: "write", errno: "EIO", rate: 0.2 },
          { command: "flush", malformed: "two-dones", rate: 0.3 },
          { command: "cache", malformed: "no-done", nth: 2 },
          { command: "trim", malformed: "wrong-cookie", rate: 0.5 },
          { command: "block-status", malformed: "too-many-extents", rate: 0.3 },
          { command: "write-zeroes", delayMs: 2 }
        ]
      }
  }
}
