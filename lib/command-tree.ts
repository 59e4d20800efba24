// The command tree read from the live command definitions: every command with its one-line purpose, its flags and
// positionals, and where each value comes from (for `aivm help tree` and the shell completion scripts).
import type { ArgDef, ArgsDef, CommandDef } from "citty";

/** Where a value is completed from: names in the store, an enum's options, host paths, or nothing. */
export type ValueSource = { kind: "list"; what: "vms" | "networks" } | { kind: "words"; words: string[] } | { kind: "files" } | { kind: "dirs" } | { kind: "none" };

export interface FlagNode {
  /** "--vm" */
  flag: string;
  /** "-v" when it has a one-letter alias */
  short?: string;
  takesValue: boolean;
  source: ValueSource;
  description: string;
}

export interface CmdNode {
  /** "" for the root, "vm up" for a leaf */
  path: string;
  description: string;
  subs: string[];
  flags: FlagNode[];
  /** the first positional argument, if any */
  positional?: { name: string; source: ValueSource };
}

/** The shells `aivm completion` writes for (the positional's values). */
export const SHELLS = ["bash", "zsh", "fish"];

/** Value hints that name a source (set in the argument definitions: `valueHint: "VM"`). */
const HINTS: Record<string, ValueSource> = {
  VM: { kind: "list", what: "vms" },
  NETWORK: { kind: "list", what: "networks" },
  FILE: { kind: "files" },
  DIR: { kind: "dirs" },
  SHELL: { kind: "words", words: SHELLS },
};

/** The completion source of one argument, from its definition alone. */
export function argSource(def: ArgDef): ValueSource {
  if (def.type === "enum" && def.options?.length) return { kind: "words", words: [...def.options] };
  if (def.type === "boolean") return { kind: "none" };
  return (def.valueHint && HINTS[def.valueHint]) || { kind: "none" };
}

async function value<T>(v: unknown): Promise<T> {
  return (typeof v === "function" ? await (v as () => unknown)() : await v) as T;
}

export async function commandTree(root: CommandDef<any>): Promise<CmdNode[]> {
  const nodes: CmdNode[] = [];
  async function walk(cmd: CommandDef<any>, path: string[]): Promise<void> {
    const subs = (await value<Record<string, CommandDef<any>> | undefined>(cmd.subCommands)) ?? {};
    const args = (await value<ArgsDef | undefined>(cmd.args)) ?? {};
    const meta = (await value<{ description?: string } | undefined>(cmd.meta)) ?? {};
    const flags: FlagNode[] = [];
    let positional: CmdNode["positional"];
    for (const [k, d] of Object.entries(args)) {
      if (d.type === "positional") {
        positional ??= { name: k, source: argSource(d) };
        continue;
      }
      const alias = [(d as { alias?: string | string[] }).alias ?? []].flat().find((a) => a.length === 1);
      flags.push({ flag: `--${k}`, ...(alias ? { short: `-${alias}` } : {}), takesValue: d.type === "string" || d.type === "enum", source: argSource(d), description: d.description ?? "" });
    }
    flags.push({ flag: "--help", short: "-h", takesValue: false, source: { kind: "none" }, description: "show this help" });
    nodes.push({ path: path.join(" "), description: meta.description ?? "", subs: Object.keys(subs), flags, ...(positional ? { positional } : {}) });
    for (const [name, sub] of Object.entries(subs)) await walk(await value<CommandDef<any>>(sub), [...path, name]);
  }
  await walk(root, []);
  return nodes;
}

/** `aivm help tree`: every command as a tree, with its one-line purpose (one column for all purposes). */
export function formatTree(nodes: CmdNode[], rootName = "aivm"): string {
  const byPath = new Map(nodes.map((n) => [n.path, n]));
  const rows: [string, string][] = [[rootName, byPath.get("")?.description ?? ""]];
  const walk = (path: string, prefix: string) => {
    const node = byPath.get(path)!;
    node.subs.forEach((s, i) => {
      const last = i === node.subs.length - 1;
      const childPath = path ? `${path} ${s}` : s;
      const child = byPath.get(childPath)!;
      rows.push([`${prefix}${last ? "└── " : "├── "}${s}${child.positional ? ` [${child.positional.name.toUpperCase()}]` : ""}`, child.description]);
      if (child.subs.length) walk(childPath, prefix + (last ? "    " : "│   "));
    });
  };
  walk("", "");
  const w = Math.max(...rows.map(([l]) => l.length));
  return rows.map(([l, d]) => `${l.padEnd(w)}  ${d}`.trimEnd()).join("\n");
}
