import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import * as HandleState from "../../HandleState.js"

/** A change as published: the new state, numbered in the order the changes were made. */
interface Change {
  readonly version: number
  readonly state: HandleState.HandleState
}

/**
 * The handle's lifecycle state, held once. The wrapper's state check, the commands' checks and the
 * handle's own decisions read it synchronously (`now`), at no cost of a step; `Nbd.state` and the predicates
 * read it as an effect (`get`); `Nbd.stateChanges` and the debug log stream it (`changes`).
 *
 * Every change goes through `modify`, which reads, decides, writes and publishes in one synchronous step:
 * nothing can come between the read and the write, and changes are published in the order they were made.
 * (A `SubscriptionRef` cannot be read without running an effect, which every call would pay for.)
 */
export class StateCell {
  private current: HandleState.HandleState = HandleState.Created
  /** How many changes have been made: the number of the last one published. */
  private version = 0

  private constructor(private readonly published: PubSub.PubSub<Change>) {}

  /** A cell in the Created state. */
  static readonly make: Effect.Effect<StateCell> = Effect.map(
    PubSub.unbounded<Change>(),
    (published) => new StateCell(published)
  )

  /** The state, read now. */
  get now(): HandleState.HandleState {
    return this.current
  }

  /** The state, read when the effect runs. */
  readonly get: Effect.Effect<HandleState.HandleState> = Effect.sync(() => this.current)

  /**
   * Moves the state by `f`, in one step, and answers what `f` answered. `f` giving back the state it was
   * given changes nothing and publishes nothing.
   */
  modify<A>(f: (s: HandleState.HandleState) => readonly [A, HandleState.HandleState]): Effect.Effect<A> {
    return Effect.sync(() => this.modifyUnsafe(f))
  }

  /** `modify`, done at once rather than as an effect, for a step that cannot wait for a fiber. */
  modifyUnsafe<A>(f: (s: HandleState.HandleState) => readonly [A, HandleState.HandleState]): A {
    const [answer, next] = f(this.current)
    if (next !== this.current) {
      this.current = next
      this.version += 1
      // Offered in the step that made the change (an unbounded PubSub always takes it), so subscribers see
      // the changes in the order they were made.
      PubSub.publishUnsafe(this.published, { version: this.version, state: next })
    }
    return answer
  }

  /**
   * The state as it is, then each change. The subscription is taken first and the state read after: a change
   * made between the two is in both, and its number tells the stream to skip it.
   */
  get changes(): Stream.Stream<HandleState.HandleState> {
    return Stream.unwrap(
      Effect.map(PubSub.subscribe(this.published), (subscription) => {
        const seen = this.version
        return Stream.concat(
          Stream.make(this.current),
          Stream.fromSubscription(subscription).pipe(
            Stream.filter((change) => change.version > seen),
            Stream.map((change) => change.state)
          )
        )
      })
    )
  }
}
