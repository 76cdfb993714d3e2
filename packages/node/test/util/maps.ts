import { Nbd } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import * as Effect from "effect/Effect"
import { type MapExtent, mergeExtents } from "./peers.js"

/**
 * The whole export's base:allocation map as the client sees it: block status from offset 0 until the
 * replies cover `size`, clipped to the export and merged like `nbdinfo --map` does.
 */
export const clientMap = (h: Nbd.Handle, size: number): Effect.Effect<Array<MapExtent>, NbdError.NbdError> =>
  Effect.gen(function* () {
    const out: Array<MapExtent> = []
    let offset = 0
    while (offset < size) {
      const entries = yield* Nbd.blockStatus(h, size - offset, offset)
      const entry = entries.find((e) => e.context === "base:allocation")
      if (entry === undefined || entry.extents.length === 0) throw new Error(`no base:allocation extents at ${offset}`)
      for (const extent of entry.extents) {
        const length = Math.min(Number(extent.length), size - offset)
        out.push({ offset, length, flags: extent.flags })
        offset += length
        if (offset >= size) break
      }
    }
    return mergeExtents(out)
  })

/** A handle connected to `uri` that asked for base:allocation, for block-status tests. */
export const connectWithAllocation = (uri: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make()
    yield* Nbd.addMetaContext(h, "base:allocation")
    yield* NodeNbd.connectUri(h, uri)
    return h
  })
