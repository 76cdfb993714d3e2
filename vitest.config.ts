import { defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

// Tests run against the TypeScript sources through the "source" export condition, so they need no build.
const conditions = ["source", ...defaultServerConditions]

export default defineConfig({
  test: {
    projects: ["core", "node", "test-server"].map((name) => ({
      extends: true,
      test: { name, include: [`packages/${name}/test/**/*.test.ts`] }
    })),
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks"
  },
  ssr: { resolve: { conditions } },
  resolve: { conditions }
})
