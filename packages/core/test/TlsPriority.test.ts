import { describe, expect, it } from "@effect/vitest"
import * as Tls from "node:tls"
import { parseTlsPriority } from "../src/internal/tlsPriority.js"

const options = (s: string) => {
  const r = parseTlsPriority(s)
  if (r._tag !== "Options") throw new Error(`${s}: ${r._tag}: ${r.message}`)
  return r.options
}

const tagOf = (s: string) => parseTlsPriority(s)._tag

describe("parseTlsPriority", () => {
  it("NORMAL and its peers keep Node's defaults: every version on, Node's cipher list", () => {
    for (const s of ["NORMAL", "normal", "PERFORMANCE", "SECURE128", "NORMAL:%SERVER_PRECEDENCE"])
      expect({ s, options: options(s) }).toEqual({ s, options: {} })
  })

  it("removing versions gives Node the range that is left", () => {
    expect(options("NORMAL:-VERS-TLS1.3")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.2" })
    expect(options("NORMAL:!VERS-TLS1.0:-VERS-TLS1.1")).toEqual({ minVersion: "TLSv1.2", maxVersion: "TLSv1.3" })
    expect(options("NORMAL:-VERS-ALL:+VERS-TLS1.3")).toEqual({ minVersion: "TLSv1.3", maxVersion: "TLSv1.3" })
    expect(options("NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2:+VERS-TLS1.1")).toEqual({
      minVersion: "TLSv1.1",
      maxVersion: "TLSv1.2"
    })
    expect(options("NORMAL:-VERS-TLS1.3:-VERS-TLS1.2")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.1" })
    // Taken off and put back: all four on again, so Node's defaults.
    expect(options("NORMAL:-VERS-TLS1.0:+VERS-TLS1.0")).toEqual({})
  })

  it("datagram versions and removing SSL 3.0 change nothing on a stream", () => {
    expect(options("NORMAL:-VERS-DTLS-ALL:+VERS-DTLS1.2:-VERS-SSL3.0")).toEqual({})
  })

  it("keywords choose the cipher list; a keyword added with + widens it", () => {
    const strong = options("SECURE256").ciphers!
    expect(options("SECURE192").ciphers).toBe(strong)
    expect(strong.split(":")).toContain("TLS_AES_256_GCM_SHA384")
    expect(strong).not.toMatch(/AES128|AES_128/)
    const pfs = options("PFS").ciphers!
    expect(pfs.split(":").every((c) => c.startsWith("TLS_") || /^(ECDHE|DHE)-/.test(c))).toBe(true)
    expect(strong.split(":").every((c) => pfs.split(":").includes(c))).toBe(true)
    expect(options("SECURE256:+SECURE128")).toEqual({})
    expect(options("SECURE256:+PFS").ciphers).toBe(pfs)
    expect(options("PFS:+SECURE256").ciphers).toBe(pfs)
    expect(options("SECURE256:SECURE128")).toEqual({})
    expect(options("SECURE256:-VERS-TLS1.3")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.2", ciphers: strong })
  })

  it("Node takes every cipher list and range the mapping gives", () => {
    for (const s of ["PFS", "SECURE256", "SECURE256:-VERS-TLS1.3", "NORMAL:-VERS-ALL:+VERS-TLS1.3"]) {
      const o = options(s)
      expect(() => Tls.createSecureContext({ ...o }), s).not.toThrow()
      // OpenSSL knows each suite named: none is silently dropped.
      if (o.ciphers !== undefined)
        for (const c of o.ciphers.split(":")) expect(Tls.getCiphers(), c).toContain(c.toLowerCase())
    }
  })

  it("EINVAL for what GnuTLS would reject as well", () => {
    for (const s of ["", "FAST", "NORMAL:", "NORMAL::-VERS-TLS1.3", "NORMAL:+", "NORMAL:BOGUS", "NORMAL:-VERS-ALL"])
      expect({ s, tag: tagOf(s) }).toEqual({ s, tag: "Invalid" })
  })

  it("ENOTSUP for what GnuTLS accepts but Node's TLS cannot be told", () => {
    for (const s of [
      "NORMAL:-VERS-TLS1.2",
      "NORMAL:-VERS-TLS1.1",
      "NORMAL:+VERS-SSL3.0",
      "NORMAL:-AES-128-GCM",
      "NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305",
      "NORMAL:+ECDHE-PSK",
      "NORMAL:-GROUP-ALL:+GROUP-X25519",
      "NORMAL:%COMPAT",
      "NORMAL:-SECURE128",
      "NORMAL:LEGACY",
      "LEGACY",
      "SUITEB128",
      "NONE:+VERS-TLS1.2",
      "SYSTEM",
      "@LIBVIRT,SYSTEM",
      "+VERS-TLS1.2"
    ])
      expect({ s, tag: tagOf(s) }).toEqual({ s, tag: "Unsupported" })
  })

  it("a hole in the versions names the one left out", () => {
    const r = parseTlsPriority("NORMAL:-VERS-TLS1.2")
    expect(r).toEqual({
      _tag: "Unsupported",
      message: "Node's TLS takes a range of protocol versions: TLSv1.2 cannot be left out between TLSv1 and TLSv1.3"
    })
  })
})
