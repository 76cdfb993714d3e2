/**
 * Node transports for an NBD handle. Each gives the handle a connected `Socket.Socket`, so
 * `Nbd.aioConnectSocket` stays the one way in: TCP (host names, every address in turn, IPv6, service
 * names), Unix sockets, an already-connected file descriptor, a subprocess on a socket pair (`nbdkit -s`),
 * systemd socket activation, and NBD URIs.
 *
 * @since 0.1.0
 */
import { HandleState, Nbd, NbdClient, NbdError, NbdUri } from "@effect-nbd/core"
import type { Transport } from "@effect-nbd/core"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Socket from "effect/socket/Socket"
import * as Command from "./internal/command.js"
import * as Fd from "./internal/fd.js"
import * as Memo from "./internal/memo.js"
import * as Tcp from "./internal/tcp.js"
import * as NodeTls from "./internal/tls.js"

/**
 * A `Socket` layer that connects to a Unix socket, with the `Transport` service that can upgrade it to TLS.
 * Each acquisition of the socket's reader opens a connection; each provide of the layer gets a socket of its
 * own (as for every transport layer here).
 * @since 0.1.0
 * @category layers
 */
export const layerUnix = (path: string): Layer.Layer<Socket.Socket | Transport.Transport> =>
  NodeTls.layer({ path }, undefined, { address: () => ({ _tag: "Unix", path }) })

/**
 * A `Socket` layer that connects over TCP (Nagle off, as libnbd sets TCP_NODELAY), with the `Transport`
 * service that can upgrade it to TLS (the server's certificate is checked against `host`). The port is a number or
 * a service name ("nbd"); every address of `host` is tried in turn, and the first that connects wins.
 * @since 0.1.0
 * @category layers
 */
export const layerTcp = (host: string, port: number | string): Layer.Layer<Socket.Socket | Transport.Transport> =>
  NodeTls.layer(Tcp.connect(host, port), host, {
    address: () => {
      const resolved = Tcp.resolvePort(port)
      return resolved === undefined ? undefined : { _tag: "Tcp", host, port: resolved }
    }
  })

/**
 * A `Socket` layer on an already-connected socket file descriptor; the connection owns it from then on and
 * closes it when it ends.
 * @since 0.1.0
 * @category layers
 */
export const layerFd = (fd: number): Layer.Layer<Socket.Socket | Transport.Transport> =>
  NodeTls.layer(Fd.connect(fd), undefined)

/**
 * A `Socket` layer that runs `argv` with a socket on its stdin and stdout (e.g. `nbdkit -s`), for as long
 * as the connection lasts.
 * @since 0.1.0
 * @category layers
 */
export const layerCommand = (argv: ReadonlyArray<string>): Layer.Layer<Socket.Socket | Transport.Transport> =>
  Memo.perBuild(() => {
    const child = Command.tracked()
    return NodeTls.layer(Command.command(argv, child.set), undefined, { subprocess: child.subprocess })
  })

/**
 * A `Socket` layer that starts `argv` by systemd socket activation and connects to it; the server gets
 * SIGTERM when the connection ends.
 * @since 0.1.0
 * @category layers
 */
export const layerSystemdSocketActivation = (
  argv: ReadonlyArray<string>
): Layer.Layer<Socket.Socket | Transport.Transport> =>
  Memo.perBuild(() => {
    const child = Command.tracked()
    let path: string | undefined
    const connect = Command.systemdSocketActivation(argv, (spawned, socketPath) => {
      child.set(spawned)
      path = socketPath
    })
    return NodeTls.layer(connect, undefined, {
      subprocess: child.subprocess,
      // The socket's name is known once the child runs, inside the connection.
      address: () => (path === undefined ? undefined : { _tag: "Unix", path })
    })
  })

// ---------------------------------------------------------------------------------------------------------------
// The subprocess of a handle
// ---------------------------------------------------------------------------------------------------------------

/**
 * The pid of the handle's subprocess, from `connectCommand` or `connectSystemdSocketActivation`
 * (nbd_get_subprocess_pid); ESRCH when there is none (yet). The same call as `Nbd.getSubprocessPid`.
 * @since 0.1.0
 * @category subprocess
 */
