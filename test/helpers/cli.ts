// Run the CLI as a real subprocess (source or compiled), with an isolated HOME/XDG, and capture both streams.
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = join(ROOT, "node_modules/.bin/bun");

export interface CliResult { exitCode: number; stdout: string; stderr: string }

export function isolatedEnv(): Record<string, string> {
  const home = mkdtempSync(join(tmpdir(), "aivm-home-"));
  for (const d of [".config", ".cache", ".local/share"]) mkdirSync(join(home, d), { recursive: true });
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    XDG_CONFIG_HOME: join(home, ".config"),
    XDG_CACHE_HOME: join(home, ".cache"),
    XDG_DATA_HOME: join(home, ".local/share"),
    NO_COLOR: "1",
  };
}

export async function aivm(args: string[], opts: { env?: Record<string, string>; bin?: string; cwd?: string; stdin?: string } = {}): Promise<CliResult> {
  const cmd = opts.bin ? [opts.bin, ...args] : [BUN, join(ROOT, "bin/aivm.ts"), ...args];
  const p = Bun.spawn(cmd, {
    env: opts.env ?? isolatedEnv(),
    cwd: opts.cwd ?? ROOT,
    stdin: opts.stdin !== undefined ? new TextEncoder().encode(opts.stdin) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { exitCode, stdout, stderr };
}
