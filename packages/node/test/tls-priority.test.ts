/**
 * The TLS priority string (libnbd 1.24's nbd_set_tls_priority and the URI's `tls-priority=`) over real TLS
 * connections: to the test server (Node's TLS, which offers TLS 1.2 and 1.3) and to nbdkit (GnuTLS).
 */
import { HandleState, Nbd, NbdError } from "@effect-nbd/core"
import { NodeNbd } from "@effect-nbd/node"
import { TestServer } from "@effect-nbd/test-server"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { nbdkit } from "./util/peers.js"
import { makeCa, makeCert } from "./util/pki.js"

let pki = ""

/** A CA and a server certificate for localhost, as nbdkit-tls(1) makes them. */
beforeAll(() => {
  pki = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-tls-priority-"))
  makeCa(pki)
  makeCert(
    pki,
    "server",
    "organization = effect-nbd\ncn = localhost\ntls_www_server\nencryption_key\nsigning_key\n" +
      "dns_name = localhost\nexpiration_days = 30\n"
  )
}, 60_000)

afterAll(() => {
  if (pki !== "") Fs.rmSync(pki, { recursive: true, force: true })
})

/** The test server with X.509 TLS required (made when run: the credentials exist only once beforeAll ran). */
const server = Effect.suspend(() => Effect.orDie(TestServer.make({ tls: "require", tlsCertificates: pki })))

const socketOf = (s: TestServer.Service): string => (s.address._tag === "Unix" ? s.address.path : "no unix socket")

const settings = (tlsPriority: string): Nbd.Settings => ({
  tls: "require",
  tlsCertificates: pki,
  tlsHostname: "localhost",
  tlsPriority
})

/** Connects with the priority string and reads back a block written over the encrypted connection. */
const roundTrip = (socket: string, priority: string) =>
  Effect.gen(function* () {
    const h = yield* Nbd.make(settings(priority))
    yield* NodeNbd.connectUnix(h, socket)
    expect(yield* Nbd.getTlsNegotiated(h)).toBe(true)
    expect(yield* Nbd.getTlsPriority(h)).toBe(priority)
    const block = new Uint8Array(4096).fill(0xa5)
    yield* Nbd.pwrite(h, block, 4096)
    expect(Buffer.from(yield* Nbd.pread(h, 4096, 4096)).equals(Buffer.from(block))).toBe(true)
  })

describe("setTlsPriority / getTlsPriority", () => {
  it.live("NORMAL by default; set while created; refused once connected, as libnbd", () =>
    Effect.gen(function* () {
      const s = yield* server
      const h = yield* Nbd.make({ tls: "require", tlsCertificates: pki, tlsHostname: "localhost" })
      expect(yield* Nbd.getTlsPriority(h)).toBe("NORMAL")
      yield* Nbd.setTlsPriority(h, "NORMAL:-VERS-TLS1.3")
      expect(yield* Nbd.getTlsPriority(h)).toBe("NORMAL:-VERS-TLS1.3")
      yield* NodeNbd.connectUnix(h, socketOf(s))
      const error = yield* Effect.flip(Nbd.setTlsPriority(h, "NORMAL"))
      expect([error._tag, error.errno, error.operation]).toEqual([
        "InvalidStateError",
        "EINVAL",
        "nbd_set_tls_priority"
      ])
      expect(yield* Nbd.getTlsPriority(h)).toBe("NORMAL:-VERS-TLS1.3")
    })
  )

  it.live("priorities that leave a version the server offers connect", () =>
    Effect.gen(function* () {
      const s = yield* server
      for (const priority of [
        "NORMAL",
        "NORMAL:-VERS-TLS1.3",
        "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        "SECURE256:-VERS-TLS1.3",
        "SECURE256:+SECURE128",
        "PFS:-VERS-TLS1.3"
      ])
        yield* roundTrip(socketOf(s), priority)
    })
  )

  it.live("a priority that forbids every version the server offers fails the handshake, typed", () =>
    Effect.gen(function* () {
      const s = yield* server
      // The test server speaks TLS 1.2 and 1.3 (Node's defaults); this leaves 1.0 and 1.1 only.
      const h = yield* Nbd.make(settings("NORMAL:-VERS-TLS1.3:-VERS-TLS1.2"))
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, socketOf(s)))
      expect(error._tag).toBe("ConnectionError")
      expect(error.message).toMatch(/^tls handshake: /)
      expect(HandleState.isDead(yield* Nbd.state(h))).toBe(true)
      // Bounded: a handshake that hung would fail the test with a TimeoutException.
    }).pipe(Effect.timeout("10 seconds"))
  )

  it.live("a string Node cannot express fails when it is set, with ENOTSUP; a malformed one with EINVAL", () =>
    Effect.gen(function* () {
      const h = yield* Nbd.make()
      const hole = yield* Effect.flip(Nbd.setTlsPriority(h, "NORMAL:-VERS-TLS1.1"))
      expect([hole._tag, hole.errno, hole.operation]).toEqual(["UnsupportedError", "ENOTSUP", "nbd_set_tls_priority"])
      expect(hole.message).toMatch(/"-VERS-TLS1.1": .*TLSv1.1 cannot be left out/)
      const flag = yield* Effect.flip(Nbd.setTlsPriority(h, "NORMAL:%COMPAT"))
      expect(flag.errno).toBe("ENOTSUP")
      const bad = yield* Effect.flip(Nbd.setTlsPriority(h, "NORMAL::"))
      expect([bad._tag, bad.errno]).toEqual(["InvalidArgumentError", "EINVAL"])
      // Nothing was kept from the refused strings.
      expect(yield* Nbd.getTlsPriority(h)).toBe("NORMAL")
      const made = yield* Effect.flip(Nbd.make({ tlsPriority: "NORMAL:-VERS-TLS1.1" }))
      expect([made._tag, made.errno, made.operation]).toEqual(["UnsupportedError", "ENOTSUP", "nbd_create"])
      expect(made.message).toMatch(/^tlsPriority: priority: /)
    })
  )
})

