// Validation of a store document against the model, with every problem located as file:line:col.
import { BUILTIN, childTables, defaultBridge, type KeySpec, type NetworkDoc, type StoreDoc, TABLES, type TableRow } from "./model.ts";
import { type Cidr, cidrContains, cidrsOverlap, intToIpv4, ipv4ToInt, parseCidr } from "../validate.ts";

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

export interface Problem { path: string; message: string }

function typeOk(spec: KeySpec, v: unknown): boolean {
  switch (spec.type) {
    case "string": return typeof v === "string";
    case "int": return typeof v === "number" && Number.isInteger(v);
    case "bool": return typeof v === "boolean";
    case "string[]": return Array.isArray(v) && v.every((x) => typeof x === "string");
    case "int[]": return Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x));
  }
}

function article(t: string): string {
  return { string: "a string", int: "an integer", bool: "a boolean", "string[]": "an array of strings", "int[]": "an array of integers" }[t] ?? t;
}

const isTable = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** One table against its row of TABLES: its keys, then the tables inside it. `path` is "" for the document. */
function checkTable(obj: unknown, row: TableRow, path: string, problems: Problem[]): void {
  if (!isTable(obj)) { problems.push({ path, message: `${path} must be a table` }); return; }
  const children = new Map(childTables(row.at).map((c) => [c.key, c]));
  for (const [k, v] of Object.entries(obj)) {
    const p = path ? `${path}.${k}` : k;
    const child = children.get(k);
    if (child?.array) {
      if (!Array.isArray(v)) { problems.push({ path: p, message: `${p} must be an array of tables ([[${p}]])` }); continue; }
      v.forEach((x, i) => {
        const xp = `${p}[${i}]`;
        checkTable(x, child.row, xp, problems);
        for (const r of child.row.required ?? []) if (isTable(x) && !(r in x)) problems.push({ path: xp, message: `${xp} needs a ${r}` });
      });
      continue;
    }
    if (child) { checkTable(v, child.row, p, problems); continue; }
    const s = row.keys[k];
    if (!s) { problems.push({ path: p, message: path ? `unknown key ${k} in ${path}` : `unknown key ${k}` }); continue; }
    if (!typeOk(s, v)) { problems.push({ path: p, message: `${p} must be ${article(s.type)}` }); continue; }
    const c = s.check?.(v);
    if (c) problems.push({ path: p, message: `${p}: ${c}` });
  }
}

/** Every problem in a store document: keys and types (TABLES), then what records say about each other. */
export function validateDoc(doc: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  checkTable(doc, TABLES[0]!, "", problems);
  if (problems.length) return problems;
  const d = doc as StoreDoc;
  const dup = (names: (string | undefined)[], what: string, base: string) => {
    const seen = new Set<string>();
    names.forEach((n, i) => {
      if (n && seen.has(n)) problems.push({ path: `${base}[${i}].name`, message: `duplicate ${what} name ${n}` });
      if (n) seen.add(n);
    });
  };
  dup((d.networks ?? []).map((n) => n.name), "network", "networks");
  dup((d.vms ?? []).map((n) => n.name), "VM", "vms");
  const bridges = new Map<string, string>();
  (d.networks ?? []).forEach((n, i) => {
    const b = n.bridge ?? defaultBridge(n.name);
    if (bridges.has(b)) problems.push({ path: `networks[${i}].bridge`, message: `networks[${i}]: bridge ${b} is also used by network ${bridges.get(b)}` });
    bridges.set(b, n.name);
  });
  problems.push(...networkProblems(d));
  const recorded = new Set((d.networks ?? []).map((n) => n.name));
  const defName = d.defaults?.network?.name ?? BUILTIN.network.name;
  (d.vms ?? []).forEach((v, i) => {
    if (!recorded.has(v.network) && v.network !== defName) {
      problems.push({ path: `vms[${i}].network`, message: `vms[${i}].network: network ${v.network} is neither a [[networks]] record nor the [defaults.network] name (${defName})` });
    }
  });
  const seen = new Set<string>();
  return problems.filter((p) => (seen.has(p.path + p.message) ? false : (seen.add(p.path + p.message), true)));
}

type AddrKey = "subnet" | "gateway" | "dhcp_start" | "dhcp_end";

