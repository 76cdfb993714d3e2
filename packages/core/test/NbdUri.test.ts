import { describe, expect, it } from "@effect/vitest"
import { NbdUri } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

const tcp = (host: string, port = 10809): NbdUri.Transport => ({ _tag: "Tcp", host, port })
const unix = (path: string): NbdUri.Transport => ({ _tag: "Unix", path })

const expected = (
  transport: NbdUri.Transport,
  exportName: string,
  options: { readonly tls?: boolean; readonly query?: ReadonlyArray<readonly [string, string]> } = {}
): NbdUri.NbdUri => ({
  transport,
  tls: options.tls ?? false,
  exportName,
  query: new Map(options.query ?? [])
})

describe("NbdUri.parse", () => {
  const good: ReadonlyArray<readonly [string, NbdUri.NbdUri]> = [
    ["nbd://example.com", expected(tcp("example.com"), "")],
    // libnbd connects to localhost when the URI names no host (nbdinfo nbd:/// tries localhost:10809).
    ["nbd://", expected(tcp("localhost"), "")],
    ["nbd:///disk", expected(tcp("localhost"), "disk")],
    ["nbd://example.com/", expected(tcp("example.com"), "")],
    ["nbd://example.com/disk", expected(tcp("example.com"), "disk")],
    ["nbd://example.com:10810/disk", expected(tcp("example.com", 10810), "disk")],
    ["nbd://example.com:10809/", expected(tcp("example.com"), "")],
    ["nbd://example.com//disk", expected(tcp("example.com"), "/disk")],
    ["nbd://example.com/hello%20world", expected(tcp("example.com"), "hello world")],
    ["nbd://example.com/a%2Fb", expected(tcp("example.com"), "a/b")],
    ["nbd://example.com/d%C3%AFsk", expected(tcp("example.com"), "dïsk")],
    ["nbd://example.com/%E6%97%A5%E6%9C%AC", expected(tcp("example.com"), "日本")],
    ["nbd://192.168.0.1:1234/x", expected(tcp("192.168.0.1", 1234), "x")],
    ["nbd://[::1]", expected(tcp("::1"), "")],
    ["nbd://[::1]:10810/disk", expected(tcp("::1", 10810), "disk")],
    ["nbd://[fe80::1:2]/", expected(tcp("fe80::1:2"), "")],
    ["nbds://example.com/disk", expected(tcp("example.com"), "disk", { tls: true })],
    [
      "nbds://example.com/disk?tls-certificates=/etc/pki/nbd",
      expected(tcp("example.com"), "disk", { tls: true, query: [["tls-certificates", "/etc/pki/nbd"]] })
    ],
    ["nbd+unix:///disk?socket=sock", expected(unix("sock"), "disk")],
    // libnbd takes the user information as the TLS username; a Unix URI has no authority, so tls-username=.
    ["nbds://alice@example.com/disk", { ...expected(tcp("example.com"), "disk", { tls: true }), username: "alice" }],
    ["nbds://al%20ice@[::1]:1234/", { ...expected(tcp("::1", 1234), "", { tls: true }), username: "al ice" }],
    ["nbds+unix:///?socket=/s&tls-username=bob", { ...expected(unix("/s"), "", { tls: true }), username: "bob" }],
    // libnbd also takes a user with an empty host (the PSK identity), which WHATWG's URL alone refuses.
    [
      "nbds+unix://alice@/?socket=/s&tls-psk-file=/k.psk",
      { ...expected(unix("/s"), "", { tls: true, query: [["tls-psk-file", "/k.psk"]] }), username: "alice" }
    ],
    ["nbd+unix://al%20ice@/disk?socket=/s", { ...expected(unix("/s"), "disk"), username: "al ice" }],
    ["nbds+unix://alice@?socket=/s", { ...expected(unix("/s"), "", { tls: true }), username: "alice" }],
    ["nbds://alice@/disk", { ...expected(tcp("localhost"), "disk", { tls: true }), username: "alice" }],
    [
      "nbds://h/?tls-verify-peer=false&tls-hostname=x.example&=ignored",
      expected(tcp("h"), "", {
        tls: true,
        query: [
          ["tls-verify-peer", "false"],
          ["tls-hostname", "x.example"]
        ]
      })
    ],
    ["nbd+unix:///?socket=/tmp/nbd.sock", expected(unix("/tmp/nbd.sock"), "")],
    ["nbd+unix://?socket=/tmp/nbd.sock", expected(unix("/tmp/nbd.sock"), "")],
    ["nbd+unix:////disk?socket=/tmp/nbd.sock", expected(unix("/tmp/nbd.sock"), "/disk")],
    ["nbd+unix:///hello%20world?socket=/tmp/a%20b", expected(unix("/tmp/a b"), "hello world")],
    [
      "nbds+unix:///disk?socket=/tmp/s&tls-psk-file=/etc/keys.psk",
      expected(unix("/tmp/s"), "disk", { tls: true, query: [["tls-psk-file", "/etc/keys.psk"]] })
    ]
  ]

  for (const [uri, want] of good) {
    it.effect(uri, () =>
      Effect.gen(function* () {
        expect(yield* NbdUri.parse(uri)).toEqual(want)
      })
    )
  }

  // RFC 3986 (which uri.md defers to) gives "+" no special meaning in a query, and libnbd decodes query
  // values with xmlURIUnescapeString, which only undoes %XX: "+" is a plus sign, not a space.
  it.effect("a '+' in the socket path is a plus sign, not a space", () =>
    Effect.gen(function* () {
      expect(yield* NbdUri.parse("nbd+unix:///?socket=/tmp/a+b")).toEqual(expected(unix("/tmp/a+b"), ""))
    })
  )

  it.effect("an export name of 4096 bytes is accepted", () =>
    Effect.gen(function* () {
      const name = "é".repeat(2048) // 4096 bytes of UTF-8
      const parsed = yield* NbdUri.parse(`nbd://h/${encodeURIComponent(name)}`)
      expect(parsed.exportName).toBe(name)
    })
  )

  const malformed: ReadonlyArray<readonly [string, string]> = [
    ["", "empty string"],
    ["not a uri", "no scheme"],
    ["example.com:10809", "no NBD scheme"],
    ["/tmp/nbd.sock", "a bare path"],
    ["http://example.com/disk", "unknown scheme"],
    ["nbd://u:secret@example.com/", "a password"],
    ["nbd://example.com:0/", "port zero"],
    ["nbds://example.com/?tls-verify-peer=maybe", "tls-verify-peer not a boolean"],
    ["nbd:example.com", "not the scheme:// form"],
    ["nbd://example.com:99999/", "port out of range"],
    ["nbd://example.com:port/", "port not a number"],
    ["nbd://example.com/%zz", "bad percent-encoding"],
    ["nbd://example.com/?socket=/tmp/nbd.sock", "socket= with TCP"],
    ["nbds://example.com/?socket=/tmp/nbd.sock", "socket= with TLS over TCP"],
    ["nbd+unix:///disk", "Unix without socket="],
    ["nbd+unix:///disk?socket=", "Unix with an empty socket="],
    ["nbds+unix:///", "TLS Unix without socket="],
    ["nbd+unix://example.com/disk?socket=/tmp/nbd.sock", "Unix with a host"],
    ["nbd+unix://:10809/disk?socket=/tmp/nbd.sock", "Unix with a port"],
    ["nbd+unix://alice@example.com/?socket=/tmp/nbd.sock", "Unix with a user and a host"],
    ["nbds+unix://alice:secret@/?socket=/tmp/nbd.sock", "Unix with a user, a password and no host"],
    // libnbd insists on scheme://: "URI must begin with 'nbd+unix://'"
    ["nbd+unix:disk?socket=/tmp/nbd.sock", "Unix without //"],
    ["nbd+unix:/disk?socket=/tmp/nbd.sock", "Unix without // (absolute path)"]
  ]

  for (const [uri, why] of malformed) {
    it.effect(`${why}: ${JSON.stringify(uri)} fails with EINVAL`, () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(NbdUri.parse(uri))
        expect(error._tag).toBe("InvalidArgumentError")
        expect(error.errno).toBe("EINVAL")
        expect(error.operation).toBe("nbd_connect_uri")
        expect(error.message).toContain(uri)
      })
    )
  }

  it.effect("NbdUriFromString decodes and encodes with effect/Schema", () =>
    Effect.gen(function* () {
      const decoded = yield* Schema.decodeEffect(NbdUri.NbdUriFromString)("nbds://alice@h:1234/x?tls-hostname=y")
      expect(decoded).toEqual({
        ...expected(tcp("h", 1234), "x", { tls: true, query: [["tls-hostname", "y"]] }),
        username: "alice"
      })
      expect(yield* Schema.encodeEffect(NbdUri.NbdUriFromString)(decoded)).toBe("nbds://alice@h:1234/x?tls-hostname=y")
    })
  )

  // libnbd's nbd_connect_uri passes the path to nbd_set_export_name, which fails with ENAMETOOLONG
  // ("export name too long for NBD protocol") past 4096 bytes; the reference lists the same errno.
  it.effect("an export name over 4096 bytes fails with ENAMETOOLONG", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(NbdUri.parse(`nbd://h/${"a".repeat(4097)}`))
      expect(error._tag).toBe("InvalidArgumentError")
      expect(error.errno).toBe("ENAMETOOLONG")
    })
  )

  it.effect("parsing is lazy: a bad URI fails only when run", () =>
    Effect.gen(function* () {
      const effect = NbdUri.parse("bogus")
      const result = yield* Effect.result(effect)
      expect(result._tag).toBe("Failure")
    })
  )
})

