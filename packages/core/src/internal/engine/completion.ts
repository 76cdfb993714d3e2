/**
 * How a command ends, as plain values: the engine settles a `Completion` once, and whoever waits (an effect
 * that suspended on it, or a copy loop's callback) hears the outcome once.
 */
import type * as NbdError from "../../NbdError.js"

/** What a command ended with: its value (a read's buffer, or nothing), or the error that failed it. */
export type Outcome =
  | { readonly ok: true; readonly value: Uint8Array | undefined }
  | { readonly ok: false; readonly error: NbdError.NbdError }

/** A command that succeeded with `value`. */
export const succeeded = (value: Uint8Array | undefined): Outcome => ({ ok: true, value })

/** A command that failed with `error`. */
export const failed = (error: NbdError.NbdError): Outcome => ({ ok: false, error })

/** The outcome once known, and who waits for it: cheaper than a Deferred (no joiner list, no fiber). */
export class Completion {
  outcome: Outcome | undefined = undefined
  private listeners: Array<(outcome: Outcome) => void> | undefined = undefined

  /**
   * Settles the command; only the first outcome counts. The listeners are taken one at a time from the live
   * list: one may stop another from listening (a caller that cancels a command on another's outcome), and
   * that one is then not called.
   */
  done(outcome: Outcome): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    const listeners = this.listeners
    if (listeners === undefined) return
    while (listeners.length > 0) listeners.shift()!(outcome)
    this.listeners = undefined
  }

  /** Calls `f` with the outcome once it is known (at once when it is). */
  listen(f: (outcome: Outcome) => void): void {
    if (this.outcome !== undefined) return f(this.outcome)
    ;(this.listeners ??= []).push(f)
  }

  /** Stops `f` from hearing the outcome (its caller stopped waiting). */
  unlisten(f: (outcome: Outcome) => void): void {
    const i = this.listeners?.indexOf(f) ?? -1
    if (i >= 0) this.listeners!.splice(i, 1)
  }
}
