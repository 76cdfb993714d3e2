/**
 * The long hostile-client fuzz of the test server, as a program:
 *
 *   pnpm build && npx tsc -b packages/test-server/test/fuzz/tsconfig.fuzz.json &&
 *     node packages/test-server/build/fuzz/fuzz/run.js [--seed N] [--duration SECONDS] [--iterations N]
 *
 * Prints the iterations, the outcome counts and the peak RSS as JSON, and exits 1 when a case broke a rule
 * (each such case is saved under regressions/) or the servers failed the checks after the run.
 */
import { runFuzz } from "./hostile-clients.js"

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
const concurrency = number("concurrency", undefined)

runFuzz({
  seed,
  durationMs: duration * 1000,
  ...(iterations === undefined ? {} : { iterations }),
  ...(concurrency === undefined ? {} : { concurrency })
}).then(
  (report) => {
    const MiB = 2 ** 20
    const slowPolite = Object.entries(report.politeMs).filter(([, ms]) => ms >= 50)
    console.log(
      JSON.stringify(
        {
          ...report,
          peakRssMiB: Math.round(report.peakRssBytes / MiB),
          peakMemoryGrowthMiB: Math.round(report.peakMemoryGrowthBytes / MiB)
        },
        null,
        2
      )
    )
    if (report.failures.length > 0 || report.defects.length > 0 || slowPolite.length > 0) process.exitCode = 1
    if (report.fdsAfter > report.fdsBefore + 2) process.exitCode = 1
  },
  (error) => {
    console.error(error)
    process.exitCode = 2
  }
)
