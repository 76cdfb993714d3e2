import { describe, expect, it } from "@effect/vitest"
import * as Tls from "node:tls"
import * as TlsPriority from "../src/TlsPriority.js"

const options = (s: string) => {
  const r = TlsPriority.parse(s)
  if (r._tag !== "Options") throw new Error(`${s}: ${r._tag}: ${r.message}`)
  return r.options
}

const refused = (s: string) => {
  const r = TlsPriority.parse(s)
  if (r._tag === "Options") throw new Error(`${s}: mapped to ${JSON.stringify(r.options)}`)
  return r
}

const tagOf = (s: string) => TlsPriority.parse(s)._tag

describe("keywords", () => {
  it("NORMAL and its peers keep Node's defaults: every version on, Node's cipher list", () => {
    for (const s of [
      "NORMAL",
      "normal",
      "PERFORMANCE",
      "SECURE128",
      "SECURE",
      "NORMAL:+PSK:+DHE-PSK:+ECDHE-PSK",
      "NORMAL:+COMP-NULL",
      " NORMAL: -VERS-TLS1.0: +VERS-TLS1.0"
    ])
      expect({ s, options: options(s) }).toEqual({ s, options: {} })
  })

  it("keywords choose the cipher list; a keyword added with + (or bare, after the first) widens it", () => {
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
    // With TLS 1.3 off the list holds only the TLS 1.2 suites.
    expect(options("SECURE256:-VERS-TLS1.3")).toEqual({
      minVersion: "TLSv1",
      maxVersion: "TLSv1.2",
      ciphers: strong
        .split(":")
        .filter((c) => !c.startsWith("TLS_"))
        .join(":")
    })
  })

  it("PFS keeps forward-secret key exchange only: no static RSA, no PSK unless added", () => {
    const pfs = options("PFS").ciphers!.split(":")
    expect(pfs.filter((c) => /^(AES|PSK|DHE-PSK|ECDHE-PSK)/.test(c))).toEqual([])
    expect(options("NORMAL:-AES-128-GCM").ciphers!.split(":")).toContain("AES256-GCM-SHA384")
    const withPsk = options("PFS:+ECDHE-PSK").ciphers!.split(":")
    expect(withPsk).toContain("ECDHE-PSK-CHACHA20-POLY1305")
    expect(withPsk.filter((c) => c.startsWith("PSK-"))).toEqual([])
  })

  it("%SERVER_PRECEDENCE is honorCipherOrder", () => {
    expect(options("NORMAL:%SERVER_PRECEDENCE")).toEqual({ honorCipherOrder: true })
    expect(options("NORMAL:-VERS-ALL:+VERS-TLS1.3:%SERVER_PRECEDENCE")).toEqual({
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      honorCipherOrder: true
    })
  })
})

