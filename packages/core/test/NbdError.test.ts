import { describe, expect, it } from "@effect/vitest"
import { NbdError, Protocol } from "@effect-nbd/core"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

const fields = { errno: "EIO", operation: "nbd_pread", message: "read: command failed" } as const

const everyClass: ReadonlyArray<readonly [string, NbdError.NbdError]> = [
  ["InvalidStateError", new NbdError.InvalidStateError(fields)],
  ["InvalidArgumentError", new NbdError.InvalidArgumentError(fields)],
  ["UnsupportedError", new NbdError.UnsupportedError(fields)],
  ["ProtocolError", new NbdError.ProtocolError(fields)],
  ["OptionError", new NbdError.OptionError({ ...fields, option: 7, replyType: 0x80000001 })],
  ["CommandError", new NbdError.CommandError({ ...fields, command: "read" })],
  ["ConnectionError", new NbdError.ConnectionError(fields)],
  ["ExportChangedError", new NbdError.ExportChangedError(fields)]
]

// Every errno name the project's protocol reference (nbd-protocol.md, sections 3.2 and 3.4) says libnbd sets
// or a server replies with, and the system errors it names for connect, recv and send.
const referenceErrnos = [
  "ENOTCONN",
  "EINVAL",
  "EFAULT",
  "ENOSPC",
  "ERANGE",
  "EOVERFLOW",
  "ENOTSUP",
  "EPERM",
  "EPROTO",
  "ENOENT",
  "ESHUTDOWN",
  "ENAMETOOLONG",
  "ESRCH",
  "ENOMEM",
  "EAFNOSUPPORT",
  "EPROTONOSUPPORT",
  "EIO",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "EDQUOT",
  "EFBIG"
]

describe("NbdError", () => {
  for (const [tag, error] of everyClass) {
    it(`${tag} carries the TypeId, its tag and its fields, and isNbdError knows it`, () => {
      expect(error._tag).toBe(tag)
      expect(error[NbdError.TypeId]).toBe(NbdError.TypeId)
      expect(NbdError.isNbdError(error)).toBe(true)
      expect(error).toBeInstanceOf(Error)
      expect(error.message).toBe("read: command failed")
      expect(NbdError.format(error)).toBe("nbd_pread: read: command failed (EIO)")
    })

    it(`${tag} fails an Effect when yielded, and is the typed failure`, () => {
      const exit = Effect.runSyncExit(
        Effect.gen(function* () {
          return yield* error
        })
      )
      const reasons = Exit.isFailure(exit) ? exit.cause.reasons : []
      expect(reasons).toHaveLength(1)
      expect(reasons[0]?._tag === "Fail" && reasons[0].error).toBe(error)
    })
  }

  it("isNbdError is false for lookalikes and other errors", () => {
    expect(NbdError.isNbdError({ _tag: "CommandError", errno: "EIO", operation: "x", message: "y" })).toBe(false)
    expect(NbdError.isNbdError(new Error("boom"))).toBe(false)
    expect(NbdError.isNbdError(undefined)).toBe(false)
    expect(NbdError.isNbdError("CommandError")).toBe(false)
  })

  it("the TypeId is a registered symbol, so another copy of the library knows these errors", () => {
    expect(NbdError.TypeId).toBe(Symbol.for("@effect-nbd/core/NbdError"))
  })

  it("format leaves out an empty errno", () => {
    const error = new NbdError.ProtocolError({ errno: "", operation: "recv", message: "server disconnected" })
    expect(NbdError.format(error)).toBe("recv: server disconnected")
  })
})

describe("Errno", () => {
  it("lists every errno name the reference gives, and every wire error value's name", () => {
    for (const name of [...referenceErrnos, ...Object.keys(Protocol.NbdErrno)])
      expect(NbdError.isErrno(name), name).toBe(true)
    expect(NbdError.isErrno("")).toBe(true)
    expect(new Set(NbdError.errnos).size).toBe(NbdError.errnos.length)
  })

  it("every wire error value maps to a listed name, and an unknown value to EINVAL", () => {
    for (const value of [...Object.values(Protocol.NbdErrno), 0, 2, 999])
      expect(NbdError.isErrno(Protocol.errnoOfWire(value))).toBe(true)
    expect(Protocol.errnoOfWire(999)).toBe("EINVAL")
  })

  it("EDQUOT and EFBIG go on the wire as NBD_ENOSPC, unknown names as NBD_EINVAL", () => {
    expect(Protocol.wireOfErrno("EDQUOT")).toBe(Protocol.NbdErrno.ENOSPC)
    expect(Protocol.wireOfErrno("EFBIG")).toBe(Protocol.NbdErrno.ENOSPC)
    expect(Protocol.wireOfErrno("ECONNRESET")).toBe(Protocol.NbdErrno.EINVAL)
    expect(Protocol.wireOfErrno("EIO")).toBe(Protocol.NbdErrno.EIO)
  })

  it("errnoOf keeps a listed system code, from the error or the code itself", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })
    expect(NbdError.errnoOf(refused)).toBe("ECONNREFUSED")
    expect(NbdError.errnoOf("ENOENT")).toBe("ENOENT")
    for (const code of ["EPIPE", "EACCES", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"])
      expect(NbdError.errnoOf({ code })).toBe(code)
  })

  it("errnoOf gives EIO for an errno name the list lacks, and '' for no errno", () => {
    expect(NbdError.errnoOf({ code: "EXDEV" })).toBe("EIO")
    expect(NbdError.errnoOf({ code: "ERR_SOCKET_CLOSED" })).toBe("")
    expect(NbdError.errnoOf({ code: "ENOTFOUND" })).toBe("")
    expect(NbdError.errnoOf({ code: "EAI_AGAIN" })).toBe("")
    expect(NbdError.errnoOf({ code: 104 })).toBe("")
    expect(NbdError.errnoOf(new Error("no code"))).toBe("")
    expect(NbdError.errnoOf(undefined)).toBe("")
  })
})
