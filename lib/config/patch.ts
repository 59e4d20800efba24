// Writing a store that already exists: only what changed is rewritten, so the user's comments, order, spacing and
// formatting of everything else stay byte for byte. Records of arrays of tables are matched by their id (a VM by
// name, an attachment by host_path), not by index, so removing one never disturbs another. A comment block directly
// above a header (no blank line between) belongs to that header and moves or goes with it. What this cannot do
// keeping the layout (dotted keys, inline tables, records reordered) returns null: the caller renders the whole file.
import { childTables, type StoreDoc, TABLES, type TableRow } from "./model.ts";
import { tableBlocks, tomlKey, tomlValue } from "./toml.ts";

interface Entry { key: string; start: number; end: number }
interface Block { path: string; start: number; header: number; end: number; entries: Entry[] }

const HEADER = /^\s*(\[\[?)\s*([^\]#]+?)\s*\]\]?\s*(#.*)?$/;
const KEY = /^(\s*)([A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')(\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*\s*=\s*/;

const unquote = (k: string) => k.trim().replace(/^"(.*)"$|^'(.*)'$/, "$1$2");

/** Where the value starting at lines[i][col] ends: its last line, and where a trailing comment starts on it (-1: none). */
function valueEnd(lines: string[], i: number, col: number): { end: number; comment: number } {
  let depth = 0;
  let str: string | null = null;
  for (let l = i; l < lines.length; l++) {
    const s = lines[l]!;
    for (let c = l === i ? col : 0; c < s.length; c++) {
      const ch = s[c]!;
      if (str) {
        if ((str === '"' || str === '"""') && ch === "\\") { c++; continue; }
        if (s.startsWith(str, c)) { c += str.length - 1; str = null; }
        continue;
      }
      if (s.startsWith('"""', c) || s.startsWith("'''", c)) { str = s.slice(c, c + 3); c += 2; continue; }
      if (ch === '"' || ch === "'") { str = ch; continue; }
      if (ch === "[" || ch === "{") depth++;
      else if (ch === "]" || ch === "}") depth--;
      else if (ch === "#") { if (depth === 0) return { end: l, comment: c }; break; }
    }
    if (str === '"' || str === "'") str = null; // a single-line string cannot span lines (the parser already accepted it)
    if (depth <= 0 && !str) return { end: l, comment: -1 };
  }
  return { end: lines.length - 1, comment: -1 };
}

/** The blocks of a document: each header with the comment lines it owns, its key lines, up to the next block. */
function scan(lines: string[]): Block[] | null {
  const blocks: Block[] = [];
  const lastIdx = new Map<string, number>();
  let cur: Block | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const t = line.trim();
    if (!t || t.startsWith("#")) continue;
    const h = HEADER.exec(line);
    if (h) {
      const parts = h[2]!.split(".").map(unquote);
      let path = "";
      for (const p of parts.slice(0, -1)) {
        path = path ? `${path}.${p}` : p;
        if (lastIdx.has(path)) path += `[${lastIdx.get(path)}]`;
      }
      const base = path ? `${path}.${parts[parts.length - 1]}` : parts[parts.length - 1]!;
      if (h[1] === "[[") {
        const n = (lastIdx.get(base) ?? -1) + 1;
        lastIdx.set(base, n);
        path = `${base}[${n}]`;
      } else path = base;
      let start = i;
      while (start > 0 && lines[start - 1]!.trim().startsWith("#")) start--;
      if (cur) cur.end = start - 1;
      cur = { path, start, header: i, end: lines.length - 1, entries: [] };
      blocks.push(cur);
      continue;
    }
    const k = KEY.exec(line);
    if (!k || !cur || k[3]) return null; // a root key, or a dotted key: not ours to patch in place
    const v = valueEnd(lines, i, k[0].length);
    cur.entries.push({ key: unquote(k[2]!), start: i, end: v.end });
    i = v.end;
  }
  return blocks;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameValue(x, b[i]));
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => sameValue(a[k], b[k]));
  }
  return a === b;
}

class Patcher {
  /** out[i]: what original line i becomes; ins[i]: lines inserted before original line i (i may be lines.length) */
  readonly out: string[][];
  readonly ins: string[][];
  /** every block under each path prefix ("vms[1]" holds vms[1], vms[1].image, vms[1].attachments[0], ...) */
  private readonly under = new Map<string, Block[]>();
  constructor(readonly lines: string[], readonly blocks: Block[]) {
    this.out = lines.map((l) => [l]);
    this.ins = Array.from({ length: lines.length + 1 }, () => []);
    for (const b of blocks) {
      const cuts = [...b.path.matchAll(/[.[]/g)].map((m) => m.index!);
      for (const prefix of [...cuts.map((i) => b.path.slice(0, i)), b.path]) {
        if (!this.under.has(prefix)) this.under.set(prefix, []);
        this.under.get(prefix)!.push(b);
      }
    }
  }

  block(path: string): Block | undefined { return this.under.get(path)?.find((b) => b.path === path); }
  /** blocks of a table or record and everything inside it */
  extent(path: string): Block[] { return this.under.get(path) ?? []; }

  remove(path: string): void {
    for (const b of this.extent(path)) for (let i = b.start; i <= b.end; i++) this.out[i] = [];
  }

  /** New blocks before line `at`, separated by blank lines from what is around them. */
  insert(at: number, blocks: string[]): void {
    if (!blocks.length) return;
    if (at >= this.lines.length && this.lines[this.lines.length - 1] === "") at = this.lines.length - 1;
    const text = blocks.join("\n").replace(/\n+$/, "").split("\n");
    const prev = this.emittedBefore(at);
    const prevBlank = prev === undefined || prev.trim() === "";
    const atEnd = at >= this.lines.length - 1 && this.lines[this.lines.length - 1] === "";
    this.ins[at]!.push(...(prevBlank ? [] : [""]), ...text, ...(atEnd && !prevBlank ? [] : [""]));
  }

  /** The last line the output holds before original line `at` (undefined: none). */
  emittedBefore(at: number): string | undefined {
    if (this.ins[at]!.length) return this.ins[at]![this.ins[at]!.length - 1];
    for (let j = at - 1; j >= 0; j--) {
      if (this.out[j]!.length) return this.out[j]![this.out[j]!.length - 1];
      if (this.ins[j]!.length) return this.ins[j]![this.ins[j]!.length - 1];
    }
    return undefined;
  }

  /** Scalars of a table that has a block; false when a changed key is not on a line of its own there. */
  scalars(path: string, row: TableRow, old: Obj, next: Obj): boolean {
    const kids = new Set(childTables(row.at).map((c) => c.key));
    const keys = [...new Set([...Object.keys(old), ...Object.keys(next)])].filter((k) => !kids.has(k));
    const changed = keys.filter((k) => !sameValue(old[k], next[k]));
    if (!changed.length) return true;
    const b = this.block(path);
    if (!b) return false;
    const added: string[] = [];
    for (const k of changed) {
      const e = b.entries.find((x) => x.key === k);
      if (old[k] !== undefined && !e) return false;
      if (next[k] === undefined) { for (let i = e!.start; i <= e!.end; i++) this.out[i] = []; continue; }
      const line = `${tomlKey(k)} = ${tomlValue(next[k])}`;
      if (!e) { added.push(line); continue; }
      const first = this.lines[e.start]!;
      const v = valueEnd(this.lines, e.start, KEY.exec(first)![0].length);
      const last = this.lines[v.end]!;
      const comment = v.comment >= 0 ? (/\s*$/.exec(last.slice(0, v.comment))![0] || " ") + last.slice(v.comment) : "";
      const raw = KEY.exec(first)![0];
      this.out[e.start] = [raw + tomlValue(next[k]) + comment];
      for (let i = e.start + 1; i <= e.end; i++) this.out[i] = [];
    }
    if (added.length) {
      const last = b.entries.length ? b.entries[b.entries.length - 1]!.end : b.header;
      this.ins[last + 1]!.push(...added);
    }
    return true;
  }

  /** One table (or record) and the tables inside it. `header` is its TOML name ("vms.attachments"). */
  table(path: string, header: string, row: TableRow, old: Obj, next: Obj): boolean {
    if (row.at && !this.scalars(path, row, old, next)) return false;
    for (const c of childTables(row.at)) {
      const p = path ? `${path}.${c.key}` : c.key;
      const h = header ? `${header}.${c.key}` : c.key;
      const o = old[c.key];
      const n = next[c.key];
      if (sameValue(o, n)) continue;
      if (c.array) {
        if (!this.array(p, h, c.row, (o ?? []) as Obj[], (n ?? []) as Obj[], path, row)) return false;
      } else if (o === undefined) {
        this.insert(this.placeFor(path, row, c.key), tableBlocks(n as Obj, c.row, h));
      } else if (n === undefined) {
        if (!this.extent(p).length) return false;
        this.remove(p);
      } else if (!this.table(p, h, c.row, o as Obj, n as Obj)) return false;
    }
    return true;
  }

  array(p: string, h: string, row: TableRow, old: Obj[], next: Obj[], parent: string, parentRow: TableRow): boolean {
    const id = (x: Obj, i: number) => (row.id && x[row.id] !== undefined ? JSON.stringify(x[row.id]) : `#${i}`);
    const oldIds = old.map(id);
    const used = new Set<number>();
    const match = next.map((x, i) => {
      const j = oldIds.findIndex((k, jj) => k === id(x, i) && !used.has(jj));
      if (j >= 0) used.add(j);
      return j;
    });
    const kept = match.filter((j) => j >= 0);
    if (kept.some((j, i) => i > 0 && j < kept[i - 1]!)) return false; // reordered
    if (old.some((_, j) => !used.has(j) && !this.extent(`${p}[${j}]`).length)) return false;
    old.forEach((_, j) => { if (!used.has(j)) this.remove(`${p}[${j}]`); });
    let at = -1; // insertion line: after the previous element of the new order
    for (const [i, x] of next.entries()) {
      const j = match[i]!;
      if (j >= 0) {
        const ext = this.extent(`${p}[${j}]`);
        if (!ext.length) return false;
        if (!this.table(`${p}[${j}]`, h, row, old[j]!, x)) return false;
        at = Math.max(...ext.map((b) => b.end)) + 1;
        continue;
      }
      if (at < 0) {
        const firstKept = kept.length ? this.extent(`${p}[${kept[0]}]`) : [];
        at = firstKept.length ? Math.min(...firstKept.map((b) => b.start)) : this.placeFor(parent, parentRow, p.slice(p.lastIndexOf(".") + 1).replace(/\[\d+\]$/, ""));
      }
      this.insert(at, tableBlocks(x, row, h, true));
    }
    return true;
  }

  /**
   * Where a new child table `key` of `parent` goes: before the first block of a later sibling (TABLES order), else
   * after the parent's last block, else at the end of the file.
   */
  placeFor(parent: string, row: TableRow, key: string): number {
    const order = childTables(row.at).map((c) => c.key);
    const later = order.slice(order.indexOf(key) + 1);
    const prefix = parent ? `${parent}.` : "";
    const starts = this.blocks.filter((b) => later.some((k) => b.path === prefix + k || b.path.startsWith(`${prefix}${k}.`) || b.path.startsWith(`${prefix}${k}[`))).map((b) => b.start);
    if (starts.length) return Math.min(...starts);
    const own = parent ? this.extent(parent) : this.blocks;
    return own.length ? Math.max(...own.map((b) => b.end)) + 1 : this.lines.length - (this.lines[this.lines.length - 1] === "" ? 1 : 0);
  }

  text(): string {
    const o: string[] = [];
    for (let i = 0; i <= this.lines.length; i++) {
      o.push(...this.ins[i]!);
      if (i < this.lines.length) o.push(...this.out[i]!);
    }
    return o.join("\n");
  }
}

/** A copy without empty arrays of tables (`attachments = []` is no record at all: TOML has no header for it). */
export function pruneEmpty<T>(doc: T, row: TableRow = TABLES[0]!): T {
  if (!isObj(doc)) return doc;
  const o: Obj = { ...doc };
  for (const c of childTables(row.at)) {
    const v = o[c.key];
    if (c.array && Array.isArray(v)) {
      if (v.length) o[c.key] = v.map((x) => pruneEmpty(x, c.row));
      else delete o[c.key];
    } else if (!c.array && isObj(v)) o[c.key] = pruneEmpty(v, c.row);
  }
  return o as T;
}

/** `text` changed from `old` (what it parses to) into `next`, keeping everything else as written; null: cannot. */
export function patchToml(text: string, old: StoreDoc, next: StoreDoc): string | null {
  next = pruneEmpty(next);
  if (text.includes("\r")) return null;
  const lines = text.split("\n");
  const blocks = scan(lines);
  if (!blocks) return null;
  const p = new Patcher(lines, blocks);
  if (!p.table("", "", TABLES[0]!, old as Obj, next as Obj)) return null;
  return p.text();
}