describe("versions", () => {
  it("removing versions gives Node the range that is left", () => {
    expect(options("NORMAL:-VERS-TLS1.3")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.2" })
    expect(options("NORMAL:!VERS-TLS1.3")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.2" })
    expect(options("NORMAL:!VERS-TLS1.0:-VERS-TLS1.1")).toEqual({ minVersion: "TLSv1.2", maxVersion: "TLSv1.3" })
    expect(options("NORMAL:-VERS-ALL:+VERS-TLS1.3")).toEqual({ minVersion: "TLSv1.3", maxVersion: "TLSv1.3" })
    expect(options("NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2:+VERS-TLS1.1")).toEqual({
      minVersion: "TLSv1.1",
      maxVersion: "TLSv1.2"
    })
    expect(options("NORMAL:-VERS-TLS1.3:-VERS-TLS1.2")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.1" })
    // Taken off and put back, or added to what NORMAL has: all four on, so Node's defaults.
    for (const s of ["NORMAL:-VERS-TLS1.0:+VERS-TLS1.0", "NORMAL:+VERS-TLS-ALL", "NORMAL:+VERS-TLS1.1"])
      expect({ s, options: options(s) }).toEqual({ s, options: {} })
  })

  it("TLS 1.3 goes when TLS 1.2 does and an older version stays, as in GnuTLS", () => {
    expect(options("NORMAL:-VERS-TLS1.2")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1.1" })
    expect(options("NORMAL:-VERS-TLS1.2:-VERS-TLS1.1")).toEqual({ minVersion: "TLSv1", maxVersion: "TLSv1" })
  })

  it("datagram versions and removing SSL 3.0 change nothing on a stream", () => {
    expect(options("NORMAL:-VERS-DTLS-ALL:+VERS-DTLS1.2:-VERS-SSL3.0")).toEqual({})
  })

  it("a hole in the versions names the one left out and the element that left it", () => {
    expect(TlsPriority.parse("NORMAL:-VERS-TLS1.1")).toEqual({
      _tag: "Unsupported",
      element: "-VERS-TLS1.1",
      message:
        '"-VERS-TLS1.1": Node\'s TLS takes a range of protocol versions: TLSv1.1 cannot be left out between ' +
        "TLSv1 and TLSv1.3"
    })
    expect(refused("NORMAL:-VERS-ALL").message).toMatch(/no TLS version/)
  })
})

describe("ciphers", () => {
  it("TLS 1.3 suites, then TLS 1.2 suites, by name; a side with none shrinks the range", () => {
    expect(options("NORMAL:-CIPHER-ALL:+AES-256-GCM").ciphers).toBe(
      "TLS_AES_256_GCM_SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" +
        "DHE-RSA-AES256-GCM-SHA384:AES256-GCM-SHA384"
    )
    expect(options("NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305")).toEqual({
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: "TLS_CHACHA20_POLY1305_SHA256"
    })
    expect(options("NORMAL:-CIPHER-ALL:+AES-128-CBC")).toMatchObject({ maxVersion: "TLSv1.2" })
    expect(options("NORMAL:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM")).toEqual({
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ciphers: "TLS_AES_128_GCM_SHA256"
    })
    // Only TLS 1.0 and 1.1 are left (TLS 1.3 goes with 1.2): the CBC suites with SHA-1 still run there.
    expect(options("NORMAL:-VERS-TLS1.2:-CIPHER-ALL:+AES-256-CBC")).toEqual({
      minVersion: "TLSv1",
      maxVersion: "TLSv1.1",
      ciphers: "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES256-SHA:AES256-SHA"
    })
    expect(refused("NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-CBC").message).toMatch(/no cipher/)
  })

  it("+PSK and its kin add their suites to a cipher list, and nothing without one", () => {
    const list = options("NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305:+PSK:+DHE-PSK").ciphers!.split(":")
    expect(list).toContain("PSK-CHACHA20-POLY1305")
    expect(list).toContain("DHE-PSK-CHACHA20-POLY1305")
    expect(list).not.toContain("ECDHE-PSK-CHACHA20-POLY1305")
    expect(options("NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305").ciphers).not.toMatch(/PSK/)
  })

  it("Node takes every cipher list and range the mapping gives, and knows every suite named", () => {
    for (const s of [
      "PFS",
      "SECURE256",
      "SECURE256:-VERS-TLS1.3",
      "NORMAL:-VERS-ALL:+VERS-TLS1.3",
      "NORMAL:-AES-128-GCM:+AES-128-CCM:+AES-256-CCM:+PSK:+DHE-PSK:+ECDHE-PSK",
      "NORMAL:-VERS-TLS1.2:-CIPHER-ALL:+AES-256-CBC:+AES-128-CBC"
    ]) {
      const { honorCipherOrder: _, ...o } = options(s)
      expect(() => Tls.createSecureContext({ ...o }), s).not.toThrow()
      // OpenSSL refuses a list of one name it does not know: none is silently dropped from a longer one.
      if (o.ciphers !== undefined)
        for (const c of o.ciphers.split(":")) expect(() => Tls.createSecureContext({ ciphers: c }), c).not.toThrow()
    }
  })
})

describe("refusals", () => {
  it("EINVAL for what GnuTLS would reject as well", () => {
    for (const s of [
      "",
      ":",
      "FAST",
      "SYSTEM",
      "NORMAL:",
      "NORMAL::-VERS-TLS1.3",
      "NORMAL:+",
      "NORMAL:BOGUS",
      "NORMAL:VERS-TLS1.2",
      "NORMAL:NONE",
      "NORMAL:-SECURE128",
      "NORMAL:+VERS-TLS1.4",
      "NORMAL:%BOGUS",
      "NORMAL:%server_precedence",
      "NORMAL:-VERS-ALL",
      "NORMAL:-CIPHER-ALL"
    ])
      expect({ s, tag: tagOf(s) }).toEqual({ s, tag: "Invalid" })
  })

  it("ENOTSUP for what GnuTLS accepts but Node's TLS cannot be told", () => {
    for (const s of [
      "NORMAL:-VERS-TLS1.1",
      "NORMAL:-VERS-TLS-ALL:+VERS-TLS1.0:+VERS-TLS1.2",
      "NORMAL:+VERS-SSL3.0",
      "NORMAL:+CAMELLIA-128-GCM",
      "NORMAL:+ECDHE-RSA",
      "NORMAL:-RSA",
      "NORMAL:-PSK",
      "NORMAL:+SHA1",
      "NORMAL:-GROUP-ALL:+GROUP-X25519",
      "NORMAL:%COMPAT",
      "NORMAL:LEGACY",
      "NORMAL:+SUITEB128",
      "LEGACY",
      "SUITEB128",
      "NONE:+VERS-TLS1.2",
      "NONE:+VERS-TLS1.3:+CHACHA20-POLY1305",
      "@SYSTEM",
      "@LIBVIRT,SYSTEM",
      "+VERS-TLS1.2"
    ])
      expect({ s, tag: tagOf(s) }).toEqual({ s, tag: "Unsupported" })
  })

  it("names the element at fault, as written, in the message", () => {
    for (const [priority, element] of [
      ["LEGACY:-VERS-TLS1.0", "LEGACY"],
      ["NORMAL:+SHA1", "+SHA1"],
      ["NORMAL:-RSA", "-RSA"],
      ["NORMAL:+group-x25519", "+group-x25519"],
      ["NORMAL:%COMPAT", "%COMPAT"],
      ["NORMAL:VERS-TLS1.2", "VERS-TLS1.2"],
      ["NORMAL:-PSK", "-PSK"],
      ["NONE:+VERS-TLS1.3", "NONE"],
      ["@SYSTEM:-VERS-TLS1.0", "@SYSTEM"],
      ["NORMAL:-VERS-TLS1.3:-VERS-TLS1.2:-VERS-TLS1.0:-VERS-TLS1.1", "-VERS-TLS1.1"],
      ["", ""]
    ] as const) {
      const r = refused(priority)
      expect({ priority, element: r.element }).toEqual({ priority, element })
      if (element !== "") expect(r.message.startsWith(`"${element}": `), r.message).toBe(true)
    }
  })
})
