import { HandleState, Nbd, NbdError, Protocol } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { directoryWith, nbdkit, qemuNbd, startServer } from "./util/peers.js"
import { makeCa, makeCert } from "./util/pki.js"

// ---------------------------------------------------------------------------------------------------------------
// Credentials, made once for the file with certtool and psktool as nbdkit-tls(1) describes
// ---------------------------------------------------------------------------------------------------------------

let root = ""
/** ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem (for nbdkit, qemu and us). */
let pki = ""
/** Another CA's ca-cert.pem only. */
let wrongCa = ""
let pskFile = ""
let wrongPskFile = ""

beforeAll(() => {
  root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-tls-"))
  pki = Path.join(root, "pki")
  makeCa(pki)
  makeCert(
    pki,
    "server",
    "organization = effect-nbd\ncn = localhost\ntls_www_server\nencryption_key\nsigning_key\n" +
      "dns_name = localhost\nip_address = 127.0.0.1\nexpiration_days = 30\n"
  )
  makeCert(
    pki,
    "client",
    "organization = effect-nbd\ncn = client.example.com\ntls_www_client\nencryption_key\nsigning_key\n" +
      "expiration_days = 30\n"
  )
  const other = Path.join(root, "other-ca")
  makeCa(other)
  wrongCa = Path.join(root, "wrong-ca")
  Fs.mkdirSync(wrongCa)
  Fs.copyFileSync(Path.join(other, "ca-cert.pem"), Path.join(wrongCa, "ca-cert.pem"))
  pskFile = Path.join(root, "keys.psk")
  execFileSync("psktool", ["-u", "alice", "-p", pskFile], { stdio: "ignore" })
  wrongPskFile = Path.join(root, "wrong.psk")
  execFileSync("psktool", ["-u", "alice", "-p", wrongPskFile], { stdio: "ignore" })
}, 60_000)

afterAll(() => {
  if (root !== "") Fs.rmSync(root, { recursive: true, force: true })
})

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

type ServerTls = "off" | "on" | "require"

const serverTlsArgs = (tls: ServerTls): Array<string> =>
  tls === "off" ? [] : [`--tls=${tls}`, `--tls-certificates=${pki}`]

const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as Net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** nbdkit on 127.0.0.1:port, ready once its pid file exists. */
const nbdkitTcp = (args: ReadonlyArray<string>): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function* () {
    const port = yield* freePort
    yield* startServer("nbdkit", ["-f", "-i", "127.0.0.1", "-p", String(port), "-P", "{pidfile}", ...args])
    return port
  })

const connectError = (h: Nbd.Handle, socket: string): Effect.Effect<NbdError.NbdError, void> =>
  Effect.flip(NodeNbd.connectUnix(h, socket))

const bytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 13 + seed) & 0xff
  return out
}

/** Writes and reads back through the connection, so data is known to cross it both ways. */
const roundTrip = (h: Nbd.Handle): Effect.Effect<void, NbdError.NbdError> =>
  Effect.gen(function* () {
    const data = bytes(256 * 1024, 5)
    yield* Nbd.pwrite(h, data, 4096)
    expect(Buffer.from(yield* Nbd.pread(h, data.length, 4096)).equals(Buffer.from(data))).toBe(true)
  })

// ---------------------------------------------------------------------------------------------------------------
// A raw server that records what the client sends
// ---------------------------------------------------------------------------------------------------------------

