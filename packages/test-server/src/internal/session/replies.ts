/**
 * The replies of the transmission phase, as bytes: an error, a success, a read's data, a block-status
 * answer, each in the form the handshake settled (simple, structured, extended headers). Pure functions: the
 * transmission phase sends what they give.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"
import * as Backend from "../../Backend.js"
import * as Settings from "./settings.js"

const { CmdFlag } = Protocol
const DONE = Protocol.REPLY_FLAG_DONE

/** Shared, never written: the zeroes of simple read replies over holes. */
const ZERO_BUFFER = new Uint8Array(1024 * 1024)

/**
 * The form of replies: what the handshake settled, and whether reads are answered out of order.
 * @internal
 */
export interface Form {
  readonly structured: boolean
  readonly extended: boolean
  readonly outOfOrder: boolean
}

/**
 * An error reply: a simple reply with the errno, or a structured error chunk with its message.
 * @internal
 */
export const error = (form: Form, target: ServerCodec.ChunkTarget, errno: number, message: string): Uint8Array =>
  form.structured ? ServerCodec.errorChunk(target, DONE, errno, message) : ServerCodec.simpleReply(target.cookie, errno)

/**
 * The reply to a request that succeeded with no data: NBD_REPLY_TYPE_NONE with extended headers, else a
 * simple reply.
 * @internal
 */
export const ok = (form: Form, target: ServerCodec.ChunkTarget): Uint8Array =>
  form.extended ? ServerCodec.noneChunk(target) : ServerCodec.simpleReply(target.cookie, 0)

/**
 * The reply to a read: a simple reply with the data, or structured chunks (holes as OFFSET_HOLE unless the
 * client asked for DF; out of order, the data in two chunks, the second half first).
 * @internal
 */
export const read = (
  form: Form,
  target: ServerCodec.ChunkTarget,
  flags: number,
  offset: number,
  length: number,
  chunks: ReadonlyArray<Backend.ReadChunk>
): Array<Uint8Array> => {
  if (!form.structured) {
    const out: Array<Uint8Array> = [ServerCodec.simpleReply(target.cookie, 0)]
    pushBytes(out, chunks)
    return out
  }
  const df = (flags & CmdFlag.DF) !== 0
  const holes = !df && chunks.some(Backend.isZeroes)
  if (!holes) {
    if (form.outOfOrder && !df && length > 1) {
      // Two data chunks, the second half first: exercises a client's reassembly.
      const half = Math.floor(length / 2)
      const first: Array<Uint8Array> = []
      const second: Array<Uint8Array> = []
      pushBytes(first, sliceChunks(chunks, 0, half))
      pushBytes(second, sliceChunks(chunks, half, length))
      return [
        ServerCodec.offsetDataHeader(target, 0, offset + half, length - half),
        ...second,
        ServerCodec.offsetDataHeader(target, DONE, offset, half),
        ...first
      ]
    }
    const out: Array<Uint8Array> = [ServerCodec.offsetDataHeader(target, DONE, offset, length)]
    pushBytes(out, chunks)
    return out
  }
  // Data runs as OFFSET_DATA, zero runs as OFFSET_HOLE; the last chunk carries DONE.
  const out: Array<Uint8Array> = []
  let at = offset
  let index = 0
  while (index < chunks.length) {
    const chunk = chunks[index]!
    if (Backend.isZeroes(chunk)) {
      const last = index === chunks.length - 1
      out.push(ServerCodec.offsetHoleChunk(target, last ? DONE : 0, at, chunk.length))
      at += chunk.length
      index++
      continue
    }
    let runLength = 0
    let end = index
    while (end < chunks.length) {
      const c = chunks[end]!
      if (Backend.isZeroes(c)) break
      runLength += c.length
      end++
    }
    out.push(ServerCodec.offsetDataHeader(target, end === chunks.length ? DONE : 0, at, runLength))
    for (let i = index; i < end; i++) out.push(chunks[i] as Uint8Array)
    at += runLength
    index = end
  }
  return out
}

/**
 * The reply to a block-status request: base:allocation's extents clipped to `length`, one with REQ_ONE, at
 * most the descriptor limit.
 * @internal
 */
export const blockStatus = (
  target: ServerCodec.ChunkTarget,
  flags: number,
  length: number,
  extents: ReadonlyArray<Backend.Extent>
): Uint8Array => {
  const reqOne = (flags & CmdFlag.REQ_ONE) !== 0
  const out: Array<ServerCodec.Extent> = []
  let covered = 0
  for (const e of extents) {
    if (e.length <= 0) continue
    const l = Math.min(e.length, length - covered)
    if (l <= 0) break
    out.push({ length: l, flags: e.flags })
    covered += l
    if (reqOne || out.length >= Protocol.Limits.MAX_BLOCK_STATUS_DESCRIPTORS) break
  }
  if (out.length === 0) out.push({ length, flags: 0 })
  return ServerCodec.blockStatusChunk(target, DONE, Settings.BASE_ALLOCATION_ID, out)
}

const pushZeroes = (out: Array<Uint8Array>, length: number): void => {
  while (length > 0) {
    const n = Math.min(length, ZERO_BUFFER.length)
    out.push(ZERO_BUFFER.subarray(0, n))
    length -= n
  }
}

const pushBytes = (out: Array<Uint8Array>, chunks: ReadonlyArray<Backend.ReadChunk>): void => {
  for (const c of chunks) {
    if (Backend.isZeroes(c)) pushZeroes(out, c.length)
    else out.push(c)
  }
}

const sliceChunks = (chunks: ReadonlyArray<Backend.ReadChunk>, from: number, to: number): Array<Backend.ReadChunk> => {
  const out: Array<Backend.ReadChunk> = []
  let at = 0
  for (const c of chunks) {
    const len = Backend.isZeroes(c) ? c.length : c.length
    const start = Math.max(from, at)
    const end = Math.min(to, at + len)
    if (start < end) {
      out.push(Backend.isZeroes(c) ? Backend.zeroes(end - start) : c.subarray(start - at, end - at))
    }
    at += len
  }
  return out
}
