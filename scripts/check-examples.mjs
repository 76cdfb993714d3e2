// Type-checks the documentation's TypeScript: every ```ts block of README.md and packages/*/README.md, and
// every JSDoc `@example` of packages/*/src/**/*.ts (its ```ts blocks, or, with no fence, its whole body, as
// TypeDoc shows it). Each snippet must compile as written, imports included: it is copied into a file of
// its own under examples/build/check-examples/ (inside the workspace, so @effect-nbd/* and effect resolve, to
// the packages' sources through the "source" condition) and the lot goes through `tsc --noEmit` with the
// workspace's strict options. Errors are reported at the snippet's line in its source file.
// Run by `pnpm check-examples` and CI.
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const outDir = Path.join(root, "examples/build/check-examples")
const relative = (file) => Path.relative(root, file)

/** @typedef {{ source: string, line: number, code: string }} Snippet  line: where the code's first line is */

const isTsFence = (line) => /^\s*```(ts|typescript)\s*$/.test(line)
const isFenceEnd = (line) => /^\s*```\s*$/.test(line)

/** The ```ts blocks of a markdown file. */
const markdownSnippets = (file) => {
  const lines = Fs.readFileSync(file, "utf8").split("\n")
  const snippets = []
  for (let i = 0; i < lines.length; i++) {
    if (!isTsFence(lines[i])) continue
    const start = i + 1
    while (++i < lines.length && !isFenceEnd(lines[i]));
    snippets.push({ source: relative(file), line: start + 1, code: lines.slice(start, i).join("\n") })
  }
  return snippets
}

/** The `@example` code of every JSDoc comment of a TypeScript file. */
const jsdocSnippets = (file) => {
  const lines = Fs.readFileSync(file, "utf8").split("\n")
  const snippets = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\/\*\*/.test(lines[i])) continue
    // The comment's lines, without the leading ` * `, each with its line number in the file.
    const body = []
    for (; i < lines.length; i++) {
      const end = lines[i].includes("*/")
      const text = lines[i]
        .replace(/^\s*\/\*\*\s?/, "")
        .replace(/\s*\*\/.*$/, "")
        .replace(/^\s*\* ?/, "")
      body.push({ text, line: i + 1 })
      if (end) break
    }
    for (let j = 0; j < body.length; j++) {
      if (!/^@example\b/.test(body[j].text)) continue
      // The example runs to the next block tag outside a fence.
      const example = []
      let fenced = false
      for (j++; j < body.length; j++) {
        if (!fenced && /^@\w/.test(body[j].text)) break
        if (/^\s*```/.test(body[j].text)) fenced = !fenced
        example.push(body[j])
      }
      j--
      const hasFence = example.some((l) => /^\s*```/.test(l.text))
      if (!hasFence) {
        while (example.length > 0 && example[example.length - 1].text.trim() === "") example.pop()
        if (example.length > 0)
          snippets.push({ source: relative(file), line: example[0].line, code: example.map((l) => l.text).join("\n") })
        continue
      }
      for (let k = 0; k < example.length; k++) {
        if (!isTsFence(example[k].text)) continue
        const start = k + 1
        while (++k < example.length && !isFenceEnd(example[k].text));
        if (start < example.length)
          snippets.push({
            source: relative(file),
            line: example[start].line,
            code: example
              .slice(start, k)
              .map((l) => l.text)
              .join("\n")
          })
      }
    }
  }
  return snippets
}

const walk = (dir) =>
  Fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(Path.join(dir, e.name)) : e.name.endsWith(".ts") ? [Path.join(dir, e.name)] : []
  )

const packages = Fs.readdirSync(Path.join(root, "packages")).map((p) => Path.join(root, "packages", p))
const snippets = [
  ...markdownSnippets(Path.join(root, "README.md")),
  ...packages.flatMap((p) =>
    Fs.existsSync(Path.join(p, "README.md")) ? markdownSnippets(Path.join(p, "README.md")) : []
  ),
  ...packages.flatMap((p) => walk(Path.join(p, "src")).sort().flatMap(jsdocSnippets))
]

Fs.rmSync(outDir, { recursive: true, force: true })
Fs.mkdirSync(outDir, { recursive: true })
/** Snippet file name -> where its lines come from. */
const origin = new Map()
snippets.forEach((s, n) => {
  const name = `${String(n).padStart(3, "0")}-${s.source.replace(/[^A-Za-z0-9]+/g, "-")}-${s.line}.ts`
  // A snippet without import or export is still a module of its own, so two snippets' names never collide.
  const isModule = /^\s*(import|export)\s/m.test(s.code)
  Fs.writeFileSync(Path.join(outDir, name), `${s.code}\n${isModule ? "" : "export {}\n"}`)
  origin.set(name, s)
})
Fs.writeFileSync(
  Path.join(outDir, "tsconfig.json"),
  JSON.stringify(
    {
      extends: "../../../tsconfig.base.json",
      compilerOptions: {
        composite: false,
        incremental: false,
        declaration: false,
        declarationMap: false,
        sourceMap: false,
        noEmit: true,
        // A snippet may show a value without using it.
        noUnusedLocals: false,
        noUnusedParameters: false,
        lib: ["ES2022", "DOM", "DOM.Iterable"],
        types: ["node"],
        plugins: []
      },
      include: ["*.ts"]
    },
    null,
    2
  )
)

const tsc = Path.join(root, "node_modules/typescript/bin/tsc")
let output = ""
let failed = false
try {
  execFileSync(process.execPath, [tsc, "-p", Path.join(outDir, "tsconfig.json"), "--pretty", "false"], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"]
  })
} catch (error) {
  failed = true
  output = `${error.stdout ?? ""}${error.stderr ?? ""}`
}

if (failed) {
  // examples/build/check-examples/NAME.ts(LINE,COL): error ... -> SOURCE:LINE:COL: error ...
  const located = output.replace(/^(?:.*[/\\])?([^/\\()]+\.ts)\((\d+),(\d+)\)/gm, (whole, name, line, col) => {
    const s = origin.get(name)
    return s === undefined ? whole : `${s.source}:${s.line + Number(line) - 1}:${col}`
  })
  process.stderr.write(located.endsWith("\n") ? located : `${located}\n`)
  process.stderr.write(`check-examples: FAIL (snippets kept in ${relative(outDir)})\n`)
  process.exit(1)
}
const bySource = new Map()
for (const s of snippets) bySource.set(s.source, (bySource.get(s.source) ?? 0) + 1)
console.log(
  `check-examples: ${snippets.length} snippets compile (${[...bySource].map(([f, n]) => `${f} ${n}`).join(", ")})`
)