const optionReply = (option: number, type: number): Buffer => {
  const b = Buffer.alloc(20)
  b.writeBigUInt64BE(0x3e889045565a9n, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(0, 16)
  return b
}

interface Options {
  readonly option: number
}

/** Splits what the client sent after the greeting into its client flags and the options it sent. */
const parseClient = (received: Buffer): { readonly flags: number; readonly options: ReadonlyArray<Options> } => {
  const flags = received.readUInt32BE(0)
  const options: Array<Options> = []
  let at = 4
  while (at + 16 <= received.length) {
    expect(received.readBigUInt64BE(at)).toBe(Protocol.IHAVEOPT)
    const option = received.readUInt32BE(at + 8)
    const length = received.readUInt32BE(at + 12)
    options.push({ option })
    at += 16 + length
  }
  expect(at).toBe(received.length)
  return { flags, options }
}

/**
 * A fixed-newstyle server that answers NBD_OPT_STARTTLS with `onStarttls` (refusal by default) and every
 * other option with ERR_UNSUP, and records every byte the client sends until it closes.
 */
const recordingServer = (
  onStarttls: (socket: Net.Socket) => void = (socket) =>
    socket.write(optionReply(Protocol.Opt.STARTTLS, Protocol.Rep.ERR_UNSUP))
): Effect.Effect<{ readonly path: string; readonly received: Effect.Effect<Buffer> }, never, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* directoryWith({})
    const path = Path.join(dir, "raw.sock")
    let resolveReceived: (b: Buffer) => void = () => {}
    const received = new Promise<Buffer>((resolve) => {
      resolveReceived = resolve
    })
    const server = Net.createServer((socket) => {
      const chunks: Array<Buffer> = []
      let seen = 0
      const greeting = Buffer.alloc(18)
      greeting.write("NBDMAGIC", 0, "latin1")
      greeting.writeBigUInt64BE(Protocol.IHAVEOPT, 8)
      greeting.writeUInt16BE(Protocol.FLAG_FIXED_NEWSTYLE | Protocol.FLAG_NO_ZEROES, 16)
      socket.write(greeting)
      socket.on("data", (chunk) => {
        chunks.push(chunk)
        const all = Buffer.concat(chunks)
        // Answer each complete option once.
        let at = 4
        let index = 0
        while (at + 16 <= all.length) {
          const option = all.readUInt32BE(at + 8)
          const length = all.readUInt32BE(at + 12)
          if (at + 16 + length > all.length) break
          if (index >= seen) {
            seen += 1
            if (option === Protocol.Opt.STARTTLS) onStarttls(socket)
            else if (option !== Protocol.Opt.ABORT) socket.write(optionReply(option, Protocol.Rep.ERR_UNSUP))
          }
          index += 1
          at += 16 + length
        }
      })
      socket.on("error", () => {})
      socket.on("close", () => resolveReceived(Buffer.concat(chunks)))
    })
    yield* Effect.acquireRelease(
      Effect.callback<void>((resume) => {
        server.listen(path, () => resume(Effect.void))
      }),
      () => Effect.sync(() => server.close())
    )
    return { path, received: Effect.promise(() => received) }
  })

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

