/**
 * Malformed replies on demand: what the server sends instead of (or besides) a correct reply when a
 * `malformed` fault fires, so a client's handling of each protocol violation can be tested.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"

/**
 * The kinds of malformed reply.
 * @internal
 */
export const kinds = [
  "wrong-cookie",
  "wrong-offset",
  "data-outside-request",
  "chunk-too-long",
  "no-done",
  "two-dones",
  "read-data-for-non-read",
  "hole-over-data",
  "error-zero",
  "huge-extent",
  "extents-past-request",
  "too-many-extents",
  "zero-length-extent",
  "non-advancing-extent",
  "unaligned-extents"
] as const

/** @internal */
export type Kind = (typeof kinds)[number]

/**
 * The command a kind is restricted to, if any: a kind about read data makes sense for reads only, one
 * about extents for block status only.
 * @internal
 */
export const onlyFor = (kind: Kind): "read" | "not-read" | "block-status" | undefined => {
  switch (kind) {
    case "data-outside-request":
    case "hole-over-data":
      return "read"
    case "read-data-for-non-read":
      return "not-read"
    case "huge-extent":
    case "extents-past-request":
    case "too-many-extents":
    case "zero-length-extent":
    case "non-advancing-extent":
    case "unaligned-extents":
      return "block-status"
    default:
      return undefined
  }
}

/** The reply forms a connection may have negotiated. */
export type Mode = "simple" | "structured" | "extended"

/** The request a malformed reply answers: its command, where it goes, and its range. */
export interface Target {
  readonly chunk: ServerCodec.ChunkTarget
  readonly type: number
  readonly offset: number
  readonly length: number
}

const DONE = Protocol.REPLY_FLAG_DONE
const { Cmd, ReplyType } = Protocol

/** A cookie no request used: the client's bits inverted. */
export const wrongCookie = (cookie: ServerCodec.Cookie): Uint8Array => {
  const out = new Uint8Array(8)
  if (typeof cookie === "bigint") new DataView(out.buffer).setBigUint64(0, cookie)
  else out.set(cookie)
  for (let i = 0; i < 8; i++) out[i] = ~out[i]! & 0xff
  return out
}

/** An offset that is not the request's (an extended reply must echo it). */
export const wrongOffset = (offset: number | bigint): number | bigint =>
  typeof offset === "bigint" ? offset ^ 1n : offset < Number.MAX_SAFE_INTEGER ? offset + 1 : offset - 1

/**
 * Whether a kind changes where the correct reply goes (cookie, echoed offset) rather than its content.
 * `wrong-offset` only exists with extended headers.
 */
export const readdresses = (kind: Kind, mode: Mode): boolean =>
  kind === "wrong-cookie" || (kind === "wrong-offset" && mode === "extended")

/** A second final reply to a request already answered: NONE with DONE, or a second simple reply. */
export const secondDone = (target: Target, mode: Mode): Uint8Array =>
  mode === "simple" ? ServerCodec.simpleReply(target.chunk.cookie, 0) : ServerCodec.noneChunk(target.chunk)

const blockStatus = (target: Target, flags: number, extents: ReadonlyArray<ServerCodec.Extent>): Uint8Array =>
  ServerCodec.blockStatusChunk(target.chunk, flags, 1, extents)

/** The most descriptors `too-many-extents` sends: enough to overflow a 64 KiB range, cheap to build. */
const MANY_EXTENTS = 65536 + 1

/** `count` descriptors whose lengths add up to `total`: ones, then the rest in the last. */
const manyExtents = (count: number, total: number): Array<ServerCodec.Extent> => {
  const one: ServerCodec.Extent = { length: 1, flags: 0 }
  const out = new Array<ServerCodec.Extent>(count).fill(one)
  out[count - 1] = { length: total - (count - 1), flags: 0 }
  return out
}

/**
 * The request's range as a 1-byte data extent, a hole that reads as zeroes, and a 1-byte data extent:
 * lengths no minimum block size above 1 divides.
 */
