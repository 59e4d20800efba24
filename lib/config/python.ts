// A Python aivm config store (schema 7), read without changing it, and mapped onto ours. The store may be one file or
// split (config.toml + defaults.toml + networks.toml + vms/*.toml, read in that order as one document). Each key
// either maps onto one of ours (KEY_MAP rows), or has no equivalent and is listed (never silently dropped).
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { type AttachmentRecord, defaultBridge, type FirewallDoc, type NetworkDoc, type StoreDoc, UBUNTU_2404, type VmDoc } from "./model.ts";
import { ConfigError } from "../errors.ts";
import { parseToml, plain } from "./toml.ts";
import { readConfigText } from "./store.ts";
import { keyPositions, locate } from "./validate.ts";

export const PYTHON_BRIDGE = "virbr-aivm";

/** Python section -> its keys that map onto ours (python key -> our key). Every other key is listed as unmapped. */
export const KEY_MAP: Record<string, Record<string, string>> = {
  vm: { name: "name", user: "user", cpus: "cpus", ram_mb: "memory_mib", disk_gb: "disk_gib" },
  network: { name: "name", bridge: "bridge", subnet_cidr: "subnet", gateway_ip: "gateway", dhcp_start: "dhcp_start", dhcp_end: "dhcp_end" },
  firewall: { enabled: "enabled", allow_tcp_ports: "allow_tcp_ports", allow_udp_ports: "allow_udp_ports", block_cidrs: "block_cidrs", extra_block_cidrs: "extra_block_cidrs" },
  /** into a separate object until aivm has [defaults.provision] / [vms.provision] */
  provision: { enabled: "enabled", install_docker: "docker", packages: "packages" },
};

/** Why a key has no equivalent (shown with it). Keys not named here get "no equivalent in aivm". */
const NO_EQUIVALENT: Record<string, string> = {
  password: "aivm logs in with the SSH key only (value not shown)",
  allow_password_login: "aivm logs in with the SSH key only",
  timezone: "the guest keeps the image's time zone",
  match_host_user_ids: "aivm's shares do not depend on matching ids",
  mirror_shared_home_folders: "no guest home symlinks in aivm",
  table: "aivm names its nftables table per network itself",
  cache_name: "aivm's image cache is content-addressed",
  redownload: "aivm's image cache is content-addressed",
  base_dir: "aivm keeps VMs under its own vm_root; the Python VMs' files stay where they are and are never removed",
  state_dir: "aivm keeps its own state",
  ssh_pubkey_path: "aivm uses the identity path + .pub",
  fd_guard: "no virtiofs fd guard in aivm",
  fd_guard_threshold: "no virtiofs fd guard in aivm",
  fd_guard_emergency_threshold: "no virtiofs fd guard in aivm",
  fd_guard_interval_sec: "no virtiofs fd guard in aivm",
  inode_file_handles: "ignored by Python aivm too",
  verbosity: "use -v / -q",
  tag: "aivm derives the virtiofs tag from the path",
  host_lexical_paths: "aivm records the resolved path only",
};

export interface PythonStore {
  /** the files read, in order */
  files: string[];
  raw: Record<string, unknown>;
  /** "vms[0].vm.ram_mb" -> "file:line:col" */
  where: (path: string) => string;
}

