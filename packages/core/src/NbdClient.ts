/**
 * A connected handle as a service. Application code asks for `NbdClient` and calls `Nbd.*` on the handle
 * it gives; which server, which transport and which settings is the layer's business, so a test swaps the
 * layer (a real nbdkit, the in-process `TestServer`) and leaves the code alone. The model is @effect/sql's
 * `PgClient.layer`: the layer connects when it is built and closes the connection when it is released.
 *
 * `NodeNbd.layer(uri)` is the layer for Node; `layerFrom` builds one from any connect call, `layerSocket` from
 * any layer that gives a `Socket` (the platform's own, or a transport of @effect-nbd/node).
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Socket from "effect/socket/Socket"
import * as Nbd from "./Nbd.js"
import type * as NbdError from "./NbdError.js"

/**
 * The service of a connected handle: Ready (Negotiating when the settings ask for option mode) from the
 * moment the layer is built until it is released.
 *
 * @example
 * ```ts
 * import { Nbd, NbdClient } from "@effect-nbd/core"
 * import * as Effect from "effect/Effect"
 *
 * // Depends on the tag only: any layer that gives an NbdClient runs it.
 * const firstSector = Effect.gen(function* () {
 *   const h = yield* NbdClient.NbdClient
 *   return yield* Nbd.pread(h, 512, 0)
 * })
 * ```
 * @since 0.2.0
 * @category tags
 */
export class NbdClient extends Context.Service<NbdClient, Nbd.Handle>()("@effect-nbd/core/NbdClient") {}

/**
 * Makes a handle with `settings`, runs `connect` on it and waits for the handshake: the handle, connected,
 * for as long as the scope lasts (closing the scope disconnects it). `connect` may be a blocking connect
 * (`NodeNbd.connectUri`) or its aio form; a connect that fails fails this with its error.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = <R>(
  connect: (h: Nbd.Handle) => Effect.Effect<void, NbdError.NbdError, R>,
  settings: Nbd.Settings = {}
): Effect.Effect<Nbd.Handle, NbdError.NbdError, Scope.Scope | R> =>
  Effect.gen(function* () {
    const h = yield* Nbd.make(settings)
    yield* connect(h)
    yield* Nbd.awaitConnected(h)
    return h
  })

/**
 * A layer of `NbdClient` from any connect call: the handle connects when the layer is built and closes
 * when it is released. What `connect` needs (a `Socket`, say) the layer needs.
 *
 * @example
 * ```ts
 * import { NbdClient } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 *
 * // nbdkit as a subprocess on a socket pair, for as long as the layer lives.
 * const nbdkitMemory = NbdClient.layerFrom(
 *   (h) => NodeNbd.connectCommand(h, ["nbdkit", "-s", "--exit-with-parent", "memory", "64M"]),
 *   { handleName: "scratch" }
 * )
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerFrom = <R>(
  connect: (h: Nbd.Handle) => Effect.Effect<void, NbdError.NbdError, R>,
  settings: Nbd.Settings = {}
): Layer.Layer<NbdClient, NbdError.NbdError, Exclude<R, Scope.Scope>> =>
  Layer.effect(NbdClient, make(connect, settings))

/**
 * A layer of `NbdClient` on the socket a `Socket` layer gives (`Nbd.connectSocket`): provide it with a
 * platform's socket layer, or a transport of @effect-nbd/node (whose `Transport` service then also offers
 * TLS, `getUri` and the subprocess calls).
 *
 * @example
 * ```ts
 * import { NbdClient } from "@effect-nbd/core"
 * import * as NodeSocket from "@effect/platform-node/NodeSocket"
 * import * as Layer from "effect/Layer"
 *
 * const client = NbdClient.layerSocket({ exportName: "disk" }).pipe(
 *   Layer.provide(NodeSocket.layerNet({ host: "localhost", port: 10809 }))
 * )
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layerSocket = (settings: Nbd.Settings = {}): Layer.Layer<NbdClient, NbdError.NbdError, Socket.Socket> =>
  layerFrom((h) => Nbd.connectSocket(h), settings)
