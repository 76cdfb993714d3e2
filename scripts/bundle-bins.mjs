// The bins as the packages ship them: each CLI bundled by esbuild from tsc's output (dist/bin.js) into
// dist/cli/, so a run loads a few files instead of ~300 ESM modules (start-up 0.8 s -> under 0.2 s).
// A bin is an application: effect and the @effect/* packages are bundled into it (the libraries keep them
// as peer dependencies), and dist/cli/THIRD-PARTY-LICENSES.txt carries the licenses of what was bundled.
// The embedded test server of `effect-nbd info`/`dump` stays a chunk of its own, loaded only without a URI.
// Run by `pnpm build` after tsc; `node scripts/bundle-bins.mjs packages/node` bundles that package's bin only.
import * as esbuild from "esbuild"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

const only = process.argv.slice(2).map((p) => p.replace(/\/$/, ""))
const bins = [
  { pkg: "packages/node", name: "effect-nbd" },
  { pkg: "packages/test-server", name: "effect-nbd-server" }
].filter(({ pkg }) => only.length === 0 || only.includes(pkg))

// CommonJS dependencies (ws, under the test server's SocketServer) call require() for Node's built-ins.
const banner =
  'import { createRequire as __createRequire } from "node:module"\nconst require = __createRequire(import.meta.url)'

/** The package (name and folder) a bundled input file belongs to, or undefined for our own packages. */
const packageOf = (input) => {
  const at = input.lastIndexOf("node_modules/")
  if (at < 0) return undefined
  const rest = input.slice(at + "node_modules/".length).split("/")
  const name = rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]
  return { name, dir: Path.join(root, input.slice(0, at + "node_modules/".length), name) }
}

const licenseText = (dir) => {
  const file = Fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f))
  return file === undefined ? undefined : Fs.readFileSync(Path.join(dir, file), "utf8").trim()
}

for (const { pkg, name } of bins) {
  const outdir = Path.join(root, pkg, "dist/cli")
  Fs.rmSync(outdir, { recursive: true, force: true })
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [{ in: Path.join(pkg, "dist/bin.js"), out: name }],
    outdir,
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    // Whitespace and syntax only: identifiers stay, so a stack trace still names the functions.
    minifyWhitespace: true,
    minifySyntax: true,
    chunkNames: "[name]-[hash]",
    banner: { js: banner },
    metafile: true,
    logLevel: "warning"
  })
  Fs.chmodSync(Path.join(outdir, `${name}.js`), 0o755)

  const packages = new Map()
  for (const output of Object.values(result.metafile.outputs)) {
    for (const input of Object.keys(output.inputs)) {
      const p = packageOf(input)
      if (p !== undefined && !packages.has(p.name)) packages.set(p.name, p.dir)
    }
  }
  const sections = [...packages]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([packageName, dir]) => {
      const manifest = JSON.parse(Fs.readFileSync(Path.join(dir, "package.json"), "utf8"))
      const text = licenseText(dir) ?? `License: ${manifest.license ?? "unknown"} (no license file in the package)`
      return `${packageName}@${manifest.version} (${manifest.license ?? "unknown"})\n\n${text}\n`
    })
  Fs.writeFileSync(
    Path.join(outdir, "THIRD-PARTY-LICENSES.txt"),
    `${name}.js bundles these packages besides effect-nbd's own:\n\n${sections.join("\n" + "-".repeat(72) + "\n\n")}`
  )
  const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0)
  console.log(
    `bundled ${Path.join(pkg, "dist/cli", `${name}.js`)} (${(bytes / 1024).toFixed(0)} KiB, ${packages.size} packages)`
  )
}
