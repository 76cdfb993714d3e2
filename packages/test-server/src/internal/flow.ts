/**
 * Backpressure for one connection, as nbdkit has it: the server reads a client's requests only while what
 * it owes that client stays under a bound, so a client that never reads its replies cannot grow the server.
 *
 * @internal
 */
import * as Protocol from "@effect-nbd/core/Protocol"

/**
 * The bounds of one connection.
 * @internal
 */
export interface Limits {
  /** Reply bytes owed (reserved for requests in service, queued, or written but not yet flushed). */
  readonly maxReplyBytes: number
  /** Requests in service (handed to a backend and not yet answered). */
  readonly maxRequests: number
}

/**
 * What holding one reply costs beyond its bytes (the arrays, views and queue entries around it): counted
 * with every reply, so a flood of 16-byte replies is bounded by memory, not by wire bytes alone.
 * @internal
 */
export const REPLY_OVERHEAD = 512

/** The bytes a reply counts for. */
export const replyCost = (out: ReadonlyArray<Uint8Array>): number => {
  let bytes = REPLY_OVERHEAD
  for (const b of out) bytes += b.length
  return bytes
}

/**
 * What a request may cost until it is answered, at most: its reply (a read's data, a block-status reply
 * of one descriptor per byte up to the descriptor limit) and a write's payload, which it holds.
 * @internal
 */
export const requestCost = (type: number, length: number | bigint, payload: Uint8Array | undefined): number => {
  let bytes = REPLY_OVERHEAD + 64 + (payload?.length ?? 0)
  const n = typeof length === "bigint" ? Number.MAX_SAFE_INTEGER : length
  if (type === Protocol.Cmd.READ) bytes += Math.min(n, Protocol.Limits.MAX_REQUEST_SIZE)
  else if (type === Protocol.Cmd.BLOCK_STATUS) bytes += 16 * Math.min(n, Protocol.Limits.MAX_BLOCK_STATUS_DESCRIPTORS)
  return bytes
}

/**
 * The account of one connection. The reader asks `full` before each message and pauses when it is; the
 * account calls `resume` once what is owed has fallen to half the bounds (hysteresis, so a busy client
 * does not pause and resume on every reply).
 * @internal
 */
export class Flow {
  private requests = 0
  private bytes = 0
  private paused = false

  constructor(
    readonly limits: Limits,
    private readonly onPause: () => void,
    private readonly onResume: () => void
  ) {}

  /** True when no more requests may be read for now. */
  get full(): boolean {
    return this.requests >= this.limits.maxRequests || this.bytes >= this.limits.maxReplyBytes
  }

  /** Reply bytes owed. */
  get owed(): number {
    return this.bytes
  }

  /** Requests in service. */
  get inService(): number {
    return this.requests
  }

  /** Stops reading; `resume` is called once the account has drained. */
  pause(): void {
    if (this.paused) return
    this.paused = true
    this.onPause()
  }

  /** A request goes to a backend, holding `bytes` until it is answered. */
  startService(bytes: number): void {
    this.requests += 1
    this.bytes += bytes
  }

  /** A request in service is answered (its reply is queued, and counted on its own). */
  endService(bytes: number): void {
    this.requests -= 1
    this.bytes -= bytes
    this.check()
  }

  /** A reply is queued for the writer. */
  queued(bytes: number): void {
    this.bytes += bytes
  }

  /** Replies the socket has flushed to the kernel. */
  flushed(bytes: number): void {
    this.bytes -= bytes
    this.check()
  }

  private check(): void {
    if (!this.paused) return
    if (this.requests > this.limits.maxRequests / 2 || this.bytes > this.limits.maxReplyBytes / 2) return
    this.paused = false
    this.onResume()
  }
}
