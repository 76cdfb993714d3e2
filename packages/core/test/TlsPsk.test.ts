import { describe, expect, it } from "@effect/vitest"
import { TlsPsk } from "@effect-nbd/core"
import * as Result from "effect/Result"
import * as Option from "effect/Option"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")

const keysOf = (text: string) => {
  const parsed = TlsPsk.parse(text)
  if (Result.isFailure(parsed)) throw new Error(`unexpected ${parsed.failure.message}`)
  return parsed.success.map((k) => ({ username: k.username, key: hex(k.key), line: k.line }))
}

const errorOf = (text: string) => {
  const parsed = TlsPsk.parse(text)
  if (Result.isSuccess(parsed)) throw new Error("expected a parse error")
  return { _tag: parsed.failure._tag, line: parsed.failure.line, message: parsed.failure.message }
}

describe("TlsPsk.parse", () => {
  it("reads username:hexkey lines in order", () => {
    expect(keysOf("alice:0123abcd\nbob:FFee\n")).toEqual([
      { username: "alice", key: "0123abcd", line: 1 },
      { username: "bob", key: "ffee", line: 2 }
    ])
  })

  it("splits at the first colon: the key is hexadecimal, so a second colon is a bad key", () => {
    // The test server used to split at the last colon and read this as user "a:b"; GnuTLS and libnbd take
    // the name to the first colon.
    expect(errorOf("a:b:00ff")).toEqual({
      _tag: "TlsPskParseError",
      line: 1,
      message: "the key of a is not hexadecimal"
    })
  })

  it("decodes a #hex username, as psktool writes a name that holds a colon", () => {
    expect(keysOf("#613a62:00ff")).toEqual([{ username: "a:b", key: "00ff", line: 1 }])
  })

  it("keeps names with other characters as they are", () => {
    expect(keysOf("héllo wörld:01")).toEqual([{ username: "héllo wörld", key: "01", line: 1 }])
  })

  it("skips blank lines and # comments, and takes CRLF and trailing blanks", () => {
    expect(keysOf("# keys for the tests\n\n#\n  \nalice:00ff\r\n#deadbeef\nbob:01 \t\n")).toEqual([
      { username: "alice", key: "00ff", line: 5 },
      { username: "bob", key: "01", line: 7 }
    ])
  })

  it("refuses a line without a colon, an empty name, and an empty, odd or non-hex key, naming the line", () => {
    expect(errorOf("alice:00\nbob\n")).toEqual({
      _tag: "TlsPskParseError",
      line: 2,
      message: "expected username:hexkey"
    })
    expect(errorOf(":00ff")).toMatchObject({ line: 1, message: "the username is empty" })
    expect(errorOf("alice:")).toMatchObject({ line: 1, message: "the key of alice is not hexadecimal" })
    expect(errorOf("alice:abc")).toMatchObject({ line: 1, message: "the key of alice is not hexadecimal" })
    expect(errorOf("alice:zz")).toMatchObject({ line: 1, message: "the key of alice is not hexadecimal" })
  })

  it("an empty file has no keys", () => {
    expect(keysOf("")).toEqual([])
  })
})

describe("TlsPsk.find", () => {
  it("gives the first entry of a name, as GnuTLS does, and none for an unknown name", () => {
    const parsed = Result.getOrThrow(TlsPsk.parse("alice:01\nbob:02\nalice:03\n"))
    expect(Option.map(TlsPsk.find(parsed, "alice"), (k) => hex(k.key))).toEqual(Option.some("01"))
    expect(Option.isNone(TlsPsk.find(parsed, "carol"))).toBe(true)
    // A name is matched whole, not as a prefix.
    expect(Option.isNone(TlsPsk.find(parsed, "ali"))).toBe(true)
  })
})

describe("TlsPsk.formatLine", () => {
  it("writes what parse reads back, hex-encoding names psktool would", () => {
    const key = new Uint8Array([0, 1, 0xab, 0xff])
    expect(TlsPsk.formatLine("alice", key)).toBe("alice:0001abff")
    expect(TlsPsk.formatLine("a:b", key)).toBe("#613a62:0001abff")
    expect(TlsPsk.formatLine("#x", key)).toBe("#2378:0001abff")
    for (const name of ["alice", "a:b", "#x", "héllo wörld"])
      expect(keysOf(TlsPsk.formatLine(name, key))).toEqual([{ username: name, key: "0001abff", line: 1 }])
  })
})

describe("TlsPsk against psktool", () => {
  it("reads the file psktool writes, a name with a colon included, to the same keys", () => {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-nbd-psk-"))
    try {
      const file = Path.join(dir, "keys.psk")
      for (const user of ["alice", "a:b", "héllo wörld"])
        execFileSync("psktool", ["-u", user, "-p", file], { stdio: "ignore" })
      const text = Fs.readFileSync(file, "utf8")
      const keys = keysOf(text)
      expect(keys.map((k) => k.username)).toEqual(["alice", "a:b", "héllo wörld"])
      // Each key is the hex psktool wrote on that entry's line, and formatLine writes the line psktool wrote.
      const lines = text.trimEnd().split("\n")
      keys.forEach((k, i) => {
        expect(lines[i]!.endsWith(`:${k.key}`)).toBe(true)
        expect(TlsPsk.formatLine(k.username, Buffer.from(k.key, "hex"))).toBe(lines[i])
      })
    } finally {
      Fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
