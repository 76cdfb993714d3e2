import { beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Cli from "../src/internal/cli.js"
import { buildServerBin, makeTlsCredentials, run, runOk, serverBin as bin, toolEnv } from "./helpers.js"

/** A client certificate signed by the CA of `pki`, in a directory laid out as libnbd reads it. */
const makeClientCredentials = (pki: string, dir: string) =>
  Effect.gen(function* () {
    Fs.mkdirSync(dir, { recursive: true })
    const file = (name: string) => Path.join(dir, name)
    Fs.copyFileSync(Path.join(pki, "ca-cert.pem"), file("ca-cert.pem"))
    Fs.writeFileSync(
      file("client.info"),
      "country = US\ncn = alice\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n"
    )
    yield* runOk("certtool", ["--generate-privkey", "--key-type=ecdsa", "--outfile", file("client-key.pem")])
    yield* runOk("certtool", [
      "--generate-certificate",
      "--load-ca-certificate",
      Path.join(pki, "ca-cert.pem"),
      "--load-ca-privkey",
      Path.join(pki, "ca-key.pem"),
      "--load-privkey",
      file("client-key.pem"),
      "--template",
      file("client.info"),
      "--outfile",
      file("client-cert.pem")
    ])
    return dir
  })

describe("--tls-verify-peer, as nbdkit's", () => {
  beforeAll(buildServerBin, 120_000)

  it.live("a client with a certificate the CA signed connects; one without, or with another CA's, does not", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-verify-"))),
        (d) => Effect.sync(() => Fs.rmSync(d, { recursive: true, force: true }))
      )
      const { pki } = yield* makeTlsCredentials(dir)
      const client = yield* makeClientCredentials(pki, Path.join(dir, "client"))
      // A certificate from another CA, for the same name.
      const other = yield* makeTlsCredentials(Path.join(dir, "other"))
      const stranger = yield* makeClientCredentials(other.pki, Path.join(dir, "stranger"))
      Fs.copyFileSync(Path.join(pki, "ca-cert.pem"), Path.join(stranger, "ca-cert.pem"))
      const check = [
        `nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=${client}" &&`,
        `! nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=${pki}" 2>/dev/null &&`,
        `! nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=${stranger}" 2>/dev/null`
      ].join(" ")
      // The same script against nbdkit and against effect-nbd-server.
      const nbdkit = yield* run(
        "nbdkit",
        ["-U", "-", "--tls=require", `--tls-certificates=${pki}`, "--tls-verify-peer", "memory", "1M", "--run", check],
        { env: toolEnv() }
      )
      expect(nbdkit.code, nbdkit.stderr).toBe(0)
      expect(nbdkit.stdout.trim()).toBe(String(1 << 20))
      const ours = yield* run(
        "node",
        [
          bin,
          "-U",
          "-",
          "--tls=require",
          "--tls-certificates",
          pki,
          "--tls-verify-peer",
          "memory",
          "1M",
          "--run",
          check
        ],
        { env: toolEnv() }
      )
      expect(ours.code, ours.stderr).toBe(0)
      expect(ours.stdout.trim()).toBe(String(1 << 20))
      // Without --tls-verify-peer the certificate-less client is served, as before.
      const lax = yield* run(
        "node",
        [
          bin,
          "-U",
          "-",
          "--tls=require",
          "--tls-certificates",
          pki,
          "memory",
          "1M",
          "--run",
          `nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=${pki}"`
        ],
        { env: toolEnv() }
      )
      expect(lax.code, lax.stderr).toBe(0)
    })
  )

  it("--tls-verify-peer needs X.509 certificates", () => {
    expect(() => Cli.parse(["--tls=on", "--tls-psk", "k", "--tls-verify-peer"])).toThrow(/needs --tls-certificates/)
    expect(() => Cli.parse(["--tls-verify-peer"])).toThrow(/needs --tls-certificates/)
  })
})