describe("TLS against nbdkit (X.509)", () => {
  const matrix: ReadonlyArray<[Nbd.TlsMode, ServerTls, "tls" | "plain" | "refused" | "tls-required"]> = [
    ["disable", "off", "plain"],
    ["disable", "on", "plain"],
    ["disable", "require", "tls-required"],
    ["allow", "off", "plain"],
    ["allow", "on", "tls"],
    ["allow", "require", "tls"],
    ["require", "off", "refused"],
    ["require", "on", "tls"],
    ["require", "require", "tls"]
  ]
  for (const [client, server, outcome] of matrix) {
    it.live(`client ${client} against nbdkit --tls=${server}: ${outcome}`, () =>
      Effect.gen(function* () {
        const peer = yield* nbdkit([...serverTlsArgs(server), "memory", "1M"])
        const h = yield* Nbd.make({ tls: client, tlsCertificates: pki })
        if (outcome === "tls" || outcome === "plain") {
          yield* NodeNbd.connectUnix(h, peer.socket)
          expect(yield* Nbd.getTlsNegotiated(h)).toBe(outcome === "tls")
          expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
          yield* roundTrip(h)
          return
        }
        const error = yield* connectError(h, peer.socket)
        expect(error.errno).toBe("ENOTSUP")
        if (outcome === "refused")
          expect(error.message).toBe("handshake: server refused TLS, but handle TLS setting is 'require' (2)")
        // nbdkit --tls=require refuses every option before TLS.
        else expect(error.message).toContain("the server requires TLS encryption first")
        expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
      })
    )
  }

  it.live("the client certificate is offered: nbdkit --tls-verify-peer accepts it", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "--tls-verify-peer", "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: pki })
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      yield* roundTrip(h)
    })
  )

  it.live("a certificate from another CA fails the handshake; the handle is dead", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: wrongCa })
      const error = yield* connectError(h, peer.socket)
      expect(error._tag).toBe("ConnectionError")
      expect(error.message).toContain("tls handshake")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("another CA is accepted with verify-peer off", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: wrongCa })
      yield* Nbd.setTlsVerifyPeer(h, false)
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
    })
  )

  it.live("TCP: the host connected to must match the certificate; tls hostname overrides it", () =>
    Effect.gen(function* () {
      const port = yield* nbdkitTcp([...serverTlsArgs("require"), "memory", "1M"])
      for (const host of ["127.0.0.1", "localhost"]) {
        const ok = yield* Nbd.make({ tls: "require", tlsCertificates: pki })
        yield* NodeNbd.connectTcp(ok, host, port)
        expect(yield* Nbd.getTlsNegotiated(ok)).toBe(true)
        yield* roundTrip(ok)
      }
      const wrong = yield* Nbd.make({ tls: "require", tlsCertificates: pki })
      yield* Nbd.setTlsHostname(wrong, "wrong.example.com")
      expect(yield* Nbd.getTlsHostname(wrong)).toBe("wrong.example.com")
      const error = yield* Effect.flip(NodeNbd.connectTcp(wrong, "127.0.0.1", port))
      expect(error.message).toContain("wrong.example.com")
      expect(HandleState.isDead(yield* Nbd.state(wrong))).toBe(true)
      const unverified = yield* Nbd.make({ tls: "require", tlsCertificates: pki })
      yield* Nbd.setTlsHostname(unverified, "wrong.example.com")
      yield* Nbd.setTlsVerifyPeer(unverified, false)
      yield* NodeNbd.connectTcp(unverified, "127.0.0.1", port)
      expect(yield* Nbd.getTlsNegotiated(unverified)).toBe(true)
    })
  )

  it.live("Unix socket with a tls hostname: checked against the certificate", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "memory", "1M"])
      const good = yield* Nbd.make({ tls: "require", tlsCertificates: pki, tlsHostname: "localhost" })
      yield* NodeNbd.connectUnix(good, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(good)).toBe(true)
      const bad = yield* Nbd.make({ tls: "require", tlsCertificates: pki, tlsHostname: "nbd.example.org" })
      const error = yield* connectError(bad, peer.socket)
      expect(error.message).toContain("nbd.example.org")
    })
  )

  it.live("nbd+unix URIs with nbds require TLS", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "memory", "1M"])
      const h = yield* Nbd.make({ tlsCertificates: pki })
      yield* NodeNbd.connectUri(h, `nbds+unix:///?socket=${peer.socket}`)
      expect(yield* Nbd.getTls(h)).toBe("require")
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
    })
  )
})

describe("TLS against nbdkit (PSK)", () => {
  it.live("the right key connects; data crosses", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["--tls=require", `--tls-psk=${pskFile}`, "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require" })
      yield* Nbd.setTlsPskFile(h, pskFile)
      yield* Nbd.setTlsUsername(h, "alice")
      expect(yield* Nbd.getTlsUsername(h)).toBe("alice")
      expect(yield* Nbd.getTlsPskFile(h)).toBe(pskFile)
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      yield* roundTrip(h)
    })
  )

  it.live("a wrong key fails the handshake", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["--tls=require", `--tls-psk=${pskFile}`, "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require", tlsPskFile: wrongPskFile, tlsUsername: "alice" })
      const error = yield* connectError(h, peer.socket)
      expect(error._tag).toBe("ConnectionError")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("a user missing from the keys file fails with EINVAL, as libnbd's lookup", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["--tls=require", `--tls-psk=${pskFile}`, "memory", "1M"])
      const h = yield* Nbd.make({ tls: "require", tlsPskFile: pskFile, tlsUsername: "bob" })
      const error = yield* connectError(h, peer.socket)
      expect(error.errno).toBe("EINVAL")
      expect(error.message).toBe(`${pskFile}: username bob was not found in PSK file`)
    })
  )
})

