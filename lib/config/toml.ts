// TOML in and out. Bun's native parser reads the store; @iarna/toml (loaded only then) locates a syntax error as
// row and column; our own emitter writes plain integers and a stable order.
import { childTables, type StoreDoc, TABLES, type TableRow } from "./model.ts";

/** Parse TOML text. A syntax error is thrown as { message, line?, col? } (0-based), located by @iarna/toml. */
export function parseToml(text: string): Record<string, unknown> {
  try {
    return Bun.TOML.parse(text) as Record<string, unknown>;
  } catch (bunError) {
    try {
      const TOML = require("@iarna/toml") as typeof import("@iarna/toml");
      TOML.parse(text);
    } catch (e) {
      const err = e as { line?: number; col?: number; message?: string };
      const message = (err.message ?? "parse error").split("\n")[0]!.replace(/ at row \d+, col \d+, pos \d+:?$/, "");
      throw Object.assign(new Error(message), { line: err.line, col: err.col });
    }
    // @iarna/toml accepted what Bun refused: Bun's message, without a position
    throw new Error(String((bunError as Error).message ?? bunError).replace(/^TOML Parse error:\s*/, ""));
  }
}

/** Drop symbol keys and prototypes. */
export function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v));
}

export function tomlString(s: string): string {
  let o = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') o += '\\"';
    else if (ch === "\\") o += "\\\\";
    else if (ch === "\n") o += "\\n";
    else if (ch === "\t") o += "\\t";
    else if (ch === "\r") o += "\\r";
    else if (c < 0x20 || c === 0x7f) o += `\\u${c.toString(16).padStart(4, "0")}`;
    else o += ch;
  }
  return o + '"';
}

export function tomlValue(v: unknown): string {
  if (typeof v === "string") return tomlString(v);
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(", ")}]`;
  throw new Error(`cannot render ${typeof v} as TOML`);
}

/** `key = value` lines of a table's scalars and plain arrays: the row's keys in table order, then others sorted. */
export function scalars(obj: Record<string, unknown>, order: string[]): string {
  const keys = [...order.filter((k) => k in obj), ...Object.keys(obj).filter((k) => !order.includes(k)).sort()];
  return keys
    .filter((k) => obj[k] !== undefined && (typeof obj[k] !== "object" || Array.isArray(obj[k]) && (obj[k] as unknown[]).every((x) => typeof x !== "object")))
    .map((k) => `${tomlKey(k)} = ${tomlValue(obj[k])}\n`)
    .join("");
}

export function tomlKey(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : tomlString(k);
}

/**
 * The blocks (`[header]` and its lines) of a table and the tables inside it, in TABLES order. `header` is the
 * TOML header name ("vms.attachments"); an array element gets `[[header]]`. A table with no scalars of its own gets
 * no header of its own unless it is an array element.
 */
export function tableBlocks(obj: Record<string, unknown>, row: TableRow, header: string, element = false): string[] {
  const own = scalars(obj, Object.keys(row.keys));
  const blocks = header && (own || element) ? [`${element ? `[[${header}]]` : `[${header}]`}\n${own}`] : [];
  for (const c of childTables(row.at)) {
    const v = obj[c.key];
    const h = header ? `${header}.${c.key}` : c.key;
    if (c.array && Array.isArray(v)) for (const x of v) blocks.push(...tableBlocks(x as Record<string, unknown>, c.row, h, true));
    else if (!c.array && v && typeof v === "object") blocks.push(...tableBlocks(v as Record<string, unknown>, c.row, h));
  }
  return blocks;
}

export const HEADER_COMMENT = "# aivm config store. Reference: `aivm --help`, README.md. Edit with `aivm config edit`.\n";

/** The whole store in our layout (a new file; an existing one is patched by patch.ts to keep its layout). */
export function renderToml(doc: StoreDoc): string {
  return [HEADER_COMMENT, ...tableBlocks(doc as Record<string, unknown>, TABLES[0]!, "")].join("\n");
}
