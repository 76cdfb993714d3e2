import type * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import { pipeArguments } from "effect/Pipeable"
import * as Predicate from "effect/Predicate"
import * as Scope from "effect/Scope"
import * as Nbd from "../../Nbd.js"
import type * as NbdError from "../../NbdError.js"
import type * as NbdPool from "../../NbdPool.js"
import { invalidArgument } from "../engine/arguments.js"

export const TypeId: NbdPool.TypeId = Symbol.for("@effect-nbd/core/NbdPool") as NbdPool.TypeId

/** nbdcopy's default number of connections. */
export const DEFAULT_CONNECTIONS = 4

/** The most connections a pool opens. */
export const MAX_CONNECTIONS = 64

/** Handles to one export, with a count of the pool's own commands in flight on each. */
export class PoolImpl implements NbdPool.Pool {
  readonly [TypeId]: NbdPool.TypeId = TypeId
  readonly inFlight: Int32Array
  private next = 0
  constructor(readonly handles: Arr.NonEmptyReadonlyArray<Nbd.Handle>) {
    this.inFlight = new Int32Array(handles.length)
  }
  /** The index of the handle with the fewest pool commands in flight; ties go round robin. */
  pick(): number {
    const n = this.handles.length
    if (n === 1) return 0
    let best = this.next
    for (let k = 1; k < n; k++) {
      const i = (this.next + k) % n
      if (this.inFlight[i]! < this.inFlight[best]!) best = i
    }
    this.next = (best + 1) % n
    return best
  }
  pipe() {
    return pipeArguments(this, arguments)
  }
}

export const isPool = (u: unknown): u is NbdPool.Pool => Predicate.hasProperty(u, TypeId)

/** The handles behind a handle or a pool. */
export const handlesOf = (target: NbdPool.Target): Arr.NonEmptyReadonlyArray<Nbd.Handle> =>
  isPool(target) ? target.handles : [target]

/** Checks a count option: an integer between 1 and `max`. */
export const checkCount = (
  operation: string,
  name: string,
  value: number,
  max: number
): Effect.Effect<number, NbdError.InvalidArgumentError> =>
  Number.isInteger(value) && value >= 1 && value <= max
    ? Effect.succeed(value)
    : Effect.fail(invalidArgument(operation, `${name} must be an integer between 1 and ${max}, got ${value}`))

/** The options of `make`. */
export interface MakeOptions<E, R> {
  readonly connect: (handle: Nbd.Handle, index: number) => Effect.Effect<void, E, R>
  readonly connections?: number | undefined
  readonly settings?: Nbd.Settings | undefined
}

/**
 * Opens the first connection, then the others at once when its server advertises multi-conn. Every handle
 * lives in one child scope that closes them in parallel, so closing a pool waits for one graceful end, not N.
 */
export const make = <E, R>(
  options: MakeOptions<E, R>
): Effect.Effect<NbdPool.Pool, E | NbdError.NbdError, R | Scope.Scope> =>
  Effect.gen(function* () {
    const wanted = yield* checkCount("pool", "connections", options.connections ?? DEFAULT_CONNECTIONS, MAX_CONNECTIONS)
    const scope = yield* Scope.fork(yield* Effect.scope, "parallel")
    const open = (index: number) =>
      Effect.gen(function* () {
        const h = yield* Nbd.make(options.settings)
        yield* options.connect(h, index)
        return h
      }).pipe(Scope.provide(scope))
    const first = yield* open(0)
    const n = wanted > 1 && (yield* Nbd.canMultiConn(first)) ? wanted : 1
    const rest = yield* Effect.forEach(
      Array.from({ length: n - 1 }, (_, i) => i + 1),
      open,
      { concurrency: "unbounded" }
    )
    return new PoolImpl([first, ...rest])
  })

/** A pool of handles connected elsewhere. */
export const fromHandles = (handles: Arr.NonEmptyReadonlyArray<Nbd.Handle>): NbdPool.Pool =>
  new PoolImpl([handles[0], ...handles.slice(1)])

/** Runs `f` on the least busy handle, counting it as in flight while it runs. */
export const use = <A, E, R>(
  pool: NbdPool.Pool,
  f: (handle: Nbd.Handle) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    const impl = pool as PoolImpl
    const i = impl.pick()
    impl.inFlight[i]!++
    return Effect.ensuring(
      f(impl.handles[i]!),
      Effect.sync(() => {
        impl.inFlight[i]!--
      })
    )
  })
