// The config store: load, validate (file:line:col), defaults, resolve, atomic locked save.
// The TOML library stays behind this file.
import TOML from "@iarna/toml";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { hostname } from "node:os";
import { AivmError, ConfigError, EXIT, UsageError } from "./errors.ts";
import { writeFileAtomicSync, expandHome } from "./fsutil.ts";
import { withLock } from "./lock.ts";
import {
  absPathProblem, bridgeProblem, cidrProblem, intToIpv4, ipv4Problem, ipv4ToInt, nameProblem, parseCidr,
  pathProblem, portProblem, sha256Problem, urlProblem, userProblem, cidrContains,
} from "./validate.ts";

// ---------- schema ----------

type Check = (v: unknown) => string | undefined;
interface KeySpec {
  type: "string" | "int" | "bool" | "string[]" | "int[]";
  doc: string;
  check?: Check;
}
type Section = Record<string, KeySpec>;

const int = (min: number, max: number): Check => (v) =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? undefined : `must be an integer from ${min} to ${max}`;
const oneOf = (...opts: string[]): Check => (v) => (opts.includes(v as string) ? undefined : `must be one of ${opts.join(", ")}`);
const each = (c: Check): Check => (v) => {
  for (const x of v as unknown[]) {
    const p = c(x);
    if (p) return p;
  }
  return undefined;
};

export const VM_KEYS: Section = {
  name: { type: "string", doc: "VM name: libvirt domain, guest hostname and SSH alias", check: nameProblem },
  user: { type: "string", doc: "guest login user", check: userProblem },
  cpus: { type: "int", doc: "virtual CPUs", check: int(1, 256) },
  memory_mib: { type: "int", doc: "memory in MiB", check: int(256, 1 << 22) },
  disk_gib: { type: "int", doc: "disk size in GiB (the overlay grows to this)", check: int(1, 65536) },
  accel: { type: "string", doc: "auto | kvm | tcg (auto: KVM only when usable and the CPU has vmx/svm)", check: oneOf("auto", "kvm", "tcg") },
  shutdown_timeout_s: { type: "int", doc: "seconds `vm down` waits for an ACPI shutdown before forcing off", check: int(1, 3600) },
  wait_timeout_s: { type: "int", doc: "seconds `vm wait` waits for IP, SSH and cloud-init", check: int(10, 86400) },
  imported: { type: "bool", doc: "recorded by `aivm config discover`: aivm did not create its disk, seed or host key (never removed by aivm)" },
};

export const NETWORK_KEYS: Section = {
  name: { type: "string", doc: "libvirt network name", check: nameProblem },
  bridge: { type: "string", doc: "bridge device (default: aivm-<hash of name>, at most 15 characters)", check: bridgeProblem },
  subnet: { type: "string", doc: "IPv4 subnet in CIDR form", check: cidrProblem },
  gateway: { type: "string", doc: "host address on the bridge (default: first address)", check: ipv4Problem },
  dhcp_start: { type: "string", doc: "first DHCP address", check: ipv4Problem },
  dhcp_end: { type: "string", doc: "last DHCP address", check: ipv4Problem },
};

export const FIREWALL_KEYS: Section = {
  enabled: { type: "bool", doc: "apply the nftables isolation table" },
  allow_tcp_ports: { type: "int[]", doc: "host TCP ports the guests may reach", check: each(portProblem) },
  allow_udp_ports: { type: "int[]", doc: "host UDP ports the guests may reach", check: each(portProblem) },
  block_cidrs: { type: "string[]", doc: "destinations guests may not reach (replies excepted)", check: each(cidrProblem) },
  extra_block_cidrs: { type: "string[]", doc: "appended to block_cidrs", check: each(cidrProblem) },
};

export const IMAGE_KEYS: Section = {
  url: { type: "string", doc: "https:// or file:// URL of the base image", check: urlProblem },
  sha256: { type: "string", doc: "pinned sha256 of the base image (the cache key)", check: sha256Problem },
};

export const PATHS_KEYS: Section = {
  vm_root: { type: "string", doc: "directory holding one directory per VM", check: pathProblem },
  image_cache: { type: "string", doc: "content-addressed image cache", check: pathProblem },
  ssh_identity: { type: "string", doc: "private key used to log in (public key: same path + .pub)", check: pathProblem },
  libvirt_uri: { type: "string", doc: "libvirt connection URI", check: (v) => (typeof v === "string" && /^[a-z+]+:\/\/[^\s]*$/.test(v) ? undefined : "must be a libvirt URI such as qemu:///system") },
};

