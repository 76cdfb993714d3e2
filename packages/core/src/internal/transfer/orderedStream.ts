/**
 * A reader as an ordered stream (NbdStream.readStream, and a copy from a random-access source into a sink):
 * reads started ahead round robin over the lanes, handed out in offset order.
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Pull from "effect/Pull"
import * as Stream from "effect/Stream"
import { Planner } from "./planner.js"
import { abandonAll, InFlight, type Reader } from "./sides.js"
import type { Tracker } from "./tracker.js"
import { Window } from "./window.js"

/** The options of an ordered read. */
export interface OrderedOptions {
  readonly start: number
  readonly end: number
  readonly requestSize: number
  /** Requests in flight in all. */
  readonly inFlight: number
  readonly tracker?: Tracker | undefined
}

/**
 * A reader as an ordered stream of fresh buffers: up to `inFlight` reads started ahead (round robin over
 * the lanes), the oldest awaited first; zero extents come out as zeroed buffers without a read. Its state
 * is made when the stream runs, so every run reads anew.
 */
export const orderedStream = <E>(reader: Reader<E>, options: OrderedOptions): Stream.Stream<Uint8Array, E> =>
  Stream.suspend(() => {
    const requestSize = Math.min(options.requestSize, reader.maxRequest)
    const planner = new Planner(reader.extents, options.start, options.end, requestSize, requestSize)
    const window = new Window<E, Uint8Array>()
    const inFlight = new Set<InFlight<E, Uint8Array>>()
    const tracker = options.tracker
    let lane = 0
    const read = (lane: number, offset: number, length: number): Effect.Effect<Uint8Array, E> =>
      new InFlight<E, Uint8Array>(inFlight).begin((done) => reader.read(lane, offset, length, "fresh", done)).wait
    const fill: Effect.Effect<void, E> = Effect.gen(function* () {
      while (window.size < options.inFlight) {
        const item = planner.takeSync()
        if (item === undefined) return
        if (item === null) {
          yield* planner.refill
          continue
        }
        if (item.zero) window.push(Effect.succeed(new Uint8Array(item.length)), item.length, true)
        else {
          window.push(read(lane, item.offset, item.length), item.length, false)
          lane = (lane + 1) % reader.lanes
        }
      }
    })
    const pull: Pull.Pull<Arr.NonEmptyReadonlyArray<Uint8Array>, E> = Effect.flatMap(
      fill,
      (): Pull.Pull<Arr.NonEmptyReadonlyArray<Uint8Array>, E> =>
        window.size === 0 ? Cause.done() : Effect.map(window.shift(tracker), Arr.of)
    )
    // Reads started ahead and never taken (the stream ended early, or was interrupted) are stopped, and file
    // reads waited for, before the source can be closed.
    return Stream.ensuring(Stream.fromPull(Effect.succeed(pull)), abandonAll(inFlight))
  })
