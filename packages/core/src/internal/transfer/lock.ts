/**
 * The lock of a transfer: what keeps seek and I/O on one file handle together, and what lets one of a copy's
 * workers at a time fetch the block-status map.
 */
import * as Effect from "effect/Effect"

/**
 * A lock that passes straight to the longest waiter. A lane's 64 workers queue on one for every piece of a
 * file, and Effect's semaphore wakes every waiter at each release (all but one go back to sleep): quadratic
 * in the waiters, which made a copy from or to a file spend a quarter of its time collecting garbage.
 */
export class Lock {
  private held = false
  private readonly waiting: Array<() => void> = []

  private readonly acquire = Effect.callback<void>((resume) => {
    if (!this.held) {
      this.held = true
      return resume(Effect.void)
    }
    const wake = () => resume(Effect.void)
    this.waiting.push(wake)
    return Effect.sync(() => {
      const i = this.waiting.indexOf(wake)
      if (i >= 0) this.waiting.splice(i, 1)
    })
  })

  private readonly release = Effect.sync(() => {
    const next = this.waiting.shift()
    // Still held: it belongs to the waiter now.
    if (next === undefined) this.held = false
    else next()
  })

  /** Runs `effect` holding the lock; waiting for it can be interrupted, and the lock is always given back. */
  with<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.andThen(restore(this.acquire), Effect.ensuring(restore(effect), this.release))
    )
  }
}
