// Logs, progress and prompts go to stderr; stdout is reserved for data (see out()).
import { createConsola, type ConsolaInstance } from "consola";

export const log: ConsolaInstance = createConsola(<Parameters<typeof createConsola>[0]>{
  stdout: process.stderr,
  stderr: process.stderr,
  level: 3,
  fancy: false,
  formatOptions: { date: false, colors: !process.env.NO_COLOR && !!process.stderr.isTTY },
});

export function setVerbosity(v: { verbose?: boolean; quiet?: boolean }): void {
  if (v.verbose) log.level = 4;
  else if (v.quiet) log.level = 1;
  else log.level = 3;
}

export function isVerbose(): boolean {
  return log.level >= 4;
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
