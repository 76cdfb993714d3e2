import { describe, expect, it } from "@effect/vitest"
import * as Protocol from "@effect-nbd/core/Protocol"
import * as ServerCodec from "@effect-nbd/core/ServerCodec"

const hex = (s: string): Uint8Array => {
  const clean = s.replace(/\s+/g, "")
  const out = new Uint8Array(clean.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16)
  return out
}
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex")
const ascii = (s: string): string => Buffer.from(s, "latin1").toString("hex")

/** Feeds a decoder one byte at a time and collects every message. */
const decodeBytewise = (decoder: ServerCodec.Decoder, bytes: Uint8Array) => {
  const out: Array<ServerCodec.ClientMessage | ServerCodec.DecodeError> = []
  for (let i = 0; i < bytes.length; i++) {
    decoder.push(bytes.subarray(i, i + 1))
    for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
      out.push(m)
      if (m._tag === "ServerCodecDecodeError") return out
    }
  }
  return out
}

describe("ServerCodec encoders", () => {
  it("oldstyle greeting matches the worked example (152 bytes)", () => {
    const b = ServerCodec.oldstyleGreeting(0x100000n, 0x052d)
    expect(b.length).toBe(152)
    expect(toHex(b.subarray(0, 28))).toBe(ascii("NBDMAGIC") + "0000420281861253" + "0000000000100000" + "0000" + "052d")
    expect(b.subarray(28).every((x) => x === 0)).toBe(true)
  })

  it("newstyle greeting", () => {
    expect(toHex(ServerCodec.newstyleGreeting(3))).toBe(ascii("NBDMAGIC") + ascii("IHAVEOPT") + "0003")
  })

  it("INFO_EXPORT reply (size 1 MiB, flags 0x05ad) to NBD_OPT_GO", () => {
    const b = ServerCodec.optionInfoExport(Protocol.Opt.GO, 1048576n, 0x05ad)
    expect(toHex(b)).toBe(
      "0003e889045565a9" + "00000007" + "00000003" + "0000000c" + "0000" + "0000000000100000" + "05ad"
    )
  })

  it("INFO_BLOCK_SIZE, ACK, SERVER, META_CONTEXT and error replies", () => {
    expect(toHex(ServerCodec.optionInfoBlockSize(6, { minimum: 1, preferred: 65536, maximum: 0xffffffff }))).toBe(
      "0003e889045565a9" + "00000006" + "00000003" + "0000000e" + "0003" + "00000001" + "00010000" + "ffffffff"
    )
    expect(toHex(ServerCodec.optionAck(8))).toBe("0003e889045565a9" + "00000008" + "00000001" + "00000000")
    expect(toHex(ServerCodec.optionServer(3, "a", "bc"))).toBe(
      "0003e889045565a9" + "00000003" + "00000002" + "00000007" + "00000001" + ascii("a") + ascii("bc")
    )
    expect(toHex(ServerCodec.optionMetaContext(10, 1, "base:allocation"))).toBe(
      "0003e889045565a9" + "0000000a" + "00000004" + "00000013" + "00000001" + ascii("base:allocation")
    )
    expect(toHex(ServerCodec.optionError(11, Protocol.Rep.ERR_UNSUP))).toBe(
      "0003e889045565a9" + "0000000b" + "80000001" + "00000000"
    )
    expect(toHex(ServerCodec.optionError(7, Protocol.Rep.ERR_UNKNOWN, "no"))).toBe(
      "0003e889045565a9" + "00000007" + "80000006" + "00000002" + ascii("no")
    )
    expect(toHex(ServerCodec.optionInfoName(7, "x"))).toBe(
      "0003e889045565a9" + "00000007" + "00000003" + "00000003" + "0001" + ascii("x")
    )
  })

  it("EXPORT_NAME reply with and without zeroes", () => {
    expect(ServerCodec.exportNameReply(512n, 1, false).length).toBe(134)
    expect(toHex(ServerCodec.exportNameReply(512n, 0x0101, true))).toBe("0000000000000200" + "0101")
  })

  it("simple reply echoes raw cookie bytes or a bigint", () => {
    const cookie = hex("0102030405060708")
    expect(toHex(ServerCodec.simpleReply(cookie, 22))).toBe("67446698" + "00000016" + "0102030405060708")
    expect(toHex(ServerCodec.simpleReply(0x0102030405060708n, 0))).toBe("67446698" + "00000000" + "0102030405060708")
  })

  it("structured chunks", () => {
    const t = { extended: false, cookie: 5n, offset: 0 }
    expect(toHex(ServerCodec.noneChunk(t))).toBe("668e33ef" + "0001" + "0000" + "0000000000000005" + "00000000")
    const [h, d] = ServerCodec.offsetDataChunk(t, 1, 4096, new Uint8Array([9, 9]))
    expect(toHex(h)).toBe("668e33ef" + "0001" + "0001" + "0000000000000005" + "0000000a" + "0000000000001000")
    expect(toHex(d)).toBe("0909")
    expect(toHex(ServerCodec.offsetHoleChunk(t, 0, 512, 1024))).toBe(
      "668e33ef" + "0000" + "0002" + "0000000000000005" + "0000000c" + "0000000000000200" + "00000400"
    )
    expect(
      toHex(
        ServerCodec.blockStatusChunk(t, 1, 1, [
          { length: 4096, flags: 3 },
          { length: 512, flags: 0 }
        ])
      )
    ).toBe(
      "668e33ef" +
        "0001" +
        "0005" +
        "0000000000000005" +
        "00000014" +
        "00000001" +
        "00001000" +
        "00000003" +
        "00000200" +
        "00000000"
    )
    expect(toHex(ServerCodec.errorChunk(t, 1, 22, "bad"))).toBe(
      "668e33ef" + "0001" + "8001" + "0000000000000005" + "00000009" + "00000016" + "0003" + ascii("bad")
    )
    expect(toHex(ServerCodec.errorOffsetChunk(t, 1, 5, 7, ""))).toBe(
      "668e33ef" + "0001" + "8002" + "0000000000000005" + "0000000e" + "00000005" + "0000" + "0000000000000007"
    )
  })

  it("extended chunks carry the request offset and 64-bit lengths", () => {
    const t = { extended: true, cookie: hex("00000000000000ff"), offset: 0x200000000n }
    expect(toHex(ServerCodec.noneChunk(t))).toBe(
      "6e8a278c" + "0001" + "0000" + "00000000000000ff" + "0000000200000000" + "0000000000000000"
    )
    expect(toHex(ServerCodec.blockStatusChunk(t, 1, 1, [{ length: 0x100000000n, flags: 3 }]))).toBe(
      "6e8a278c" +
        "0001" +
        "0006" +
        "00000000000000ff" +
        "0000000200000000" +
        "0000000000000018" +
        "00000001" +
        "00000001" +
        "0000000100000000" +
        "0000000000000003"
    )
    expect(ServerCodec.offsetDataHeader(t, 1, 0x200000000n, 10).length).toBe(40)
  })
})

