/**
 * The checks of what a caller passes, shared by the engine's command checks, the handle's calls and the
 * transfers: one constructor for a refused argument, and one conversion of an offset or a length to a safe
 * number, so the same bad value gets the same error whichever layer meets it.
 */
import * as NbdError from "../../NbdError.js"

/** A refused argument, EINVAL unless another errno says more (ERANGE, ENOSPC, EPERM, ENAMETOOLONG ...). */
export const invalidArgument = (
  operation: string,
  message: string,
  errno: NbdError.Errno = "EINVAL"
): NbdError.InvalidArgumentError => new NbdError.InvalidArgumentError({ errno, operation, message })

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/**
 * An offset or a length as a safe number: a bigint beyond 2^53 - 1 (or below 0) is out of range (ERANGE),
 * a number must be a non-negative safe integer (EINVAL).
 */
export const toNumber = (
  operation: string,
  what: string,
  v: number | bigint
): number | NbdError.InvalidArgumentError => {
  if (typeof v === "bigint") {
    if (v < 0n || v > MAX_SAFE) return invalidArgument(operation, `${what} is out of range: ${v}`, "ERANGE")
    return Number(v)
  }
  if (!Number.isSafeInteger(v) || v < 0)
    return invalidArgument(operation, `${what} must be a non-negative integer, got ${v}`)
  return v
}
