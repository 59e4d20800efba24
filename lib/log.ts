// Logs, progress and prompts go to stderr; stdout is reserved for data (see out()). consola formats the lines; it is
// loaded on the first line actually logged, so a command that logs nothing (most reads) does not pay for it.
import type { ConsolaInstance } from "consola";

let level = 3;
let instance: ConsolaInstance | undefined;

function consola(): ConsolaInstance {
  if (!instance) {
    const { createConsola } = require("consola") as typeof import("consola");
    instance = createConsola(<Parameters<typeof createConsola>[0]>{
      stdout: process.stderr,
      stderr: process.stderr,
      level,
      fancy: false,
      formatOptions: { date: false, colors: !process.env.NO_COLOR && !!process.stderr.isTTY },
    });
  }
  return instance;
}

type Level = "error" | "warn" | "info" | "success" | "debug";
const LEVELS: Record<Level, number> = { error: 0, warn: 1, info: 3, success: 3, debug: 4 };
const at = (kind: Level) => (message: string) => {
  if (level >= LEVELS[kind]) consola()[kind](message);
};

export const log = { error: at("error"), warn: at("warn"), info: at("info"), success: at("success"), debug: at("debug") };

export function setVerbosity(v: { verbose?: boolean; quiet?: boolean }): void {
  level = v.verbose ? 4 : v.quiet ? 1 : 3;
  if (instance) instance.level = level;
}

export function isVerbose(): boolean {
  return level >= 4;
}

/** Write data to stdout. The only way command output reaches stdout. */
export function out(text: string): void {
  process.stdout.write(text.endsWith("\n") || text === "" ? text : text + "\n");
}

export function outJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** Whether we may ask the user anything: both ends must be a terminal. */
export function canPrompt(): boolean {
  return !!process.stdin.isTTY && !!process.stderr.isTTY;
}