describe("TLS against qemu-nbd", () => {
  it.live("tls-creds-x509: encrypted reads and writes", () =>
    Effect.gen(function* () {
      const dir = yield* directoryWith({ "disk.img": 4 * 1024 * 1024 })
      const peer = yield* qemuNbd(Path.join(dir, "disk.img"), [
        "--format=raw",
        `--object=tls-creds-x509,id=tls0,dir=${pki},endpoint=server`,
        "--tls-creds=tls0",
        "--shared=2"
      ])
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: pki, tlsHostname: "localhost" })
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      expect(yield* Nbd.getSize(h)).toBe(4194304n)
      yield* roundTrip(h)
      // qemu-nbd refuses plaintext clients outright.
      const plain = yield* Nbd.make()
      const error = yield* connectError(plain, peer.socket)
      expect(error.errno).toBe("ENOTSUP")
    })
  )
})

describe("TLS in option mode", () => {
  it.live("optStarttls against --tls=on upgrades; then optGo works encrypted", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("on"), "memory", "1M"])
      const h = yield* Nbd.make({ optMode: true, tlsCertificates: pki })
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(false)
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(true)
      expect(yield* Nbd.optStarttls(h)).toBe(true)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      // What was negotiated in plaintext is forgotten, as the server forgets it.
      expect(yield* Nbd.getStructuredRepliesNegotiated(h)).toBe(false)
      expect(yield* Nbd.optStructuredReply(h)).toBe(true)
      expect((yield* Nbd.optList(h)).length).toBeGreaterThanOrEqual(1)
      yield* Nbd.optGo(h)
      expect(HandleState.isReady(yield* Nbd.state(h))).toBe(true)
      yield* roundTrip(h)
    })
  )

  it.live("optStarttls against a plain server is refused: false, still negotiating in plaintext", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make({ optMode: true, tlsCertificates: pki })
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.optStarttls(h)).toBe(false)
      expect(HandleState.isNegotiating(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(false)
      yield* Nbd.optGo(h)
      yield* roundTrip(h)
    })
  )

  it.live("require in option mode: STARTTLS happens before the pause", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([...serverTlsArgs("require"), "memory", "1M"])
      const h = yield* Nbd.make({ optMode: true, tls: "require", tlsCertificates: pki })
      yield* NodeNbd.connectUnix(h, peer.socket)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
      expect((yield* Nbd.optList(h)).length).toBeGreaterThanOrEqual(1)
      yield* Nbd.optGo(h)
      yield* roundTrip(h)
    })
  )

  it.live("require refused in option mode ends Closed, as libnbd", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make({ optMode: true, tls: "require", tlsCertificates: pki })
      const error = yield* connectError(h, peer.socket)
      expect(error.message).toBe("handshake: server refused TLS, but handle TLS setting is 'require' (2)")
      expect(HandleState.isClosed(yield* Nbd.state(h))).toBe(true)
    })
  )
})