const unalignedExtents = (length: number): Array<ServerCodec.Extent> => {
  const hole = Protocol.STATE_HOLE | Protocol.STATE_ZERO
  if (length < 3)
    return length === 1
      ? [{ length: 1, flags: 0 }]
      : [
          { length: 1, flags: 0 },
          { length: 1, flags: hole }
        ]
  return [
    { length: 1, flags: 0 },
    { length: length - 2, flags: hole },
    { length: 1, flags: 0 }
  ]
}

/**
 * The bytes sent instead of the reply, for the kinds that replace it; undefined when the kind does not
 * replace the reply, or cannot be expressed in the negotiated mode (simple replies carry no chunks), in
 * which case the request is served as usual.
 */
export const replacement = (kind: Kind, target: Target, mode: Mode): ReadonlyArray<Uint8Array> | undefined => {
  if (mode === "simple") return undefined
  const { chunk, length, offset, type } = target
  switch (kind) {
    case "data-outside-request":
      // Right past the request's end.
      return ServerCodec.offsetDataChunk(chunk, DONE, offset + length, new Uint8Array(length))
    case "chunk-too-long": {
      const payload = Protocol.Limits.MAX_CHUNK_PAYLOAD + 1
      const chunkType =
        type === Cmd.READ
          ? ReplyType.OFFSET_DATA
          : type === Cmd.BLOCK_STATUS
            ? mode === "extended"
              ? ReplyType.BLOCK_STATUS_EXT
              : ReplyType.BLOCK_STATUS
            : ReplyType.ERROR
      // The header only: a client that believed it would wait for 64 MiB that never come.
      return [ServerCodec.chunkHeader(chunk, DONE, chunkType, payload)]
    }
    case "no-done":
      if (type === Cmd.READ) return ServerCodec.offsetDataChunk(chunk, 0, offset, new Uint8Array(length))
      if (type === Cmd.BLOCK_STATUS) return [blockStatus(target, 0, [{ length, flags: 0 }])]
      return [ServerCodec.chunkHeader(chunk, 0, ReplyType.NONE, 0)]
    case "read-data-for-non-read":
      return ServerCodec.offsetDataChunk(chunk, DONE, offset, new Uint8Array(16))
    case "hole-over-data":
      return [
        ...ServerCodec.offsetDataChunk(chunk, 0, offset, new Uint8Array(length)),
        ServerCodec.offsetHoleChunk(chunk, DONE, offset, length)
      ]
    case "error-zero":
      return [ServerCodec.errorChunk(chunk, DONE, 0, "an error chunk whose error is 0")]
    case "huge-extent":
      // Near 2^32: past any small request. With 64-bit descriptors, 2^32 + length, which a client that
      // truncates to 32 bits would mistake for exactly the request.
      return [blockStatus(target, DONE, [{ length: mode === "extended" ? 2 ** 32 + length : 0xffffffff, flags: 0 }])]
    case "extents-past-request":
      return [
        blockStatus(target, DONE, [
          { length, flags: 0 },
          { length: 4096, flags: Protocol.STATE_HOLE | Protocol.STATE_ZERO }
        ])
      ]
    case "too-many-extents": {
      // One descriptor more than the range has bytes: they cannot all fit. Past 64 KiB, as many as for
      // 64 KiB, the last running past the range, so one reply stays small and quick to build.
      const count = Math.min(length + 1, MANY_EXTENTS)
      return [blockStatus(target, DONE, manyExtents(count, length + 1))]
    }
    case "zero-length-extent":
      return [
        blockStatus(target, DONE, [
          { length: 0, flags: 0 },
          { length, flags: 0 }
        ])
      ]
    case "non-advancing-extent": {
      // Progress first, then a descriptor that covers nothing.
      const half = Math.max(1, Math.floor(length / 2))
      const extents: Array<ServerCodec.Extent> = [
        { length: half, flags: 0 },
        { length: 0, flags: Protocol.STATE_HOLE }
      ]
      if (length > half) extents.push({ length: length - half, flags: 0 })
      return [blockStatus(target, DONE, extents)]
    }
    case "unaligned-extents":
      return [blockStatus(target, DONE, unalignedExtents(length))]
    default:
      return undefined
  }
}
