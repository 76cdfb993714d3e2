/**
 * The progress of a transfer: bytes done (data and zeroes apart), the total when known, and the average rate
 * since it began, which NbdCopy reports and copyWithProgress streams.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"

/** What a transfer has done so far. */
export class Tracker {
  bytes = 0
  dataBytes = 0
  zeroBytes = 0
  total: number | undefined
  startedAt = 0
  data(n: number): void {
    this.bytes += n
    this.dataBytes += n
  }
  zero(n: number): void {
    this.bytes += n
    this.zeroBytes += n
  }
  readonly begin: Effect.Effect<void> = Effect.map(Clock.currentTimeMillis, (now) => {
    this.startedAt = now
  })
  /** Bytes done, the total when known, and the average rate in bytes per second. */
  readonly snapshot: Effect.Effect<{ bytes: bigint; total: bigint | undefined; rate: number }> = Effect.map(
    Clock.currentTimeMillis,
    (now) => {
      const seconds = (now - this.startedAt) / 1000
      return {
        bytes: BigInt(this.bytes),
        total: this.total === undefined ? undefined : BigInt(this.total),
        rate: seconds > 0 ? this.bytes / seconds : 0
      }
    }
  )
}