export interface NetworkFacts {
  subnet: string;
  cidr: Cidr | undefined;
  gateway: string;
  dhcpStart: string;
  dhcpEnd: string;
  /** where each value is written (a key path), or the record that derives it */
  where: Record<AddrKey, string>;
}

/**
 * The addresses network `name` resolves to: its [[networks]] record, or [defaults.network] when it has none; a
 * missing subnet comes from [defaults.network], then the built-in; gateway and DHCP range are derived from the subnet.
 */
export function networkFacts(doc: StoreDoc, name: string): NetworkFacts {
  const defs = doc.defaults?.network ?? {};
  const i = (doc.networks ?? []).findIndex((n) => n.name === name);
  const rec = i < 0 ? undefined : doc.networks![i]!;
  const n: NetworkDoc = rec ?? defs;
  const base = rec ? `networks[${i}]` : "defaults.network";
  const subnet = n.subnet ?? defs.subnet ?? BUILTIN.network.subnet;
  const at = (k: AddrKey, own: boolean) => (own ? `${base}.${k}` : base);
  const where = {
    subnet: n.subnet !== undefined ? `${base}.subnet` : defs.subnet !== undefined ? "defaults.network.subnet" : base,
    gateway: at("gateway", n.gateway !== undefined),
    dhcp_start: at("dhcp_start", n.dhcp_start !== undefined),
    dhcp_end: at("dhcp_end", n.dhcp_end !== undefined),
  };
  const c = parseCidr(subnet);
  if (!c) return { subnet, cidr: undefined, gateway: n.gateway ?? "", dhcpStart: n.dhcp_start ?? "", dhcpEnd: n.dhcp_end ?? "", where };
  const last = c.network + c.size - 2;
  return {
    subnet,
    cidr: c,
    gateway: n.gateway ?? intToIpv4(c.network + 1),
    dhcpStart: n.dhcp_start ?? intToIpv4(c.size >= 256 ? c.network + 100 : c.network + 2),
    dhcpEnd: n.dhcp_end ?? intToIpv4(c.size >= 256 ? Math.min(c.network + 200, last) : last),
    where,
  };
}

/** Subnet size, gateway and DHCP range of each network, and subnets that overlap. */
function networkProblems(d: StoreDoc): Problem[] {
  const problems: Problem[] = [];
  const names = [...new Set((d.networks ?? []).map((n) => n.name))];
  const defName = d.defaults?.network?.name ?? BUILTIN.network.name;
  if (d.defaults?.network && !names.includes(defName)) names.push(defName);
  const checked: { name: string; c: Cidr; where: string }[] = [];
  for (const name of names) {
    const f = networkFacts(d, name);
    const add = (k: AddrKey, m: string) => problems.push({ path: f.where[k], message: `${f.where[k]}: ${m}` });
    const c = f.cidr;
    if (!c) continue;
    if (c.prefix < 8 || c.prefix > 29) { add("subnet", `network ${name}: subnet ${f.subnet} must be from /8 to /29`); continue; }
    let ok = true;
    for (const [k, ip] of [["gateway", f.gateway], ["dhcp_start", f.dhcpStart], ["dhcp_end", f.dhcpEnd]] as const) {
      const v = ipv4ToInt(ip);
      if (v === undefined) { ok = false; continue; }
      if (!cidrContains(c, v) || v === c.network || v === c.network + c.size - 1) { ok = false; add(k, `network ${name}: ${k} ${ip} is not a host address in ${f.subnet}`); }
    }
    if (ok) {
      const [g, s, e] = [f.gateway, f.dhcpStart, f.dhcpEnd].map((x) => ipv4ToInt(x)!) as [number, number, number];
      if (s > e) add("dhcp_start", `network ${name}: dhcp_start ${f.dhcpStart} is after dhcp_end ${f.dhcpEnd}`);
      else if (g >= s && g <= e) add("gateway", `network ${name}: gateway ${f.gateway} lies inside the DHCP range ${f.dhcpStart}-${f.dhcpEnd}`);
    }
    const other = checked.find((o) => cidrsOverlap(o.c, c));
    const shown = f.where.subnet.endsWith(".subnet") ? f.subnet : `${f.subnet} (not set: the built-in default)`;
    if (other) add("subnet", `network ${name}: subnet ${shown} overlaps network ${other.name} (${other.where})`);
    checked.push({ name, c, where: f.subnet });
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
