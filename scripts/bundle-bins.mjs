// The bins as the packages ship them: each CLI bundled by esbuild from tsc's output (dist/bin.js) into one
// CommonJS file, dist/cli/NAME.bundle.cjs, so a run loads one file instead of ~300 ESM modules, and the bin,
// dist/cli/NAME.cjs, a small loader (scripts/bin-loader.cjs) that runs it through V8's code cache. Start-up of
// `effect-nbd info --size URI`: 0.8 s unbundled, about 0.16 s bundled with the cache, twice Node's own
// (`node -e 0`); what is left is reading the cache, evaluating the modules and the run itself.
// A bin is an application: effect and the @effect/* packages are bundled into it (the libraries keep them
// as peer dependencies), and dist/cli/THIRD-PARTY-LICENSES.txt carries the licenses of what was bundled.
// The embedded test server of `effect-nbd info`/`dump` is in the bundle too, evaluated only without a URI.
// Run by `pnpm build` after tsc; `node scripts/bundle-bins.mjs packages/node` bundles that package's bin only.
import * as esbuild from "esbuild"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

const only = process.argv.slice(2).map((p) => p.replace(/\/$/, ""))
const bins = [
  { pkg: "packages/node", name: "effect-nbd", subcommands: ["info", "copy", "dump", "discard", "zero"] },
  { pkg: "packages/test-server", name: "effect-nbd-server", subcommands: [] }
].filter(({ pkg }) => only.length === 0 || only.includes(pkg))

const loader = Fs.readFileSync(Path.join(root, "scripts/bin-loader.cjs"), "utf8")

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

// Node's modules that a short run (info or a copy over a plain socket, a server without TLS) never touches but
// that cost start-up when required at the top: together about a tenth of `info --size` (TLS with crypto most).
const lazyBuiltins = new Set(["child_process", "crypto", "dgram", "dns", "readline", "tls"])

/** The helper that stands for a lazy builtin: the module is required at the first property read. */
const lazyHelper = "var __lazyBuiltin=id=>{let m;return new Proxy({},{get:(_,key)=>(m??=require(id))[key]})};"

/**
 * How the bundle takes Node's own modules. esbuild gives each `import * as X from "node:x"` its own copy of
 * the module's exports (`__toESM`, a getter per export, for `default`): the module itself is what a namespace
 * import of a builtin means, so it is used as is. The modules of `lazyBuiltins` are required at their first
 * use. Both hold only while the bundle reads the binding's members and never its `default`: checked here, and
 * the build fails otherwise rather than ship a bundle that would behave differently.
 */
const rewriteBuiltins = (code, file) => {
  const declaration = /([A-Za-z_$][\w$]*)=(?:__toESM\(require\("node:([a-z_/]+)"\),1\)|require\("node:([a-z_/]+)"\))/g
  const bindings = []
  const out = code.replace(declaration, (_, binding, a, b) => {
    const id = a ?? b
    bindings.push(binding)
    return lazyBuiltins.has(id) ? `${binding}=__lazyBuiltin("node:${id}")` : `${binding}=require("node:${id}")`
  })
  const all = code.match(/require\("node:[a-z_/]+"\)/g)?.length ?? 0
  if (all !== bindings.length) throw new Error(`${file}: a builtin is required in a way the rewrite does not know`)
  // esbuild declares the bindings of a lazily evaluated module up front (`var a,b,init_c=__esm(…)`), and a
  // module's name is no use of a binding named like it.
  const checked = out
    .replace(/\bvar (?:[\w$]+,)+/g, "var ")
    .replace(/\bvar [\w$]+;/g, "")
    .replace(/"node:[a-z_/]+"/g, '""')
  for (const binding of new Set(bindings)) {
    const uses = checked.matchAll(
      new RegExp(`(?<=^|[\\s(,=:?[{}!&|;+])${binding.replace(/\$/g, "\\$")}(?![\\w$])(?=(.{0,24}))`, "g")
    )
    for (const [, after] of uses)
      if (!/^(=(__lazyBuiltin|require)\(""\)|\.(?!default\b))/.test(after))
        throw new Error(`${file}: ${binding} (a builtin) is used other than by its members: ${binding}${after}`)
  }
  return out.replace(/^/, lazyHelper)
}

for (const { pkg, name, subcommands } of bins) {
  const outdir = Path.join(root, pkg, "dist/cli")
  Fs.rmSync(outdir, { recursive: true, force: true })
  const bundle = Path.join(outdir, `${name}.bundle.cjs`)
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [Path.join(pkg, "dist/bin.js")],
    outfile: bundle,
    bundle: true,
    // CommonJS, for vm.Script and its code cache (an ES module has none on Node 20); the dynamic import of
    // the embedded server becomes a lazily evaluated part of the one file.
    format: "cjs",
    platform: "node",
    target: "node20",
    // Whitespace and syntax only: identifiers stay, so a stack trace still names the functions.
    minifyWhitespace: true,
    minifySyntax: true,
    metafile: true,
    logLevel: "warning"
  })
  // The loader runs the bundle: its #! line (from bin.ts) would not parse inside the module wrapper.
  const code = rewriteBuiltins(Fs.readFileSync(bundle, "utf8").replace(/^#!.*\n/, ""), bundle)
  Fs.writeFileSync(bundle, code)
  const build = Crypto.createHash("sha256").update(code).digest("hex").slice(0, 16)
  const bin = Path.join(outdir, `${name}.cjs`)
  Fs.writeFileSync(
    bin,
    loader
      .replaceAll("__NAME__", name)
      .replace("__BUILD__", build)
      .replace("__SUBCOMMANDS__", JSON.stringify(subcommands))
  )
  Fs.chmodSync(bin, 0o755)

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
    `${name}.bundle.cjs bundles these packages besides effect-nbd's own:\n\n${sections.join("\n" + "-".repeat(72) + "\n\n")}`
  )
  console.log(`bundled ${Path.relative(root, bin)} (${(code.length / 1024).toFixed(0)} KiB, ${packages.size} packages)`)
}
