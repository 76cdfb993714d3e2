/**
 * A command between the moment it is queued and its last reply chunk: what the engine needs to frame its
 * request, match its replies, put read data where the caller wants it, and settle it once.
 */
import type * as ClientCodec from "../../ClientCodec.js"
import * as NbdError from "../../NbdError.js"
import * as Protocol from "../../Protocol.js"
import type { OnBlockStatus } from "./blockStatus.js"
import type { Completion } from "./completion.js"

/** One chunk of a structured read (data, hole or error), as the chunk list records it. */
export type ReadChunk = ClientCodec.ReadChunk

/** What a command waiting for its reply holds. */
export interface Pending {
  readonly type: number
  readonly cookie: number
  readonly offset: number
  readonly count: number
  /** Where read data goes; cleared when the caller stops waiting, so late data is dropped. */
  buffer: Uint8Array | undefined
  /**
   * A read that makes its own buffer, when its first data arrives: the buffer then lives from the reply to
   * the caller, not for the whole round trip, and far fewer outlive a young-generation collection.
   */
  readonly fresh: boolean
  /** The first error a reply reported. */
  error: NbdError.NbdError | undefined
  dataSeen: number
  /** Set once the request is handed to the socket. */
  sent: boolean
  /** Set when the command was failed before being sent: it is never framed. */
  abandoned: boolean
  /** Set when the caller stopped waiting: a reconnect does not replay it. */
  cancelled: boolean
  /** The request as encoded, and its payload: what a reconnect sends again. */
  readonly request: Uint8Array
  readonly payload: Uint8Array | undefined
  /** Forgets what a reply delivered so far (chunks, block status entries), before a replay. */
  readonly restart: (() => void) | undefined
  readonly operation: string
  readonly completion: Completion
  /** For structured reads: the chunks as they arrived (data, holes, errors with offsets). */
  readonly chunks: Array<ReadChunk> | undefined
  /** For block status: receives each BLOCK_STATUS or BLOCK_STATUS_EXT chunk payload. */
  readonly onBlockStatus: OnBlockStatus | undefined
}

/** A command as the engine takes it, besides its range: what to send, and where its replies go. */
export interface CommandRequest {
  readonly operation: string
  readonly type: number
  readonly flags: number
  /** The request's length field when it is not the count (block status with a filter payload). */
  readonly requestLength?: number | undefined
  readonly payload?: Uint8Array | undefined
  /** For reads: the buffer the data goes into. */
  readonly buffer?: Uint8Array | undefined
  /** For reads without a buffer: make one when the data arrives, for the caller to keep. */
  readonly fresh?: boolean | undefined
  readonly chunks?: Array<ReadChunk> | undefined
  readonly onBlockStatus?: OnBlockStatus | undefined
  /** Forgets what the block-status collector gathered, before a reconnect replays the command. */
  readonly restart?: (() => void) | undefined
}

/** The caller stopped waiting: the reply is still read and dropped, so the stream stays in step; a reconnect does not replay it. */
export const release = (pending: Pending): void => {
  pending.buffer = undefined
  pending.cancelled = true
}

/** A fresh read's buffer, made zeroed when it is first needed; undefined once the caller has stopped waiting. */
export const bufferOf = (p: Pending): Uint8Array | undefined => {
  if (p.buffer === undefined && p.fresh && !p.cancelled) p.buffer = new Uint8Array(p.count)
  return p.buffer
}

/**
 * A fresh read's buffer for data that lands at `at`, `length` bytes. Only data that covers the whole read may
 * land in memory that was not cleared (`allocate`): the read then succeeds only when all of it was copied in
 * (any further data or hole pushes the count past the request and fails it), so no byte of old memory can
 * reach the caller. Anything else gets zeroed memory, because duplicate or overlapping chunks could leave
 * bytes unwritten while the count still adds up.
 */
export const bufferFor = (p: Pending, at: number, length: number, allocate: Allocate): Uint8Array | undefined => {
  if (p.buffer === undefined && p.fresh && !p.cancelled && at === 0 && length === p.count) p.buffer = allocate(p.count)
  return bufferOf(p)
}

/**
 * Memory for a fresh read, which may hold old bytes: a buffer of its own (its `buffer` is exactly `count`
 * bytes, shared with nothing), for `bufferFor` to fill whole before anyone sees it.
 */
export type Allocate = (count: number) => Uint8Array

/** A command error carrying the server's errno. */
export const serverError = (p: Pending, wire: number, message: string): NbdError.CommandError => {
  const name = Protocol.commandName(p.type)
  return new NbdError.CommandError({
    errno: Protocol.errnoOfWire(wire),
    operation: p.operation,
    command: name,
    message: `${name}: command failed${message ? `: ${message}` : ""}`
  })
}

/** A reply that broke the protocol for one command: that command fails with EPROTO, the stream goes on. */
export const commandProtocolError = (p: Pending, message: string): NbdError.ProtocolError =>
  new NbdError.ProtocolError({ errno: "EPROTO", operation: p.operation, message })
