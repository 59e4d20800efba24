// The one exit-code table, and the error classes that carry a code to main().
export const EXIT = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  UNAVAILABLE: 69,
  CONFIG: 78,
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error meant for the user: `aivm: <what>: <why>` plus an optional hint line. */
export class AivmError extends Error {
  constructor(
    public readonly what: string,
    public readonly why: string,
    public readonly exitCode: number = EXIT.FAILED,
    public readonly hint?: string,
  ) {
    super(`${what}: ${why}`);
    this.name = "AivmError";
  }
}

/** Bad arguments or invalid input: exit 2, nothing changed. */
export class UsageError extends AivmError {
  constructor(what: string, why: string, hint?: string) {
    super(what, why, EXIT.USAGE, hint);
    this.name = "UsageError";
  }
}

/** The config file is malformed or invalid: exit 78, file untouched. */
export class ConfigError extends AivmError {
  constructor(why: string, hint?: string, public readonly problems: string[] = [why]) {
    super("config", why, EXIT.CONFIG, hint);
    this.name = "ConfigError";
  }
}

/** libvirtd or another host service cannot be reached: exit 69. */
export class UnavailableError extends AivmError {
  constructor(what: string, why: string, hint?: string) {
    super(what, why, EXIT.UNAVAILABLE, hint);
    this.name = "UnavailableError";
  }
}

/** Ctrl-C (at a prompt or while a command runs): exit 130, one line. */
export class InterruptedError extends AivmError {
  constructor() {
    super("interrupted", "stopped by Ctrl-C", EXIT.INTERRUPTED);
    this.name = "InterruptedError";
  }
}

/** A subprocess (or remote command) exit code to pass through unchanged, with no message. */
export class PassThroughExit extends Error {
  constructor(public readonly exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = "PassThroughExit";
  }
}

/** Render an error as the one stderr line (and hint line) main() prints. */
export function formatError(err: unknown): { lines: string[]; exitCode: number } {
  if (err instanceof PassThroughExit) return { lines: [], exitCode: err.exitCode };
  if (err instanceof InterruptedError) return { lines: ["aivm: interrupted"], exitCode: err.exitCode };
  if (err instanceof AivmError) {
    const lines = [`aivm: ${err.what}: ${err.why}`];
    if (err.hint) lines.push(`hint: ${err.hint}`);
    return { lines, exitCode: err.exitCode };
  }
  const e = err as { name?: string; code?: string; message?: string };
  if (e?.name === "CLIError") {
    // citty colours its messages (an enum's value, its options) whatever stderr is: plain text here
    // eslint-disable-next-line no-control-regex
    return { lines: [`aivm: usage: ${(e.message ?? "").replace(/\x1b\[[0-9;]*m/g, "")}`, "hint: see `aivm --help`"], exitCode: EXIT.USAGE };
  }
  return { lines: [`aivm: internal error: ${e?.message ?? String(err)}`], exitCode: EXIT.FAILED };
}

/** The last non-empty line a program printed (stderr, usually), without a leading "error:": for one-line messages. */
export function lastLine(s: string): string {
  const l = s.trim().split("\n").filter((x) => x.trim());
  return (l[l.length - 1] ?? "").trim().replace(/^error:\s*/i, "");
}