export const getSubprocessPid: (h: Nbd.Handle) => Effect.Effect<number, NbdError.NbdError> = Nbd.getSubprocessPid

/**
 * Sends a signal (default SIGTERM) to the handle's subprocess (nbd_kill_subprocess); ESRCH when there is
 * none or it has exited. The same call as `Nbd.killSubprocess`.
 * @since 0.1.0
 * @category subprocess
 */
export const killSubprocess: (h: Nbd.Handle, signal?: NodeJS.Signals) => Effect.Effect<void, NbdError.NbdError> =
  Nbd.killSubprocess

// ---------------------------------------------------------------------------------------------------------------
// Unix and TCP
// ---------------------------------------------------------------------------------------------------------------

/**
 * Whether this library can use TLS (nbd_supports_tls): the node transports can upgrade their connections,
 * so always true. (`Nbd.supportsTls`, in core, answers for the transport in the context instead.)
 * @since 0.1.0
 * @category support
 */
export const supportsTls = (_h: Nbd.Handle): Effect.Effect<boolean> => Effect.succeed(true)

/** libnbd checks a connect call's state before anything else: nothing is set on a handle that cannot connect. */
const requireCreated = (h: Nbd.Handle, operation: Nbd.ConnectCall): Effect.Effect<void, NbdError.NbdError> =>
  Effect.flatMap(Nbd.state(h), (s) =>
    HandleState.isCreated(s)
      ? Effect.void
      : Effect.fail(
          new NbdError.InvalidStateError({
            errno: "EINVAL",
            operation,
            message: `invalid state: ${HandleState.shortName(s)}: the handle must be newly created`
          })
        )
  )

/**
 * Begins the handshake on the socket `layer` gives; errors name `operation`, the call the user made. The
 * state is checked first, as libnbd does, so a handle that cannot connect opens no socket and starts no
 * process.
 */
const connectOn = (
  h: Nbd.Handle,
  layer: Layer.Layer<Socket.Socket | Transport.Transport>,
  operation: Nbd.ConnectCall
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(requireCreated(h, operation), Nbd.aioConnectSocket(h, { operation }).pipe(Effect.provide(layer)))

const unix = (h: Nbd.Handle, path: string, operation: Nbd.ConnectCall): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => connectOn(h, layerUnix(path), operation))

/**
 * Begins connecting to a Unix socket (nbd_aio_connect_unix).
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectUnix = (h: Nbd.Handle, path: string): Effect.Effect<void, NbdError.NbdError> =>
  unix(h, path, "nbd_aio_connect_unix")

/**
 * Connects to a Unix socket and waits for the handshake (nbd_connect_unix).
 * @since 0.1.0
 * @category connecting
 */
export const connectUnix = (h: Nbd.Handle, path: string): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(unix(h, path, "nbd_connect_unix"), Nbd.awaitConnected(h))

/**
 * Begins connecting over TCP (nbd_aio_connect_tcp). `host` is a name or an address (IPv6 without brackets);
 * `port` a number, a decimal string or a service name from /etc/services ("nbd" is 10809). A port that
 * resolves to nothing fails at once with EINVAL; a host that resolves to nothing, or none of whose
 * addresses connects, fails the handshake (the first address's errno, e.g. ECONNREFUSED).
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectTcp = (
  h: Nbd.Handle,
  host: string,
  port: number | string
): Effect.Effect<void, NbdError.NbdError> => tcp(h, host, port, "nbd_aio_connect_tcp")

const tcp = (
  h: Nbd.Handle,
  host: string,
  port: number | string,
  operation: Nbd.ConnectCall
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    const portNumber = Tcp.resolvePort(port)
    if (portNumber === undefined)
      return yield* new NbdError.InvalidArgumentError({
        errno: "EINVAL",
        operation,
        message: Tcp.badPort(host, port).message
      })
    yield* connectOn(h, layerTcp(host, portNumber), operation)
  })

/**
 * Connects over TCP and waits for the handshake (nbd_connect_tcp).
 * @since 0.1.0
 * @category connecting
 */
