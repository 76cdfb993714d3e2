/**
 * The long hostile-server fuzz of the client, as a program:
 *
 *   node packages/node/build/fuzz/fuzz/run.js [--seed N] [--duration SECONDS] [--iterations N]
 *
 * (`pnpm fuzz` builds it and runs it; scripts/fuzz.sh says how.) Prints the iterations, the outcome counts and
 * the peak RSS as JSON, and exits 1 when a case broke a rule; each such case is saved under regressions/.
 */
import { runFuzz } from "./hostile-server.js"

const flag = (name: string): string | undefined => {
  const at = process.argv.indexOf(`--${name}`)
  return at < 0 ? undefined : process.argv[at + 1]
}

const number = (name: string, fallback: number | undefined): number | undefined => {
  const value = flag(name)
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} takes a non-negative number, got ${value}`)
  return n
}

const seed = number("seed", Date.now() % 0x7fffffff)!
const duration = number("duration", 600)!
const iterations = number("iterations", undefined)

runFuzz({ seed, durationMs: duration * 1000, ...(iterations === undefined ? {} : { iterations }) }).then(
  (report) => {
    console.log(JSON.stringify({ ...report, peakRssMiB: Math.round(report.peakRssBytes / 2 ** 20) }, null, 2))
    if (report.failures.length > 0) process.exitCode = 1
  },
  (error) => {
    console.error(error)
    process.exitCode = 2
  }
)
