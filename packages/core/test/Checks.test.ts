/**
 * The checks a command goes through before the engine queues it, as plain functions of what the server agreed
 * to and the strict mode: the errno and the order libnbd gives them, with no handle and no socket.
 */
import { describe, expect, it } from "@effect/vitest"
import { Protocol } from "@effect-nbd/core"
import { type Agreement, emptyAgreement } from "../src/internal/engine/agreement.js"
import { commandError } from "../src/internal/engine/checks.js"
import type { CommandRequest } from "../src/internal/engine/pending.js"

const MiB = 1024 * 1024

/** A 1 MiB export with the given flags, minimum block size 512, and what the server agreed to. */
const agreed = (flags: number, extendedHeaders = false, structuredReplies = true): Agreement => ({
  ...emptyAgreement(),
  protocol: "newstyle-fixed",
  structuredReplies,
  extendedHeaders,
  info: {
    size: BigInt(MiB),
    flags: flags | Protocol.TFlag.HAS_FLAGS,
    blockSizes: { minimum: 512, preferred: 4096, maximum: 32 * MiB },
    canonicalName: undefined,
    description: undefined
  }
})

const command = (type: number, flags = 0): CommandRequest => ({ operation: "nbd_test", type, flags })

const errnoOf = (
  agreement: Agreement,
  spec: CommandRequest,
  offset: number,
  count: number,
  options: { strict?: number; disconnected?: boolean } = {}
) =>
  commandError(agreement, options.strict ?? Protocol.Strict.MASK, options.disconnected ?? false, spec, offset, count)
    ?.errno

describe("command checks", () => {
  const all = Protocol.TFlag.SEND_FLUSH | Protocol.TFlag.SEND_TRIM | Protocol.TFlag.SEND_FUA

  it("passes a read or write in bounds and aligned", () => {
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), 0, 4096)).toBeUndefined()
    expect(errnoOf(agreed(all), command(Protocol.Cmd.WRITE), MiB - 512, 512)).toBeUndefined()
  })

  it("refuses out of bounds: ENOSPC for what writes, EINVAL for a read", () => {
    expect(errnoOf(agreed(all), command(Protocol.Cmd.WRITE), MiB, 512)).toBe("ENOSPC")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.TRIM), MiB - 512, 1024)).toBe("ENOSPC")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), MiB, 512)).toBe("EINVAL")
  })

  it("refuses what the server did not offer, before bounds", () => {
    expect(errnoOf(agreed(0), command(Protocol.Cmd.TRIM), MiB, 512)).toBe("EINVAL")
    expect(errnoOf(agreed(Protocol.TFlag.READ_ONLY), command(Protocol.Cmd.WRITE), 0, 512)).toBe("EPERM")
    expect(errnoOf(agreed(0), command(Protocol.Cmd.WRITE, Protocol.CmdFlag.FUA), 0, 512)).toBe("EINVAL")
    // Without STRICT_COMMANDS the request goes to the server as it is.
    expect(errnoOf(agreed(0), command(Protocol.Cmd.TRIM), 0, 512, { strict: 0 })).toBeUndefined()
  })

  it("refuses block status without structured replies or meta contexts, as ENOTSUP", () => {
    expect(errnoOf(agreed(all, false, false), command(Protocol.Cmd.BLOCK_STATUS), 0, 512)).toBe("ENOTSUP")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.BLOCK_STATUS), 0, 512)).toBe("ENOTSUP")
    const withContext = { ...agreed(all), metaValid: true, metaContexts: new Map([[1, "base:allocation"]]) }
    expect(errnoOf(withContext, command(Protocol.Cmd.BLOCK_STATUS), 0, 512)).toBeUndefined()
  })

  it("refuses unaligned requests and zero counts by the strict mode", () => {
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), 100, 512)).toBe("EINVAL")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), 100, 512, { strict: 0 })).toBeUndefined()
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), 0, 0)).toBe("EINVAL")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.READ), 0, 0, { strict: 0 })).toBeUndefined()
  })

  it("refuses sizes the protocol cannot carry, as ERANGE", () => {
    const big = { ...agreed(all), info: { ...agreed(all).info!, size: 2n ** 40n } }
    expect(errnoOf(big, command(Protocol.Cmd.WRITE), 0, 33 * MiB)).toBe("ERANGE")
    expect(errnoOf(big, command(Protocol.Cmd.READ), 0, 65 * MiB, { strict: 0 })).toBe("ERANGE")
    expect(errnoOf(big, command(Protocol.Cmd.TRIM), 0, 2 ** 32, { strict: 0 })).toBe("ERANGE")
    const extended = { ...big, extendedHeaders: true }
    expect(errnoOf(extended, command(Protocol.Cmd.TRIM), 0, 2 ** 32, { strict: 0 })).toBeUndefined()
  })

  it("refuses PAYLOAD_LEN unless extended headers were agreed, and requires it when they were", () => {
    expect(errnoOf(agreed(all), command(Protocol.Cmd.WRITE, Protocol.CmdFlag.PAYLOAD_LEN), 0, 512)).toBe("EINVAL")
    expect(errnoOf(agreed(all, true), command(Protocol.Cmd.WRITE), 0, 512)).toBe("EINVAL")
    expect(errnoOf(agreed(all, true), command(Protocol.Cmd.WRITE, Protocol.CmdFlag.PAYLOAD_LEN), 0, 512)).toBe(
      undefined
    )
  })

  it("refuses every command after NBD_CMD_DISC, flush included", () => {
    expect(errnoOf(agreed(all), command(Protocol.Cmd.FLUSH), 0, 0, { disconnected: true })).toBe("EINVAL")
    expect(errnoOf(agreed(all), command(Protocol.Cmd.FLUSH), 0, 0)).toBeUndefined()
  })
})
