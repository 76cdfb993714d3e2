/**
 * The planner: what a transfer does next, as pieces of a range in offset order, cut from the source's
 * block-status map when it has one (zero extents, then never read) or in plain request-sized pieces of data.
 */
import * as Effect from "effect/Effect"
import { MAX_STATUS } from "./limits.js"
import { Lock } from "./lock.js"
import type { Item, Reader } from "./sides.js"

/** Hands out the pieces of `[start, end)` in offset order: data of at most `requestSize`, zero extents of at most `maxZero`. */
export class Planner<E> {
  private queue: ReadonlyArray<Item> = []
  private head = 0
  /** Without extents, the next offset to hand out; with them, where the known map ends. */
  private known: number
  private readonly lock = new Lock()
  constructor(
    private readonly extents: Reader<E>["extents"],
    start: number,
    private readonly end: number,
    private readonly requestSize: number,
    private readonly maxZero: number
  ) {
    this.known = start
  }

  /** The next piece, undefined at the end, or null when the map must be fetched first (`refill`). */
  takeSync(): Item | undefined | null {
    if (this.extents === undefined) {
      const at = this.known
      if (at >= this.end) return undefined
      const length = Math.min(this.requestSize, this.end - at)
      this.known = at + length
      return { offset: at, length, zero: false }
    }
    if (this.head >= this.queue.length) return this.known >= this.end ? undefined : null
    const item = this.queue[this.head]!
    const length = Math.min(item.length, item.zero ? this.maxZero : this.requestSize)
    if (length === item.length) this.head++
    else
      (this.queue as Array<Item>)[this.head] = {
        offset: item.offset + length,
        length: item.length - length,
        zero: item.zero
      }
    return length === item.length ? item : { offset: item.offset, length, zero: item.zero }
  }

  /** Fetches the next part of the map once the last is used up. */
  readonly refill: Effect.Effect<void, E> = Effect.suspend(() => {
    if (this.extents === undefined || this.head < this.queue.length || this.known >= this.end) return Effect.void
    const from = this.known
    return Effect.map(this.extents(from, Math.min(MAX_STATUS, this.end - from)), (items) => {
      this.queue = [...items]
      this.head = 0
      const last = items[items.length - 1]!
      this.known = last.offset + last.length
    })
  })

  /** The next piece for one of many workers: the map is fetched by one of them at a time. */
  readonly next: Effect.Effect<Item | undefined, E> = Effect.suspend(() => {
    const item = this.takeSync()
    return item !== null ? Effect.succeed(item) : Effect.andThen(this.lock.with(this.refill), this.next)
  })
}
