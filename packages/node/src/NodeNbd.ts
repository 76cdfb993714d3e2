/**
 * Node transports for an NBD handle. Each gives the handle a connected `Socket.Socket`, so
 * `Nbd.aioConnectSocket` stays the one way in.
 *
 * @since 0.1.0
 */
import { Nbd, NbdUri } from "@effect-nbd/core"
import type { NbdError } from "@effect-nbd/core"
import * as Socket from "@effect/platform/Socket"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as NodeSocket from "./internal/socket.js"

/**
 * A `Socket` layer that connects to a Unix socket.
 * @since 0.1.0
 * @category layers
 */
export const layerUnix = (path: string): Layer.Layer<Socket.Socket> =>
  Layer.sync(Socket.Socket, () => NodeSocket.make({ path }))

/**
 * A `Socket` layer that connects over TCP (Nagle off, as libnbd sets TCP_NODELAY).
 * @since 0.1.0
 * @category layers
 */
export const layerTcp = (host: string, port: number): Layer.Layer<Socket.Socket> =>
  Layer.sync(Socket.Socket, () => NodeSocket.make({ host, port, noDelay: true }))

/**
 * Begins connecting to a Unix socket (nbd_aio_connect_unix).
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectUnix = (h: Nbd.Handle, path: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    yield* Nbd.aioConnectSocket(h).pipe(Effect.provide(layerUnix(path)))
    yield* Nbd.setTransportUri(
      h,
      NbdUri.format({ transport: { _tag: "Unix", path }, exportName: yield* Nbd.getExportName(h) })
    )
  })

/**
 * Connects to a Unix socket and waits for the handshake (nbd_connect_unix).
 * @since 0.1.0
 * @category connecting
 */
export const connectUnix = (h: Nbd.Handle, path: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.zipRight(aioConnectUnix(h, path), Nbd.awaitConnected(h))

/**
 * Begins connecting over TCP (nbd_aio_connect_tcp).
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectTcp = (h: Nbd.Handle, host: string, port: number): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    yield* Nbd.aioConnectSocket(h).pipe(Effect.provide(layerTcp(host, port)))
    yield* Nbd.setTransportUri(
      h,
      NbdUri.format({ transport: { _tag: "Tcp", host, port }, exportName: yield* Nbd.getExportName(h) })
    )
  })

/**
 * Connects over TCP and waits for the handshake (nbd_connect_tcp).
 * @since 0.1.0
 * @category connecting
 */
export const connectTcp = (h: Nbd.Handle, host: string, port: number): Effect.Effect<void, NbdError.NbdError> =>
  Effect.zipRight(aioConnectTcp(h, host, port), Nbd.awaitConnected(h))

/**
 * Begins connecting to an NBD URI (nbd_aio_connect_uri): the export name comes from the URI's path.
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectUri = (h: Nbd.Handle, uri: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    const parsed = yield* NbdUri.parse(uri)
    yield* Nbd.setExportName(h, parsed.exportName)
    if (parsed.tls) yield* Nbd.setTls(h, "require")
    const transport = parsed.transport
    yield* transport._tag === "Unix"
      ? aioConnectUnix(h, transport.path)
      : aioConnectTcp(h, transport.host, transport.port)
  })

/**
 * Connects to an NBD URI and waits for the handshake (nbd_connect_uri).
 * @since 0.1.0
 * @category connecting
 */
export const connectUri = (h: Nbd.Handle, uri: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.zipRight(aioConnectUri(h, uri), Nbd.awaitConnected(h))
