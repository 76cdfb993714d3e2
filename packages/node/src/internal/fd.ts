/**
 * An already-connected socket file descriptor (libnbd's nbd_connect_socket): ownership passes to the
 * connection, which closes it when it ends.
 */
import { NbdError } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as NodeSocket from "./socket.js"

/** Why `fd` cannot carry a connection, with its errno name; undefined when it is a socket. */
export const check = (fd: number): { readonly errno: NbdError.Errno; readonly message: string } | undefined => {
  if (!Number.isInteger(fd) || fd < 0) return { errno: "EBADF", message: `invalid file descriptor ${fd}` }
  let stat: Fs.Stats
  try {
    stat = Fs.fstatSync(fd)
  } catch (cause) {
    return { errno: NbdError.errnoOf(cause) || "EBADF", message: `fstat: ${fd}: ${String(cause)}` }
  }
  return stat.isSocket() ? undefined : { errno: "ENOTSOCK", message: `file descriptor ${fd} is not a socket` }
}

/** Wraps the connected socket `fd`, reading through `onread`; the scope's end closes it. */
export const connect =
  (fd: number): NodeSocket.Connect =>
  (onread) =>
    Effect.acquireRelease(
      Effect.try({
        try: () =>
          new Net.Socket({
            fd,
            readable: true,
            writable: true,
            allowHalfOpen: true,
            onread
          } as Net.SocketConstructorOpts),
        catch: (cause) => NodeSocket.openError(cause)
      }),
      (conn) => Effect.sync(() => conn.destroy())
    )
