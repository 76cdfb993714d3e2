/**
 * What the client has yet to send, in order, and how it is cut into socket writes: small items joined into one
 * write, a large payload written on its own and never copied, a command abandoned before it left skipped.
 */
import { concat } from "../wire/bytes.js"
import type { Pending } from "./pending.js"

/** Tells the writer to shut the write side of the socket once everything before it is sent. */
export const END_OF_WRITES = Symbol("END_OF_WRITES")

/** One thing to send: raw bytes (a handshake message), a command's request and payload, or the end of writes. */
export type Outgoing =
  | Uint8Array
  | { readonly bytes: Uint8Array; readonly payload: Uint8Array | undefined; readonly pending: Pending }
  | typeof END_OF_WRITES

/** A write payload at least this big is written on its own, never copied into a group. */
export const COPY_PAYLOAD_BELOW = 64 * 1024

/** Writes are grouped into one socket write up to this size. */
export const WRITE_GROUP_BYTES = 1024 * 1024

/** The next socket write cut from the queue: its chunks, where the next starts, and whether writes end there. */
export interface Framed {
  readonly chunks: Array<Uint8Array>
  readonly next: number
  readonly end: boolean
}

/**
 * Frames the next socket write from `items[from]`: small items joined up to WRITE_GROUP_BYTES, then a big
 * payload on its own (never copied). Abandoned commands are skipped, the others marked sent. `end` says the
 * end of writes was reached: nothing after it is sent.
 */
export const frame = (items: ReadonlyArray<Outgoing>, from: number): Framed => {
  const group: Array<Uint8Array> = []
  let groupBytes = 0
  let big: Uint8Array | undefined
  let at = from
  let end = false
  while (at < items.length && groupBytes < WRITE_GROUP_BYTES && big === undefined) {
    const item = items[at++]!
    if (item === END_OF_WRITES) {
      end = true
      break
    }
    if (item instanceof Uint8Array) {
      group.push(item)
      groupBytes += item.length
      continue
    }
    if (item.pending.abandoned) continue
    item.pending.sent = true
    group.push(item.bytes)
    groupBytes += item.bytes.length
    const payload = item.payload
    if (payload === undefined) continue
    if (payload.length >= COPY_PAYLOAD_BELOW) big = payload
    else {
      group.push(payload)
      groupBytes += payload.length
    }
  }
  const chunks: Array<Uint8Array> = []
  if (group.length > 0) chunks.push(group.length === 1 ? group[0]! : concat(group))
  if (big !== undefined) chunks.push(big)
  return { chunks, next: at, end }
}

/** Undoes `frame`'s marks on items a transport could not take after all: they are sent again later. */
export const unframe = (items: ReadonlyArray<Outgoing>, upTo: number): void => {
  for (let i = 0; i < upTo; i++) {
    const item = items[i]!
    if (typeof item === "object" && !(item instanceof Uint8Array)) item.pending.sent = false
  }
}
