// The demo page's SDK bundle (gateway/src/admin/demo/imgate-client.js) is committed and
// embedded in the binary; this fails when src/ changed and `npm run bundle` was not run.

import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without declarations.
import { BUNDLE, bundle } from "../scripts/bundle.mjs";

it("the committed browser bundle is what scripts/bundle.mjs builds from src/", async () => {
  const built: string = await bundle();
  expect(readFileSync(BUNDLE, "utf8") === built, "stale: run `npm run bundle` in sdk/typescript").toBe(true);
});
