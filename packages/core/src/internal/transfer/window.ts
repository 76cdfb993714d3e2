/**
 * The window of an ordered transfer: I/O started in order and awaited oldest first, counted as it is taken,
 * which both the ordered stream and the sequential sink keep.
 */
import * as Effect from "effect/Effect"
import type { Tracker } from "./tracker.js"

/**
 * Started I/O in order, awaited oldest first. A slot is let go as soon as it is taken, and the front is
 * cut off as it grows, so a window that never empties (a stream topped up after every element) holds only
 * what is in flight, not everything it ever started.
 */
export class Window<E, A> {
  private waits: Array<Effect.Effect<A, E> | undefined> = []
  private lengths: Array<number> = []
  private zeroes: Array<boolean> = []
  private head = 0
  get size(): number {
    return this.waits.length - this.head
  }
  push(wait: Effect.Effect<A, E>, length: number, zero: boolean): void {
    this.waits.push(wait)
    this.lengths.push(length)
    this.zeroes.push(zero)
  }
  /** Waits for the oldest and counts it. */
  shift(tracker: Tracker | undefined): Effect.Effect<A, E> {
    const i = this.head++
    const wait = this.waits[i]!
    const length = this.lengths[i]!
    const zero = this.zeroes[i]!
    this.waits[i] = undefined
    if (this.head === this.waits.length) this.reset()
    else if (this.head >= 1024 && this.head * 2 >= this.waits.length) this.compact()
    if (tracker === undefined) return wait
    return Effect.map(wait, (value) => {
      if (zero) tracker.zero(length)
      else tracker.data(length)
      return value
    })
  }
  private reset(): void {
    this.waits = []
    this.lengths = []
    this.zeroes = []
    this.head = 0
  }
  private compact(): void {
    this.waits = this.waits.slice(this.head)
    this.lengths = this.lengths.slice(this.head)
    this.zeroes = this.zeroes.slice(this.head)
    this.head = 0
  }
}
