import { describe, expect, it } from "@effect/vitest"
import * as TlsPriority from "@effect-nbd/core/TlsPriority"
import * as Either from "effect/Either"

const ok = (priority: string) => Either.getOrThrow(TlsPriority.toNodeOptions(priority))
const refused = (priority: string) => Either.flip(TlsPriority.toNodeOptions(priority)).pipe(Either.getOrThrow)

describe("TlsPriority.toNodeOptions", () => {
  it("base keywords alone keep Node's defaults; PFS drops static RSA and plain PSK key exchange", () => {
    for (const base of ["NORMAL", "PERFORMANCE", "SECURE128", "@SYSTEM", "NORMAL:+PSK:+DHE-PSK:+ECDHE-PSK"])
      expect(ok(base), base).toEqual({})
    expect(ok("PFS").ciphers).toMatch(/:!kRSA:!kPSK$/)
    expect(ok("NORMAL:%SERVER_PRECEDENCE")).toEqual({ honorCipherOrder: true })
  })

  it("versions become one range", () => {
    expect(ok("NORMAL:-VERS-ALL:+VERS-TLS1.3")).toEqual({ minVersion: "TLSv1.3", maxVersion: "TLSv1.3" })
    expect(ok("NORMAL:!VERS-TLS1.3")).toEqual({ minVersion: "TLSv1.2", maxVersion: "TLSv1.2" })
    expect(ok("NORMAL:+VERS-TLS-ALL")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.3" })
    expect(ok("NORMAL:+VERS-TLS1.1")).toEqual({ minVersion: "TLSv1.1", maxVersion: "TLSv1.3" })
    expect(refused("NORMAL:+VERS-TLS1.0").message).toMatch(/gap/)
    expect(refused("NORMAL:-VERS-ALL").message).toMatch(/no TLS version/)
  })

  it("ciphers: TLS 1.3 suites by name, TLS 1.2 suites narrowed from HIGH; a side with none shrinks the range", () => {
    expect(ok("NORMAL:-CIPHER-ALL:+AES-256-GCM").ciphers).toBe(
      "TLS_AES_256_GCM_SHA384:AESGCM+AES256+HIGH:!aNULL:!eNULL:!MD5:!RC4:!DES:!3DES:!CAMELLIA"
    )
    expect(ok("NONE:+VERS-TLS1.3:+CHACHA20-POLY1305")).toEqual({
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: "TLS_CHACHA20_POLY1305_SHA256"
    })
    expect(ok("NORMAL:-CIPHER-ALL:+AES-128-CBC")).toMatchObject({ maxVersion: "TLSv1.2" })
    expect(ok("NORMAL:-VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM")).toEqual({
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: "TLS_AES_128_GCM_SHA256"
    })
    expect(refused("NORMAL:-VERS-TLS1.2:-CIPHER-ALL:+AES-256-CBC").message).toMatch(/no cipher/)
  })

  it("what Node cannot express is refused, naming the element", () => {
    for (const [priority, element] of [
      ["SECURE256", "SECURE256"],
      ["LEGACY:-VERS-TLS1.0", "LEGACY"],
      ["NORMAL:+SHA1", "+SHA1"],
      ["NORMAL:-RSA", "-RSA"],
      ["NORMAL:+GROUP-X25519", "+GROUP-X25519"],
      ["NORMAL:%COMPAT", "%COMPAT"],
      ["NORMAL:VERS-TLS1.2", "VERS-TLS1.2"],
      ["NORMAL:-PSK", "-PSK"],
      ["", ""]
    ] as const)
      expect(refused(priority), priority).toMatchObject({ _tag: "TlsPriorityError", element })
  })
})
