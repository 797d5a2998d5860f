// The real `imgate` binary as a child process, as gateway/tests/support/process.rs starts it:
// a config with a WebSocket and an HTTP-fallback listener on 127.0.0.1:0, the addresses read
// from stdout, and a kill (and the temporary directory removed) when the test is done.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The binary: `IMGATE_BIN`, else the workspace's debug build (`cargo build -p imgate`). */
export function imgateBinary(): string {
  if (process.env.IMGATE_BIN) return process.env.IMGATE_BIN;
  // Cargo reads a relative CARGO_TARGET_DIR from where it runs: the workspace root here.
  const workspace = fileURLToPath(new URL("../../../../", import.meta.url));
  return join(resolve(workspace, process.env.CARGO_TARGET_DIR ?? "target"), "debug", "imgate");
}

/** A running server. */
export interface Server {
  /** `ws://127.0.0.1:PORT/ws`. */
  url: string;
  /** `127.0.0.1:PORT` of the WebSocket listener. */
  wsAddr: string;
  /** `http://127.0.0.1:PORT/imgate`: the HTTP fallback. */
  httpUrl: string;
  /** `http://127.0.0.1:PORT` of the admin listener. */
  admin: string;
  /** The config and data directory. */
  dir: string;
  /** Kills the process and removes its directory. */
  stop(): Promise<void>;
  /** SIGTERM: the server drains (GoAway to every client) and exits; the directory stays. */
  drain(): Promise<void>;
}

/** Where to start: a fresh directory and port by default, or those of a drained server. */
export interface ServerOptions {
  dir?: string;
  wsBind?: string;
}

/** Static tokens of the test app `chat`: `tok-NAME` logs in as NAME. */
export const USERS = ["alice", "bob", "carol"];

function config(dir: string, wsBind: string): string {
  const tokens = USERS.map((user) => `"tok-${user}" = "${user}"`).join(", ");
  return `
[server]
data_dir = "${dir}/data"

[admin]
bind = "127.0.0.1:0"

[[listener]]
transport = "ws"
bind = "${wsBind}"
path = "/ws"

[[listener]]
transport = "http"
bind = "127.0.0.1:0"
path = "/imgate"

[[app]]
id = "chat"
[app.auth]
kind = "static"
tokens = { ${tokens} }
[app.session]
# Desktop clients get a 1 s heartbeat, so a test sees several within seconds.
platform_heartbeat_secs = { desktop = 1 }
`;
}

/** Starts `imgate serve` and waits (bounded) until it announced its listeners. */
export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "imgate-sdk-"));
  writeFileSync(join(dir, "imgate.toml"), config(dir, options.wsBind ?? "127.0.0.1:0"));
  const child: ChildProcess = spawn(imgateBinary(), ["serve", "--config", join(dir, "imgate.toml")], {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Should the test runner exit without running `stop` (a crash), take the server along.
  const orphan = () => child.kill("SIGKILL");
  process.once("exit", orphan);
  const stop = async () => {
    process.off("exit", orphan);
    child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const drain = async () => {
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
    process.off("exit", orphan);
  };
  try {
    const { ws, http, admin } = await announced(child);
    return {
      url: `ws://${ws}/ws`,
      wsAddr: ws,
      httpUrl: `http://${http}/imgate`,
      admin: `http://${admin}`,
      dir,
      stop,
      drain,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function announced(child: ChildProcess): Promise<{ ws: string; http: string; admin: string }> {
  return new Promise((resolve, reject) => {
    let ws: string | undefined;
    let http: string | undefined;
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error("imgate did not announce its listeners in 20 s")), 20_000);
    child.once("exit", (code) => reject(new Error(`imgate exited (${code}) before listening`)));
    child.once("error", reject);
    lines.on("line", (line) => {
      const listening = /^imgate listening: (\w+) on (\S+)$/.exec(line);
      if (listening?.[1] === "ws") ws = listening[2];
      if (listening?.[1] === "http") http = listening[2];
      const admin = /^imgate admin: http:\/\/([^/\s]+)/.exec(line);
      if (admin && ws && http) {
        clearTimeout(timer);
        resolve({ ws, http, admin: admin[1]! });
      }
    });
  });
}
