import type { BlockStatusEntry, Extent } from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import { u32 } from "../wire/bytes.js"

/** Receives each BLOCK_STATUS or BLOCK_STATUS_EXT chunk's payload; an error fails the command, not the stream. */
export type OnBlockStatus = (type: number, payload: Uint8Array) => NbdError.NbdError | void

const protocolError = (operation: string, message: string, errno: NbdError.Errno = "EPROTO"): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno, operation, message })

/**
 * Collects what a server reports for one block-status command, accepting no more than the request can hold,
 * so a hostile server cannot grow it: one chunk per negotiated context (a repeated context fails EPROTO),
 * and in each chunk only extents that start inside the requested range and end inside the export. Each kept
 * extent is at least a byte long, so an entry holds at most `count` extents. As libnbd does, a zero-length
 * first extent or one past the export's end fails the command with EPROTO (the part inside is kept), a later
 * zero-length extent ends the list, and a 64-bit status that a 32-bit flags field cannot hold fails the first
 * extent with EOVERFLOW and ends the list after a later one. Descriptors are read straight from the chunk,
 * without an intermediate list.
 */
export const makeCollector = (
  negotiated: ReadonlyMap<number, string> | undefined,
  exportSize: bigint,
  operation: string,
  offset: number,
  count: number
): {
  readonly entries: Array<BlockStatusEntry>
  readonly onBlockStatus: OnBlockStatus
  /** Forgets every chunk received, for a command a reconnect sends again. */
  readonly restart: () => void
} => {
  const entries: Array<BlockStatusEntry> = []
  const seen = new Set<number>()
  const restart = (): void => {
    entries.splice(0)
    seen.clear()
  }
  const onBlockStatus: OnBlockStatus = (type, payload) => {
    const extended = type === Protocol.ReplyType.BLOCK_STATUS_EXT
    const head = extended ? 8 : 4
    const size = extended ? 16 : 8
    if (payload.length < head + size || (payload.length - head) % size !== 0)
      return protocolError(operation, "server sent a block status chunk with an invalid length")
    const descriptors = (payload.length - head) / size
    if (extended && u32(payload, 4) !== descriptors)
      return protocolError(
        operation,
        "server sent a block status chunk whose descriptor count does not match its length"
      )
    const contextId = u32(payload, 0)
    const context = negotiated?.get(contextId)
    if (context === undefined) return // an id we did not negotiate is ignored, as libnbd does
    if (seen.has(contextId))
      return protocolError(operation, `server sent block status for context ${context} more than once`)
    seen.add(contextId)
    const cap = BigInt(offset) <= exportSize ? exportSize - BigInt(offset) : 0n
    const view = new DataView(payload.buffer, payload.byteOffset, payload.length)
    const extents: Array<Extent> = []
    let total = 0n
    let error: NbdError.NbdError | undefined
    for (let i = 0, at = head; i < descriptors; i++, at += size) {
      if (i > 0 && total >= BigInt(count)) {
        error = protocolError(operation, "server sent more extents than the requested range can hold")
        break
      }
      let length = extended ? view.getBigUint64(at) : BigInt(view.getUint32(at))
      const flags = extended ? view.getBigUint64(at + 8) : BigInt(view.getUint32(at + 4))
      if (flags > 0xffffffffn) {
        if (i === 0) error = protocolError(operation, "server sent an extent status too large for 32 bits", "EOVERFLOW")
        break
      }
      let last = false
      if (length > cap - total) {
        length = cap - total
        error ??= protocolError(operation, "server sent an extent beyond the end of the export")
        last = true
      }
      if (length === 0n) {
        if (i === 0) error ??= protocolError(operation, "server sent a zero-length extent")
        break
      }
      total += length
      extents.push({ length, flags: Number(flags) })
      if (last) break
    }
    entries.push({ context, offset: BigInt(offset), extents })
    return error
  }
  return { entries, onBlockStatus, restart }
}
