// Validation of a store document against the model, with every problem located as file:line:col.
import { VM_KEYS, KeySpec, type Section, NETWORK_KEYS, FIREWALL_KEYS, IMAGE_KEYS, PATHS_KEYS, ATTACHMENT_KEYS, type StoreDoc, defaultBridge } from "./model.ts";
import { nameProblem } from "../validate.ts";

/** Map "a.b[0].c" -> [line, col] (1-based) by scanning table headers and key lines. */
export function keyPositions(text: string): Map<string, [number, number]> {
  const pos = new Map<string, [number, number]>();
  const counters = new Map<string, number>();
  let table = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith("#")) continue;
    const col = line.indexOf(trimmed[0]!) + 1;
    let m = /^\[\[\s*([A-Za-z0-9_.\-" ]+?)\s*\]\]/.exec(trimmed);
    if (m) {
      const raw = m[1]!.replace(/"/g, "");
      // array-of-tables: index relative to the resolved parent path
      const parts = raw.split(".");
      const parent = resolveParent(parts.slice(0, -1), table);
      const base = parent ? `${parent}.${parts[parts.length - 1]}` : parts[parts.length - 1]!;
      const n = counters.get(base) ?? 0;
      counters.set(base, n + 1);
      table = `${base}[${n}]`;
      pos.set(table, [i + 1, col]);
      continue;
    }
    m = /^\[\s*([A-Za-z0-9_.\-" ]+?)\s*\]/.exec(trimmed);
    if (m) {
      const parts = m[1]!.replace(/"/g, "").split(".");
      const parent = resolveParent(parts.slice(0, -1), table);
      table = parent ? `${parent}.${parts[parts.length - 1]}` : parts[parts.length - 1]!;
      pos.set(table, [i + 1, col]);
      continue;
    }
    m = /^("?[A-Za-z0-9_.\-]+"?)\s*=/.exec(trimmed);
    if (m) {
      const key = m[1]!.replace(/"/g, "");
      pos.set(table ? `${table}.${key}` : key, [i + 1, col]);
    }
  }
  return pos;
}

/** `[vms.image]` after `[[vms]]` #2 means vms[1].image. */
function resolveParent(parts: string[], current: string): string {
  if (parts.length === 0) return "";
  let path = "";
  for (const p of parts) {
    const candidate = path ? `${path}.${p}` : p;
    const re = new RegExp(`^${candidate.replace(/[.[\]]/g, "\\$&")}\\[(\\d+)\\]`);
    const m = re.exec(current);
    path = m ? `${candidate}[${m[1]}]` : candidate;
  }
  return path;
}

interface Problem { path: string; message: string }

function typeOk(spec: KeySpec, v: unknown): boolean {
  switch (spec.type) {
    case "string": return typeof v === "string";
    case "int": return typeof v === "number" && Number.isInteger(v);
    case "bool": return typeof v === "boolean";
    case "string[]": return Array.isArray(v) && v.every((x) => typeof x === "string");
    case "int[]": return Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x));
  }
}

function checkSection(obj: unknown, spec: Section, path: string, problems: Problem[], sub: Record<string, (v: unknown, p: string) => void> = {}): void {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    problems.push({ path, message: `${path} must be a table` });
    return;
  }
  for (const [k, v] of Object.entries(obj)) {
    const p = `${path}.${k}`;
    if (sub[k]) { sub[k](v, p); continue; }
    const s = spec[k];
    if (!s) { problems.push({ path: p, message: `unknown key ${k} in ${path}` }); continue; }
    if (!typeOk(s, v)) { problems.push({ path: p, message: `${p} must be ${article(s.type)}` }); continue; }
    const c = s.check?.(v);
    if (c) problems.push({ path: p, message: `${p}: ${c}` });
  }
}

function article(t: string): string {
  return { string: "a string", int: "an integer", bool: "a boolean", "string[]": "an array of strings", "int[]": "an array of integers" }[t] ?? t;
}

function checkArray(v: unknown, path: string, problems: Problem[], each: (x: unknown, p: string) => void): void {
  if (!Array.isArray(v)) { problems.push({ path, message: `${path} must be an array of tables ([[${path}]])` }); return; }
  v.forEach((x, i) => each(x, `${path}[${i}]`));
}

export function validateDoc(doc: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  for (const [k, v] of Object.entries(doc)) {
    if (k === "defaults") {
      checkSection(v, {}, "defaults", problems, {
        vm: (x, p) => checkSection(x, VM_KEYS, p, problems),
        network: (x, p) => checkSection(x, NETWORK_KEYS, p, problems),
        firewall: (x, p) => checkSection(x, FIREWALL_KEYS, p, problems),
        image: (x, p) => checkSection(x, IMAGE_KEYS, p, problems),
        paths: (x, p) => checkSection(x, PATHS_KEYS, p, problems),
      });
    } else if (k === "networks") {
      checkArray(v, "networks", problems, (x, p) => {
        checkSection(x, NETWORK_KEYS, p, problems, { firewall: (f, fp) => checkSection(f, FIREWALL_KEYS, fp, problems) });
        if (typeof x === "object" && x && !("name" in x)) problems.push({ path: p, message: `${p} needs a name` });
      });
    } else if (k === "vms") {
      checkArray(v, "vms", problems, (x, p) => {
        checkSection(x, VM_KEYS, p, problems, {
          network: (n, np) => { const e = nameProblem(n); if (e) problems.push({ path: np, message: `${np}: ${e}` }); },
          image: (i, ip) => checkSection(i, IMAGE_KEYS, ip, problems),
          attachments: (a, ap) => checkArray(a, ap, problems, (y, yp) => {
            checkSection(y, ATTACHMENT_KEYS, yp, problems);
            if (typeof y === "object" && y && !("host_path" in y)) problems.push({ path: yp, message: `${yp} needs a host_path` });
          }),
        });
        if (typeof x === "object" && x) {
          if (!("name" in x)) problems.push({ path: p, message: `${p} needs a name` });
          if (!("network" in x)) problems.push({ path: p, message: `${p} needs a network` });
        }
      });
    } else {
      problems.push({ path: k, message: `unknown key ${k}` });
    }
  }
  // cross-record checks
  const d = doc as StoreDoc;
  const dup = (names: (string | undefined)[], what: string, base: string) => {
    const seen = new Set<string>();
    names.forEach((n, i) => {
      if (n && seen.has(n)) problems.push({ path: `${base}[${i}].name`, message: `duplicate ${what} name ${n}` });
      if (n) seen.add(n);
    });
  };
  if (Array.isArray(d.networks)) dup(d.networks.map((n) => n?.name), "network", "networks");
  if (Array.isArray(d.vms)) dup(d.vms.map((n) => n?.name), "VM", "vms");
  if (Array.isArray(d.networks)) {
    const bridges = new Map<string, string>();
    d.networks.forEach((n, i) => {
      if (!n?.name || typeof n.name !== "string") return;
      const b = n.bridge ?? defaultBridge(n.name);
      if (bridges.has(b)) problems.push({ path: `networks[${i}].bridge`, message: `networks[${i}]: bridge ${b} is also used by network ${bridges.get(b)}` });
      bridges.set(b, n.name);
    });
  }
  return problems;
}

export function locate(file: string, keyPath: string, positions: Map<string, [number, number]>): string {
  let p = keyPath;
  for (;;) {
    const hit = positions.get(p);
    if (hit) return `${file}:${hit[0]}:${hit[1]}`;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) return `${file}:1:1`;
    p = p.slice(0, cut);
  }
}
