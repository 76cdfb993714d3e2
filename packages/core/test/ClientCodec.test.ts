import { describe, expect, it } from "@effect/vitest"
import { ClientCodec, Protocol } from "@effect-nbd/core"

// ---------------------------------------------------------------------------------------------------------------
// Helpers: every expected vector is written by hand as hex; nothing below uses the encoders under test.
// ---------------------------------------------------------------------------------------------------------------

/** Hex (whitespace ignored) to bytes; several parts are concatenated. */
const hex = (...parts: ReadonlyArray<string>): Uint8Array => {
  const clean = parts.join("").replace(/\s+/g, "")
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error(`bad hex vector: ${clean}`)
  const out = new Uint8Array(clean.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16)
  return out
}

const toHex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")

/** The hex of an ASCII string (ASCII only: UTF-8 vectors are written out byte by byte). */
const ascii = (s: string): string => {
  let out = ""
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c > 0x7f) throw new Error("ascii() takes ASCII only")
    out += c.toString(16).padStart(2, "0")
  }
  return out
}

const zeros = (n: number): string => "00".repeat(n)

const NBDMAGIC = ascii("NBDMAGIC") // 4e42444d41474943
const IHAVEOPT = ascii("IHAVEOPT") // 49484156454f5054
const REP_MAGIC = "0003e889045565a9"
const OLDSTYLE_MAGIC = "0000420281861253"

/**
 * Every way the property tests cut a vector: whole, at every single position, at every pair of positions
 * (short vectors), one byte at a time, and one byte at a time with empty chunks in between. Each chunk is
 * a copy with its own buffer, so a decoder cannot read past a chunk's end by accident.
 */
const chunkings = (bytes: Uint8Array): Array<ReadonlyArray<Uint8Array>> => {
  const copy = (from: number, to: number) => bytes.slice(from, to)
  const out: Array<ReadonlyArray<Uint8Array>> = [[copy(0, bytes.length)]]
  for (let i = 1; i < bytes.length; i++) out.push([copy(0, i), copy(i, bytes.length)])
  if (bytes.length <= 64) {
    for (let i = 1; i < bytes.length; i++)
      for (let j = i + 1; j < bytes.length; j++) out.push([copy(0, i), copy(i, j), copy(j, bytes.length)])
  }
  out.push(Array.from(bytes, (_, i) => copy(i, i + 1)))
  out.push(Array.from(bytes, (_, i) => [new Uint8Array(0), copy(i, i + 1)]).flat())
  return out
}

const describeChunking = (chunks: ReadonlyArray<Uint8Array>): string =>
  `chunk sizes [${chunks.map((c) => c.length).join(",")}]`

const plain = <A>(
  r: A | ClientCodec.DecodeError
): A | { _tag: "ClientCodecDecodeError"; message: string; errno: string } =>
  r instanceof ClientCodec.DecodeError ? { _tag: r._tag, message: r.message, errno: r.errno } : r

// ---------------------------------------------------------------------------------------------------------------
// Handshake decoder driver
// ---------------------------------------------------------------------------------------------------------------

type Step =
  | { readonly _tag: "Greeting" }
  | { readonly _tag: "Reply"; readonly option: number }
  | { readonly _tag: "ExportName"; readonly noZeroes: boolean }

const Greeting: Step = { _tag: "Greeting" }
const Reply = (option: number): Step => ({ _tag: "Reply", option })
const ExportName = (noZeroes: boolean): Step => ({ _tag: "ExportName", noZeroes })

/**
 * Pushes the chunks one by one; after each push, decodes as many of the expected messages as are complete.
 * Stops decoding at the first DecodeError. Whatever is left is handed back by `rest()`.
 */
const runHandshake = (chunks: ReadonlyArray<Uint8Array>, steps: ReadonlyArray<Step>) => {
  const decoder = new ClientCodec.HandshakeDecoder()
  const results: Array<unknown> = []
  let next = 0
  let failed = false
  for (const chunk of chunks) {
    decoder.push(chunk)
    while (!failed && next < steps.length) {
      const step = steps[next]!
      const r =
        step._tag === "Greeting"
          ? decoder.decodeGreeting()
          : step._tag === "Reply"
            ? decoder.decodeOptionReply(step.option)
            : decoder.decodeExportNameReply(step.noZeroes)
      if (r === undefined) break
      results.push(plain(r))
      next++
      if (r instanceof ClientCodec.DecodeError) failed = true
    }
  }
  return { results, waiting: failed ? 0 : steps.length - next, rest: toHex(decoder.rest()) }
}

/** Decodes the vector whole, then checks every other chunking gives exactly the same. */
const handshake = (bytes: Uint8Array, steps: ReadonlyArray<Step>) => {
  const whole = runHandshake([bytes.slice()], steps)
  for (const chunks of chunkings(bytes)) {
    expect(runHandshake(chunks, steps), describeChunking(chunks)).toEqual(whole)
  }
  return whole
}

const decodeError = (pattern?: RegExp) => ({
  _tag: "ClientCodecDecodeError",
  errno: "",
  message: pattern === undefined ? expect.any(String) : expect.stringMatching(pattern)
})

/** An option reply: magic, option, type, length, payload. */
const optionReply = (option: number, type: number, payload: string): string => {
  const clean = payload.replace(/\s+/g, "")
  const u32 = (n: number) => n.toString(16).padStart(8, "0")
  return REP_MAGIC + u32(option) + u32(type) + u32(clean.length / 2) + clean
}

// ---------------------------------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------------------------------

