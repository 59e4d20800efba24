// TOML in and out. Bun's native parser reads the store; @iarna/toml (loaded only then) locates a syntax error as
// row and column; our own emitter writes plain integers and a stable order.
import { ATTACHMENT_KEYS, FIREWALL_KEYS, IMAGE_KEYS, NETWORK_KEYS, PATHS_KEYS, VM_KEYS, type StoreDoc } from "./model.ts";

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

function tomlValue(v: unknown): string {
  if (typeof v === "string") return tomlString(v);
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(", ")}]`;
  throw new Error(`cannot render ${typeof v} as TOML`);
}

function scalars(obj: Record<string, unknown>, order: string[]): string {
  const keys = [...order.filter((k) => k in obj), ...Object.keys(obj).filter((k) => !order.includes(k)).sort()];
  return keys
    .filter((k) => obj[k] !== undefined && (typeof obj[k] !== "object" || Array.isArray(obj[k]) && (obj[k] as unknown[]).every((x) => typeof x !== "object")))
    .map((k) => `${k} = ${tomlValue(obj[k])}\n`)
    .join("");
}

const ORDER = {
  vm: ["name", "network", ...Object.keys(VM_KEYS).filter((k) => k !== "name")],
  network: Object.keys(NETWORK_KEYS),
  firewall: Object.keys(FIREWALL_KEYS),
  image: Object.keys(IMAGE_KEYS),
  paths: Object.keys(PATHS_KEYS),
  attachment: Object.keys(ATTACHMENT_KEYS),
};

export function renderToml(doc: StoreDoc): string {
  const parts: string[] = ["# aivm config store. Reference: `aivm --help`, README.md. Edit with `aivm config edit`.\n"];
  const d = doc.defaults ?? {};
  for (const sec of ["vm", "network", "firewall", "image", "paths"] as const) {
    const v = d[sec] as Record<string, unknown> | undefined;
    if (v && Object.keys(v).length) parts.push(`[defaults.${sec}]\n${scalars(v, ORDER[sec])}`);
  }
  for (const n of doc.networks ?? []) {
    let s = `[[networks]]\n${scalars(n as unknown as Record<string, unknown>, ORDER.network)}`;
    if (n.firewall && Object.keys(n.firewall).length) s += `\n[networks.firewall]\n${scalars(n.firewall as Record<string, unknown>, ORDER.firewall)}`;
    parts.push(s);
  }
  for (const v of doc.vms ?? []) {
    let s = `[[vms]]\n${scalars(v as unknown as Record<string, unknown>, ORDER.vm)}`;
    if (v.image && Object.keys(v.image).length) s += `\n[vms.image]\n${scalars(v.image as Record<string, unknown>, ORDER.image)}`;
    for (const a of v.attachments ?? []) s += `\n[[vms.attachments]]\n${scalars(a as unknown as Record<string, unknown>, ORDER.attachment)}`;
    parts.push(s);
  }
  return parts.join("\n");
}
