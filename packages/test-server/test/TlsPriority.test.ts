/**
 * `tlsPriority` / `--tls-priority`: a GnuTLS priority string narrows what the server's TLS accepts, seen from
 * a Node TLS client after NBD_OPT_STARTTLS (the version and cipher negotiated, handshakes refused) and from
 * libnbd's client; a string Node cannot express is refused.
 */
import { beforeAll, describe, expect, it } from "@effect/vitest"
import { TestServer } from "@effect-nbd/test-server"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"
import * as Cli from "../src/internal/cli.js"
import { buildServerBin, makeTlsCredentials, run, serverBin, toolEnv } from "./helpers.js"

const credentials = Effect.flatMap(
  Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-tls-priority-"))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  ),
  makeTlsCredentials
)

const socketOf = (server: TestServer.Service) => (server.address as { path: string }).path

/** Exactly `n` bytes from a plain socket (the NBD greeting and the STARTTLS reply). */
const readExactly = (socket: Net.Socket, n: number): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    let got = Buffer.alloc(0)
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (got.length < n) return
      socket.off("data", onData)
      socket.pause()
      if (got.length > n) socket.unshift(got.subarray(n))
      resolve(got.subarray(0, n))
    }
    socket.on("data", onData)
    socket.once("close", () => reject(new Error("closed")))
    socket.resume()
  })

/** A failed STARTTLS exchange or TLS handshake, with Node's error as the cause. */
class HandshakeError extends Data.TaggedError("HandshakeError")<{ readonly cause: unknown }> {}

/**
 * Connects, negotiates NBD_OPT_STARTTLS and runs a Node TLS handshake with `options`: the version and cipher
 * negotiated, or the handshake's error.
 */
const handshake = (path: string, ca: Buffer, options: Tls.ConnectionOptions = {}) =>
  Effect.acquireUseRelease(
    Effect.promise(
      () =>
        new Promise<Net.Socket>((resolve) => {
          const s = Net.createConnection({ path }, () => resolve(s))
        })
    ),
    (socket) =>
      Effect.tryPromise({
        try: async () => {
          const greeting = await readExactly(socket, 18)
          expect(greeting.subarray(0, 16).toString("latin1")).toBe("NBDMAGICIHAVEOPT")
          socket.write(Buffer.from([0, 0, 0, 3]))
          const option = Buffer.alloc(16)
          option.write("IHAVEOPT", 0, "latin1")
          option.writeUInt32BE(5, 8) // NBD_OPT_STARTTLS
          socket.write(option)
          const reply = await readExactly(socket, 20)
          expect(reply.readUInt32BE(12)).toBe(1) // ACK
          return await new Promise<{ version: string; cipher: string }>((resolve, reject) => {
            const secure = Tls.connect({ socket, ca, servername: "localhost", ...options }, () => {
              resolve({ version: secure.getProtocol() ?? "", cipher: secure.getCipher().name })
              secure.destroy()
            })
            secure.once("error", reject)
          })
        },
        catch: (cause) => new HandshakeError({ cause })
      }),
    (socket) => Effect.sync(() => socket.destroy())
  )

const serve = (pki: string, tlsPriority: string) =>
  Effect.map(TestServer.make({ tls: "require", tlsCertificates: pki, tlsPriority }), socketOf)

