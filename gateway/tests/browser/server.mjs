// The real `imgate` binary for the browser tests: a config with a WebSocket listener and the
// admin listener (with a token, and the demo page on) on 127.0.0.1:0, the addresses read from
// stdout, and a kill (and the temporary directory removed) when the tests are done.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** The admin token the console is given. */
export const ADMIN_TOKEN = "browser-test-admin-token";

const CONFIG = (dir) => `
[server]
data_dir = "${dir}/data"

[admin]
bind = "127.0.0.1:0"
token = "${ADMIN_TOKEN}"
demo = true

[[listener]]
transport = "ws"
bind = "127.0.0.1:0"
path = "/ws"

[[listener]]
transport = "http"
bind = "127.0.0.1:0"

[[app]]
id = "chat"
[app.auth]
kind = "jwt"
algorithm = "HS256"
secret = "browser-test-secret-0123456789abcdef"
[app.session]
durability = "memory"
`;

/**
 * Starts `imgate serve` and waits (bounded) until it announced its listeners. `push` is the
 * app's `[app.push]` and `[app.push.apns]` sections (gateway/tests/browser.rs writes them
 * for its mock APNs).
 */
export async function startServer(binary, push) {
  const dir = mkdtempSync(join(tmpdir(), "imgate-browser-"));
  writeFileSync(join(dir, "imgate.toml"), CONFIG(dir) + push);
  const child = spawn(binary, ["serve", "--config", join(dir, "imgate.toml")], {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  // Should the runner die without `stop`, take the server along.
  const orphan = () => child.kill("SIGKILL");
  process.once("exit", orphan);
  const stop = async () => {
    process.off("exit", orphan);
    child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const admin = await announced(child);
    return { admin: `http://${admin}`, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function announced(child) {
  return new Promise((resolve, reject) => {
    let ws;
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("imgate did not announce its listeners in 20 s")), 20_000);
    child.once("exit", (code) => reject(new Error(`imgate exited (${code}) before listening`)));
    child.once("error", reject);
    lines.on("line", (line) => {
      const listening = /^imgate listening: (\w+) on (\S+)$/.exec(line);
      if (listening?.[1] === "ws") ws = listening[2];
      const admin = /^imgate admin: http:\/\/([^/\s]+)/.exec(line);
      if (admin && ws) {
        clearTimeout(timer);
        resolve(admin[1]);
      }
    });
  });
}
