// The e2e harness: commands with a transcript, a private network namespace with its own libvirtd/virtlogd,
// a peer namespace standing in for "the LAN", listeners, and the inventory that proves nothing is left behind.
// Only the compiled dist/aivm is driven; this file talks to ip/virsh/nft directly only to set up and to check.
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");
export const BIN = join(ROOT, "dist/aivm");
export const BUN = join(ROOT, "node_modules/.bin/bun");
export const URI = "qemu:///system";
export const isRoot = process.getuid?.() === 0;

/** prefix for commands that need root */
export const priv = (argv: string[]): string[] => (isRoot ? argv : ["sudo", "-n", ...argv]);

export interface Out { code: number; stdout: string; stderr: string; ms: number }

// ---------- transcript ----------

export class Transcript {
  constructor(readonly file: string) {}
  add(text: string): void {
    appendFileSync(this.file, text.endsWith("\n") ? text : text + "\n");
  }
}

let transcript: Transcript | undefined;
export function setTranscript(t: Transcript): void {
  transcript = t;
}

const stamp = () => new Date().toISOString().slice(11, 23);

export interface ShOptions {
  env?: Record<string, string>;
  input?: string;
  timeoutMs?: number;
  /** copy the child's stderr to ours as it comes (long steps) */
  live?: boolean;
}

/** Run argv (no shell), record it in the transcript, never throw on a non-zero exit. */
export async function sh(argv: string[], o: ShOptions = {}): Promise<Out> {
  const t0 = Date.now();
  transcript?.add(`[${stamp()}] $ ${argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ")}`);
  const p = Bun.spawn(argv, {
    env: o.env ?? (process.env as Record<string, string>),
    stdin: o.input !== undefined ? new Blob([o.input]) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = o.timeoutMs ? setTimeout(() => p.kill("SIGKILL"), o.timeoutMs) : undefined;
  const errChunks: string[] = [];
  const readErr = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of p.stderr as ReadableStream<Uint8Array>) {
      const s = dec.decode(chunk, { stream: true });
      errChunks.push(s);
      if (o.live) process.stderr.write(s.replace(/^(?=.)/gm, "    | "));
    }
  })();
  const stdout = await new Response(p.stdout).text();
  await readErr;
  const code = await p.exited;
  if (timer) clearTimeout(timer);
  const r = { code, stdout, stderr: errChunks.join(""), ms: Date.now() - t0 };
  transcript?.add(`[${stamp()}] exit ${code} after ${r.ms} ms${r.stdout ? `\n--- stdout\n${r.stdout.trimEnd()}` : ""}${r.stderr ? `\n--- stderr\n${r.stderr.trimEnd()}` : ""}`);
  return r;
}