/** The store at `path` (its fragments too), parsed; exit 78 with file:line:col when a file is not TOML. */
export function readPythonStore(path: string): PythonStore {
  const root = readConfigText(path);
  if (root === null) throw new ConfigError(`${path}: no such file`, "pass the Python aivm store's path: aivm config import-python PATH");
  const dir = dirname(path);
  const files = [path];
  const texts = [root];
  const add = (f: string) => {
    const t = readConfigText(f);
    if (t !== null) { files.push(f); texts.push(t); }
  };
  add(join(dir, "defaults.toml"));
  add(join(dir, "networks.toml"));
  let vms: string[] = [];
  try { vms = readdirSync(join(dir, "vms")).filter((n) => n.endsWith(".toml")).sort(); } catch {}
  for (const n of vms) add(join(dir, "vms", n));
  const text = texts.map((t) => (t.endsWith("\n") ? t : t + "\n")).join("");
  const starts: number[] = [];
  let line = 0;
  for (const t of texts) { starts.push(line); line += (t.endsWith("\n") ? t : t + "\n").split("\n").length - 1; }
  /** a 1-based line of the joined text -> file:line */
  const at = (l: number, col: number) => {
    let i = starts.length - 1;
    while (i > 0 && starts[i]! >= l) i--;
    return `${files[i]}:${l - starts[i]!}:${col}`;
  };
  let raw: Record<string, unknown>;
  try {
    raw = plain(parseToml(text)) as Record<string, unknown>;
  } catch (e) {
    const err = e as { line?: number; col?: number; message?: string };
    const where = err.line !== undefined ? at(err.line + 1, (err.col ?? 0) + 1) : files.join(", ");
    throw new ConfigError(`${where}: ${err.message ?? "parse error"}`, "this is the Python aivm store: fix it with the Python aivm, or by hand");
  }
  const positions = keyPositions(text);
  const where = (p: string) => {
    const m = /^-:(\d+):(\d+)$/.exec(locate("-", p, positions));
    return m ? at(Number(m[1]), Number(m[2])) : path;
  };
  return { files, raw, where };
}

export interface Unmapped { path: string; value: string; why: string }

