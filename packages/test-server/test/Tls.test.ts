/**
 * TLS on the test server against libnbd's real client (nbdinfo, nbdsh): X.509 certificates and PSK, with
 * tls "require" and "on".
 */
import { describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeTlsCredentials, run, runOk } from "./helpers.js"

const credentials = Effect.flatMap(
  Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-tls-"))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  ),
  makeTlsCredentials
)

const socketOf = (server: TestServer.Service) => (server.address as { path: string }).path

/** nbds+unix URIs with libnbd's TLS query parameters (libnbd 1.14: tls-certificates, tls-psk-file; the user is the PSK username). */
const certUri = (server: TestServer.Service, pki: string, name = "") =>
  `nbds+unix:///${name}?socket=${socketOf(server)}&tls-certificates=${pki}`
const pskUri = (server: TestServer.Service, psk: string, user = "alice") =>
  `nbds+unix://${user}@/?socket=${socketOf(server)}&tls-psk-file=${psk}`

const nbdinfoJson = (uri: string) =>
  Effect.map(runOk("nbdinfo", ["--json", uri]), (r) => JSON.parse(r.stdout) as Record<string, unknown>)

describe("TLS against libnbd", () => {
  it.live("require with X.509 certificates: nbdinfo over TLS works, plaintext fails", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      const server = yield* TestServer.make({
        tls: "require",
        tlsCertificates: pki,
        exports: [{ name: "", size: 1 << 20, description: "secret" }]
      })
      const info = yield* nbdinfoJson(certUri(server, pki))
      expect(info.TLS).toBe(true)
      expect(info.protocol).toBe("newstyle-fixed")
      const e = (info.exports as Array<Record<string, unknown>>)[0]!
      expect(e["export-size"]).toBe(1 << 20)
      expect(e.contexts).toContain("base:allocation")
      const plain = yield* run("nbdinfo", ["--json", server.uri])
      expect(plain.code).not.toBe(0)
      expect(plain.stderr).toMatch(/not supported|TLS/i)
      // a full session over TLS: write, read back, block status
      const r = yield* run("nbdsh", [
        "-c",
        [
          "h.set_uri_allow_local_file(True)",
          `h.connect_uri(${JSON.stringify(certUri(server, pki))})`,
          "assert h.get_tls_negotiated()",
          "h.pwrite(b'over tls' * 1000, 4096)",
          "assert h.pread(8000, 4096) == b'over tls' * 1000",
          "assert h.get_structured_replies_negotiated()",
          "h.shutdown()"
        ].join("\n")
      ])
      expect(r.code, r.stderr).toBe(0)
    })
  )

  it.live("require with PSK: alice's key works, an unknown user or a wrong key fails", () =>
    Effect.gen(function* () {
      const { psk } = yield* credentials
      const server = yield* TestServer.make({ tls: "require", tlsPsk: psk })
      const info = yield* nbdinfoJson(pskUri(server, psk))
      expect(info.TLS).toBe(true)
      expect((yield* run("nbdinfo", ["--size", server.uri])).code).not.toBe(0)
      // a key file of our own for "bob", whom the server does not know, and a wrong key for "alice"
      const other = Path.join(Path.dirname(psk), "other.psk")
      yield* runOk("psktool", ["-u", "bob", "-p", other])
      yield* runOk("psktool", ["-u", "alice", "-p", other])
      expect((yield* run("nbdinfo", ["--size", pskUri(server, other, "bob")])).code).not.toBe(0)
      expect((yield* run("nbdinfo", ["--size", pskUri(server, other, "alice")])).code).not.toBe(0)
      // and the server still serves alice afterwards
      expect((yield* runOk("nbdinfo", ["--size", pskUri(server, psk)])).stdout.trim()).toBe(String(1 << 30))
    })
  )

  it.live("on: plaintext and TLS clients are both served", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      const server = yield* TestServer.make({ tls: "on", tlsCertificates: pki })
      expect((yield* nbdinfoJson(server.uri)).TLS).toBe(false)
      expect((yield* nbdinfoJson(certUri(server, pki))).TLS).toBe(true)
      const listed = yield* runOk("nbdinfo", ["--list", "--json", certUri(server, pki)])
      expect((JSON.parse(listed.stdout) as { TLS: boolean }).TLS).toBe(true)
    })
  )

  it.live("over TCP libnbd verifies the certificate: another CA's is refused", () =>
    Effect.gen(function* () {
      // (libnbd 1.14 verifies the peer by host name, so over a Unix socket it checks nothing)
      const mine = yield* credentials
      const theirs = yield* credentials
      const server = yield* TestServer.make({ tls: "require", tlsCertificates: mine.pki, listen: { _tag: "Tcp" } })
      const { port } = server.address as { port: number }
      const r = yield* run("nbdinfo", ["--size", `nbds://127.0.0.1:${port}/?tls-certificates=${theirs.pki}`])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/certificate verification/)
      const ok = yield* runOk("nbdinfo", ["--size", `nbds://127.0.0.1:${port}/?tls-certificates=${mine.pki}`])
      expect(ok.stdout.trim()).toBe(String(1 << 30))
    })
  )
})
