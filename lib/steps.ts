// Steps: named groups of host changes, and their text (the copy-pasteable dry-run form and the one-line preview).
import { heredoc, shellJoin, shellQuote } from "./shell.ts";

export type Action =
  | { kind: "run"; argv: string[]; input?: string; privileged?: boolean; okCodes?: number[] }
  | { kind: "write"; path: string; content: string; mode?: number }
  | { kind: "remove"; path: string };

/** A named group of host changes, previewed and approved as one. */
export interface Step {
  title: string;
  why: string;
  actions: Action[];
  /** ask before running (changes outside aivm's own files), unless --yes */
  consent?: boolean;
}

/** The copy-pasteable shell text of one action. */
export function describeAction(a: Action, sudo = false): string {
  switch (a.kind) {
    case "run": {
      const argv = sudo && a.privileged ? ["sudo", ...a.argv] : a.argv;
      return a.input !== undefined ? `${shellJoin(argv)} ${heredoc(a.input)}` : shellJoin(argv);
    }
    case "write": {
      const mode = a.mode !== undefined ? `install -m ${a.mode.toString(8)} /dev/null ${shellQuote(a.path)}\n` : "";
      return `${mode}cat > ${shellQuote(a.path)} ${heredoc(a.content)}`;
    }
    case "remove":
      return `rm -rf -- ${shellQuote(a.path)}`;
  }
}

export function summarize(a: Action, sudo: boolean): string {
  const text = a.kind === "run" ? shellJoin(sudo && a.privileged ? ["sudo", ...a.argv] : a.argv) + (a.input !== undefined ? " < (document)" : "") : a.kind === "write" ? `write ${a.path}` : `remove ${a.path}`;
  return text.length > 160 ? text.slice(0, 157) + "..." : text;
}