export interface Mapped {
  doc: StoreDoc;
  /** Python provision keys, mapped, for [defaults.provision] / [vms.provision] (not in aivm's model yet) */
  provision: { defaults?: Record<string, unknown>; vms: Record<string, Record<string, unknown>> };
  unmapped: Unmapped[];
  /** what changed on the way: bridges, modes, image pins */
  changes: string[];
  /** our key path -> the Python key path it came from (for positions) */
  origin: Map<string, string>;
  /** problems that make the store unimportable (python path, message) */
  problems: { path: string; message: string }[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const LEGACY_DAILY = /^https:\/\/cloud-images\.ubuntu\.com\/noble\/20260225\/noble-server-cloudimg-amd64\.img$/;

/** Map a parsed Python store onto ours. Pure: nothing read or written. */
export function mapPython(raw: Obj): Mapped {
  const m: Mapped = { doc: {}, provision: { vms: {} }, unmapped: [], changes: [], origin: new Map(), problems: [] };
  const unmapped = (path: string, v: unknown, key: string) => {
    if (v === "" || v === undefined || (Array.isArray(v) && !v.length)) return;
    m.unmapped.push({ path, value: key === "password" ? "(set)" : JSON.stringify(v), why: NO_EQUIVALENT[key] ?? "no equivalent in aivm" });
  };
  const section = (src: unknown, kind: string, pyPath: string, ourPath: string, skip: string[] = []): Obj => {
    const out: Obj = {};
    if (src === undefined) return out;
    if (!isObj(src)) { m.problems.push({ path: pyPath, message: `${pyPath} must be a table` }); return out; }
    for (const [k, v] of Object.entries(src)) {
      if (skip.includes(k)) continue;
      const ours = KEY_MAP[kind]?.[k];
      if (!ours || v === "") { if (!ours) unmapped(`${pyPath}.${k}`, v, k); continue; }
      out[ours] = v;
      m.origin.set(`${ourPath}.${ours}`, `${pyPath}.${k}`);
    }
    return out;
  };
  const bridge = (n: Obj, name: string, path: string) => {
    if (n.bridge === PYTHON_BRIDGE) {
      delete n.bridge;
      m.changes.push(`network ${name}: bridge ${PYTHON_BRIDGE} -> ${defaultBridge(name)} (aivm derives one bridge per network; ${path})`);
    }
  };
  const image = (src: unknown, pyPath: string, ourPath: string, vm?: string): Obj | undefined => {
    if (!isObj(src)) return undefined;
    for (const [k, v] of Object.entries(src)) if (k !== "ubuntu_img_url") unmapped(`${pyPath}.${k}`, v, k);
    const url = src.ubuntu_img_url;
    if (url === undefined || url === "") return undefined;
    m.origin.set(`${ourPath}.url`, `${pyPath}.ubuntu_img_url`);
    if (typeof url === "string" && (url === UBUNTU_2404.url || LEGACY_DAILY.test(url))) {
      if (url !== UBUNTU_2404.url) m.changes.push(`${vm ? `VM ${vm}` : "defaults"}: legacy image URL -> ${UBUNTU_2404.url} (as Python aivm rewrites it)`);
      return { ...UBUNTU_2404 };
    }
    if (typeof url === "string" && url.startsWith("file://")) {
      m.changes.push(`${vm ? `VM ${vm}` : "defaults"}: ${url} pinned to sha256 ${UBUNTU_2404.sha256.slice(0, 12)}… (Python aivm accepted a file:// image only with a pinned digest)`);
      return { url, sha256: UBUNTU_2404.sha256 };
    }
    m.unmapped.push({ path: `${pyPath}.ubuntu_img_url`, value: JSON.stringify(url), why: "no pinned sha256 for it (Python aivm refused it too): aivm's default image is used" });
    return undefined;
  };
  let identity: string | undefined;
  const paths = (src: unknown, pyPath: string, vm?: string) => {
    if (!isObj(src)) return;
    for (const [k, v] of Object.entries(src)) {
      if (k !== "ssh_identity_file" || v === "") { unmapped(`${pyPath}.${k}`, v, k); continue; }
      if (identity === undefined) { identity = v as string; m.origin.set("defaults.paths.ssh_identity", `${pyPath}.${k}`); }
      else if (v !== identity) unmapped(`${pyPath}.${k}`, v, vm ? "per-VM identity" : k);
    }
  };
  const provision = (src: unknown, pyPath: string): Obj | undefined => {
    const p = section(src, "provision", pyPath, pyPath);
    return Object.keys(p).length ? p : undefined;
  };

  for (const [k, v] of Object.entries(raw)) {
    if (!["schema_version", "defaults", "networks", "vms", "attachments"].includes(k)) {
      if (isObj(v)) for (const [kk, vv] of Object.entries(v)) unmapped(`${k}.${kk}`, vv, kk);
      else unmapped(k, v, k);
    }
  }
  // [defaults.*]
  const d = raw.defaults;
  if (d !== undefined && !isObj(d)) m.problems.push({ path: "defaults", message: "defaults must be a table" });
  if (isObj(d)) {
    const defs: NonNullable<StoreDoc["defaults"]> = {};
    for (const [k, v] of Object.entries(d)) {
      if (k === "vm" || k === "network" || k === "firewall") {
        const s = section(v, k, `defaults.${k}`, `defaults.${k}`);
        if (k === "network") bridge(s, (s.name as string) ?? "aivm-net", "defaults.network.bridge");
        if (Object.keys(s).length) (defs as Obj)[k] = s;
      } else if (k === "image") { const i = image(v, "defaults.image", "defaults.image"); if (i) defs.image = i; }
      else if (k === "paths") paths(v, "defaults.paths");
      else if (k === "provision") m.provision.defaults = provision(v, "defaults.provision");
      else if (isObj(v)) for (const [kk, vv] of Object.entries(v)) unmapped(`defaults.${k}.${kk}`, vv, kk);
      else unmapped(`defaults.${k}`, v, k);
    }
    m.doc.defaults = defs;
  }
  // [[networks]]
  const nets = raw.networks ?? [];
  if (!Array.isArray(nets)) m.problems.push({ path: "networks", message: "networks must be an array of tables" });
  else nets.forEach((n, i) => {
    const p = `networks[${i}]`;
    if (!isObj(n)) return m.problems.push({ path: p, message: `${p} must be a table` });
    const ours = `networks[${(m.doc.networks ?? []).length}]`;
    const net = section(n.network, "network", `${p}.network`, ours) as NetworkDoc & Obj;
    const name = (n.name ?? net.name) as string;
    if (n.name !== undefined) m.origin.set(`${ours}.name`, `${p}.name`);
    if (n.name !== undefined && net.name !== undefined && n.name !== net.name) m.changes.push(`network ${name}: its [networks.network] name ${JSON.stringify(net.name)} is ignored (the record's name wins)`);
    bridge(net, name, `${p}.network.bridge`);
    const fw = section(n.firewall, "firewall", `${p}.firewall`, `${ours}.firewall`) as FirewallDoc;
    for (const [k, v] of Object.entries(n)) if (!["name", "network", "firewall"].includes(k)) unmapped(`${p}.${k}`, v, k);
    (m.doc.networks ??= []).push({ ...net, name, ...(Object.keys(fw).length ? { firewall: fw } : {}) });
  });
  // [[vms]] with nested [[vms.attachments]]
  const vms = raw.vms ?? [];
  const attachOf = new Map<string, AttachmentRecord[]>();
  const attachment = (a: unknown, p: string, ours: string): AttachmentRecord | undefined => {
    if (!isObj(a)) { m.problems.push({ path: p, message: `${p} must be a table` }); return undefined; }
    const r: Obj = {};
    for (const [k, v] of Object.entries(a)) {
      if (k === "host_path" || k === "access" || (k === "guest_dst" && v !== "")) { r[k] = v; m.origin.set(`${ours}.${k}`, `${p}.${k}`); }
      else if (k === "mode") {
        m.origin.set(`${ours}.mode`, `${p}.mode`);
        r.mode = v === "persistent" ? "shared-root" : v;
        if (v === "persistent") m.changes.push(`attachment ${String(a.host_path)}: mode persistent -> shared-root (aivm restores its binds on every start)`);
      } else if (k !== "vm_name" && k !== "guest_dst") unmapped(`${p}.${k}`, v, k);
    }
    if (r.mode === undefined) r.mode = "shared"; // the Python parser's default
    return r as unknown as AttachmentRecord;
  };
  if (!Array.isArray(vms)) m.problems.push({ path: "vms", message: "vms must be an array of tables" });
  else vms.forEach((v, i) => {
    const p = `vms[${i}]`;
    if (!isObj(v)) return m.problems.push({ path: p, message: `${p} must be a table` });
    const ours = `vms[${(m.doc.vms ?? []).length}]`;
    const vm = section(v.vm, "vm", `${p}.vm`, ours) as VmDoc & Obj;
    const name = (v.name ?? vm.name) as string;
    if (v.name !== undefined) m.origin.set(`${ours}.name`, `${p}.name`);
    m.origin.set(`${ours}.network`, `${p}.network_name`);
    const rec: Obj = { ...vm, name, network: v.network_name ?? (m.doc.defaults?.network?.name ?? "aivm-net") };
    const img = image(v.image, `${p}.image`, `${ours}.image`, name);
    if (img) rec.image = img;
    paths(v.paths, `${p}.paths`, name);
    const pv = provision(v.provision, `${p}.provision`);
    if (pv) m.provision.vms[name] = pv;
    for (const [k, x] of Object.entries(v)) {
      if (k === "virtiofs" && isObj(x)) for (const [kk, vv] of Object.entries(x)) unmapped(`${p}.virtiofs.${kk}`, vv, kk);
      else if (!["name", "network_name", "vm", "image", "paths", "provision", "attachments", "virtiofs"].includes(k)) unmapped(`${p}.${k}`, x, k);
    }
    const atts = v.attachments ?? [];
    if (!Array.isArray(atts)) m.problems.push({ path: `${p}.attachments`, message: `${p}.attachments must be an array of tables` });
    else atts.forEach((a, j) => {
      const r = attachment(a, `${p}.attachments[${j}]`, `${ours}.attachments[${j}]`);
      if (r) { const l = attachOf.get(name) ?? []; l.push(r); attachOf.set(name, l); }
    });
    (m.doc.vms ??= []).push(rec as never);
  });
  // legacy flat [[attachments]] (monolith): vm_name names the VM
  const flat = raw.attachments ?? [];
  if (Array.isArray(flat)) flat.forEach((a, k) => {
    const p = `attachments[${k}]`;
    const vmName = isObj(a) ? a.vm_name : undefined;
    const vi = (m.doc.vms ?? []).findIndex((x) => x.name === vmName);
    if (vi < 0) return m.unmapped.push({ path: p, value: JSON.stringify(isObj(a) ? a.host_path : a), why: `its VM ${JSON.stringify(vmName)} is not in the store` });
    const l = attachOf.get(vmName as string) ?? [];
    const r = attachment(a, p, `vms[${vi}].attachments[${l.length}]`);
    if (r) { l.push(r); attachOf.set(vmName as string, l); }
  });
  for (const v of m.doc.vms ?? []) { const l = attachOf.get(v.name); if (l?.length) v.attachments = l; }
  if (identity !== undefined) ((m.doc.defaults ??= {}).paths ??= {}).ssh_identity = identity;
  return m;
}
