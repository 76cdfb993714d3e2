/**
 * A subprocess speaking NBD on its stdin/stdout (libnbd's nbd_connect_command, e.g. `nbdkit -s`), over one
 * connected pair of Unix stream sockets, and a server started by systemd-style socket activation (libnbd's
 * nbd_connect_systemd_socket_activation). The child lives as long as the connection: when it ends our end
 * is closed and the child reaped (a command child is given time to exit at EOF, an activated server gets
 * SIGTERM, as libnbd's nbd_close does).
 */
import type { Transport } from "@effect-nbd/core"
import type * as Socket from "effect/socket/Socket"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as NodeSocket from "./socket.js"
import * as Subprocess from "./subprocess.js"

const openError = NodeSocket.openError

/** Connects to a Unix socket, reading through `onread`. */
const connectPath = (path: string, onread: NodeSocket.OnRead): Effect.Effect<Net.Socket, Socket.SocketError> =>
  Effect.callback<Net.Socket, Socket.SocketError>((resume) => {
    const conn = Net.createConnection({ path, onread } as Net.NetConnectOpts)
    const onError = (cause: Error) => {
      conn.destroy()
      resume(Effect.fail(openError(cause)))
    }
    conn.once("error", onError)
    conn.once("connect", () => {
      conn.off("error", onError)
      resume(Effect.succeed(conn))
    })
  })

/** Listens on a Unix socket at `path`. */
const listen = (path: string, options: Net.ServerOpts = {}): Effect.Effect<Net.Server, Socket.SocketError> =>
  Effect.callback<Net.Server, Socket.SocketError>((resume) => {
    const server = Net.createServer(options)
    const onError = (cause: Error) => resume(Effect.fail(openError(cause)))
    server.once("error", onError)
    server.listen(path, () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    })
  })

/**
 * A connected pair of Unix stream sockets, as socketpair(2) gives (Node has no socketpair): a private
 * listener, one connection to it, then the listener is gone. `local` reads through `onread`; `remote` is
 * paused (nothing of it is read here), ready to be handed to a child.
 */
const socketPair = (
  onread: NodeSocket.OnRead
): Effect.Effect<{ readonly local: Net.Socket; readonly remote: Net.Socket }, Socket.SocketError, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* Subprocess.tempDir
    const path = Path.join(dir, "pair.sock")
    const server = yield* Effect.acquireRelease(listen(path, { pauseOnConnect: true }), (server) =>
      Effect.sync(() => server.close())
    )
    const [local, remote] = yield* Effect.acquireRelease(
      Effect.callback<readonly [Net.Socket, Net.Socket], Socket.SocketError>((resume) => {
        let remote: Net.Socket | undefined
        let connected = false
        const finish = () => {
          if (remote !== undefined && connected) resume(Effect.succeed([local, remote] as const))
        }
        server.once("connection", (socket: Net.Socket) => {
          remote = socket
          finish()
        })
        const local = Net.createConnection({ path, onread } as Net.NetConnectOpts)
        const onError = (cause: Error) => {
          local.destroy()
          remote?.destroy()
          resume(Effect.fail(openError(cause)))
        }
        local.once("error", onError)
        local.once("connect", () => {
          local.off("error", onError)
          connected = true
          finish()
        })
      }),
      ([local, remote]) =>
        Effect.sync(() => {
          local.destroy()
          remote.destroy()
        })
    )
    server.close()
    return { local, remote }
  })

/**
 * Runs `argv` with one end of a socket pair as its stdin and stdout (stderr is ours), and connects on the
 * other end. `onSpawn` learns the child.
 */
export const command =
  (argv: ReadonlyArray<string>, onSpawn: (child: ChildProcess.ChildProcess) => void): NodeSocket.Connect =>
  (onread) =>
    Effect.gen(function* () {
      const pair = yield* socketPair(onread)
      const child = yield* Subprocess.spawn(
        argv,
        { stdio: [pair.remote, pair.remote, "inherit"] },
        "wait",
        Effect.sync(() => pair.local.destroy())
      )
      // The child has its copy; ours must go, or the child would never see EOF.
      pair.remote.destroy()
      onSpawn(child)
      return pair.local
    })

/** What socket activation tells the child (sd_listen_fds(3)); LISTEN_PID is set by the shell to its own pid. */
const ACTIVATION_SHELL = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'

/**
 * Runs `argv` as systemd would on socket activation: a listening Unix socket as fd 3, and LISTEN_PID (the
 * child's own pid), LISTEN_FDS=1 and LISTEN_FDNAMES in its environment; then connects to that socket. The
 * socket's directory lives as long as the connection, so a second client can use the same server.
 * `onSpawn` learns the child and the socket path.
 */
export const systemdSocketActivation =
  (
    argv: ReadonlyArray<string>,
    onSpawn: (child: ChildProcess.ChildProcess, socketPath: string) => void,
    fdName = "unknown"
  ): NodeSocket.Connect =>
  (onread) =>
    Effect.gen(function* () {
      const dir = yield* Subprocess.tempDir
      const listenPath = Path.join(dir, "listen.sock")
      const socketPath = Path.join(dir, "sock")
      const server = yield* Effect.acquireRelease(listen(listenPath), (server) => Effect.sync(() => server.close()))
      // Node passes a listening server to a child only by descriptor number.
      const fd = (server as unknown as { readonly _handle?: { readonly fd?: unknown } })._handle?.fd
      if (typeof fd !== "number" || fd < 0)
        return yield* openError(new Error("the listening socket has no file descriptor"))
      let local: Net.Socket | undefined
      const env: NodeJS.ProcessEnv = { ...process.env, LISTEN_FDS: "1", LISTEN_FDNAMES: fdName }
      delete env["LISTEN_PID"]
      const child = yield* Subprocess.spawn(
        ["/bin/sh", "-c", ACTIVATION_SHELL, "nbd-socket-activation", ...argv],
        { stdio: ["ignore", "inherit", "inherit", fd], env },
        "term",
        Effect.sync(() => local?.destroy())
      )
      // Closing our listener unlinks the path it was bound to (libuv does): move the name first, so the socket
      // stays reachable. From here only the child accepts on it.
      yield* Effect.try({ try: () => Fs.renameSync(listenPath, socketPath), catch: openError })
      server.close()
      onSpawn(child, socketPath)
      local = yield* connectPath(socketPath, onread)
      return local
    })

/**
 * A child process a transport will start, as the handle's `Transport` service describes it: `set` is the
 * transport's spawn callback; `subprocess` answers for the child once it runs.
 */
export const tracked = (): {
  readonly set: (child: ChildProcess.ChildProcess) => void
  readonly subprocess: Transport.Subprocess
} => {
  let current: ChildProcess.ChildProcess | undefined
  const running = (child: ChildProcess.ChildProcess) => child.exitCode === null && child.signalCode === null
  return {
    set: (child) => {
      current = child
    },
    subprocess: {
      pid: () => current?.pid,
      kill: (signal) => current !== undefined && running(current) && current.kill(signal as NodeJS.Signals)
    }
  }
}