export const ATTACHMENT_KEYS: Section = {
  host_path: { type: "string", doc: "absolute host folder (resolved)", check: absPathProblem },
  mode: { type: "string", doc: "shared-root | shared | git", check: oneOf("shared-root", "shared", "git") },
  access: { type: "string", doc: "rw | ro", check: oneOf("rw", "ro") },
  guest_dst: { type: "string", doc: "absolute guest path (default: same as host_path)", check: absPathProblem },
};

// ---------- document types ----------

export type Accel = "auto" | "kvm" | "tcg";
export type Mode = "shared-root" | "shared" | "git";
export type Access = "rw" | "ro";

export interface FirewallDoc { enabled?: boolean; allow_tcp_ports?: number[]; allow_udp_ports?: number[]; block_cidrs?: string[]; extra_block_cidrs?: string[] }
export interface NetworkDoc { name?: string; bridge?: string; subnet?: string; gateway?: string; dhcp_start?: string; dhcp_end?: string }
export interface ImageDoc { url?: string; sha256?: string }
export interface PathsDoc { vm_root?: string; image_cache?: string; ssh_identity?: string; libvirt_uri?: string }
export interface VmDoc { name?: string; user?: string; cpus?: number; memory_mib?: number; disk_gib?: number; accel?: Accel; shutdown_timeout_s?: number; wait_timeout_s?: number; imported?: boolean }
export interface AttachmentDoc { host_path: string; mode: Mode; access: Access; guest_dst: string }

export interface StoreDoc {
  defaults?: { vm?: VmDoc; network?: NetworkDoc; firewall?: FirewallDoc; image?: ImageDoc; paths?: PathsDoc };
  networks?: (NetworkDoc & { name: string; firewall?: FirewallDoc })[];
  vms?: (VmDoc & { name: string; network: string; image?: ImageDoc; attachments?: AttachmentDoc[] })[];
}

// ---------- resolved types (what planners consume) ----------

export interface Firewall { enabled: boolean; allowTcp: number[]; allowUdp: number[]; blockCidrs: string[] }
export interface Network { name: string; bridge: string; subnet: string; prefix: number; netmask: string; gateway: string; dhcpStart: string; dhcpEnd: string; firewall: Firewall }
export interface Image { url: string; sha256: string }
export interface Paths { vmRoot: string; imageCache: string; sshIdentity: string; sshPubkey: string; libvirtUri: string }
export interface Vm {
  name: string; user: string; cpus: number; memoryMib: number; diskGib: number; accel: Accel;
  shutdownTimeoutS: number; waitTimeoutS: number; image: Image; network: Network; paths: Paths;
  attachments: AttachmentDoc[];
  /** the VM's own directory: overlay, seed, host keys, known_hosts, console log */
  dir: string;
  /** the VM is recorded in [[vms]] (false: synthesized from [defaults]) */
  recorded: boolean;
  /** recorded by `aivm config discover`: a domain aivm did not create (set only when true) */
  imported?: boolean;
}

export const UBUNTU_2404 = {
  url: "https://cloud-images.ubuntu.com/releases/noble/release-20260225/ubuntu-24.04-server-cloudimg-amd64.img",
  sha256: "7aa6d9f5e8a3a55c7445b138d31a73d1187871211b2b7da9da2e1a6cbf169b21",
};

export const DEFAULT_BLOCK_CIDRS = [
  "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
  "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
];

export function defaultVmName(host = hostname()): string {
  const h = host.split(".")[0]!.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "");
  return `aivm-${h || "host"}`.slice(0, 63).replace(/-+$/, "");
}

export const BUILTIN = {
  vm: { user: "agent", cpus: 2, memory_mib: 2048, disk_gib: 20, accel: "auto" as Accel, shutdown_timeout_s: 60, wait_timeout_s: 900 },
  network: { name: "aivm-net", subnet: "10.77.0.0/24" },
  firewall: { enabled: true, allow_tcp_ports: [] as number[], allow_udp_ports: [] as number[], block_cidrs: DEFAULT_BLOCK_CIDRS, extra_block_cidrs: [] as string[] },
  image: UBUNTU_2404,
};

function xdg(kind: "CONFIG" | "CACHE" | "DATA"): string {
  const v = process.env[`XDG_${kind}_HOME`];
  if (v && v.startsWith("/")) return v;
  const home = process.env.HOME ?? "/root";
  return join(home, kind === "CONFIG" ? ".config" : kind === "CACHE" ? ".cache" : ".local/share");
}