describe("NbdUri.format", () => {
  it("TCP: default port omitted, other ports kept", () => {
    expect(NbdUri.format({ transport: tcp("example.com") })).toBe("nbd://example.com/")
    expect(NbdUri.format({ transport: tcp("example.com"), exportName: "disk" })).toBe("nbd://example.com/disk")
    expect(NbdUri.format({ transport: tcp("example.com", 10810), exportName: "disk" })).toBe(
      "nbd://example.com:10810/disk"
    )
  })

  it("IPv6 hosts in brackets", () => {
    expect(NbdUri.format({ transport: tcp("::1"), exportName: "x" })).toBe("nbd://[::1]/x")
    expect(NbdUri.format({ transport: tcp("fe80::1", 1234) })).toBe("nbd://[fe80::1]:1234/")
  })

  it("TLS schemes", () => {
    expect(NbdUri.format({ transport: tcp("example.com"), tls: true, exportName: "disk" })).toBe(
      "nbds://example.com/disk"
    )
    expect(NbdUri.format({ transport: unix("/tmp/s"), tls: true })).toBe("nbds+unix:///?socket=/tmp/s")
  })

  it("Unix sockets", () => {
    expect(NbdUri.format({ transport: unix("/tmp/nbd.sock"), exportName: "disk" })).toBe(
      "nbd+unix:///disk?socket=/tmp/nbd.sock"
    )
  })

  it("export names are percent-encoded; '/' is kept", () => {
    expect(NbdUri.format({ transport: tcp("h"), exportName: "hello world" })).toBe("nbd://h/hello%20world")
    expect(NbdUri.format({ transport: tcp("h"), exportName: "/disk" })).toBe("nbd://h//disk")
    expect(NbdUri.format({ transport: tcp("h"), exportName: "a/b" })).toBe("nbd://h/a/b")
    expect(NbdUri.format({ transport: tcp("h"), exportName: "a?b#c%d" })).toBe("nbd://h/a%3Fb%23c%25d")
    expect(NbdUri.format({ transport: tcp("h"), exportName: "dïsk" })).toBe("nbd://h/d%C3%AFsk")
  })

  it("other query parameters follow socket=", () => {
    expect(
      NbdUri.format({
        transport: unix("/tmp/s"),
        tls: true,
        exportName: "disk",
        query: new Map([["tls-psk-file", "/etc/keys.psk"]])
      })
    ).toBe("nbds+unix:///disk?socket=/tmp/s&tls-psk-file=/etc/keys.psk")
  })

  // A space must be written %20: libnbd (and any RFC 3986 parser) reads "+" in a query as a plus sign.
  it("a space in the socket path is written %20, not '+'", () => {
    expect(NbdUri.format({ transport: unix("/tmp/a b") })).toBe("nbd+unix:///?socket=/tmp/a%20b")
  })
})

