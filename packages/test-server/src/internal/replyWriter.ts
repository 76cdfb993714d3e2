/**
 * The one writer of a connection's replies. What is queued during one turn goes out in one corked write at
 * its end, from a microtask: no fiber step per batch. Out of order, the batch waits for the turn's I/O, so
 * more replies gather to be reordered.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Net from "node:net"
import * as Flow from "./flow.js"

/** A reply's buffers, or a marker to complete once everything queued before it is handed to the socket. */
export type Outgoing = ReadonlyArray<Uint8Array> | Deferred.Deferred<void>

const isMarker = (item: Outgoing): item is Deferred.Deferred<void> => Deferred.isDeferred(item)

/** @internal */
export class ReplyWriter {
  private queue: Array<Outgoing> = []
  private scheduled = false
  /** The socket is over its high-water mark: nothing more is written until it drains. */
  private blocked = false
  private closed = false

  constructor(
    /** The socket of the moment: the accepted one, then its TLS layer after STARTTLS. */
    private readonly socket: () => Net.Socket,
    private readonly flow: Flow.Flow,
    private readonly outOfOrder: boolean
  ) {}

  push(item: Outgoing): void {
    if (this.closed) return
    this.queue.push(item)
    this.schedule()
  }

  /** The connection is over: what is queued is dropped, and nothing more is written. */
  close(): void {
    this.closed = true
    this.queue = []
  }

  private schedule(): void {
    if (this.scheduled || this.blocked || this.closed) return
    this.scheduled = true
    if (this.outOfOrder) setImmediate(this.flush)
    else queueMicrotask(this.flush)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    if (this.closed || this.queue.length === 0) return
    const items = this.outOfOrder ? reorder(this.queue) : this.queue
    this.queue = []
    const conn = this.socket()
    const markers: Array<Deferred.Deferred<void>> = []
    let cost = 0
    let last: Uint8Array | undefined
    conn.cork()
    for (const item of items) {
      if (isMarker(item)) {
        markers.push(item)
        continue
      }
      cost += Flow.replyCost(item)
      for (const buf of item) {
        if (last !== undefined) conn.write(last)
        last = buf
      }
    }
    // The batch's cost is paid back once its last byte is flushed (callbacks run in write order).
    const flow = this.flow
    if (last !== undefined) conn.write(last, () => flow.flushed(cost))
    else if (cost > 0) flow.flushed(cost)
    conn.uncork()
    for (const marker of markers) Deferred.doneUnsafe(marker, Effect.void)
    if (conn.writableNeedDrain) this.waitForDrain(conn)
  }

  private waitForDrain(conn: Net.Socket): void {
    this.blocked = true
    const done = (): void => {
      conn.off("drain", done)
      conn.off("close", done)
      this.blocked = false
      if (this.queue.length > 0) this.schedule()
    }
    conn.on("drain", done)
    conn.on("close", done)
  }
}

/** Out-of-order mode: replies in reverse, markers last. */
const reorder = (batch: ReadonlyArray<Outgoing>): ReadonlyArray<Outgoing> => {
  const replies = batch.filter((item) => !isMarker(item))
  const markers = batch.filter(isMarker)
  return [...replies.reverse(), ...markers]
}