/** sh() that throws with the command's stderr on a non-zero exit. */
export async function must(argv: string[], o: ShOptions = {}): Promise<Out> {
  const r = await sh(argv, o);
  if (r.code !== 0) throw new Error(`\`${argv.join(" ")}\` exited ${r.code}: ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join(" | ")}`);
  return r;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------- preflight ----------

export const TOOLS = ["qemu-system-x86_64", "qemu-img", "libvirtd", "virtlogd", "virsh", "ip", "nft", "debootstrap", "mkfs.ext4", "ssh", "ssh-keygen"];

/** What this host lacks to run the e2e suite (empty: all there). */
export function preflight(): string[] {
  const missing: string[] = [];
  if (!isRoot && Bun.spawnSync(["sudo", "-n", "true"], { stdout: "ignore", stderr: "ignore" }).exitCode !== 0) missing.push("root or passwordless sudo");
  const path = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;
  for (const t of TOOLS) if (!Bun.which(t, { PATH: path })) missing.push(t);
  if (!existsSync(BUN)) missing.push(BUN);
  return missing;
}

// ---------- namespaces and daemons ----------

export interface Lab {
  /** "private": our own libvirtd in our netns; "system": a libvirtd that was already running */
  mode: "private" | "system";
  ns: string | null;
  peer: string | null;
  pids: { libvirtd?: number; virtlogd?: number };
  runDir: string;
  libvirtdLog: string;
}

/** argv run inside the lab's network namespace (as root). */
export function inNs(lab: Lab, argv: string[], env?: Record<string, string>): string[] {
  const withEnv = env ? ["env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv] : argv;
  return lab.ns ? priv(["ip", "netns", "exec", lab.ns, ...withEnv]) : env ? priv(withEnv) : priv(argv);
}

/**
 * argv run in the lab's network namespace but the host's mount namespace (`ip netns exec` makes a private mount
 * namespace per command, so a folder bind aivm makes there would vanish with it).
 */
export function inNet(lab: Lab, argv: string[], env?: Record<string, string>): string[] {
  const e = env ? ["env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`)] : [];
  return lab.ns ? priv(["nsenter", `--net=/run/netns/${lab.ns}`, "--", ...e, ...argv]) : priv([...e, ...argv]);
}

export async function systemLibvirtdAnswers(): Promise<boolean> {
  if (!existsSync("/var/run/libvirt/libvirt-sock")) return false;
  return (await sh(priv(["virsh", "-q", "-c", URI, "version"]), { timeoutMs: 10_000 })).code === 0;
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** /dev/kvm is there but the CPU flags show no vmx/svm (a paravirtual KVM that hangs real guests): aivm uses TCG. */
export function kvmBroken(): boolean {
  if (!existsSync("/dev/kvm")) return false;
  try {
    return !/\b(vmx|svm)\b/.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}

// ---------- every exit path tears the lab down ----------

/** One record per live lab: a run killed with SIGKILL leaves its record, and the next run reaps what it names. */
export const LABS_DIR = "/run/aivm-e2e-labs";
const active = new Set<Lab>();
let handlersInstalled = false;

function labRecord(lab: Lab): string {
  return join(LABS_DIR, `${lab.ns}.json`);
}

function recordLab(lab: Lab): void {
  mkdirSync(LABS_DIR, { recursive: true });
  writeFileSync(labRecord(lab), JSON.stringify({ owner: process.pid, ns: lab.ns, peer: lab.peer, runDir: lab.runDir, pids: lab.pids }) + "\n");
}

/** Unmount everything under dir (deepest first) and dir itself, lazily. */
export async function unmountUnder(dir: string): Promise<void> {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => (l.split(" ")[4] ?? "").replace(/\\040/g, " ")).filter((m) => m === dir || m.startsWith(dir + "/"));
  for (const m of [...new Set(mounts)].sort((a, b) => b.length - a.length)) await sh(priv(["umount", "-l", m]));
}

/**
 * Labs whose owner died without tearing down (SIGKILL, a crash): stop what lives in their namespaces, delete the
 * namespaces, unmount their run directories. Also aivm-e2e-* namespaces no live record claims.
 */
export async function reapStaleLabs(): Promise<string[]> {
  const reaped: string[] = [];
  const claimed = new Set<string>();
  for (const f of existsSync(LABS_DIR) ? readdirSync(LABS_DIR) : []) {
    let rec: { owner: number; ns: string; peer: string | null; runDir: string; pids: Lab["pids"] };
    try { rec = JSON.parse(readFileSync(join(LABS_DIR, f), "utf8")); } catch { rmSync(join(LABS_DIR, f), { force: true }); continue; }
    if (alive(rec.owner)) { claimed.add(rec.ns); if (rec.peer) claimed.add(rec.peer); continue; }
    const lab: Lab = { mode: "private", ns: rec.ns, peer: rec.peer, pids: rec.pids, runDir: rec.runDir, libvirtdLog: "" };
    await stopLab(lab);
    await unmountUnder(rec.runDir);
    rmSync(join(LABS_DIR, f), { force: true });
    reaped.push(rec.ns);
  }
  const names = (await sh(priv(["ip", "netns", "list"]))).stdout.split("\n").map((l) => l.split(" ")[0]!).filter((n) => n.startsWith("aivm-e2e-") && !claimed.has(n));
  for (const ns of names) {
    for (const pid of await nsPids(ns)) await stopPid(pid, "stale", []);
    await sh(priv(["ip", "netns", "del", ns]));
    reaped.push(ns);
  }
  if (reaped.length) console.error(`e2e: cleaned up what an earlier killed run left: ${reaped.join(", ")}`);
  return reaped;
}

/** SIGINT, SIGTERM or SIGHUP (a terminal closed, a CI timeout): tear every lab of this process down, then exit. */
function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const stop = (sig: string, code: number) => async () => {
    console.error(`\ne2e: ${sig}: tearing the lab down`);
    for (const lab of [...active]) {
      await stopLab(lab).catch(() => {});
      await unmountUnder(lab.runDir).catch(() => {});
    }
    process.exit(code);
  };
  process.on("SIGINT", stop("SIGINT", 130));
  process.on("SIGTERM", stop("SIGTERM", 143));
  process.on("SIGHUP", stop("SIGHUP", 129));
}

/** A private netns (loopback up) with virtlogd and libvirtd inside, or the running system libvirtd. */
export async function startLab(runDir: string, tag: string): Promise<Lab> {
  installHandlers();
  await reapStaleLabs();
  const libvirtdLog = join(runDir, "libvirtd.log");
  if (await systemLibvirtdAnswers()) {
    return { mode: "system", ns: null, peer: null, pids: {}, runDir, libvirtdLog };
  }
  for (const f of ["/run/libvirtd.pid", "/run/virtlogd.pid"]) {
    const pid = readPid(f);
    if (alive(pid)) throw new Error(`${f} names a live process (pid ${pid}) but libvirtd does not answer on ${URI}; stop it first`);
  }
  const lab: Lab = { mode: "private", ns: `aivm-e2e-${tag}`, peer: `aivm-e2e-${tag}-lan`, pids: {}, runDir, libvirtdLog };
  active.add(lab);
  recordLab(lab);
  await must(priv(["ip", "netns", "add", lab.ns!]));
  await must(inNs(lab, ["ip", "link", "set", "lo", "up"]));
  await must(inNs(lab, ["virtlogd", "-d"]));
  const daemon = ["env", `LIBVIRT_LOG_OUTPUTS=3:file:${libvirtdLog}`, "libvirtd", "-d"];
  if (kvmBroken()) {
    // /dev/kvm exists but cannot run guests: libvirt then finds "KVM usable but not in the cached capabilities" and
    // re-probes qemu on every define/start (48 s each here). In libvirtd's own mount namespace, cover /dev/kvm with a
    // mode-000 character device (a null device: libvirt still finds a device node to copy into each domain's /dev).
    // The namespace is a SLAVE of the host's, not private: virtiofsd inherits it and must see the folder binds aivm
    // makes under a VM's export root after libvirtd started (shared-root folder sharing).
    const blocker = join(runDir, "no-kvm");
    await must(priv(["mknod", "-m", "000", blocker, "c", "1", "3"]));
    await must(inNs(lab, ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", 'mount --bind "$0" /dev/kvm && exec "$@"', blocker, ...daemon]));
  } else {
    await must(inNs(lab, daemon));
  }
  const t0 = Date.now();
  while ((await sh(priv(["virsh", "-q", "-c", URI, "version"]), { timeoutMs: 10_000 })).code !== 0) {
    if (Date.now() - t0 > 60_000) throw new Error(`libvirtd did not answer on ${URI} within 60 s (log: ${libvirtdLog})`);
    await sleep(300);
  }
  lab.pids.virtlogd = readPid("/run/virtlogd.pid");
  lab.pids.libvirtd = readPid("/run/libvirtd.pid");
  if (!lab.pids.libvirtd || !lab.pids.virtlogd) throw new Error("libvirtd/virtlogd pid files missing after start");
  recordLab(lab);
  return lab;
}

/**
 * A second namespace standing for the LAN, joined by a veth pair: 192.168.250.2 (inside the default block_cidrs) and
 * 198.51.100.2 (TEST-NET-2, outside them: the control that proves forwarding works at all).
 */
export const LAN = { blocked: "192.168.250.2", open: "198.51.100.2" };

export async function addLan(lab: Lab): Promise<void> {
  if (!lab.ns || !lab.peer) return;
  const p = (argv: string[]) => must(priv(["ip", "netns", "exec", lab.peer!, ...argv]));
  await must(priv(["ip", "netns", "add", lab.peer]));
  await must(inNs(lab, ["ip", "link", "add", "e2elan0", "type", "veth", "peer", "name", "e2elan1", "netns", lab.peer]));
  await must(inNs(lab, ["ip", "addr", "add", "192.168.250.1/24", "dev", "e2elan0"]));
  await must(inNs(lab, ["ip", "addr", "add", "198.51.100.1/24", "dev", "e2elan0"]));
  await must(inNs(lab, ["ip", "link", "set", "e2elan0", "up"]));
  await p(["ip", "link", "set", "lo", "up"]);
  await p(["ip", "addr", "add", `${LAN.blocked}/24`, "dev", "e2elan1"]);
  await p(["ip", "addr", "add", `${LAN.open}/24`, "dev", "e2elan1"]);
  await p(["ip", "link", "set", "e2elan1", "up"]);
  await p(["ip", "route", "add", "default", "via", "192.168.250.1"]);
}

async function stopPid(pid: number | undefined, what: string, problems: string[]): Promise<void> {
  if (!alive(pid)) return;
  await sh(priv(["kill", "-TERM", String(pid)]));
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(200);
  if (alive(pid)) {
    problems.push(`${what} (pid ${pid}) ignored SIGTERM for 20 s; killed`);
    await sh(priv(["kill", "-KILL", String(pid)]));
  }
}

/** PIDs of every process living in a namespace. */
export async function nsPids(ns: string): Promise<number[]> {
  const r = await sh(priv(["ip", "netns", "pids", ns]));
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** Stop our daemons by PID, then anything still living in our namespaces (dnsmasq, a stray qemu), then delete them. */
export async function stopLab(lab: Lab): Promise<string[]> {
  const problems: string[] = [];
  active.delete(lab);
  if (lab.mode !== "private") return problems;
  await stopPid(lab.pids.libvirtd, "libvirtd", problems);
  await stopPid(lab.pids.virtlogd, "virtlogd", problems);
  for (const ns of [lab.ns, lab.peer]) {
    if (!ns || (await sh(priv(["ip", "netns", "pids", ns]))).code !== 0) continue;
    for (const pid of await nsPids(ns)) {
      const comm = (() => { try { return readFileSync(`/proc/${pid}/comm`, "utf8").trim(); } catch { return "?"; } })();
      problems.push(`process left in ${ns} after the daemons stopped: ${comm} (pid ${pid})`);
      await stopPid(pid, comm, []);
    }
    await sh(priv(["ip", "netns", "del", ns]));
  }
  rmSync(labRecord(lab), { force: true });
  return problems;
}

// ---------- listeners ----------

export interface Listener { addr: string; port: number; pid: number; stop: () => void }

/** A TCP listener inside a namespace that greets every connection with TOKEN. */
export async function listen(ns: string | null, addr: string, port: number): Promise<Listener> {
  const argv = ns ? priv(["ip", "netns", "exec", ns, BUN, join(ROOT, "e2e/listen.ts"), addr, String(port)]) : [BUN, join(ROOT, "e2e/listen.ts"), addr, String(port)];
  transcript?.add(`[${stamp()}] $ ${argv.join(" ")} &`);
  const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  const first = await Promise.race([reader.read(), sleep(15_000).then(() => null)]);
  const line = first && !first.done ? new TextDecoder().decode(first.value) : "";
  if (!line.includes("listening")) {
    p.kill();
    throw new Error(`listener on ${addr}:${port} did not start: ${line}${await new Response(p.stderr).text()}`);
  }
  return { addr, port, pid: p.pid, stop: () => p.kill("SIGTERM") };
}

export const TOKEN = "aivm-e2e-ok";

/** The guest-side probe: prints TOKEN when addr:port answers within `s` seconds. */
export function probeCommand(addr: string, port: number, s = 6): string {
  return `timeout ${s} bash -c 'exec 3<>/dev/tcp/${addr}/${port} && head -c ${TOKEN.length} <&3' 2>&1; echo " rc=$?"`;
}

// ---------- inventory (what must be gone at the end) ----------

export interface Inventory { domains: string[]; networks: string[]; nftTables: string[]; links: string[] }

export async function inventory(lab: Lab): Promise<Inventory> {
  const lines = (s: string) => s.split("\n").map((l) => l.trim()).filter(Boolean);
  const domains = lines((await sh(priv(["virsh", "-q", "-c", URI, "list", "--all", "--name"]))).stdout);
  const networks = lines((await sh(priv(["virsh", "-q", "-c", URI, "net-list", "--all", "--name"]))).stdout);
  // aivm's own tables only: libvirt's iptables-nft tables (ip filter/nat/mangle) die with the namespace
  const nftTables = lines((await sh(inNs(lab, ["nft", "list", "tables"]))).stdout).filter((t) => /\baivm_/.test(t));
  const links = lines((await sh(inNs(lab, ["ip", "-o", "link", "show"]))).stdout).map((l) => l.split(":")[1]!.trim().split("@")[0]!);
  return { domains, networks, nftTables, links };
}

/** Entries of `now` not in `before`. */
export function added(before: Inventory, now: Inventory): Partial<Inventory> {
  const out: Partial<Inventory> = {};
  for (const k of Object.keys(now) as (keyof Inventory)[]) {
    const extra = now[k].filter((x) => !before[k].includes(x));
    if (extra.length) out[k] = extra;
  }
  return out;
}

// ---------- config text ----------

/** Set `key = value` (value already TOML) in `[section]`, replacing an existing line or adding one after the header. */
export function setTomlKey(text: string, section: string, key: string, value: string): string {
  const lines = text.split("\n");
  const header = lines.findIndex((l) => l.trim() === `[${section}]`);
  if (header < 0) return `${text.trimEnd()}\n\n[${section}]\n${key} = ${value}\n`;
  let end = lines.findIndex((l, i) => i > header && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const at = lines.findIndex((l, i) => i > header && i < end && new RegExp(`^\\s*${key}\\s*=`).test(l));
  if (at >= 0) lines[at] = `${key} = ${value}`;
  else lines.splice(header + 1, 0, `${key} = ${value}`);
  return lines.join("\n");
}

/** The config `config init` wrote, with this run's unique VM and network names and the shared image cache. */
export function uniqueNamesConfig(text: string, names: { vm: string; net: string }, cacheHome: string): string {
  text = setTomlKey(text, "defaults.vm", "name", JSON.stringify(names.vm));
  text = setTomlKey(text, "defaults.network", "name", JSON.stringify(names.net));
  return setTomlKey(text, "defaults.paths", "image_cache", JSON.stringify(join(cacheHome, "aivm", "images")));
}

export function ensureDir(p: string, mode = 0o755): string {
  mkdirSync(p, { recursive: true, mode });
  return p;
}

/**
 * The isolated environment every suite drives dist/aivm with: HOME and XDG directories under the run dir (mode 0755, so
 * libvirt's qemu user can reach the VM directory), the shared image cache, and a fresh SSH key aivm will find.
 */
export async function isolatedEnv(runDir: string, cacheHome: string, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  const home = ensureDir(join(runDir, "home"));
  const env = {
    PATH: `${process.env.PATH ?? "/usr/bin:/bin"}:/usr/sbin:/sbin`,
    HOME: home,
    XDG_CONFIG_HOME: ensureDir(join(runDir, "config")),
    XDG_DATA_HOME: ensureDir(join(runDir, "data")),
    XDG_STATE_HOME: ensureDir(join(runDir, "state")),
    XDG_CACHE_HOME: ensureDir(cacheHome),
    LANG: "C.UTF-8",
    TERM: "dumb",
    NO_COLOR: "1",
    ...extra,
  };
  ensureDir(join(home, ".ssh"), 0o700);
  await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aivm-e2e", "-f", join(home, ".ssh", "id_aivm_ed25519")]);
  return env;
}
