/**
 * A transfer's defaults and limits (nbdcopy's request size and count, the largest zero extent and block-status
 * range), and the checks every entry point makes of the numbers it is given: offsets and lengths as safe
 * integers, failing with an InvalidArgumentError that names the operation.
 */
import * as Effect from "effect/Effect"
import * as NbdError from "../../NbdError.js"

/** nbdcopy's defaults: 256 KiB requests, 64 in flight per connection. */
export const DEFAULT_REQUEST_SIZE = 256 * 1024
export const DEFAULT_REQUESTS = 64
export const MAX_REQUESTS = 1024

/** The largest zero extent handed out at once (one NBD_CMD_WRITE_ZEROES), and the largest block-status range. */
export const MAX_ZERO = 1 << 30
export const MAX_STATUS = 1 << 30

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

export const invalidArgument = (operation: string, message: string, errno: NbdError.Errno = "EINVAL") =>
  new NbdError.InvalidArgumentError({ errno, operation, message })

/** An offset or length as a safe number. */
export const toOffset = (
  operation: string,
  what: string,
  v: number | bigint
): Effect.Effect<number, NbdError.InvalidArgumentError> => {
  if (typeof v === "bigint")
    return v >= 0n && v <= MAX_SAFE
      ? Effect.succeed(Number(v))
      : Effect.fail(invalidArgument(operation, `${what} is out of range: ${v}`, "ERANGE"))
  return Number.isSafeInteger(v) && v >= 0
    ? Effect.succeed(v)
    : Effect.fail(invalidArgument(operation, `${what} must be a non-negative integer, got ${v}`))
}