export const connectTcp = (
  h: Nbd.Handle,
  host: string,
  port: number | string
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(tcp(h, host, port, "nbd_connect_tcp"), Nbd.awaitConnected(h))

// ---------------------------------------------------------------------------------------------------------------
// An fd, a command, socket activation
// ---------------------------------------------------------------------------------------------------------------

/**
 * Begins the handshake on an already-connected socket file descriptor (nbd_aio_connect_socket): the
 * connection owns it from then on and closes it when the handle closes. EBADF for a descriptor that is not
 * open, ENOTSOCK for one that is not a socket. `Nbd.getUri` then fails with EINVAL (the address is unknown).
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectFd = (h: Nbd.Handle, fd: number): Effect.Effect<void, NbdError.NbdError> =>
  onFd(h, fd, "nbd_aio_connect_socket")

const onFd = (h: Nbd.Handle, fd: number, operation: Nbd.ConnectCall): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() => {
    const problem = Fd.check(fd)
    return problem === undefined
      ? connectOn(h, layerFd(fd), operation)
      : Effect.fail(new NbdError.InvalidArgumentError({ ...problem, operation }))
  })

/**
 * Connects on an already-connected socket file descriptor and waits for the handshake (nbd_connect_socket).
 * @since 0.1.0
 * @category connecting
 */
export const connectFd = (h: Nbd.Handle, fd: number): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(onFd(h, fd, "nbd_connect_socket"), Nbd.awaitConnected(h))

const missingCommand = (operation: Nbd.ConnectCall) =>
  new NbdError.InvalidArgumentError({ errno: "EINVAL", operation, message: "missing command name in argv list" })

/**
 * Begins connecting to a subprocess that speaks NBD on its stdin and stdout (nbd_aio_connect_command), e.g.
 * `["nbdkit", "-s", "--exit-with-parent", "memory", "1G"]`; its stderr is ours. The child is reaped when the
 * connection ends: it is expected to exit at EOF, and gets SIGTERM (then SIGKILL) if it lingers. A command
 * that cannot be started (ENOENT, ...) fails the handshake with that errno. `Nbd.getUri` fails with EINVAL.
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectCommand = (h: Nbd.Handle, argv: ReadonlyArray<string>): Effect.Effect<void, NbdError.NbdError> =>
  command(h, argv, "nbd_aio_connect_command")

const command = (
  h: Nbd.Handle,
  argv: ReadonlyArray<string>,
  operation: Nbd.ConnectCall
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() =>
    argv.length === 0 || argv[0] === ""
      ? Effect.fail(missingCommand(operation))
      : connectOn(h, layerCommand(argv), operation)
  )

/**
 * Connects to a subprocess on its stdin and stdout and waits for the handshake (nbd_connect_command).
 * @since 0.1.0
 * @category connecting
 */
export const connectCommand = (h: Nbd.Handle, argv: ReadonlyArray<string>): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(command(h, argv, "nbd_connect_command"), Nbd.awaitConnected(h))

/**
 * Begins connecting to a server started by systemd socket activation
 * (nbd_aio_connect_systemd_socket_activation): `argv` runs with a listening Unix socket as fd 3 and
 * LISTEN_PID, LISTEN_FDS=1 and LISTEN_FDNAMES=unknown in its environment (nbdkit and qemu-nbd both
 * understand this), then the handle connects to that socket. The server gets SIGTERM when the connection
 * ends. `Nbd.getUri` answers the socket's `nbd+unix://` URI, good while the server runs.
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectSystemdSocketActivation = (
  h: Nbd.Handle,
  argv: ReadonlyArray<string>
): Effect.Effect<void, NbdError.NbdError> => socketActivation(h, argv, "nbd_aio_connect_systemd_socket_activation")

const socketActivation = (
  h: Nbd.Handle,
  argv: ReadonlyArray<string>,
  operation: Nbd.ConnectCall
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.suspend(() =>
    argv.length === 0 || argv[0] === ""
      ? Effect.fail(missingCommand(operation))
      : connectOn(h, layerSystemdSocketActivation(argv), operation)
  )

/**
 * Starts a server by systemd socket activation, connects, and waits for the handshake
 * (nbd_connect_systemd_socket_activation).
 * @since 0.1.0
 * @category connecting
 */
export const connectSystemdSocketActivation = (
  h: Nbd.Handle,
  argv: ReadonlyArray<string>
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(socketActivation(h, argv, "nbd_connect_systemd_socket_activation"), Nbd.awaitConnected(h))

// ---------------------------------------------------------------------------------------------------------------
// URIs
// ---------------------------------------------------------------------------------------------------------------

/**
 * What a URI may ask for (libnbd's nbd_set_uri_allow_transports, _tls, _local_file and _tls_priority): by
 * default every transport, TLS or not, no local files (a URI's `tls-psk-file` or `tls-certificates` fails
 * with EPERM unless `allowLocalFile` is set, as nbdinfo and nbdcopy set it) and no `tls-priority`.
 * @since 0.1.0
 * @category connecting
 */
export interface UriOptions {
  readonly allowTransports?: ReadonlyArray<"tcp" | "unix">
  /** "disable": no nbds URIs; "allow" (default): either; "require": only nbds URIs. */
  readonly allowTls?: Nbd.TlsMode
  readonly allowLocalFile?: boolean
  /**
   * Whether a URI's `tls-priority=` may set the TLS priority string (libnbd 1.24's
   * nbd_set_uri_allow_tls_priority); default false, as a priority string can weaken TLS: a URI with one
   * fails with EPERM.
   * @since 0.3.0
   */
  readonly allowTlsPriority?: boolean
}

const notPermitted = (operation: Nbd.ConnectCall, message: string) =>
  new NbdError.InvalidArgumentError({ errno: "EPERM", operation, message })

/**
 * Begins connecting to an NBD URI (nbd_aio_connect_uri): `nbd://`, `nbds://`, `nbd+unix://` and
 * `nbds+unix://`. The export name comes from the path; `nbds` sets TLS to "require"; the user information
 * (or `tls-username=`) is the TLS username; `tls-certificates`, `tls-psk-file`, `tls-hostname`,
 * `tls-verify-peer` and (when `allowTlsPriority` is set) `tls-priority` set the handle's TLS settings;
 * `socket=` is the Unix socket.
 * @since 0.1.0
 * @category connecting
 */
export const aioConnectUri = (
  h: Nbd.Handle,
  uri: string,
  options: UriOptions = {}
): Effect.Effect<void, NbdError.NbdError> => connectToUri(h, uri, options, "nbd_aio_connect_uri")

const connectToUri = (
  h: Nbd.Handle,
  uri: string,
  options: UriOptions,
  operation: Nbd.ConnectCall
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    yield* requireCreated(h, operation)
    const parsed = yield* Effect.mapError(
      NbdUri.parse(uri),
      (e) => new NbdError.InvalidArgumentError({ errno: e.errno, operation, message: e.message })
    )
    const scheme = uri.slice(0, uri.indexOf(":"))
    const transport = parsed.transport
    if (options.allowTransports && !options.allowTransports.includes(transport._tag === "Tcp" ? "tcp" : "unix"))
      return yield* notPermitted(operation, `URI transport ${scheme} is not permitted`)
    const allowTls = options.allowTls ?? "allow"
    if ((parsed.tls && allowTls === "disable") || (!parsed.tls && allowTls === "require"))
      return yield* notPermitted(operation, `URI TLS setting ${scheme} is not permitted`)
    for (const name of ["tls-psk-file", "tls-certificates"])
      if (parsed.query.has(name) && options.allowLocalFile !== true)
        return yield* notPermitted(
          operation,
          `local file access (${name}) is not allowed, set allowLocalFile to enable this`
        )
    if (parsed.query.has("tls-priority") && options.allowTlsPriority !== true)
      return yield* notPermitted(operation, "tls-priority is not allowed in URIs, set allowTlsPriority to enable this")
    if (parsed.tls) yield* Nbd.setTls(h, "require")
    const q = parsed.query
    const certificates = q.get("tls-certificates")
    if (certificates !== undefined) yield* Nbd.setTlsCertificates(h, certificates)
    const pskFile = q.get("tls-psk-file")
    if (pskFile !== undefined) yield* Nbd.setTlsPskFile(h, pskFile)
    const hostname = q.get("tls-hostname")
    if (hostname !== undefined) yield* Nbd.setTlsHostname(h, hostname)
    const priority = q.get("tls-priority")
    if (priority !== undefined) yield* Nbd.setTlsPriority(h, priority)
    const verifyPeer = q.get("tls-verify-peer")
    if (verifyPeer !== undefined) yield* Nbd.setTlsVerifyPeer(h, NbdUri.parseBoolean(verifyPeer))
    if (parsed.username !== undefined) yield* Nbd.setTlsUsername(h, parsed.username)
    yield* Nbd.setExportName(h, parsed.exportName)
    yield* transport._tag === "Unix"
      ? unix(h, transport.path, operation)
      : tcp(h, transport.host, transport.port, operation)
  })

/**
 * Connects to an NBD URI and waits for the handshake (nbd_connect_uri).
 * @example
 * ```ts
 * import { Nbd } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * const exportName = Effect.scoped(
 *   Effect.gen(function* () {
 *     const h = yield* Nbd.make()
 *     // nbd, nbds (TLS), nbd+unix and nbds+unix URIs, with libnbd's query parameters.
 *     yield* NodeNbd.connectUri(h, "nbd+unix:///disk?socket=/tmp/nbd.sock")
 *     return yield* Nbd.getExportName(h) // "disk"
 *   })
 * )
 * ```
 * @since 0.1.0
 * @category connecting
 */
export const connectUri = (
  h: Nbd.Handle,
  uri: string,
  options: UriOptions = {}
): Effect.Effect<void, NbdError.NbdError> =>
  Effect.andThen(connectToUri(h, uri, options, "nbd_connect_uri"), Nbd.awaitConnected(h))

// ---------------------------------------------------------------------------------------------------------------
// The client as a service
// ---------------------------------------------------------------------------------------------------------------

/**
 * What `layer` connects to and how: an NBD URI, the handle's settings, and what the URI may ask for (by
 * default, as for `connectUri`, no local files: set `allowLocalFile` for a URI with `tls-psk-file` or
 * `tls-certificates`).
 * @since 0.2.0
 * @category layers
 */
export interface LayerConfig extends Nbd.Settings, UriOptions {
  readonly uri: string
}

/**
 * The `NbdClient` service for an NBD URI, as @effect/sql's `PgClient.layer`: building the layer makes a
 * handle with the settings and connects it (`connectUri`), releasing it disconnects and closes the handle.
 * A bad setting, a URI that does not parse or a server that cannot be reached fails the layer with the
 * `NbdError`. Application code depends on `NbdClient` alone; tests provide another layer.
 *
 * One layer value may be provided in several places: each provide (or `Layer.build`) gets a handle of its
 * own, even inside a program that already provides the same layer, while the layers of one composition that
 * need it share one handle, and a layer built once for a group of tests (@effect/vitest's `layer`) serves
 * them all.
 *
 * @example
 * ```ts
 * import { Nbd, NbdClient } from "@effect-nbd/core"
 * import { NodeNbd } from "@effect-nbd/node"
 * import * as Effect from "effect/Effect"
 *
 * const size = Effect.flatMap(NbdClient.NbdClient, Nbd.getSize)
 *
 * const main = size.pipe(
 *   Effect.provide(NodeNbd.layer({ uri: "nbd+unix:///disk?socket=/tmp/nbd.sock", requestBlockSize: true }))
 * )
 * ```
 * @since 0.2.0
 * @category layers
 */
export const layer = (config: string | LayerConfig): Layer.Layer<NbdClient.NbdClient, NbdError.NbdError> => {
  const { allowLocalFile, allowTls, allowTlsPriority, allowTransports, uri, ...settings }: LayerConfig =
    typeof config === "string" ? { uri: config } : config
  const options: UriOptions = {
    ...(allowLocalFile === undefined ? {} : { allowLocalFile }),
    ...(allowTlsPriority === undefined ? {} : { allowTlsPriority }),
    ...(allowTls === undefined ? {} : { allowTls }),
    ...(allowTransports === undefined ? {} : { allowTransports })
  }
  return Memo.perBuild(() => NbdClient.layerFrom((h) => connectUri(h, uri, options), settings))
}

/**
 * `layer` with its configuration read from Effect's `Config` (the environment, by default), as
 * `PgClient.layerConfig`: `NodeNbd.layerConfig({ uri: Config.string("NBD_URI") })`.
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<LayerConfig>
): Layer.Layer<NbdClient.NbdClient, NbdError.NbdError | Config.ConfigError> =>
  Memo.perBuild(() => Layer.unwrap(Effect.map(Config.unwrap(config), layer)))
