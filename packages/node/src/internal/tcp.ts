/**
 * TCP as libnbd's nbd_connect_tcp does it: the port may be a number or a service name (looked up in
 * /etc/services, as getaddrinfo does; Node's `net` resolves no service names), the host name is resolved to
 * every address, and each is tried in turn: the first that connects wins, and if none does, the first
 * address's error is the one reported.
 */
import type * as Socket from "effect/socket/Socket"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Dns from "node:dns"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as NodeSocket from "./socket.js"

/** An error carrying an errno name in `code`, as Node's system errors do ("" when there is none). */
const failure = (message: string, code?: string): Error => Object.assign(new Error(message), code ? { code } : {})

const SERVICES_FILE = "/etc/services"

let services: ReadonlyMap<string, number> | undefined

/** The TCP services of /etc/services, names and aliases, read once. */
const tcpServices = (): ReadonlyMap<string, number> => {
  if (services !== undefined) return services
  const map = new Map<string, number>()
  let text = ""
  try {
    text = Fs.readFileSync(SERVICES_FILE, "utf8")
  } catch {
    // No services file: only numeric ports resolve.
  }
  for (const raw of text.split("\n")) {
    const fields = raw.replace(/#.*/, "").trim().split(/\s+/)
    const [name, portProto, ...aliases] = fields
    const match = portProto?.match(/^(\d+)\/tcp$/)
    if (name === undefined || name === "" || !match) continue
    const port = Number(match[1])
    for (const n of [name, ...aliases]) if (!map.has(n)) map.set(n, port)
  }
  services = map
  return map
}

/**
 * A port from a number, a decimal string or a TCP service name; undefined when it is none of these (or out
 * of range).
 */
export const resolvePort = (port: number | string): number | undefined => {
  const n = typeof port === "number" ? port : /^\d+$/.test(port) ? Number(port) : tcpServices().get(port)
  return n !== undefined && Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined
}

/** An error for a port that does not resolve, worded as getaddrinfo's EAI_SERVICE. */
export const badPort = (host: string, port: number | string): Error =>
  failure(`getaddrinfo: ${host}:${port}: Servname not supported for ai_socktype`)

const lookup = (host: string): Effect.Effect<ReadonlyArray<Dns.LookupAddress>, Socket.SocketError> =>
  Net.isIP(host) !== 0
    ? Effect.succeed([{ address: host, family: Net.isIP(host) }])
    : Effect.callback<ReadonlyArray<Dns.LookupAddress>, Socket.SocketError>((resume) => {
        Dns.lookup(host, { all: true }, (error, addresses) =>
          resume(
            error || addresses.length === 0
              ? Effect.fail(NodeSocket.openError(failure(`getaddrinfo: ${host}: ${error?.message ?? "no addresses"}`)))
              : Effect.succeed(addresses)
          )
        )
      })

const attempt = (
  address: Dns.LookupAddress,
  port: number,
  onread: NodeSocket.OnRead
): Effect.Effect<Net.Socket, Error> =>
  Effect.callback<Net.Socket, Error>((resume) => {
    const conn = Net.createConnection({
      host: address.address,
      family: address.family,
      port,
      noDelay: true,
      autoSelectFamily: false,
      onread
    } as Net.NetConnectOpts)
    const onError = (cause: Error) => {
      conn.destroy()
      resume(Effect.fail(cause))
    }
    conn.once("error", onError)
    conn.once("connect", () => {
      conn.off("error", onError)
      resume(Effect.succeed(conn))
    })
    return Effect.sync(() => conn.destroy())
  })

/**
 * Connects to `host`:`port`, trying every address of the host in the resolver's order.
 */
export const connect =
  (host: string, port: number | string): NodeSocket.Connect =>
  (onread): Effect.Effect<Net.Socket, Socket.SocketError, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.gen(function* () {
        const portNumber = resolvePort(port)
        if (portNumber === undefined) return yield* NodeSocket.openError(badPort(host, port))
        const addresses = yield* lookup(host)
        let first: Error | undefined
        for (const address of addresses) {
          const result = yield* Effect.result(attempt(address, portNumber, onread))
          if (Result.isSuccess(result)) return result.success
          first ??= result.failure
        }
        return yield* NodeSocket.openError(first)
      }),
      (conn) => Effect.sync(() => conn.destroy())
    )