describe("TLS priority strings (tlsPriority)", () => {
  it.live("versions: only TLS 1.2, or only TLS 1.3, is negotiated; a client that wants the other fails", () =>
    Effect.gen(function* () {
      const { ca, pki } = yield* credentials
      const only12 = yield* serve(pki, "NORMAL:-VERS-ALL:+VERS-TLS1.2")
      expect((yield* handshake(only12, ca)).version).toBe("TLSv1.2")
      const want13 = yield* Effect.exit(handshake(only12, ca, { minVersion: "TLSv1.3" }))
      expect(Exit.isFailure(want13)).toBe(true)
      const only13 = yield* serve(pki, "NORMAL:-VERS-ALL:+VERS-TLS1.3")
      expect((yield* handshake(only13, ca)).version).toBe("TLSv1.3")
      const want12 = yield* Effect.exit(handshake(only13, ca, { maxVersion: "TLSv1.2" }))
      expect(Exit.isFailure(want12)).toBe(true)
      // Without a priority string both are served.
      const both = yield* Effect.map(TestServer.make({ tls: "require", tlsCertificates: pki }), socketOf)
      expect((yield* handshake(both, ca, { maxVersion: "TLSv1.2" })).version).toBe("TLSv1.2")
      expect((yield* handshake(both, ca)).version).toBe("TLSv1.3")
    })
  )

  it.live("ciphers: the one cipher left is the one negotiated, in TLS 1.3 and in TLS 1.2", () =>
    Effect.gen(function* () {
      const { ca, pki } = yield* credentials
      const chacha = yield* serve(pki, "NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305")
      expect(yield* handshake(chacha, ca)).toEqual({ version: "TLSv1.3", cipher: "TLS_CHACHA20_POLY1305_SHA256" })
      const tls12 = yield* handshake(chacha, ca, { maxVersion: "TLSv1.2" })
      expect(tls12.version).toBe("TLSv1.2")
      expect(tls12.cipher).toMatch(/CHACHA20-POLY1305/)
      // A client that offers none of them fails.
      const aesOnly = yield* Effect.exit(
        handshake(chacha, ca, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384" })
      )
      expect(Exit.isFailure(aesOnly)).toBe(true)
      const aes128 = yield* serve(pki, "NORMAL:-VERS-ALL:+VERS-TLS1.2:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM")
      expect(yield* handshake(aes128, ca)).toEqual({ version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256" })
      expect(yield* handshake(aes128, ca, { maxVersion: "TLSv1.2" })).toEqual({
        version: "TLSv1.2",
        cipher: "ECDHE-ECDSA-AES128-GCM-SHA256"
      })
    })
  )

  it.live("%SERVER_PRECEDENCE: the server's order of suites wins over the client's; SECURE256 is served", () =>
    Effect.gen(function* () {
      const { ca, pki } = yield* credentials
      // The client prefers AES-128-GCM; the server's list puts ChaCha20 first.
      const prefers128 = { ciphers: "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256" }
      const both = "NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305:+AES-128-GCM"
      const client = yield* serve(pki, both)
      expect((yield* handshake(client, ca, prefers128)).cipher).toBe("TLS_AES_128_GCM_SHA256")
      const server = yield* serve(pki, `${both}:%SERVER_PRECEDENCE`)
      expect((yield* handshake(server, ca, prefers128)).cipher).toBe("TLS_CHACHA20_POLY1305_SHA256")
      // SECURE256 leaves 256-bit ciphers only: a client that offers AES-128 alone is refused.
      const strong = yield* serve(pki, "SECURE256")
      expect((yield* handshake(strong, ca)).cipher).toBe("TLS_AES_256_GCM_SHA384")
      const only128 = yield* Effect.exit(handshake(strong, ca, { ciphers: "TLS_AES_128_GCM_SHA256" }))
      expect(Exit.isFailure(only128)).toBe(true)
    })
  )

  it.live("libnbd's client (GnuTLS) is served under a TLS 1.2 priority, with certificates and PSK", () =>
    Effect.gen(function* () {
      const { pki, psk } = yield* credentials
      const priority = "NORMAL:-VERS-ALL:+VERS-TLS1.2:+ECDHE-PSK:+PSK"
      const certs = yield* TestServer.make({
        tls: "require",
        tlsCertificates: pki,
        tlsPriority: priority,
        exports: [{ name: "", size: 1 << 20 }]
      })
      const a = yield* run("nbdinfo", ["--size", `nbds+unix:///?socket=${socketOf(certs)}&tls-certificates=${pki}`], {
        env: toolEnv()
      })
      expect(a.code, a.stderr).toBe(0)
      expect(a.stdout.trim()).toBe(String(1 << 20))
      const keys = yield* TestServer.make({ tls: "require", tlsPsk: psk, tlsPriority: priority })
      const b = yield* run("nbdinfo", ["--size", `nbds+unix://alice@/?socket=${socketOf(keys)}&tls-psk-file=${psk}`], {
        env: toolEnv()
      })
      expect(b.code, b.stderr).toBe(0)
      expect(b.stdout.trim()).toBe(String(1 << 30))
    })
  )

  it.live("a priority string Node cannot express is refused when the server is made", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      for (const priority of ["NORMAL:+SHA1", "@SYSTEM", "NORMAL:-VERS-TLS1.1", "NORMAL:%COMPAT", "NORMAL::"]) {
        const made = yield* Effect.exit(
          TestServer.make({ tls: "require", tlsCertificates: pki, tlsPriority: priority })
        )
        expect(Exit.isFailure(made), priority).toBe(true)
      }
    })
  )
})

describe("--tls-priority", () => {
  beforeAll(buildServerBin, 120_000)

  it("is parsed into the configuration, and refused when Node cannot express it", () => {
    const parsed = Cli.parse(["--tls=on", "--tls-psk", "k", "--tls-priority=NORMAL:-VERS-TLS1.2"])
    if (parsed._tag !== "Serve") throw new Error(parsed._tag)
    expect(parsed.options.config.tlsPriority).toBe("NORMAL:-VERS-TLS1.2")
    expect(() => Cli.parse(["--tls-priority", "NORMAL:+GROUP-X25519"])).toThrow(
      /--tls-priority: "\+GROUP-X25519": .*no equivalent/
    )
    expect(() => Cli.parse(["--tls-priority=LEGACY"])).toThrow(/--tls-priority: "LEGACY"/)
  })

  it.live("the bin serves libnbd under it, and exits 1 with a one-line error on one it refuses", () =>
    Effect.gen(function* () {
      const { pki } = yield* credentials
      const cli = (args: ReadonlyArray<string>) => run("node", [serverBin, ...args], { env: toolEnv() })
      const good = yield* cli([
        "-U",
        "-",
        "--tls=require",
        "--tls-certificates",
        pki,
        "--tls-priority=NORMAL:-VERS-ALL:+VERS-TLS1.3",
        "--run",
        `nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=${pki}"`
      ])
      expect(good.code, good.stderr).toBe(0)
      expect(good.stdout.trim()).toBe(String(1 << 30))
      const bad = yield* cli(["-U", "-", "--tls=require", "--tls-certificates", pki, "--tls-priority=NORMAL:+SHA1"])
      expect(bad.code).toBe(1)
      expect(bad.stderr.trim().split("\n")).toHaveLength(1)
      expect(bad.stderr).toMatch(/^effect-nbd-server: error: --tls-priority: "\+SHA1"/)
    })
  )
})
