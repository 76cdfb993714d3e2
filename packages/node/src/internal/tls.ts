import { NbdError, TlsPriority, TlsPsk, Transport } from "@effect-nbd/core"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Socket from "effect/socket/Socket"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import * as Memo from "./memo.js"
import * as NodeSocket from "./socket.js"

const OPERATION = "tls"

const fileError = (cause: unknown, path: string): NbdError.ConnectionError =>
  new NbdError.ConnectionError({
    errno: NbdError.errnoOf(cause),
    operation: OPERATION,
    message: `open: ${path}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const readable = (path: string): boolean => {
  try {
    Fs.accessSync(path, Fs.constants.R_OK)
    return true
  } catch {
    return false
  }
}

const readFile = (path: string): Effect.Effect<Buffer, NbdError.ConnectionError> =>
  Effect.try({ try: () => Fs.readFileSync(path), catch: (cause) => fileError(cause, path) })

/** The PSK identity: the TLS username setting, else the local login name (as libnbd's getlogin). */
const loginName = (): Effect.Effect<string, NbdError.ConnectionError> =>
  Effect.try({
    try: () => Os.userInfo().username,
    catch: (cause) =>
      new NbdError.ConnectionError({ errno: "", operation: OPERATION, message: "getlogin: no login name", cause })
  })

/** libnbd's lookup_key: the first entry for the user, read by the one PSK-file parser (TlsPsk). */
const lookupKey = (file: string, username: string): Effect.Effect<Buffer, NbdError.NbdError> =>
  Effect.flatMap(readFile(file), (content) => {
    const badFile = (message: string) =>
      new NbdError.InvalidArgumentError({ errno: "EINVAL", operation: OPERATION, message: `${file}: ${message}` })
    return Result.match(TlsPsk.parse(content.toString("utf8")), {
      onFailure: (error) => Effect.fail(badFile(`line ${error.line}: ${error.message}`)),
      onSuccess: (keys) =>
        Option.match(TlsPsk.find(keys, username), {
          onNone: () => Effect.fail(badFile(`username ${username} was not found in PSK file`)),
          onSome: (entry) => Effect.succeed(Buffer.from(entry.key))
        })
    })
  })

/** Where libnbd looks for certificates when none are set; the first with a `ca-cert.pem` wins. */
const defaultCertificateDirs = (): ReadonlyArray<string> => {
  const home = process.env["HOME"]
  if (process.geteuid?.() === 0) return ["/etc/pki/libnbd"]
  return home === undefined ? [] : [Path.join(home, ".pki", "libnbd"), Path.join(home, ".config", "pki", "libnbd")]
}

/**
 * The priority string's client options; a string that does not map fails as its setter would have.
 * %SERVER_PRECEDENCE (`honorCipherOrder`) is a server's choice: a client leaves it out.
 */
const priorityOptions = (
  priority: string
): Effect.Effect<Omit<TlsPriority.Options, "honorCipherOrder">, NbdError.NbdError> => {
  const parsed = TlsPriority.parse(priority)
  const message = (reason: string) => `tls priority ${JSON.stringify(priority)}: ${reason}`
  switch (parsed._tag) {
    case "Options": {
      const { honorCipherOrder: _, ...client } = parsed.options
      return Effect.succeed(client)
    }
    case "Invalid":
      return Effect.fail(
        new NbdError.InvalidArgumentError({ errno: "EINVAL", operation: OPERATION, message: message(parsed.message) })
      )
    case "Unsupported":
      return Effect.fail(
        new NbdError.UnsupportedError({ errno: "ENOTSUP", operation: OPERATION, message: message(parsed.message) })
      )
  }
}

const order: ReadonlyArray<TlsPriority.Version> = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

/**
 * PSK under a priority string: OpenSSL's PSK suites are TLS 1.2 ones, so the versions must reach 1.2 and a
 * cipher restriction cannot be expressed on top of them (ENOTSUP rather than a weaker connection).
 */
const pskVersions = (
  priority: string,
  options: Omit<TlsPriority.Options, "honorCipherOrder">
): Effect.Effect<Pick<Tls.ConnectionOptions, "minVersion" | "maxVersion">, NbdError.NbdError> => {
  const unsupported = (reason: string) =>
    Effect.fail(
      new NbdError.UnsupportedError({
        errno: "ENOTSUP",
        operation: OPERATION,
        message: `tls priority ${JSON.stringify(priority)}: ${reason}`
      })
    )
  if (options.ciphers !== undefined) return unsupported("a cipher restriction does not apply to PSK")
  const min = options.minVersion ?? "TLSv1.2"
  if (order.indexOf(min) > order.indexOf("TLSv1.2")) return unsupported("PSK needs TLS 1.2, which it leaves out")
  const max = options.maxVersion !== undefined && options.maxVersion !== "TLSv1.3" ? options.maxVersion : "TLSv1.2"
  return Effect.succeed({ minVersion: min, maxVersion: max })
}

const isIp = (host: string): boolean => host.replace(/^\[|\]$/g, "").match(/^[\d.]+$|:/) !== null

/**
 * The Node TLS client options for the handle's settings: PSK when a keys file is set, else X.509 with the
 * certificates directory (or libnbd's default places, or the system's CAs).
 */
export const connectionOptions = (
  settings: Transport.TlsSettings,
  transportHost: string | undefined
): Effect.Effect<Tls.ConnectionOptions, NbdError.NbdError> =>
  Effect.gen(function* () {
    const priority = yield* priorityOptions(settings.priority)
    if (settings.pskFile !== undefined) {
      const versions = yield* pskVersions(settings.priority, priority)
      const identity = settings.username ?? (yield* loginName())
      const psk = yield* lookupKey(settings.pskFile, identity)
      // OpenSSL offers external PSKs to TLS 1.3 servers only through session callbacks: PSK runs on TLS 1.2.
      return {
        ciphers: "PSK",
        ...versions,
        pskCallback: () => ({ psk, identity }),
        checkServerIdentity: () => undefined
      } satisfies Tls.ConnectionOptions
    }
    const hostname = settings.hostname ?? transportHost
    const dir = [...(settings.certificates === undefined ? defaultCertificateDirs() : [settings.certificates])].find(
      (d) => readable(Path.join(d, "ca-cert.pem"))
    )
    const options: Tls.ConnectionOptions = {
      ...priority,
      rejectUnauthorized: settings.verifyPeer,
      // The name is checked against the TLS host name when there is one; a Unix socket without one is
      // verified against the CA alone.
      checkServerIdentity: (_host, cert) =>
        hostname === undefined || !settings.verifyPeer ? undefined : Tls.checkServerIdentity(hostname, cert)
    }
    if (hostname !== undefined && !isIp(hostname)) options.servername = hostname
    if (dir !== undefined) {
      options.ca = yield* readFile(Path.join(dir, "ca-cert.pem"))
      const cert = Path.join(dir, "client-cert.pem")
      const key = Path.join(dir, "client-key.pem")
      if (readable(cert) && readable(key)) {
        options.cert = yield* readFile(cert)
        options.key = yield* readFile(key)
      }
    }
    return options
  })

/**
 * The TLS upgrade of one upgradable socket; `transportHost` is the host it connected to (none for a Unix
 * socket).
 */
export const startTls =
  (socket: NodeSocket.Upgradable, transportHost: string | undefined) =>
  (settings: Transport.TlsSettings): Effect.Effect<void, NbdError.NbdError> =>
    Effect.flatMap(connectionOptions(settings, transportHost), (options) =>
      Effect.mapError(socket.upgrade(options), (error) => {
        // The TLS error itself is the reason's cause (a close reason carries none).
        const cause = "cause" in error.reason ? error.reason.cause : error.reason
        return new NbdError.ConnectionError({
          errno: "",
          operation: OPERATION,
          message: `tls handshake: ${cause instanceof Error ? cause.message : String(cause)}`,
          cause
        })
      })
    )

/**
 * A `Socket` on a new connection together with the `Transport` service for it: the TLS upgrade of that same
 * connection, and what the caller knows of its address and subprocess. Each provide of the layer gets a socket
 * of its own (`Memo.perBuild`).
 */
export const layer = (
  connect: NodeSocket.Connect,
  transportHost: string | undefined,
  known: Pick<Partial<Transport.Service>, "address" | "subprocess"> = {}
): Layer.Layer<Socket.Socket | Transport.Transport> =>
  Memo.perBuild(() =>
    Layer.effectContext(
      Effect.sync(() => {
        const upgradable = NodeSocket.makeUpgradable(connect)
        return Context.make(Socket.Socket, upgradable.socket).pipe(
          Context.add(
            Transport.Transport,
            Transport.make({
              ...known,
              startTls: startTls(upgradable, transportHost),
              tryWrite: upgradable.tryWrite
            })
          )
        )
      })
    )
  )
