import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The end-to-end tests start the real server; keep every wait bounded.
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
