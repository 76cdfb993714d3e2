import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"

/** The repository's root. */
export const root = Path.resolve(__dirname, "../../../..")

/** packages/node/package.json: the version and the bins it ships. */
export const manifest = JSON.parse(Fs.readFileSync(Path.join(root, "packages/node/package.json"), "utf8")) as {
  readonly version: string
  readonly bin: Record<string, string>
}

/** The shipped bin: package.json's, the esbuild bundle `pnpm build` writes. */
export const bin = Path.join(root, "packages/node", manifest.bin["effect-nbd"]!)

/**
 * Builds the CLI (incrementally) and bundles it, for a `beforeAll`: the tests run the built CLI as a real
 * process.
 */
export const buildCli = (): void => {
  execFileSync("npx", ["tsc", "-b", "packages/node/tsconfig.src.json"], { cwd: root, stdio: "inherit" })
  execFileSync(process.execPath, ["scripts/bundle-bins.mjs", "packages/node"], { cwd: root, stdio: "inherit" })
}