describe("TLS: what crosses the wire in plaintext", () => {
  it.live("require, refused: the client sends STARTTLS, then ABORT, and nothing else", () =>
    Effect.gen(function* () {
      const server = yield* recordingServer()
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: pki, exportName: "secret" })
      const error = yield* connectError(h, server.path)
      expect(error.errno).toBe("ENOTSUP")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
      const sent = parseClient(yield* server.received)
      expect(sent.options.map((o) => o.option)).toEqual([Protocol.Opt.STARTTLS, Protocol.Opt.ABORT])
    })
  )

  it.live("allow, refused: STARTTLS, then the handshake goes on in plaintext", () =>
    Effect.gen(function* () {
      const server = yield* recordingServer()
      const h = yield* Nbd.make({ tls: "allow", optMode: true, tlsCertificates: pki })
      yield* NodeNbd.connectUnix(h, server.path)
      expect(yield* Nbd.getTlsNegotiated(h)).toBe(false)
      yield* Nbd.optAbort(h)
      const sent = parseClient(yield* server.received)
      expect(sent.options.map((o) => o.option)).toEqual([
        Protocol.Opt.STARTTLS,
        Protocol.Opt.EXTENDED_HEADERS,
        Protocol.Opt.STRUCTURED_REPLY,
        Protocol.Opt.ABORT
      ])
    })
  )

  it.live("bytes the server sends after its STARTTLS ACK, outside TLS, are refused (EPROTO)", () =>
    Effect.gen(function* () {
      const server = yield* recordingServer((socket) =>
        socket.write(
          Buffer.concat([optionReply(Protocol.Opt.STARTTLS, Protocol.Rep.ACK), optionReply(Protocol.Opt.GO, 1)])
        )
      )
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: pki })
      const error = yield* connectError(h, server.path)
      expect(error.errno).toBe("EPROTO")
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
    })
  )

  it.live("a socket without a Transport: require fails before STARTTLS, allow never asks", () =>
    Effect.gen(function* () {
      const server = yield* recordingServer()
      const h = yield* Nbd.make({ tls: "require" })
      const error = yield* Effect.flip(
        Nbd.connectSocket(h).pipe(Effect.provide(NodeSocket.layerNet({ path: server.path })))
      )
      expect(NbdError.isNbdError(error) && NbdError.format(error)).toBe(
        "nbd_connect_socket: handshake: TLS is not available on this transport, but handle TLS setting is 'require' (2) (ENOTSUP)"
      )
      const sent = parseClient(yield* server.received)
      expect(sent.options.map((o) => o.option)).toEqual([Protocol.Opt.ABORT])

      const second = yield* recordingServer()
      const allow = yield* Nbd.make({ tls: "allow", optMode: true })
      yield* Nbd.connectSocket(allow).pipe(Effect.provide(NodeSocket.layerNet({ path: second.path })))
      const refused = yield* Effect.flip(Nbd.optStarttls(allow))
      expect(refused.errno).toBe("ENOTSUP")
      yield* Nbd.optAbort(allow)
      const sentAllow = parseClient(yield* second.received)
      expect(sentAllow.options.map((o) => o.option)).not.toContain(Protocol.Opt.STARTTLS)
    })
  )

  it.live("settings may only change while the handle is newly created", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit(["memory", "1M"])
      const h = yield* Nbd.make()
      expect(yield* Nbd.getTlsVerifyPeer(h)).toBe(true)
      expect(yield* Nbd.getTlsHostname(h)).toBe("")
      expect(yield* Nbd.getTlsUsername(h)).toBeUndefined()
      yield* Nbd.setTlsCertificates(h, pki)
      expect(yield* Nbd.getTlsCertificates(h)).toBe(pki)
      yield* NodeNbd.connectUnix(h, peer.socket)
      for (const attempt of [
        Nbd.setTlsCertificates(h, pki),
        Nbd.setTlsVerifyPeer(h, false),
        Nbd.setTlsUsername(h, "alice"),
        Nbd.setTlsHostname(h, "localhost"),
        Nbd.setTlsPskFile(h, pskFile)
      ]) {
        const error = yield* Effect.flip(attempt)
        expect(error.errno).toBe("EINVAL")
        expect(error.message).toContain("newly created")
      }
    })
  )
})