export function builtinPaths(): Required<PathsDoc> {
  return {
    vm_root: join(xdg("DATA"), "aivm", "vms"),
    image_cache: join(xdg("CACHE"), "aivm", "images"),
    ssh_identity: "~/.ssh/id_aivm_ed25519",
    libvirt_uri: "qemu:///system",
  };
}

/** --config > AIVM_CONFIG > $XDG_CONFIG_HOME/aivm/config.toml */
export function configPath(flag?: string): string {
  const p = flag || process.env.AIVM_CONFIG;
  if (p) return p;
  return join(xdg("CONFIG"), "aivm", "config.toml");
}

export function isDefaultConfigPath(p: string): boolean {
  return p === join(xdg("CONFIG"), "aivm", "config.toml");
}

// ---------- positions: where each key sits in the text ----------

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

// ---------- validation ----------

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

// ---------- load ----------

export interface Store {
  path: string;
  doc: StoreDoc;
  /** sha256 of the file as read, or null when it did not exist */
  hash: string | null;
  text: string | null;
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Parse and validate; problems carry file:line:col. Throws ConfigError (exit 78) listing all. */
export function parseStore(text: string, path: string): StoreDoc {
  let raw: Record<string, unknown>;
  try {
    raw = TOML.parse(text) as Record<string, unknown>;
  } catch (e) {
    const err = e as { line?: number; col?: number; message?: string };
    const msg = (err.message ?? "parse error").split("\n")[0]!.replace(/ at row \d+, col \d+, pos \d+:?$/, "");
    const where = err.line !== undefined ? `${path}:${err.line + 1}:${(err.col ?? 0) + 1}` : path;
    throw new ConfigError(`${where}: ${msg}`, "fix the file, then run `aivm config lint`");
  }
  const problems = validateDoc(raw);
  if (problems.length) {
    const positions = keyPositions(text);
    const lines = problems.map((p) => `${locate(path, p.path, positions)}: ${p.message}`);
    throw new ConfigError(lines[0]!, problems.length > 1 ? `${problems.length - 1} more problem(s): run \`aivm config lint\`` : "run `aivm config lint`", lines);
  }
  return plain(raw) as StoreDoc;
}

function locate(file: string, keyPath: string, positions: Map<string, [number, number]>): string {
  let p = keyPath;
  for (;;) {
    const hit = positions.get(p);
    if (hit) return `${file}:${hit[0]}:${hit[1]}`;
    const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
    if (cut <= 0) return `${file}:1:1`;
    p = p.slice(0, cut);
  }
}

/** Drop @iarna/toml's symbol keys and prototypes. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v));
}

export function loadStore(path: string): Store {
  if (!existsSync(path)) return { path, doc: {}, hash: null, text: null };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return { path, doc: parseStore(text, path), hash: sha(text), text };
}

/** Every problem in a file, one line each ([] when clean). */
export function lintFile(path: string): string[] {
  if (!existsSync(path)) return [`${path}: no such file (run \`aivm config init\`)`];
  const text = readFileSync(path, "utf8");
  try {
    parseStore(text, path);
    return [];
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
}

// ---------- save ----------

export function lockPath(path: string): string {
  return join(dirname(path), ".aivm-config.lock");
}

function currentHash(path: string): string | null {
  return existsSync(path) ? sha(readFileSync(path, "utf8")) : null;
}

export interface SaveOptions {
  dryRun?: boolean;
  print?: (text: string) => void;
  /** write this text (already parsed to `doc`, e.g. from `config edit`) instead of rendering `doc` */
  text?: string;
}

/** The text our emitter would write for a stored file (parsed afresh: callers may have mutated store.doc). */
function canonical(text: string, path: string): string | null {
  try {
    return renderToml(parseStore(text, path));
  } catch {
    return null;
  }
}

/** Temp files of a save killed half-way (kill -9). Only called under the store lock, so none is in use. */
function removeStaleTemps(path: string): void {
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try { names = readdirSync(dirname(path)); } catch { return; }
  for (const n of names) {
    if (n.startsWith(prefix) && n.endsWith(".tmp")) try { unlinkSync(join(dirname(path), n)); } catch {}
  }
}

/**
 * Write a new document for a store that was loaded earlier. Refuses (exit 1, nothing written) when the file
 * changed on disk since it was read. Writes nothing when the rendered text is unchanged. Returns whether it wrote.
 */
export function saveStore(store: Store, doc: StoreDoc, opts: SaveOptions = {}): boolean {
  const problems = validateDoc(doc as Record<string, unknown>);
  if (problems.length) throw new AivmError("config", `refusing to save an invalid config: ${problems[0]!.message}`, EXIT.FAILED);
  const text = opts.text ?? renderToml(doc);
  if (text === store.text) return false;
  // unchanged content in another layout (hand-written, comments): nothing to write either
  if (opts.text === undefined && store.text !== null && text === canonical(store.text, store.path)) return false;
  if (opts.dryRun) {
    (opts.print ?? ((t: string) => process.stdout.write(t + "\n")))(`cat > ${store.path} <<'AIVM_EOF'\n${text}AIVM_EOF`);
    return false;
  }
  return withLock(lockPath(store.path), () => {
    if (currentHash(store.path) !== store.hash) {
      throw new AivmError("config", `${store.path} changed on disk since it was read; nothing was written`, EXIT.FAILED, "re-run the command");
    }
    removeStaleTemps(store.path);
    writeFileAtomicSync(store.path, text, 0o600);
    store.text = text;
    store.hash = sha(text);
    store.doc = doc;
    return true;
  });
}

/** Lock, load, change, save: the pattern for concurrent writers updating distinct records. */
export function updateStore(path: string, change: (doc: StoreDoc) => StoreDoc | void, opts: SaveOptions = {}): { store: Store; wrote: boolean } {
  if (opts.dryRun) {
    const store = loadStore(path);
    const doc = structuredClone(store.doc);
    const wrote = saveStore(store, change(doc) ?? doc, opts);
    return { store, wrote };
  }
  return withLock(lockPath(path), () => {
    const store = loadStore(path);
    const doc = structuredClone(store.doc);
    const next = change(doc) ?? doc;
    const problems = validateDoc(next as Record<string, unknown>);
    if (problems.length) throw new AivmError("config", `refusing to save an invalid config: ${problems[0]!.message}`, EXIT.FAILED);
    const text = renderToml(next);
    if (text === store.text || (store.text !== null && text === renderToml(store.doc))) return { store, wrote: false };
    removeStaleTemps(path);
    writeFileAtomicSync(path, text, 0o600);
    Object.assign(store, { text, hash: sha(text), doc: next });
    return { store, wrote: true };
  }, { reentrant: true });
}

// ---------- render TOML (our own emitter: plain integers, stable order) ----------

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

// ---------- resolve ----------

export function defaultBridge(network: string): string {
  return `aivm-${createHash("sha256").update(network).digest("hex").slice(0, 8)}`;
}

export function resolveNetwork(doc: StoreDoc, name?: string): Network {
  const defs = doc.defaults?.network ?? {};
  const wanted = name ?? defs.name ?? BUILTIN.network.name;
  const rec = (doc.networks ?? []).find((n) => n.name === wanted);
  if (!rec && name && name !== (defs.name ?? BUILTIN.network.name)) {
    throw new UsageError("unknown network", `${name} is not in the config store`, "see `aivm net list`");
  }
  const n: NetworkDoc = { ...(rec ? {} : defs), ...(rec ?? {}), name: wanted };
  const fw = { ...BUILTIN.firewall, ...(doc.defaults?.firewall ?? {}), ...(rec?.firewall ?? {}) };
  const subnet = n.subnet ?? defs.subnet ?? BUILTIN.network.subnet;
  const c = parseCidr(subnet);
  if (!c) throw new ConfigError(`network ${wanted}: subnet ${subnet} is not a CIDR`);
  if (c.prefix < 8 || c.prefix > 29) throw new ConfigError(`network ${wanted}: subnet ${subnet} must be between /8 and /29`);
  const last = c.network + c.size - 2;
  const gateway = n.gateway ?? intToIpv4(c.network + 1);
  const dhcpStart = n.dhcp_start ?? intToIpv4(c.size >= 256 ? c.network + 100 : c.network + 2);
  const dhcpEnd = n.dhcp_end ?? intToIpv4(c.size >= 256 ? Math.min(c.network + 200, last) : last);
  for (const [k, ip] of [["gateway", gateway], ["dhcp_start", dhcpStart], ["dhcp_end", dhcpEnd]] as const) {
    const v = ipv4ToInt(ip);
    if (v === undefined || !cidrContains(c, v) || v === c.network || v === c.network + c.size - 1) {
      throw new ConfigError(`network ${wanted}: ${k} ${ip} is not a host address in ${subnet}`);
    }
  }
  if (ipv4ToInt(dhcpStart)! > ipv4ToInt(dhcpEnd)!) throw new ConfigError(`network ${wanted}: dhcp_start ${dhcpStart} is after dhcp_end ${dhcpEnd}`);
  const g = ipv4ToInt(gateway)!;
  if (g >= ipv4ToInt(dhcpStart)! && g <= ipv4ToInt(dhcpEnd)!) throw new ConfigError(`network ${wanted}: gateway ${gateway} lies inside the DHCP range`);
  const mask = (0xffffffff << (32 - c.prefix)) >>> 0;
  return {
    name: wanted,
    bridge: n.bridge ?? defaultBridge(wanted),
    subnet,
    prefix: c.prefix,
    netmask: intToIpv4(mask),
    gateway,
    dhcpStart,
    dhcpEnd,
    firewall: {
      enabled: fw.enabled,
      allowTcp: [...new Set(fw.allow_tcp_ports)].sort((a, b) => a - b),
      allowUdp: [...new Set(fw.allow_udp_ports)].sort((a, b) => a - b),
      blockCidrs: [...new Set([...fw.block_cidrs, ...fw.extra_block_cidrs])],
    },
  };
}

export function resolvePaths(doc: StoreDoc): Paths {
  const p = { ...builtinPaths(), ...(doc.defaults?.paths ?? {}) };
  const identity = expandHome(p.ssh_identity);
  return {
    vmRoot: expandHome(p.vm_root),
    imageCache: expandHome(p.image_cache),
    sshIdentity: identity,
    sshPubkey: identity + ".pub",
    libvirtUri: p.libvirt_uri,
  };
}

/** The names of the VMs: recorded ones, or the one [defaults] would create. */
export function vmNames(doc: StoreDoc): string[] {
  const rec = (doc.vms ?? []).map((v) => v.name);
  return rec.length ? rec : [doc.defaults?.vm?.name ?? defaultVmName()];
}

/**
 * Resolve one VM: --vm NAME, else the only recorded VM, else the VM [defaults] would create.
 * A name that is neither recorded nor the defaults' name is an error (exit 2).
 */
export function resolveVm(doc: StoreDoc, name?: string): Vm {
  const vms = doc.vms ?? [];
  let rec = name ? vms.find((v) => v.name === name) : vms.length === 1 ? vms[0] : undefined;
  const defName = doc.defaults?.vm?.name ?? defaultVmName();
  if (!rec && !name && vms.length > 1) {
    throw new UsageError("which VM?", `the config store has ${vms.length} VMs (${vms.map((v) => v.name).join(", ")})`, "pass --vm NAME");
  }
  if (!rec && name && name !== defName && vms.length > 0) {
    throw new UsageError("unknown VM", `${name} is not in the config store`, "see `aivm list`");
  }
  if (!rec && name && name !== defName) {
    // no VMs recorded: any valid name creates a VM from [defaults]
  }
  const d = { ...BUILTIN.vm, ...(doc.defaults?.vm ?? {}) };
  const r: Partial<VmDoc & { network: string; image: ImageDoc; attachments: AttachmentDoc[] }> = rec ?? {};
  const vmName = rec?.name ?? name ?? defName;
  const paths = resolvePaths(doc);
  const image = { ...BUILTIN.image, ...(doc.defaults?.image ?? {}), ...(r.image ?? {}) };
  return {
    name: vmName,
    user: r.user ?? d.user,
    cpus: r.cpus ?? d.cpus,
    memoryMib: r.memory_mib ?? d.memory_mib,
    diskGib: r.disk_gib ?? d.disk_gib,
    accel: r.accel ?? d.accel,
    shutdownTimeoutS: r.shutdown_timeout_s ?? d.shutdown_timeout_s,
    waitTimeoutS: r.wait_timeout_s ?? d.wait_timeout_s,
    image,
    network: resolveNetwork(doc, r.network ?? doc.defaults?.network?.name),
    paths,
    attachments: r.attachments ?? [],
    dir: join(paths.vmRoot, vmName),
    recorded: !!rec,
    ...(rec?.imported ? { imported: true } : {}),
  };
}

/** Record a VM (and its network) in the store document if it is not there yet. Returns the new doc. */
export function recordVm(doc: StoreDoc, vm: Vm): StoreDoc {
  const next = structuredClone(doc);
  next.networks ??= [];
  if (!next.networks.some((n) => n.name === vm.network.name)) {
    const defs = doc.defaults?.network ?? {};
    next.networks.push({ ...defs, name: vm.network.name, bridge: vm.network.bridge, subnet: vm.network.subnet });
  }
  next.vms ??= [];
  if (!next.vms.some((v) => v.name === vm.name)) next.vms.push({ name: vm.name, network: vm.network.name });
  return next;
}

export function networkNames(doc: StoreDoc): string[] {
  const rec = (doc.networks ?? []).map((n) => n.name);
  return rec.length ? rec : [doc.defaults?.network?.name ?? BUILTIN.network.name];
}