describe("ClientCodec encoders", () => {
  it("encodeClientFlags: a big-endian u32", () => {
    expect(toHex(ClientCodec.encodeClientFlags(0))).toBe("00000000")
    expect(toHex(ClientCodec.encodeClientFlags(1))).toBe("00000001")
    expect(toHex(ClientCodec.encodeClientFlags(3))).toBe("00000003")
  })

  it("encodeOption without data: IHAVEOPT, option, length 0 (16 bytes)", () => {
    const b = ClientCodec.encodeOption(Protocol.Opt.STRUCTURED_REPLY)
    expect(b.length).toBe(16)
    expect(toHex(b)).toBe("49484156454f5054" + "00000008" + "00000000")
    expect(toHex(ClientCodec.encodeOption(Protocol.Opt.ABORT))).toBe("49484156454f5054" + "00000002" + "00000000")
    expect(toHex(ClientCodec.encodeOption(Protocol.Opt.EXTENDED_HEADERS))).toBe(
      "49484156454f5054" + "0000000b" + "00000000"
    )
  })

  it("encodeOption with data: NBD_OPT_EXPORT_NAME 'disk'", () => {
    const b = ClientCodec.encodeOption(Protocol.Opt.EXPORT_NAME, hex("6469736b"))
    expect(toHex(b)).toBe("49484156454f5054" + "00000001" + "00000004" + "6469736b")
  })

  it("encodeInfoRequest: empty name, no info requests", () => {
    expect(toHex(ClientCodec.encodeInfoRequest("", []))).toBe("00000000" + "0000")
  })

  it("encodeInfoRequest: name and info types", () => {
    expect(toHex(ClientCodec.encodeInfoRequest("disk", [3, 1, 2]))).toBe(
      "00000004" + "6469736b" + "0003" + "0003" + "0001" + "0002"
    )
  })

  it("encodeInfoRequest: the name length counts UTF-8 bytes, not characters", () => {
    // "dïsk" = 64 c3af 73 6b (5 bytes, 4 characters)
    expect(toHex(ClientCodec.encodeInfoRequest("dïsk", [Protocol.Info.BLOCK_SIZE]))).toBe(
      "00000005" + "64c3af736b" + "0001" + "0003"
    )
  })

  it("OPT_GO with its data, as a whole option request", () => {
    const b = ClientCodec.encodeOption(Protocol.Opt.GO, ClientCodec.encodeInfoRequest("disk", [3]))
    expect(toHex(b)).toBe("49484156454f5054" + "00000007" + "0000000c" + "00000004" + "6469736b" + "0001" + "0003")
  })

  it("encodeMetaContextRequest: no queries", () => {
    expect(toHex(ClientCodec.encodeMetaContextRequest("", []))).toBe("00000000" + "00000000")
  })

  it("encodeMetaContextRequest: export name and two queries", () => {
    expect(toHex(ClientCodec.encodeMetaContextRequest("disk", ["base:allocation", "qemu:dirty-bitmap:b"]))).toBe(
      "00000004" +
        "6469736b" +
        "00000002" +
        "0000000f" +
        ascii("base:allocation") +
        "00000013" +
        ascii("qemu:dirty-bitmap:b")
    )
  })

  it("compact request: READ (28 bytes)", () => {
    const b = ClientCodec.encodeRequest(
      { flags: 0, type: Protocol.Cmd.READ, cookie: 1, offset: 0x1000, length: 0x200 },
      false
    )
    expect(b.length).toBe(28)
    expect(toHex(b)).toBe("25609513" + "0000" + "0000" + "0000000000000001" + "0000000000001000" + "00000200")
  })

  it("compact request: WRITE with FUA and its payload after the header", () => {
    const b = ClientCodec.encodeRequest(
      { flags: Protocol.CmdFlag.FUA, type: Protocol.Cmd.WRITE, cookie: 2, offset: 512n, length: 4 },
      false,
      hex("61626364")
    )
    expect(toHex(b)).toBe(
      "25609513" + "0001" + "0001" + "0000000000000002" + "0000000000000200" + "00000004" + "61626364"
    )
  })

  it("compact request: 53-bit cookie, 63-bit offset, maximal u32 length", () => {
    const b = ClientCodec.encodeRequest(
      {
        flags: Protocol.CmdFlag.REQ_ONE,
        type: Protocol.Cmd.BLOCK_STATUS,
        cookie: Number.MAX_SAFE_INTEGER,
        offset: 0x7fffffffffffffffn,
        length: 0xffffffff
      },
      false
    )
    expect(toHex(b)).toBe("25609513" + "0008" + "0007" + "001fffffffffffff" + "7fffffffffffffff" + "ffffffff")
  })

  it("compact request: cookie with bits above 32", () => {
    const b = ClientCodec.encodeRequest(
      { flags: 0, type: Protocol.Cmd.FLUSH, cookie: 0x123456789ab, offset: 0, length: 0 },
      false
    )
    expect(toHex(b)).toBe("25609513" + "0000" + "0003" + "00000123456789ab" + "0000000000000000" + "00000000")
  })

  it("extended request: 64-bit length (32 bytes)", () => {
    const b = ClientCodec.encodeRequest(
      { flags: Protocol.CmdFlag.REQ_ONE, type: Protocol.Cmd.BLOCK_STATUS, cookie: 42, offset: 0, length: 0x100000000n },
      true
    )
    expect(b.length).toBe(32)
    expect(toHex(b)).toBe("21e41c71" + "0008" + "0007" + "000000000000002a" + "0000000000000000" + "0000000100000000")
  })

  it("extended request: WRITE with FUA|PAYLOAD_LEN and payload", () => {
    const b = ClientCodec.encodeRequest(
      { flags: 0x21, type: Protocol.Cmd.WRITE, cookie: 0x100000000, offset: 0x123456789an, length: 2 },
      true,
      hex("beef")
    )
    expect(toHex(b)).toBe(
      "21e41c71" + "0021" + "0001" + "0000000100000000" + "000000123456789a" + "0000000000000002" + "beef"
    )
  })

  it("writeRequestHeader writes at the position given, in a view with a byte offset, and nowhere else", () => {
    const backing = new Uint8Array(80).fill(0xee)
    const out = backing.subarray(3, 75)
    const req = { flags: 0, type: Protocol.Cmd.TRIM, cookie: 9, offset: 0x10, length: 0x20 }
    expect(ClientCodec.writeRequestHeader(out, 5, req, false)).toBe(28)
    expect(toHex(backing)).toBe(
      "ee".repeat(8) +
        "25609513" +
        "0000" +
        "0004" +
        "0000000000000009" +
        "0000000000000010" +
        "00000020" +
        "ee".repeat(80 - 8 - 28)
    )
    backing.fill(0xee)
    expect(ClientCodec.writeRequestHeader(out, 40, req, true)).toBe(32)
    expect(toHex(backing)).toBe(
      "ee".repeat(43) +
        "21e41c71" +
        "0000" +
        "0004" +
        "0000000000000009" +
        "0000000000000010" +
        "0000000000000020" +
        "ee".repeat(80 - 43 - 32)
    )
  })

  it("encodeString is UTF-8", () => {
    expect(toHex(ClientCodec.encodeString("dïsk"))).toBe("64c3af736b")
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Handshake decoding
// ---------------------------------------------------------------------------------------------------------------

describe("HandshakeDecoder greetings", () => {
  it("newstyle greeting (18 bytes)", () => {
    const r = handshake(hex(NBDMAGIC, IHAVEOPT, "0003"), [Greeting])
    expect(r).toEqual({ results: [{ _tag: "Newstyle", handshakeFlags: 3 }], waiting: 0, rest: "" })
  })

  it("newstyle greeting: 17 bytes are not enough", () => {
    const d = new ClientCodec.HandshakeDecoder()
    d.push(hex(NBDMAGIC, IHAVEOPT, "00"))
    expect(d.decodeGreeting()).toBeUndefined()
    d.push(hex("01"))
    expect(d.decodeGreeting()).toEqual({ _tag: "Newstyle", handshakeFlags: 1 })
    expect(d.buffered).toBe(0)
  })

  it("oldstyle greeting: the worked example (152 bytes)", () => {
    const bytes = hex(NBDMAGIC, OLDSTYLE_MAGIC, "0000000000100000", "0000", "052d", zeros(124))
    expect(bytes.length).toBe(152)
    const r = handshake(bytes, [Greeting])
    expect(r).toEqual({
      results: [{ _tag: "Oldstyle", size: 0x100000n, globalFlags: 0, transmissionFlags: 0x052d }],
      waiting: 0,
      rest: ""
    })
  })

  it("oldstyle greeting: 151 bytes are not enough", () => {
    const d = new ClientCodec.HandshakeDecoder()
    d.push(hex(NBDMAGIC, OLDSTYLE_MAGIC, "0000000000100000", "0000", "052d", zeros(123)))
    expect(d.decodeGreeting()).toBeUndefined()
    expect(d.decodeGreeting()).toBeUndefined()
    d.push(hex("00"))
    expect(d.decodeGreeting()).toEqual({
      _tag: "Oldstyle",
      size: 0x100000n,
      globalFlags: 0,
      transmissionFlags: 0x052d
    })
  })

  it("oldstyle greeting: global flags and a size above 2^53 are reported exactly", () => {
    const r = handshake(hex(NBDMAGIC, OLDSTYLE_MAGIC, "fffffffffffffe00", "0001", "0003", zeros(124)), [Greeting])
    expect(r.results).toEqual([{ _tag: "Oldstyle", size: 0xfffffffffffffe00n, globalFlags: 1, transmissionFlags: 3 }])
  })

  it("bytes after the greeting stay buffered for the next message", () => {
    const r = handshake(hex(NBDMAGIC, IHAVEOPT, "0001", "aabbcc"), [Greeting])
    expect(r).toEqual({ results: [{ _tag: "Newstyle", handshakeFlags: 1 }], waiting: 0, rest: "aabbcc" })
  })

  it("wrong NBDMAGIC is a DecodeError", () => {
    const r = handshake(hex(ascii("NBDMAGIX"), IHAVEOPT, "0003"), [Greeting])
    expect(r.results).toEqual([decodeError(/magic/)])
  })

  it("neither IHAVEOPT nor the oldstyle magic is a DecodeError", () => {
    const r = handshake(hex(NBDMAGIC, "0000420281861254", "0003"), [Greeting])
    expect(r.results).toEqual([decodeError(/oldstyle or fixed newstyle/)])
  })

  it("nothing buffered: undefined", () => {
    const d = new ClientCodec.HandshakeDecoder()
    expect(d.decodeGreeting()).toBeUndefined()
    expect(d.decodeOptionReply(7)).toBeUndefined()
    expect(d.decodeExportNameReply(false)).toBeUndefined()
    expect(d.buffered).toBe(0)
  })
})

describe("HandshakeDecoder option replies", () => {
  it("the worked example: nbdkit's replies to libnbd, then transmission bytes left for the reply decoder", () => {
    const simpleReply = "67446698" + "00000000" + "0000000000000001"
    const bytes = hex(
      NBDMAGIC,
      IHAVEOPT,
      "0003",
      optionReply(11, 0x80000001, ""),
      optionReply(8, 1, ""),
      optionReply(10, 4, "00000001" + ascii("base:allocation")),
      optionReply(10, 1, ""),
      optionReply(6, 3, "0000" + "0000000000100000" + "05ad"),
      optionReply(6, 3, "0003" + "00000001" + "00010000" + "ffffffff"),
      optionReply(6, 1, ""),
      optionReply(7, 3, "0000" + "0000000000100000" + "05ad"),
      optionReply(7, 1, ""),
      simpleReply
    )
    // Check one reply by hand against the reference layout (META_CONTEXT, length 19).
    expect(optionReply(10, 4, "00000001" + ascii("base:allocation"))).toBe(
      "0003e889045565a9" + "0000000a" + "00000004" + "00000013" + "00000001" + "626173653a616c6c6f636174696f6e"
    )
    const r = handshake(bytes, [
      Greeting,
      Reply(11),
      Reply(8),
      Reply(10),
      Reply(10),
      Reply(6),
      Reply(6),
      Reply(6),
      Reply(7),
      Reply(7)
    ])
    expect(r).toEqual({
      results: [
        { _tag: "Newstyle", handshakeFlags: 3 },
        { _tag: "Error", option: 11, type: Protocol.Rep.ERR_UNSUP, message: "" },
        { _tag: "Ack", option: 8 },
        { _tag: "MetaContext", option: 10, id: 1, name: "base:allocation" },
        { _tag: "Ack", option: 10 },
        { _tag: "Info", option: 6, info: { _tag: "Export", size: 1048576n, transmissionFlags: 0x05ad } },
        { _tag: "Info", option: 6, info: { _tag: "BlockSize", minimum: 1, preferred: 65536, maximum: 0xffffffff } },
        { _tag: "Ack", option: 6 },
        { _tag: "Info", option: 7, info: { _tag: "Export", size: 1048576n, transmissionFlags: 0x05ad } },
        { _tag: "Ack", option: 7 }
      ],
      waiting: 0,
      rest: simpleReply
    })
  })

  it("ACK", () => {
    const r = handshake(hex(REP_MAGIC, "00000008", "00000001", "00000000"), [Reply(8)])
    expect(r.results).toEqual([{ _tag: "Ack", option: 8 }])
  })

  it("ACK with a payload is a DecodeError", () => {
    const r = handshake(hex(REP_MAGIC, "00000008", "00000001", "00000001", "00"), [Reply(8)])
    expect(r.results).toEqual([decodeError()])
  })

  it("SERVER: name and description (NBD_OPT_LIST)", () => {
    const r = handshake(hex(REP_MAGIC, "00000003", "00000002", "0000000f", "00000004", "6469736b", "4d79206469736b"), [
      Reply(3)
    ])
    expect(r.results).toEqual([{ _tag: "Server", option: 3, name: "disk", description: "My disk" }])
  })

  it("SERVER: empty name, no description; then more replies in the same stream", () => {
    const r = handshake(
      hex(
        optionReply(3, 2, "00000000"),
        optionReply(3, 2, "00000003" + "c3af78"), // "ïx": UTF-8
        optionReply(3, 1, "")
      ),
      [Reply(3), Reply(3), Reply(3)]
    )
    expect(r.results).toEqual([
      { _tag: "Server", option: 3, name: "", description: "" },
      { _tag: "Server", option: 3, name: "ïx", description: "" },
      { _tag: "Ack", option: 3 }
    ])
  })

  it("SERVER: shorter than 4 bytes, or a name longer than the payload, is a DecodeError", () => {
    expect(handshake(hex(optionReply(3, 2, "000000")), [Reply(3)]).results).toEqual([decodeError()])
    expect(handshake(hex(optionReply(3, 2, "00000005" + "6469736b")), [Reply(3)]).results).toEqual([decodeError()])
  })

  it("SERVER: a name longer than 4096 bytes is a DecodeError", () => {
    const r = runHandshake([hex(optionReply(3, 2, "00001001" + "61".repeat(4097)))], [Reply(3)])
    expect(r.results).toEqual([decodeError()])
    const ok = runHandshake([hex(optionReply(3, 2, "00001000" + "61".repeat(4096)))], [Reply(3)])
    expect(ok.results).toEqual([{ _tag: "Server", option: 3, name: "a".repeat(4096), description: "" }])
  })

  it("INFO EXPORT (length 12)", () => {
    const r = handshake(hex(optionReply(7, 3, "0000" + "0000000000100000" + "05ad")), [Reply(7)])
    expect(r.results).toEqual([
      { _tag: "Info", option: 7, info: { _tag: "Export", size: 0x100000n, transmissionFlags: 0x05ad } }
    ])
  })

  it("INFO EXPORT of a size above 2^53 keeps every bit", () => {
    const r = handshake(hex(optionReply(7, 3, "0000" + "7fffffffffffffff" + "0001")), [Reply(7)])
    expect(r.results).toEqual([
      { _tag: "Info", option: 7, info: { _tag: "Export", size: 0x7fffffffffffffffn, transmissionFlags: 1 } }
    ])
  })

  it("INFO EXPORT with a length other than 12 is a DecodeError", () => {
    expect(handshake(hex(optionReply(7, 3, "0000" + "00000000001000" + "05")), [Reply(7)]).results).toEqual([
      decodeError()
    ])
    expect(handshake(hex(optionReply(7, 3, "0000" + "0000000000100000" + "05ad" + "00")), [Reply(7)]).results).toEqual([
      decodeError()
    ])
  })

  it("INFO NAME and DESCRIPTION (UTF-8)", () => {
    const r = handshake(
      hex(optionReply(6, 3, "0001" + "64c3af736b"), optionReply(6, 3, "0002" + ascii("hello")), optionReply(6, 1, "")),
      [Reply(6), Reply(6), Reply(6)]
    )
    expect(r.results).toEqual([
      { _tag: "Info", option: 6, info: { _tag: "Name", name: "dïsk" } },
      { _tag: "Info", option: 6, info: { _tag: "Description", description: "hello" } },
      { _tag: "Ack", option: 6 }
    ])
  })

  it("INFO NAME: 4096 bytes of name accepted, 4097 refused", () => {
    const ok = runHandshake([hex(optionReply(6, 3, "0001" + "62".repeat(4096)))], [Reply(6)])
    expect(ok.results).toEqual([{ _tag: "Info", option: 6, info: { _tag: "Name", name: "b".repeat(4096) } }])
    const tooLong = runHandshake([hex(optionReply(6, 3, "0001" + "62".repeat(4097)))], [Reply(6)])
    expect(tooLong.results).toEqual([decodeError()])
    const tooLongDescription = runHandshake([hex(optionReply(6, 3, "0002" + "62".repeat(4097)))], [Reply(6)])
    expect(tooLongDescription.results).toEqual([decodeError()])
  })

  it("INFO BLOCK_SIZE (length 14)", () => {
    const r = handshake(hex(optionReply(6, 3, "0003" + "00000200" + "00001000" + "02000000")), [Reply(6)])
    expect(r.results).toEqual([
      { _tag: "Info", option: 6, info: { _tag: "BlockSize", minimum: 512, preferred: 4096, maximum: 0x2000000 } }
    ])
  })

  it("INFO BLOCK_SIZE with a length other than 14 is a DecodeError", () => {
    expect(handshake(hex(optionReply(6, 3, "0003" + "00000001" + "00010000" + "ffffff")), [Reply(6)]).results).toEqual([
      decodeError()
    ])
    expect(
      handshake(hex(optionReply(6, 3, "0003" + "00000001" + "00010000" + "ffffffff" + "00")), [Reply(6)]).results
    ).toEqual([decodeError()])
  })

  it("INFO of an unknown type is reported and skipped; the stream stays in sync", () => {
    const r = handshake(hex(optionReply(6, 3, "0004" + "deadbeef"), optionReply(6, 3, "0005"), optionReply(6, 1, "")), [
      Reply(6),
      Reply(6),
      Reply(6)
    ])
    expect(r.results).toEqual([
      { _tag: "Info", option: 6, info: { _tag: "Unknown", infoType: 4 } },
      { _tag: "Info", option: 6, info: { _tag: "Unknown", infoType: 5 } },
      { _tag: "Ack", option: 6 }
    ])
  })

  it("INFO shorter than 2 bytes is a DecodeError", () => {
    expect(handshake(hex(optionReply(6, 3, "")), [Reply(6)]).results).toEqual([decodeError()])
    expect(handshake(hex(optionReply(6, 3, "00")), [Reply(6)]).results).toEqual([decodeError()])
  })

  it("META_CONTEXT: id and name (SET and LIST)", () => {
    const r = handshake(
      hex(
        optionReply(10, 4, "00000001" + ascii("base:allocation")),
        optionReply(10, 4, "ffffffff" + ascii("qemu:dirty-bitmap:b")),
        optionReply(9, 4, "00000000" + ascii("base:allocation"))
      ),
      [Reply(10), Reply(10), Reply(9)]
    )
    expect(r.results).toEqual([
      { _tag: "MetaContext", option: 10, id: 1, name: "base:allocation" },
      { _tag: "MetaContext", option: 10, id: 0xffffffff, name: "qemu:dirty-bitmap:b" },
      { _tag: "MetaContext", option: 9, id: 0, name: "base:allocation" }
    ])
  })

  it("META_CONTEXT with an empty name or a name over 4096 bytes is a DecodeError", () => {
    expect(handshake(hex(optionReply(10, 4, "00000001")), [Reply(10)]).results).toEqual([decodeError()])
    expect(runHandshake([hex(optionReply(10, 4, "00000001" + "63".repeat(4097)))], [Reply(10)]).results).toEqual([
      decodeError()
    ])
    expect(runHandshake([hex(optionReply(10, 4, "00000001" + "63".repeat(4096)))], [Reply(10)]).results).toEqual([
      { _tag: "MetaContext", option: 10, id: 1, name: "c".repeat(4096) }
    ])
  })

  const errorTypes: ReadonlyArray<readonly [string, number]> = [
    ["ERR_UNSUP", 0x80000001],
    ["ERR_POLICY", 0x80000002],
    ["ERR_INVALID", 0x80000003],
    ["ERR_PLATFORM", 0x80000004],
    ["ERR_TLS_REQD", 0x80000005],
    ["ERR_UNKNOWN", 0x80000006],
    ["ERR_SHUTDOWN", 0x80000007],
    ["ERR_BLOCK_SIZE_REQD", 0x80000008],
    ["ERR_TOO_BIG", 0x80000009],
    ["ERR_EXT_HEADER_REQD", 0x8000000a]
  ]

  for (const [name, type] of errorTypes) {
    it(`${name} (0x${type.toString(16)}) with and without a message`, () => {
      expect((Protocol.Rep as Record<string, number>)[name]).toBe(type)
      const r = handshake(hex(optionReply(7, type, ascii("no such export")), optionReply(7, type, "")), [
        Reply(7),
        Reply(7)
      ])
      expect(r.results).toEqual([
        { _tag: "Error", option: 7, type, message: "no such export" },
        { _tag: "Error", option: 7, type, message: "" }
      ])
    })
  }

  it("an error type the client does not know (bit 31 set) is still an error reply", () => {
    const r = handshake(hex(optionReply(5, 0x8000ffff, ascii("?"))), [Reply(5)])
    expect(r.results).toEqual([{ _tag: "Error", option: 5, type: 0x8000ffff, message: "?" }])
  })

  it("an unknown non-error reply type is a DecodeError", () => {
    expect(handshake(hex(optionReply(7, 5, "")), [Reply(7)]).results).toEqual([decodeError(/unexpected option reply/)])
    expect(handshake(hex(optionReply(7, 0x7fffffff, "0102")), [Reply(7)]).results).toEqual([decodeError()])
  })

  it("wrong reply magic is a DecodeError", () => {
    const r = handshake(hex("0003e889045565a8", "00000008", "00000001", "00000000"), [Reply(8)])
    expect(r.results).toEqual([decodeError(/magic/)])
  })

  it("a reply echoing another option is a DecodeError", () => {
    const r = handshake(hex(optionReply(7, 1, "")), [Reply(6)])
    expect(r.results).toEqual([decodeError(/option/)])
  })

  it("a reply length over 64 MiB is a DecodeError from the header alone, without waiting for the payload", () => {
    for (const length of ["04000001", "ffffffff"]) {
      for (const type of ["00000003", "00000002", "00000004"]) {
        const d = new ClientCodec.HandshakeDecoder()
        d.push(hex(REP_MAGIC, "00000006", type, length))
        expect(plain(d.decodeOptionReply(6))).toEqual(decodeError())
        expect(d.buffered).toBe(0)
      }
    }
  })

  it("a reply of exactly 64 MiB is accepted: the decoder waits for its payload", () => {
    const d = new ClientCodec.HandshakeDecoder()
    d.push(hex(REP_MAGIC, "00000006", "00000003", "04000000"))
    expect(d.decodeOptionReply(6)).toBeUndefined()
    expect(d.decodeOptionReply(6)).toBeUndefined()
  })

  it("an error reply over 4096 bytes is a DecodeError from the header alone", () => {
    const d = new ClientCodec.HandshakeDecoder()
    d.push(hex(REP_MAGIC, "00000007", "80000006", "00001001"))
    expect(plain(d.decodeOptionReply(7))).toEqual(decodeError())
    const ok = runHandshake([hex(optionReply(7, 0x80000006, "65".repeat(4096)))], [Reply(7)])
    expect(ok.results).toEqual([{ _tag: "Error", option: 7, type: 0x80000006, message: "e".repeat(4096) }])
  })
})

describe("decodeOptionReply (payload only)", () => {
  it("decodes each reply type from its payload", () => {
    expect(ClientCodec.decodeOptionReply(8, Protocol.Rep.ACK, new Uint8Array(0))).toEqual({ _tag: "Ack", option: 8 })
    expect(ClientCodec.decodeOptionReply(3, Protocol.Rep.SERVER, hex("00000001", "61", "62"))).toEqual({
      _tag: "Server",
      option: 3,
      name: "a",
      description: "b"
    })
    expect(ClientCodec.decodeOptionReply(6, Protocol.Rep.INFO, hex("0001", "61"))).toEqual({
      _tag: "Info",
      option: 6,
      info: { _tag: "Name", name: "a" }
    })
    expect(ClientCodec.decodeOptionReply(10, Protocol.Rep.META_CONTEXT, hex("00000002", "61"))).toEqual({
      _tag: "MetaContext",
      option: 10,
      id: 2,
      name: "a"
    })
    expect(ClientCodec.decodeOptionReply(7, Protocol.Rep.ERR_POLICY, hex("6e6f"))).toEqual({
      _tag: "Error",
      option: 7,
      type: Protocol.Rep.ERR_POLICY,
      message: "no"
    })
    expect(plain(ClientCodec.decodeOptionReply(7, 9, new Uint8Array(0)))).toEqual(decodeError())
    expect(plain(ClientCodec.decodeOptionReply(7, Protocol.Rep.ERR_UNKNOWN, new Uint8Array(4097)))).toEqual(
      decodeError()
    )
  })
})

describe("HandshakeDecoder NBD_OPT_EXPORT_NAME reply", () => {
  it("with the 124 zero bytes (134 bytes)", () => {
    const r = handshake(hex("0000000000100000", "05ad", zeros(124)), [ExportName(false)])
    expect(r).toEqual({ results: [{ size: 0x100000n, transmissionFlags: 0x05ad }], waiting: 0, rest: "" })
  })

  it("with the zero bytes: 133 bytes are not enough", () => {
    const d = new ClientCodec.HandshakeDecoder()
    d.push(hex("0000000000100000", "05ad", zeros(123)))
    expect(d.decodeExportNameReply(false)).toBeUndefined()
    d.push(hex("00"))
    expect(d.decodeExportNameReply(false)).toEqual({ size: 0x100000n, transmissionFlags: 0x05ad })
  })

  it("without the zero bytes (NO_ZEROES agreed, 10 bytes); what follows is left for the reply decoder", () => {
    const r = handshake(hex("ffffffffffffffff", "0003", "67446698"), [ExportName(true)])
    expect(r).toEqual({
      results: [{ size: 0xffffffffffffffffn, transmissionFlags: 3 }],
      waiting: 0,
      rest: "67446698"
    })
  })

  it("a newstyle greeting followed by the EXPORT_NAME reply in one stream", () => {
    const r = handshake(hex(NBDMAGIC, IHAVEOPT, "0001", "0000000040000000", "0001", zeros(124)), [
      Greeting,
      ExportName(false)
    ])
    expect(r.results).toEqual([
      { _tag: "Newstyle", handshakeFlags: 1 },
      { size: 0x40000000n, transmissionFlags: 1 }
    ])
    expect(r.rest).toBe("")
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Transmission decoding
// ---------------------------------------------------------------------------------------------------------------

interface SinkConfig {
  /** Simple replies that carry data: cookie -> data length and where in the buffer (undefined: drop). */
  readonly simple?: Readonly<Record<number, { readonly length: number; readonly at?: number }>>
  /** Reads whose OFFSET_DATA is copied: cookie -> request offset, which lands at buffer[0]. */
  readonly reads?: Readonly<Record<number, bigint>>
  /** Which sink callback refuses (returns a DecodeError). */
  readonly refuse?: "simpleReply" | "dataChunk" | "dataChunkDone" | "chunk"
}

const BUFFER_SIZE = 32

const runReplies = (mode: ClientCodec.ReplyMode, chunks: ReadonlyArray<Uint8Array>, config: SinkConfig = {}) => {
  const buffer = new Uint8Array(BUFFER_SIZE).fill(0xee)
  const events: Array<unknown> = []
  const refused = (what: string) => new ClientCodec.DecodeError({ message: `sink refused ${what}`, errno: "EPROTO" })
  const sink: ClientCodec.ReplySink = {
    simpleReply: (cookie, error) => {
      events.push({ event: "simpleReply", cookie, error })
      if (config.refuse === "simpleReply") return refused("simpleReply")
      const plan = cookie === undefined ? undefined : config.simple?.[cookie]
      if (plan === undefined) return { length: 0, target: undefined }
      return { length: plan.length, target: plan.at === undefined ? undefined : { buffer, at: plan.at } }
    },
    simpleDataDone: (cookie) => {
      events.push({ event: "simpleDataDone", cookie })
    },
    dataChunk: (header, offset, length) => {
      events.push({ event: "dataChunk", header, offset, length })
      if (config.refuse === "dataChunk") return refused("dataChunk")
      const base = header.cookie === undefined ? undefined : config.reads?.[header.cookie]
      return base === undefined ? undefined : { buffer, at: Number(offset - base) }
    },
    dataChunkDone: (header) => {
      events.push({ event: "dataChunkDone", header })
      if (config.refuse === "dataChunkDone") return refused("dataChunkDone")
    },
    chunk: (header, payload) => {
      events.push({ event: "chunk", header, payload: toHex(payload) })
      if (config.refuse === "chunk") return refused("chunk")
    }
  }
  const decoder = new ClientCodec.ReplyDecoder(sink, mode)
  const pushResults: Array<unknown> = []
  for (const chunk of chunks) {
    const e = decoder.push(chunk)
    if (e !== undefined) pushResults.push(plain(e))
  }
  const failure = decoder.failure
  // Once failed, every later push reports the same error.
  if (failure !== undefined)
    expect(pushResults.every((e) => JSON.stringify(e) === JSON.stringify(plain(failure)))).toBe(true)
  return {
    events,
    buffer: toHex(buffer),
    failure: failure === undefined ? undefined : plain(failure),
    idle: decoder.idle
  }
}

/** Decodes the vector whole, then checks every other chunking gives the same events, bytes and failure. */
const replies = (mode: ClientCodec.ReplyMode, bytes: Uint8Array, config: SinkConfig = {}) => {
  const whole = runReplies(mode, [bytes.slice()], config)
  for (const chunks of chunkings(bytes)) {
    expect(runReplies(mode, chunks, config), describeChunking(chunks)).toEqual(whole)
  }
  return whole
}

const untouched = (n: number) => "ee".repeat(n)

const chunkHeader = (
  cookie: number | undefined,
  flags: number,
  type: number,
  length: number,
  offset?: bigint
): ClientCodec.ChunkHeader => ({ cookie, flags, type, offset, length })

describe("ReplyDecoder: simple replies", () => {
  const stream = hex(
    "67446698 00000000 0000000000000001", // cookie 1, no data
    "67446698 00000000 0000000000000002 0102030405060708", // cookie 2, 8 bytes of read data -> buffer[4..12]
    "67446698 00000005 0000000000000003", // cookie 3, NBD_EIO
    "67446698 00000000 0000000000000004 aabbcc", // cookie 4, 3 bytes of read data, dropped
    "67446698 00000000 001fffffffffffff", // cookie 2^53-1
    "67446698 00000016 0020000000000000" // cookie 2^53: not one the client can have issued
  )
  const config: SinkConfig = { simple: { 2: { length: 8, at: 4 }, 4: { length: 3 } } }

  it("without and with read data, in one stream, whatever the chunk boundaries", () => {
    const r = replies("simple", stream, config)
    expect(r).toEqual({
      events: [
        { event: "simpleReply", cookie: 1, error: 0 },
        { event: "simpleReply", cookie: 2, error: 0 },
        { event: "simpleDataDone", cookie: 2 },
        { event: "simpleReply", cookie: 3, error: 5 },
        { event: "simpleReply", cookie: 4, error: 0 },
        { event: "simpleDataDone", cookie: 4 },
        { event: "simpleReply", cookie: Number.MAX_SAFE_INTEGER, error: 0 },
        { event: "simpleReply", cookie: undefined, error: 22 }
      ],
      buffer: untouched(4) + "0102030405060708" + untouched(20),
      failure: undefined,
      idle: true
    })
  })

  it("simple replies are also valid in structured mode", () => {
    const r = replies("structured", hex("67446698 00000001 0000000000000009"))
    expect(r.events).toEqual([{ event: "simpleReply", cookie: 9, error: 1 }])
    expect(r.failure).toBeUndefined()
  })

  it("idle only between messages", () => {
    const d = new ClientCodec.ReplyDecoder(
      {
        simpleReply: () => ({ length: 2, target: undefined }),
        simpleDataDone: () => {},
        dataChunk: () => undefined,
        dataChunkDone: () => {},
        chunk: () => {}
      },
      "simple"
    )
    expect(d.idle).toBe(true)
    expect(d.push(hex("674466"))).toBeUndefined()
    expect(d.idle).toBe(false)
    expect(d.push(hex("98 00000000 00000000000000"))).toBeUndefined()
    expect(d.idle).toBe(false)
    expect(d.push(hex("01 aa"))).toBeUndefined()
    expect(d.idle).toBe(false)
    expect(d.push(hex("bb"))).toBeUndefined()
    expect(d.idle).toBe(true)
  })
})

describe("ReplyDecoder: structured replies", () => {
  const stream = hex(
    // OFFSET_DATA, cookie 2, length 12: offset 0x1004 and 4 bytes -> buffer[4..8] (the read starts at 0x1000)
    "668e33ef 0000 0001 0000000000000002 0000000c 0000000000001004 aabbccdd",
    // OFFSET_HOLE, cookie 2: offset 0x1000, 4 bytes
    "668e33ef 0000 0002 0000000000000002 0000000c 0000000000001000 00000004",
    // ERROR_OFFSET, cookie 2: EIO, "oops", offset 0x1008 (length 18)
    "668e33ef 0000 8002 0000000000000002 00000012 00000005 0004 6f6f7073 0000000000001008",
    // NONE with DONE, cookie 2
    "668e33ef 0001 0000 0000000000000002 00000000",
    // ERROR with DONE, cookie 3: EINVAL, "oops"
    "668e33ef 0001 8001 0000000000000003 0000000a 00000016 0004 6f6f7073",
    // BLOCK_STATUS with DONE, cookie 4: context 1, (0x1000, 0), (0x2000, HOLE|ZERO)
    "668e33ef 0001 0005 0000000000000004 00000014 00000001 00001000 00000000 00002000 00000003",
    // OFFSET_DATA with DONE, cookie 5 (no buffer: dropped), 3 bytes
    "668e33ef 0001 0001 0000000000000005 0000000b 0000000000000000 010203",
    // a simple reply between chunks
    "67446698 00000000 0000000000000006"
  )

  it("every chunk type, in one stream, whatever the chunk boundaries", () => {
    const r = replies("structured", stream, { reads: { 2: 0x1000n } })
    const data2 = chunkHeader(2, 0, 1, 12)
    const data5 = chunkHeader(5, 1, 1, 11)
    expect(r).toEqual({
      events: [
        { event: "dataChunk", header: data2, offset: 0x1004n, length: 4 },
        { event: "dataChunkDone", header: data2 },
        { event: "chunk", header: chunkHeader(2, 0, 2, 12), payload: "000000000000100000000004" },
        {
          event: "chunk",
          header: chunkHeader(2, 0, 0x8002, 18),
          payload: "00000005" + "0004" + "6f6f7073" + "0000000000001008"
        },
        { event: "chunk", header: chunkHeader(2, 1, 0, 0), payload: "" },
        { event: "chunk", header: chunkHeader(3, 1, 0x8001, 10), payload: "00000016" + "0004" + "6f6f7073" },
        {
          event: "chunk",
          header: chunkHeader(4, 1, 5, 20),
          payload: "00000001" + "00001000" + "00000000" + "00002000" + "00000003"
        },
        { event: "dataChunk", header: data5, offset: 0n, length: 3 },
        { event: "dataChunkDone", header: data5 },
        { event: "simpleReply", cookie: 6, error: 0 }
      ],
      buffer: untouched(4) + "aabbccdd" + untouched(24),
      failure: undefined,
      idle: true
    })
  })

  it("two OFFSET_DATA chunks out of order land at their own offsets", () => {
    const r = replies(
      "structured",
      hex(
        "668e33ef 0000 0001 0000000000000007 0000000c 0000000000000104 05060708",
        "668e33ef 0001 0001 0000000000000007 0000000c 0000000000000100 01020304"
      ),
      { reads: { 7: 0x100n } }
    )
    expect(r.buffer).toBe("0102030405060708" + untouched(24))
    expect(r.failure).toBeUndefined()
  })

  it("an OFFSET_DATA chunk too short to hold its offset goes to the sink whole, and the stream stays in sync", () => {
    const r = replies(
      "structured",
      hex("668e33ef 0001 0001 0000000000000002 00000004 00001000", "67446698 00000000 0000000000000003")
    )
    expect(r.events).toEqual([
      { event: "chunk", header: chunkHeader(2, 1, 1, 4), payload: "00001000" },
      { event: "simpleReply", cookie: 3, error: 0 }
    ])
  })
})

describe("ReplyDecoder: extended replies", () => {
  const stream = hex(
    // OFFSET_DATA, cookie 7, request offset 0x2000, length 10: data offset 0x2006, 2 bytes -> buffer[6..8]
    "6e8a278c 0000 0001 0000000000000007 0000000000002000 000000000000000a 0000000000002006 1122",
    // OFFSET_HOLE, cookie 7: offset 0x2000, 6 bytes
    "6e8a278c 0000 0002 0000000000000007 0000000000002000 000000000000000c 0000000000002000 00000006",
    // NONE with DONE, cookie 7
    "6e8a278c 0001 0000 0000000000000007 0000000000002000 0000000000000000",
    // BLOCK_STATUS_EXT with DONE, cookie 8: context 1, 2 descriptors: (2^32, 3), (0x1000, 0)
    "6e8a278c 0001 0006 0000000000000008 0000000000000000 0000000000000028",
    "00000001 00000002 0000000100000000 0000000000000003 0000000000001000 0000000000000000",
    // ERROR with DONE, cookie 9: EPERM, no message
    "6e8a278c 0001 8001 0000000000000009 0000000000004000 0000000000000006 00000001 0000"
  )

  it("32-byte headers with an offset and a 64-bit length, in one stream, whatever the chunk boundaries", () => {
    const r = replies("extended", stream, { reads: { 7: 0x2000n } })
    const data7 = chunkHeader(7, 0, 1, 10, 0x2000n)
    expect(r).toEqual({
      events: [
        { event: "dataChunk", header: data7, offset: 0x2006n, length: 2 },
        { event: "dataChunkDone", header: data7 },
        { event: "chunk", header: chunkHeader(7, 0, 2, 12, 0x2000n), payload: "0000000000002000" + "00000006" },
        { event: "chunk", header: chunkHeader(7, 1, 0, 0, 0x2000n), payload: "" },
        {
          event: "chunk",
          header: chunkHeader(8, 1, 6, 40, 0n),
          payload:
            "00000001" + "00000002" + "0000000100000000" + "0000000000000003" + "0000000000001000" + "0000000000000000"
        },
        { event: "chunk", header: chunkHeader(9, 1, 0x8001, 6, 0x4000n), payload: "00000001" + "0000" }
      ],
      buffer: untouched(6) + "1122" + untouched(24),
      failure: undefined,
      idle: true
    })
  })

  it("setMode switches the headers accepted", () => {
    const r = runReplies("simple", [hex("67446698 00000000 0000000000000001")])
    expect(r.failure).toBeUndefined()
    const events: Array<unknown> = []
    const d = new ClientCodec.ReplyDecoder(
      {
        simpleReply: (cookie) => {
          events.push(cookie)
          return { length: 0, target: undefined }
        },
        simpleDataDone: () => {},
        dataChunk: () => undefined,
        dataChunkDone: () => {},
        chunk: (header) => {
          events.push(header)
        }
      },
      "simple"
    )
    expect(d.push(hex("67446698 00000000 0000000000000001"))).toBeUndefined()
    d.setMode("extended")
    expect(d.push(hex("6e8a278c 0001 0000 0000000000000002 0000000000000000 0000000000000000"))).toBeUndefined()
    expect(events).toEqual([1, chunkHeader(2, 1, 0, 0, 0n)])
  })
})

describe("ReplyDecoder: magic not permitted in the mode", () => {
  const simple = "67446698 00000000 0000000000000001"
  const structured = "668e33ef 0001 0000 0000000000000001 00000000"
  const extended = "6e8a278c 0001 0000 0000000000000001 0000000000000000 0000000000000000"
  const cases: ReadonlyArray<readonly [ClientCodec.ReplyMode, string, string]> = [
    ["simple", "structured", structured],
    ["simple", "extended", extended],
    ["structured", "extended", extended],
    ["extended", "simple", simple],
    ["extended", "structured", structured],
    ["simple", "garbage", "12345678 00000000 0000000000000001"],
    ["structured", "garbage", "25609513 00000000 0000000000000001 00000000"],
    ["extended", "garbage", "00000000 00000000 0000000000000001 0000000000000000 0000000000000000"]
  ]
  for (const [mode, what, bytes] of cases) {
    it(`${what} magic in ${mode} mode is a DecodeError`, () => {
      const r = replies(mode, hex(bytes))
      expect(r.events).toEqual([])
      expect(r.failure).toEqual(decodeError(/magic/))
    })
  }

  it("after a good reply, a bad magic stops the decoder for good", () => {
    const r = replies("extended", hex(extended, simple, extended))
    expect(r.events).toEqual([{ event: "chunk", header: chunkHeader(1, 1, 0, 0, 0n), payload: "" }])
    expect(r.failure).toEqual(decodeError(/magic 0x67446698/))
  })
})

describe("ReplyDecoder: chunk length limits", () => {
  const expectRefused = (mode: ClientCodec.ReplyMode, header: string) => {
    const r = replies(mode, hex(header))
    expect(r.events).toEqual([])
    expect(r.failure).toEqual(decodeError(/64 MiB/))
  }

  it("structured: a chunk over 64 MiB (+8 for an OFFSET_DATA offset) is refused from the header alone", () => {
    expectRefused("structured", "668e33ef 0000 0001 0000000000000001 04000009")
    expectRefused("structured", "668e33ef 0001 0000 0000000000000001 04000009")
    expectRefused("structured", "668e33ef 0001 0005 0000000000000001 ffffffff")
    expectRefused("structured", "668e33ef 0001 8001 0000000000000001 80000000")
  })

  it("extended: a 64-bit length over 64 MiB is refused from the header alone", () => {
    expectRefused("extended", "6e8a278c 0000 0001 0000000000000001 0000000000000000 0000000004000009")
    expectRefused("extended", "6e8a278c 0000 0001 0000000000000001 0000000000000000 0000000100000000")
    expectRefused("extended", "6e8a278c 0000 0006 0000000000000001 0000000000000000 8000000000000010")
    expectRefused("extended", "6e8a278c 0000 0000 0000000000000001 0000000000000000 ffffffffffffffff")
  })

  it("an OFFSET_DATA chunk of exactly 64 MiB of data is accepted", () => {
    for (const [mode, header] of [
      ["structured", "668e33ef 0001 0001 0000000000000001 04000008"],
      ["extended", "6e8a278c 0001 0001 0000000000000001 0000000000000000 0000000004000008"]
    ] as const) {
      const r = replies(mode, hex(header, "0000000000000000"))
      expect(r.failure).toBeUndefined()
      expect(r.events).toEqual([
        {
          event: "dataChunk",
          header: chunkHeader(1, 1, 1, 0x4000008, mode === "extended" ? 0n : undefined),
          offset: 0n,
          length: 0x4000000
        }
      ])
      expect(r.idle).toBe(false)
    }
  })
})

describe("ReplyDecoder: the sink can stop the stream", () => {
  it("simpleReply refusing", () => {
    const r = replies("simple", hex("67446698 00000000 0000000000000001", "67446698 00000000 0000000000000002"), {
      refuse: "simpleReply"
    })
    expect(r.events).toEqual([{ event: "simpleReply", cookie: 1, error: 0 }])
    expect(r.failure).toEqual({ _tag: "ClientCodecDecodeError", errno: "EPROTO", message: "sink refused simpleReply" })
  })

  it("dataChunk refusing: no data is copied", () => {
    const r = replies("structured", hex("668e33ef 0000 0001 0000000000000002 0000000c 0000000000001000 aabbccdd"), {
      reads: { 2: 0x1000n },
      refuse: "dataChunk"
    })
    expect(r.events).toEqual([{ event: "dataChunk", header: chunkHeader(2, 0, 1, 12), offset: 0x1000n, length: 4 }])
    expect(r.buffer).toBe(untouched(BUFFER_SIZE))
    expect(r.failure).toEqual({ _tag: "ClientCodecDecodeError", errno: "EPROTO", message: "sink refused dataChunk" })
  })

  it("dataChunkDone refusing", () => {
    const r = replies(
      "structured",
      hex(
        "668e33ef 0000 0001 0000000000000002 0000000c 0000000000001000 aabbccdd",
        "668e33ef 0001 0000 0000000000000002 00000000"
      ),
      { reads: { 2: 0x1000n }, refuse: "dataChunkDone" }
    )
    expect(r.events.map((e) => (e as { event: string }).event)).toEqual(["dataChunk", "dataChunkDone"])
    expect(r.buffer).toBe("aabbccdd" + untouched(28))
    expect(r.failure).toEqual({
      _tag: "ClientCodecDecodeError",
      errno: "EPROTO",
      message: "sink refused dataChunkDone"
    })
  })

  it("chunk refusing", () => {
    const r = replies(
      "structured",
      hex("668e33ef 0001 0000 0000000000000002 00000000", "668e33ef 0001 0000 0000000000000003 00000000"),
      { refuse: "chunk" }
    )
    expect(r.events).toEqual([{ event: "chunk", header: chunkHeader(2, 1, 0, 0), payload: "" }])
    expect(r.failure).toEqual({ _tag: "ClientCodecDecodeError", errno: "EPROTO", message: "sink refused chunk" })
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Chunk payloads
// ---------------------------------------------------------------------------------------------------------------

const eproto = () => ({ _tag: "ClientCodecDecodeError", errno: "EPROTO", message: expect.any(String) })

describe("decodeErrorChunk", () => {
  const ERROR = Protocol.ReplyType.ERROR
  const ERROR_OFFSET = Protocol.ReplyType.ERROR_OFFSET

  it("ERROR with a message", () => {
    expect(ClientCodec.decodeErrorChunk(ERROR, hex("00000005 0004 6f6f7073"))).toEqual({
      error: 5,
      message: "oops",
      offset: undefined
    })
  })

  it("ERROR without a message (length 6)", () => {
    expect(ClientCodec.decodeErrorChunk(ERROR, hex("00000016 0000"))).toEqual({
      error: 22,
      message: "",
      offset: undefined
    })
  })

  it("ERROR with a UTF-8 message and trailing bytes after it", () => {
    expect(ClientCodec.decodeErrorChunk(ERROR, hex("0000006c 0003 c3af21 7878"))).toEqual({
      error: 108,
      message: "ï!",
      offset: undefined
    })
  })

  it("ERROR_OFFSET: message then offset (length 14 + message)", () => {
    expect(ClientCodec.decodeErrorChunk(ERROR_OFFSET, hex("00000005 0004 6f6f7073 0000000000001008"))).toEqual({
      error: 5,
      message: "oops",
      offset: 0x1008n
    })
    expect(ClientCodec.decodeErrorChunk(ERROR_OFFSET, hex("0000001c 0000 fffffffffffffe00"))).toEqual({
      error: 28,
      message: "",
      offset: 0xfffffffffffffe00n
    })
  })

  it("shorter than 6 bytes: EPROTO", () => {
    expect(plain(ClientCodec.decodeErrorChunk(ERROR, hex("00000005 00")))).toEqual(eproto())
    expect(plain(ClientCodec.decodeErrorChunk(ERROR, new Uint8Array(0)))).toEqual(eproto())
  })

  it("a message length past the payload: EPROTO", () => {
    expect(plain(ClientCodec.decodeErrorChunk(ERROR, hex("00000005 0005 6f6f7073")))).toEqual(eproto())
  })

  it("ERROR_OFFSET without room for the offset: EPROTO", () => {
    expect(plain(ClientCodec.decodeErrorChunk(ERROR_OFFSET, hex("00000005 0000")))).toEqual(eproto())
    expect(plain(ClientCodec.decodeErrorChunk(ERROR_OFFSET, hex("00000005 0004 6f6f7073 00000000000010")))).toEqual(
      eproto()
    )
  })
})

describe("decodeBlockStatus", () => {
  const BS = Protocol.ReplyType.BLOCK_STATUS
  const BS_EXT = Protocol.ReplyType.BLOCK_STATUS_EXT

  it("BLOCK_STATUS: context id and (length u32, status u32) descriptors", () => {
    expect(
      ClientCodec.decodeBlockStatus(BS, hex("00000001", "00001000 00000000", "00002000 00000003", "ffffffff 80000001"))
    ).toEqual({
      contextId: 1,
      extents: [
        { length: 0x1000n, flags: 0 },
        { length: 0x2000n, flags: 3 },
        { length: 0xffffffffn, flags: 0x80000001 }
      ]
    })
  })

  it("BLOCK_STATUS with one descriptor (length 12)", () => {
    expect(ClientCodec.decodeBlockStatus(BS, hex("ffffffff 00000200 00000002"))).toEqual({
      contextId: 0xffffffff,
      extents: [{ length: 512n, flags: 2 }]
    })
  })

  it("BLOCK_STATUS without descriptors or with a partial one: EPROTO", () => {
    expect(plain(ClientCodec.decodeBlockStatus(BS, hex("00000001")))).toEqual(eproto())
    expect(plain(ClientCodec.decodeBlockStatus(BS, hex("00000001 00001000 000000")))).toEqual(eproto())
    expect(plain(ClientCodec.decodeBlockStatus(BS, hex("00000001 00001000 00000000 00")))).toEqual(eproto())
    expect(plain(ClientCodec.decodeBlockStatus(BS, hex("000000")))).toEqual(eproto())
  })

  it("BLOCK_STATUS_EXT: context id, count and (length u64, status u64) descriptors", () => {
    expect(
      ClientCodec.decodeBlockStatus(
        BS_EXT,
        hex(
          "00000002 00000003",
          "0000000100000000 0000000000000003",
          "0000000000001000 0000000000000000",
          "ffffffffffffffff 0000000000000001"
        )
      )
    ).toEqual({
      contextId: 2,
      extents: [
        { length: 0x100000000n, flags: 3 },
        { length: 0x1000n, flags: 0 },
        { length: 0xffffffffffffffffn, flags: 1 }
      ]
    })
  })

  it("BLOCK_STATUS_EXT: a count that disagrees with the length, or a bad length: EPROTO", () => {
    expect(
      plain(ClientCodec.decodeBlockStatus(BS_EXT, hex("00000002 00000002", "0000000000001000 0000000000000000")))
    ).toEqual(eproto())
    expect(
      plain(ClientCodec.decodeBlockStatus(BS_EXT, hex("00000002 00000000", "0000000000001000 0000000000000000")))
    ).toEqual(eproto())
    expect(plain(ClientCodec.decodeBlockStatus(BS_EXT, hex("00000002 00000000")))).toEqual(eproto())
    expect(
      plain(ClientCodec.decodeBlockStatus(BS_EXT, hex("00000002 00000001", "0000000000001000 00000000000000")))
    ).toEqual(eproto())
  })

  it("a compact payload read as BLOCK_STATUS_EXT is not mistaken for a valid one", () => {
    // 4 + 2×8 = 20 bytes: valid compact, but not 8 + 16n.
    const payload = hex("00000001", "00001000 00000000", "00002000 00000003")
    expect(ClientCodec.decodeBlockStatus(BS, payload)).not.toBeInstanceOf(ClientCodec.DecodeError)
    expect(plain(ClientCodec.decodeBlockStatus(BS_EXT, payload))).toEqual(eproto())
  })
})