describe("tls-priority= in NBD URIs", () => {
  const uriOf = (s: TestServer.Service, priority: string) =>
    `nbds+unix:///?socket=${socketOf(s)}&tls-certificates=${pki}&tls-hostname=localhost` +
    `&tls-priority=${encodeURIComponent(priority)}`

  it.live("refused with EPERM unless allowTlsPriority is set, as libnbd's uri_allow_tls_priority", () =>
    Effect.gen(function* () {
      const s = yield* server
      const h = yield* Nbd.make()
      const error = yield* Effect.flip(NodeNbd.connectUri(h, uriOf(s, "NORMAL"), { allowLocalFile: true }))
      expect([error._tag, error.errno, error.operation]).toEqual(["InvalidArgumentError", "EPERM", "nbd_connect_uri"])
      expect(error.message).toMatch(/tls-priority is not allowed/)
      expect(HandleState.isCreated(yield* Nbd.state(h))).toBe(true)
      expect(yield* Nbd.getTlsPriority(h)).toBe("NORMAL")
    })
  )

  it.live("honoured when allowed: a permitting string connects, a forbidding one fails the handshake", () =>
    Effect.gen(function* () {
      const s = yield* server
      const options = { allowLocalFile: true, allowTlsPriority: true }
      const ok = yield* Nbd.make()
      yield* NodeNbd.connectUri(ok, uriOf(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3"), options)
      expect(yield* Nbd.getTlsNegotiated(ok)).toBe(true)
      expect(yield* Nbd.getTlsPriority(ok)).toBe("NORMAL:-VERS-ALL:+VERS-TLS1.3")
      // "+" stays a plus in a URI's query, as libnbd reads it.
      const plus = yield* Nbd.make()
      yield* NodeNbd.connectUri(plus, uriOf(s, "SECURE256:+SECURE128").replace("%2B", "+"), options)
      expect(yield* Nbd.getTlsPriority(plus)).toBe("SECURE256:+SECURE128")
      const refused = yield* Nbd.make()
      const error = yield* Effect.flip(
        NodeNbd.connectUri(refused, uriOf(s, "NORMAL:-VERS-TLS-ALL:+VERS-TLS1.1"), options)
      )
      expect(error._tag).toBe("ConnectionError")
      const hole = yield* Nbd.make()
      const unsupported = yield* Effect.flip(NodeNbd.connectUri(hole, uriOf(s, "NORMAL:-VERS-TLS1.1"), options))
      expect([unsupported._tag, unsupported.errno]).toEqual(["UnsupportedError", "ENOTSUP"])
      expect(NbdError.isNbdError(unsupported)).toBe(true)
    })
  )
})

describe("with a PSK file", () => {
  it.live("PSK runs on TLS 1.2: a priority that keeps it connects; one without it, or with ciphers, fails", () =>
    Effect.gen(function* () {
      const keys = Path.join(pki, "keys.psk")
      execFileSync("psktool", ["-u", "alice", "-p", keys], { stdio: "ignore" })
      const s = yield* Effect.orDie(TestServer.make({ tls: "require", tlsPsk: keys }))
      const psk = (tlsPriority: string) =>
        Nbd.make({ tls: "require", tlsPskFile: keys, tlsUsername: "alice", tlsPriority })
      const ok = yield* psk("NORMAL:-VERS-TLS1.3")
      yield* NodeNbd.connectUnix(ok, socketOf(s))
      expect(yield* Nbd.getTlsNegotiated(ok)).toBe(true)
      // Both refused before the handshake, at connect: each is a fine string without a PSK file.
      for (const priority of ["NORMAL:-VERS-ALL:+VERS-TLS1.3", "SECURE256"]) {
        const h = yield* psk(priority)
        const error = yield* Effect.flip(NodeNbd.connectUnix(h, socketOf(s)))
        expect({ priority, tag: error._tag, errno: error.errno }).toEqual({
          priority,
          tag: "UnsupportedError",
          errno: "ENOTSUP"
        })
      }
    })
  )
})

describe("against nbdkit (GnuTLS)", () => {
  it.live("TLS 1.3 only and TLS 1.2 only both connect; TLS 1.1 only fails, typed", () =>
    Effect.gen(function* () {
      const peer = yield* nbdkit([`--tls=require`, `--tls-certificates=${pki}`, "memory", "1M"])
      yield* roundTrip(peer.socket, "NORMAL:-VERS-ALL:+VERS-TLS1.3")
      yield* roundTrip(peer.socket, "NORMAL:-VERS-ALL:+VERS-TLS1.2")
      // GnuTLS still speaks TLS 1.1; OpenSSL's security level then refuses its SHA-1 era signature.
      const h = yield* Nbd.make(settings("NORMAL:-VERS-ALL:+VERS-TLS1.1"))
      const error = yield* Effect.flip(NodeNbd.connectUnix(h, peer.socket))
      expect(error._tag).toBe("ConnectionError")
      expect(error.message).toMatch(/^tls handshake: /)
    })
  )
})
