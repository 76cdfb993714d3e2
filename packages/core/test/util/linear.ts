/** Bytes the linear-time guards push one at a time. */
export const BYTES = 200_000

/** O(n) takes milliseconds for BYTES; the quadratic buffering these guards catch took 9 to 15 s. */
export const BOUND_MS = 1000

/**
 * The best of up to three runs, in milliseconds: a complexity guard, so a busy machine's noise should not trip
 * it. `run` gets a `tick` to call as it goes, which gives up once a run is past the bound, so a quadratic
 * decoder fails in a second instead of a minute.
 */
export const bestOf3 = (run: (tick: () => void) => void): number => {
  let best = Infinity
  for (let i = 0; i < 3 && best >= BOUND_MS; i++) {
    const start = performance.now()
    let ticks = 0
    const tick = () => {
      if ((++ticks & 1023) === 0 && performance.now() - start > BOUND_MS)
        throw new Error(`still decoding after ${BOUND_MS} ms: not linear`)
    }
    try {
      run(tick)
    } catch (e) {
      if (i === 2) throw e
      continue
    }
    best = Math.min(best, performance.now() - start)
  }
  return best
}
