// src/gen/ is committed; this fails when codec/proto changed and `npm run generate` was not run.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));

it("src/gen/imgate matches what buf generates from codec/proto", () => {
  const out = mkdtempSync(join(tmpdir(), "imgate-sdk-gen-"));
  try {
    const bin = join(root, "node_modules", ".bin");
    execFileSync(join(bin, "buf"), ["generate", "--output", out], {
      cwd: root,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    const dir = join("src", "gen", "imgate", "v1");
    const files = readdirSync(join(out, dir));
    expect(files).toEqual(readdirSync(join(root, dir)));
    for (const file of files) {
      expect(readFileSync(join(out, dir, file), "utf8"), file).toBe(readFileSync(join(root, dir, file), "utf8"));
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