describe("ServerCodec decoder", () => {
  it("decodes client flags and options one byte at a time", () => {
    const bytes = hex(
      "00000003" +
        // NBD_OPT_STRUCTURED_REPLY, no data
        ascii("IHAVEOPT") +
        "00000008" +
        "00000000" +
        // NBD_OPT_GO "ab" with info NAME and BLOCK_SIZE
        ascii("IHAVEOPT") +
        "00000007" +
        "0000000c" +
        "00000002" +
        ascii("ab") +
        "0002" +
        "0001" +
        "0003" +
        // NBD_OPT_SET_META_CONTEXT "" with queries "base:allocation", "x:y"
        ascii("IHAVEOPT") +
        "0000000a" +
        "00000022" +
        "00000000" +
        "00000002" +
        "0000000f" +
        ascii("base:allocation") +
        "00000003" +
        ascii("x:y") +
        // NBD_OPT_EXPORT_NAME "disk"
        ascii("IHAVEOPT") +
        "00000001" +
        "00000004" +
        ascii("disk")
    )
    const messages = decodeBytewise(ServerCodec.makeDecoder(), bytes)
    expect(messages.map((m) => m._tag)).toEqual(["ClientFlags", "Option", "Option", "Option", "Option"])
    expect(messages[0]).toEqual({ _tag: "ClientFlags", flags: 3 })
    const [, sr, go, meta, exportName] = messages as Array<ServerCodec.OptionRequest>
    expect(sr!.option).toBe(8)
    expect(sr!.body).toEqual({ _tag: "None" })
    expect(go!.body).toEqual({ _tag: "Info", name: "ab", infos: [1, 3] })
    expect(meta!.body).toEqual({ _tag: "MetaContext", name: "", queries: ["base:allocation", "x:y"] })
    expect(exportName!.body).toEqual({ _tag: "ExportName", name: "disk" })
  })

  it("decodes a compact write request with its payload one byte at a time", () => {
    const bytes = hex(
      "25609513" +
        "0001" +
        "0001" +
        "0102030405060708" +
        "0000000000001000" +
        "00000003" +
        "aabbcc" +
        // then a compact read
        "25609513" +
        "0000" +
        "0000" +
        "0000000000000009" +
        "0000000000000000" +
        "00000200"
    )
    const decoder = ServerCodec.makeDecoder({ phase: "transmission" })
    const [write, read, ...rest] = decodeBytewise(decoder, bytes) as Array<ServerCodec.Request>
    expect(rest).toEqual([])
    expect(write).toMatchObject({ _tag: "Request", extended: false, flags: 1, type: 1, offset: 4096, length: 3 })
    expect(toHex(write!.cookie)).toBe("0102030405060708")
    expect(toHex(write!.payload!)).toBe("aabbcc")
    expect(read).toMatchObject({ type: 0, offset: 0, length: 512, payload: undefined, payloadDropped: false })
    expect(decoder.buffered).toBe(0)
  })

  it("decodes extended requests one byte at a time (a payload with PAYLOAD_LEN, 64-bit lengths)", () => {
    const bytes = hex(
      // write with PAYLOAD_LEN
      "21e41c71" +
        "0020" +
        "0001" +
        "00000000000000aa" +
        "0000000000000200" +
        "0000000000000002" +
        "eeff" +
        // write zeroes of 8 GiB at a high offset
        "21e41c71" +
        "0000" +
        "0006" +
        "00000000000000bb" +
        "7fffffff00000000" +
        "0000000200000000"
    )
    const decoder = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
    const [write, zero] = decodeBytewise(decoder, bytes) as Array<ServerCodec.Request>
    expect(write).toMatchObject({ extended: true, flags: 0x20, type: 1, offset: 512, length: 2 })
    expect(toHex(write!.payload!)).toBe("eeff")
    expect(zero).toMatchObject({ type: 6, offset: 0x7fffffff00000000n, length: 0x200000000, payload: undefined })
  })

  it("decodes an extended write without PAYLOAD_LEN with its payload, as qemu's client sends it", () => {
    const bytes = hex(
      // write of 3 bytes, flag FUA only
      "21e41c71" +
        "0001" +
        "0001" +
        "00000000000000cc" +
        "0000000000001000" +
        "0000000000000003" +
        "a1a2a3" +
        // then a flush
        "21e41c71" +
        "0000" +
        "0003" +
        "00000000000000dd" +
        "0000000000000000" +
        "0000000000000000"
    )
    const decoder = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
    const [write, flush] = decodeBytewise(decoder, bytes) as Array<ServerCodec.Request>
    expect(write).toMatchObject({ flags: 1, type: 1, offset: 4096, length: 3, payloadDropped: false })
    expect(toHex(write!.payload!)).toBe("a1a2a3")
    expect(flush).toMatchObject({ type: 3, length: 0, payload: undefined })
    expect(toHex(flush!.cookie)).toBe("00000000000000dd")
  })

  it("payloadBuffer: a payload split over chunks is copied into the buffer given; one in a chunk is a view", () => {
    const asked: Array<number> = []
    const scratch = new Uint8Array(64 << 10)
    const decoder = ServerCodec.makeDecoder({
      phase: "transmission",
      payloadBuffer: (length) => {
        asked.push(length)
        return scratch
      }
    })
    const header = (length: number) =>
      hex("25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + length.toString(16).padStart(8, "0"))
    const split = Uint8Array.from({ length: 40 << 10 }, (_, i) => i % 251)
    decoder.push(header(split.length))
    decoder.push(split.slice(0, 20 << 10))
    expect(decoder.next()).toBeUndefined()
    decoder.push(split.slice(20 << 10))
    const first = decoder.next() as ServerCodec.Request
    expect(first.payload!.buffer).toBe(scratch.buffer)
    expect(first.payload).toEqual(split)
    expect(asked).toEqual([split.length])
    // The next payload arrives with its header in one chunk of its own: a view of that chunk.
    const whole = new Uint8Array(28 + (32 << 10)).fill(7)
    whole.set(header(32 << 10))
    decoder.push(whole)
    const second = decoder.next() as ServerCodec.Request
    expect(second.payload!.buffer).toBe(whole.buffer)
    expect(second.payload!.every((b) => b === 7)).toBe(true)
    expect(asked).toEqual([split.length, 32 << 10])
  })

  it("skips an oversized write payload without buffering it, and stays in sync", () => {
    const decoder = ServerCodec.makeDecoder({ phase: "transmission", maxPayload: 4 })
    decoder.push(hex("25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "00000008" + "0102"))
    const write = decoder.next() as ServerCodec.Request
    expect(write).toMatchObject({ type: 1, payload: undefined, payloadDropped: true })
    expect(decoder.next()).toBeUndefined()
    decoder.push(hex("030405060708"))
    expect(decoder.buffered).toBe(0)
    decoder.push(hex("25609513" + "0000" + "0003" + "0000000000000002" + "0000000000000000" + "00000000"))
    expect(decoder.next()).toMatchObject({ type: 3, payloadDropped: false })
  })

  it("reports oversized option data as TooBig, skips it, and keeps decoding", () => {
    const decoder = ServerCodec.makeDecoder({ phase: "options" })
    decoder.push(hex(ascii("IHAVEOPT") + "00000007" + "00010001"))
    const opt = decoder.next() as ServerCodec.OptionRequest
    expect(opt.body._tag).toBe("TooBig")
    expect(opt.data).toBeUndefined()
    decoder.push(new Uint8Array(65537))
    decoder.push(hex(ascii("IHAVEOPT") + "00000002" + "00000000"))
    expect(decoder.next()).toMatchObject({ _tag: "Option", option: 2 })
  })

  it("refuses bad magic and impossible lengths with a DecodeError", () => {
    const bad = ServerCodec.makeDecoder({ phase: "options" })
    bad.push(hex(ascii("IHAVEOPX") + "00000007" + "00000000"))
    const e = bad.next()
    expect(e).toBeInstanceOf(ServerCodec.DecodeError)
    expect((e as ServerCodec.DecodeError).reason).toBe("BadMagic")
    // The tag names the module: the client's codec fails with a different one.
    expect((e as ServerCodec.DecodeError)._tag).toBe("ServerCodecDecodeError")
    expect(bad.next()).toBe(e)

    const compact = ServerCodec.makeDecoder({ phase: "transmission" })
    compact.push(hex("21e41c71" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000200"))
    expect((compact.next() as ServerCodec.DecodeError).reason).toBe("BadMagic")

    const huge = ServerCodec.makeDecoder({ phase: "transmission", extended: true })
    huge.push(hex("21e41c71" + "0020" + "0001" + "0000000000000001" + "0000000000000000" + "0000001000000000"))
    expect((huge.next() as ServerCodec.DecodeError).reason).toBe("TooLarge")
  })

  it("refuses malformed option data as Invalid, names over 4096 bytes included", () => {
    expect(ServerCodec.parseOption(7, hex("00000005" + "6162"))._tag).toBe("Invalid")
    expect(ServerCodec.parseOption(7, hex("00000000" + "0001"))._tag).toBe("Invalid")
    const long = new Uint8Array(4 + 4097 + 2)
    long.set(hex("00001001"), 0)
    expect(ServerCodec.parseOption(6, long)).toEqual({ _tag: "Invalid", message: "export name too long" })
    expect(ServerCodec.parseOption(1, new Uint8Array(4097))._tag).toBe("Invalid")
    expect(ServerCodec.parseOption(9, hex("00000000" + "00000001" + "00000005" + "6162"))._tag).toBe("Invalid")
    expect(ServerCodec.parseOption(9, hex("00000000" + "00000000"))).toEqual({
      _tag: "MetaContext",
      name: "",
      queries: []
    })
  })

  it("takeBuffered hands over the bytes after the last message (STARTTLS)", () => {
    const decoder = ServerCodec.makeDecoder({ phase: "options" })
    const option = hex(`${ascii("IHAVEOPT")} 00000005 00000000`)
    decoder.push(new Uint8Array([...option, 0x16, 0x03, 0x01]))
    const message = decoder.next()
    expect(message).toMatchObject({ _tag: "Option", option: Protocol.Opt.STARTTLS, length: 0 })
    expect(decoder.buffered).toBe(3)
    expect(toHex(decoder.takeBuffered())).toBe("160301")
    expect(decoder.buffered).toBe(0)
    expect(decoder.takeBuffered().length).toBe(0)
    decoder.push(option)
    expect(decoder.next()).toMatchObject({ _tag: "Option", option: Protocol.Opt.STARTTLS })
  })
})
