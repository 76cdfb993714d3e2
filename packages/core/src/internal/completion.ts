import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as NbdError from "../NbdError.js"

type Resume = (exit: Exit.Exit<unknown, NbdError.NbdError>) => void

/** A one-shot result for one command: cheaper than a Deferred (no prototype spread, no joiner list). */
export class Completion {
  exit: Exit.Exit<unknown, NbdError.NbdError> | undefined = undefined
  private waiters: Array<Resume> | undefined = undefined

  done(exit: Exit.Exit<unknown, NbdError.NbdError>): void {
    if (this.exit !== undefined) return
    this.exit = exit
    const waiters = this.waiters
    if (waiters === undefined) return
    this.waiters = undefined
    for (const resume of waiters) resume(exit)
  }

  /** Calls `f` with the outcome once it is known (at once when it is). */
  listen(f: (exit: Exit.Exit<unknown, NbdError.NbdError>) => void): void {
    if (this.exit !== undefined) return f(this.exit)
    ;(this.waiters ??= []).push(f)
  }

  await<A>(onInterrupt: () => void): Effect.Effect<A, NbdError.NbdError> {
    return Effect.async<A, NbdError.NbdError>((resume) => {
      if (this.exit !== undefined) return resume(this.exit as Exit.Exit<A, NbdError.NbdError>)
      const r = resume as Resume
      ;(this.waiters ??= []).push(r)
      return Effect.sync(() => {
        const i = this.waiters?.indexOf(r) ?? -1
        if (i >= 0) this.waiters!.splice(i, 1)
        onInterrupt()
      })
    })
  }
}
