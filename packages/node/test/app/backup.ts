/**
 * An application module, as a user of effect-nbd would write one: it depends on the `NbdClient` service and the
 * `Nbd` calls only. Which server it talks to, over which transport, with which settings, is decided by the
 * layer the caller provides; nothing here changes when a test swaps nbdkit for the in-process test server.
 */
import { Nbd, NbdClient } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import { createHash } from "node:crypto"

/** How much of the export the digest covers. */
export const DIGEST_BYTES = 1024 * 1024

/** Where the marker goes: the start of the export, inside the digested range. */
export const MARKER_OFFSET = 0

/** The bytes of the marker a backup of `label` writes. */
export const marker = (label: string): Uint8Array => new TextEncoder().encode(`effect-nbd backup: ${label}\n`)

/** What a run records. */
export interface Report {
  readonly size: bigint
  /** sha256 of the first `DIGEST_BYTES` (or the whole export, if smaller), marker included, as hex. */
  readonly sha256: string
}

/**
 * Marks the export as backed up (a marker at its start, flushed when the server can flush), then digests
 * its first MiB as the server now holds it.
 */
export const backup = (label: string): Effect.Effect<Report, NbdError.NbdError, NbdClient.NbdClient> =>
  Effect.gen(function* () {
    const h = yield* NbdClient.NbdClient
    const size = yield* Nbd.getSize(h)
    yield* Nbd.pwrite(h, marker(label), MARKER_OFFSET)
    if (yield* Nbd.canFlush(h)) yield* Nbd.flush(h)
    const head = yield* Nbd.pread(h, Number(size < BigInt(DIGEST_BYTES) ? size : BigInt(DIGEST_BYTES)), 0)
    return { size, sha256: createHash("sha256").update(head).digest("hex") }
  })
