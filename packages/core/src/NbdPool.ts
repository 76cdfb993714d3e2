/**
 * Multi-conn: a pool of handles to one export. It opens several connections only when the server
 * advertises CAN_MULTI_CONN (so every connection sees the others' writes and a flush on one covers all),
 * else one, and spreads commands over them. `NbdStream` and `NbdCopy` accept a pool wherever they take a
 * handle.
 *
 * @example
 * import { Nbd, NbdPool } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const pool = yield* NbdPool.make({
 *       connections: 4,
 *       connect: (h) => NodeNbd.connectUri(h, "nbd+unix:///?socket=/tmp/nbd.sock")
 *     })
 *     yield* NbdPool.pwrite(pool, new Uint8Array(4096).fill(1), 0)
 *     return yield* NbdPool.pread(pool, 4096, 0)
 *   })
 * )
 *
 * @since 0.2.0
 */
import type * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import type { Pipeable } from "effect/Pipeable"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/api/nbdPool.js"
import * as Nbd from "./Nbd.js"
import type * as NbdError from "./NbdError.js"

/**
 * @since 0.2.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

/**
 * @since 0.2.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Connected handles to one export, the first one first.
 * @since 0.2.0
 * @category models
 */
export interface Pool extends Pipeable {
  readonly [TypeId]: TypeId
  readonly handles: Arr.NonEmptyReadonlyArray<Nbd.Handle>
}

/**
 * What the whole-export calls (`NbdStream`, `NbdCopy`) accept: one handle, or a pool.
 * @since 0.2.0
 * @category models
 */
export type Target = Nbd.Handle | Pool

/**
 * The options of `make`.
 * @since 0.2.0
 * @category models
 */
export interface MakeOptions<E, R> {
  /** Connects one new handle (index 0 first, then the others), e.g. `(h) => NodeNbd.connectUri(h, uri)`. */
  readonly connect: (handle: Nbd.Handle, index: number) => Effect.Effect<void, E, R>
  /** How many connections to open when the server allows multi-conn (1 to 64, default 4, nbdcopy's). */
  readonly connections?: number | undefined
  /** The settings each handle is made with (`Nbd.make`), e.g. `{ metaContexts: ["base:allocation"] }`. */
  readonly settings?: Nbd.Settings | undefined
}

/**
 * Makes and connects the first handle, then, when its server advertises CAN_MULTI_CONN
 * (`Nbd.canMultiConn`), `connections - 1` more at once; otherwise the pool holds that one handle. The
 * handles close together when the scope closes. A failed connect fails the pool and closes what was open.
 * @since 0.2.0
 * @category constructors
 */
export const make: <E, R>(options: MakeOptions<E, R>) => Effect.Effect<Pool, E | NbdError.NbdError, R | Scope.Scope> =
  internal.make

/**
 * A pool of handles connected elsewhere, used as given (their owner checks multi-conn and closes them).
 * @since 0.2.0
 * @category constructors
 */
export const fromHandles: (handles: Arr.NonEmptyReadonlyArray<Nbd.Handle>) => Pool = internal.fromHandles

/**
 * @since 0.2.0
 * @category guards
 */
export const isPool: (u: unknown) => u is Pool = internal.isPool

/**
 * The number of connections in the pool.
 * @since 0.2.0
 * @category getters
 */
export const size = (pool: Pool): number => pool.handles.length

/**
 * Runs `f` on the handle with the fewest of the pool's commands in flight (ties round robin), counting it
 * as in flight until `f` ends.
 * @since 0.2.0
 * @category combinators
 */
export const use: <A, E, R>(pool: Pool, f: (handle: Nbd.Handle) => Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> =
  internal.use

/**
 * `Nbd.pread` on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const pread = (
  pool: Pool,
  count: number,
  offset: number | bigint,
  options?: Nbd.ReadOptions
): Effect.Effect<Uint8Array, NbdError.NbdError> => use(pool, (h) => Nbd.pread(h, count, offset, options))

/**
 * `Nbd.pwrite` on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const pwrite = (
  pool: Pool,
  data: Uint8Array,
  offset: number | bigint,
  options?: Nbd.FlagOptions
): Effect.Effect<void, NbdError.NbdError> => use(pool, (h) => Nbd.pwrite(h, data, offset, options))

/**
 * `Nbd.zero` (NBD_CMD_WRITE_ZEROES) on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const zero = (
  pool: Pool,
  count: number | bigint,
  offset: number | bigint,
  options?: Nbd.FlagOptions
): Effect.Effect<void, NbdError.NbdError> => use(pool, (h) => Nbd.zero(h, count, offset, options))

/**
 * `Nbd.trim` on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const trim = (
  pool: Pool,
  count: number | bigint,
  offset: number | bigint,
  options?: Nbd.FlagOptions
): Effect.Effect<void, NbdError.NbdError> => use(pool, (h) => Nbd.trim(h, count, offset, options))

/**
 * `Nbd.cache` on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const cache = (
  pool: Pool,
  count: number | bigint,
  offset: number | bigint,
  options?: Nbd.FlagOptions
): Effect.Effect<void, NbdError.NbdError> => use(pool, (h) => Nbd.cache(h, count, offset, options))

/**
 * `Nbd.blockStatus` on the least busy connection.
 * @since 0.2.0
 * @category commands
 */
export const blockStatus = (
  pool: Pool,
  count: number | bigint,
  offset: number | bigint,
  options?: Nbd.FlagOptions
): Effect.Effect<ReadonlyArray<Nbd.BlockStatusEntry>, NbdError.NbdError> =>
  use(pool, (h) => Nbd.blockStatus(h, count, offset, options))

/**
 * NBD_CMD_FLUSH on every connection at once: with multi-conn one flush covers the writes completed on all
 * of them, but a pool made by `fromHandles` may lack it.
 * @since 0.2.0
 * @category commands
 */
export const flush = (pool: Pool, options?: Nbd.FlagOptions): Effect.Effect<void, NbdError.NbdError> =>
  Effect.forEach(pool.handles, (h) => Nbd.flush(h, options), { concurrency: "unbounded", discard: true })
