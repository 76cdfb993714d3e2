/**
 * The argument checks as effects, for the transfers' generators (the plain checks are in
 * `engine/arguments.ts`).
 */
import * as Effect from "effect/Effect"
import type * as NbdError from "../../NbdError.js"
import { toNumber } from "../engine/arguments.js"

/** `toNumber` as an Effect, for the transfers' generators. */
export const toOffset = (
  operation: string,
  what: string,
  v: number | bigint
): Effect.Effect<number, NbdError.InvalidArgumentError> => {
  const n = toNumber(operation, what, v)
  return typeof n === "number" ? Effect.succeed(n) : Effect.fail(n)
}