describe("NbdUri round trips", () => {
  const canonical = [
    "nbd://example.com/",
    "nbd://example.com/disk",
    "nbd://example.com:10810/disk",
    "nbds://example.com/disk",
    "nbd://[::1]/",
    "nbds://[fe80::1]:1234/x",
    "nbd://example.com//disk",
    "nbd://h/hello%20world",
    "nbd://h/d%C3%AFsk",
    "nbd+unix:///disk?socket=/tmp/nbd.sock",
    "nbd+unix:///?socket=/tmp/nbd.sock",
    "nbds+unix:///disk?socket=/tmp/s&tls-psk-file=/etc/keys.psk",
    "nbds://alice@example.com/disk",
    "nbds+unix:///?socket=/tmp/s&tls-username=alice"
  ]
  for (const uri of canonical) {
    it.effect(`format(parse(${uri})) gives it back`, () =>
      Effect.gen(function* () {
        expect(NbdUri.format(yield* NbdUri.parse(uri))).toBe(uri)
      })
    )
  }

  const names = ["", "disk", "/disk", "hello world", "a?b#c%d&e=f", "dïsk", "日本", "a+b", "a/b/", "%41"]
  const transports = [tcp("example.com"), tcp("::1", 1234), unix("/tmp/nbd.sock"), unix("/tmp/a b&c=d+e")]
  it.effect("parse(format(x)) gives x back for awkward names and paths", () =>
    Effect.gen(function* () {
      for (const transport of transports) {
        for (const exportName of names) {
          for (const tls of [false, true]) {
            const x = expected(transport, exportName, { tls })
            expect(yield* NbdUri.parse(NbdUri.format(x)), NbdUri.format(x)).toEqual(x)
          }
        }
      }
    })
  )
})
