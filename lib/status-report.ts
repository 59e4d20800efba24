// The `aivm status` report: its layers and shape (documented in README.md), the next commands, the text form,
// and the pure guest-side probes and their verdicts.
import { isDefaultConfigPath, Vm } from "./config/model.ts";
import { CLOUD_INIT_PROBE } from "./guest-probe.ts";
import { shellQuote } from "./shell.ts";

export type Tri = true | false | null;

/** One layer. ok: true, false, or null (unknown, with `reason`). `next`: the command that fixes a false layer. */
export interface Layer {
  name: LayerName;
  ok: Tri;
  detail: string;
  reason?: string;
  next?: string;
  /** the evidence behind the verdict (shown with --detail) */
  evidence?: string[];
}

export const LAYERS = [
  "host-dependencies", "acceleration", "libvirtd", "network", "firewall", "image", "vm", "ip", "ssh", "cloud-init", "attachments", "drift",
] as const;

export type LayerName = (typeof LAYERS)[number];

export const LABELS: Record<LayerName, string> = {
  "host-dependencies": "host dependencies",
  acceleration: "acceleration",
  libvirtd: "libvirtd",
  network: "network",
  firewall: "firewall",
  image: "base image",
  vm: "vm",
  ip: "ip",
  ssh: "ssh",
  "cloud-init": "cloud-init",
  attachments: "attachments",
  drift: "config drift",
};

/** The document `aivm status --json` prints (documented in README.md, "## aivm status --json"). */
export interface StatusReport {
  /** the VM the report is about; null when the store records none (host-level part only) */
  vm: string | null;
  /** which rule chose the VM (--vm, folder, only, picked) and why; null when vm is null */
  chosen: { rule: string; why: string } | null;
  /** the VM is recorded in [[vms]] */
  recorded: boolean;
  config: string;
  /** every layer is true */
  ok: boolean;
  layers: Layer[];
  /** the commands to run, in order */
  next: string[];
}

/** The guest-side check for one attachment, as one shell line printing `<index> <verdict> <words>`. */
export function attachmentProbe(i: number, a: Vm["attachments"][number]): string {
  const q = shellQuote(a.guest_dst);
  if (a.mode === "git") return `if [ -d ${q}/.git ]; then echo "${i} ok git"; else echo "${i} missing git"; fi`;
  // findmnt prints the mount at exactly that target (not a parent's), with its options
  return `o=$(findmnt -n -o OPTIONS --mountpoint ${q} 2>/dev/null | head -n1); if [ -z "$o" ]; then echo "${i} missing"; else echo "${i} mounted $o"; fi`;
}

/** Pure: the verdict lines of attachmentProbe -> problems, per attachment. */
export function attachmentVerdicts(attachments: Vm["attachments"], stdout: string): { ok: boolean; text: string }[] {
  const lines = new Map<number, string[]>();
  for (const l of stdout.split("\n")) {
    const w = l.trim().split(/\s+/);
    if (w.length >= 2 && /^\d+$/.test(w[0]!)) lines.set(Number(w[0]), w.slice(1));
  }
  return attachments.map((a, i) => {
    const w = lines.get(i);
    const where = `${a.host_path} -> ${a.guest_dst} (${a.mode}, ${a.access})`;
    if (!w) return { ok: false, text: `${where}: no answer from the guest probe` };
    if (a.mode === "git") return w[0] === "ok" ? { ok: true, text: `${where}: guest clone present` } : { ok: false, text: `${where}: no git clone at ${a.guest_dst}` };
    if (w[0] !== "mounted") return { ok: false, text: `${where}: not mounted` };
    const opts = (w[1] ?? "").split(",");
    const ro = opts.includes("ro");
    if (a.access === "ro" && !ro) return { ok: false, text: `${where}: mounted read-write, should be read-only` };
    if (a.access === "rw" && ro) return { ok: false, text: `${where}: mounted read-only, should be read-write` };
    return { ok: true, text: `${where}: mounted ${ro ? "ro" : "rw"}` };
  });
}

/** The fixes of the false layers, in layer order, without repeats; what to run first when nothing is set up. */
export function nextCommands(layers: Layer[], configPath: string, configExists: boolean): string[] {
  const c = isDefaultConfigPath(configPath) ? "" : ` --config ${shellQuote(configPath)}`;
  const one = (cmd: string) => (cmd.startsWith("aivm ") ? cmd.replace(/^aivm [a-z-]+(?: [a-z-]+)?/, (m) => `${m}${c}`) : cmd);
  const withConfig = (cmd: string) => (c ? cmd.split(" && ").map(one).join(" && ") : cmd);
  const next: string[] = [];
  if (!configExists) next.push(`aivm config init${c}`);
  for (const l of layers) {
    if (l.ok !== false || !l.next) continue;
    const cmd = withConfig(l.next);
    if (!next.includes(cmd)) next.push(cmd);
  }
  return next;
}

const VM_LAYERS = new Set<LayerName>(["ip", "ssh", "cloud-init", "attachments", "drift"]);

export function formatStatus(r: StatusReport, o: { detail?: boolean } = {}): string {
  const word = (ok: Tri) => (ok === true ? "true" : ok === false ? "false" : "unknown");
  const width = Math.max(...r.layers.map((l) => LABELS[l.name].length));
  const lines = [r.vm ? `VM ${r.vm}${r.recorded ? "" : " (not created yet)"}${r.chosen ? ` (chosen: ${r.chosen.why})` : ""}` : "no VM in the config store: host-level checks only"];
  for (const l of r.layers) {
    if (!r.vm && VM_LAYERS.has(l.name)) continue;
    const text = l.ok !== null || !l.reason ? l.detail : l.detail === "unknown" ? l.reason : `${l.detail} (${l.reason})`;
    lines.push(`${LABELS[l.name].padEnd(width)}  ${word(l.ok).padEnd(7)}  ${text}`);
    if (o.detail) for (const e of l.evidence ?? []) lines.push(`${"".padEnd(width)}           | ${e}`);
  }
  if (r.next.length) lines.push("", "next:", ...r.next.map((n) => `  ${n}`));
  else if (r.ok) lines.push("", "everything is up");
  else lines.push("", "nothing to run: the unknown layers say why they could not be checked");
  return lines.join("\n");
}

// ---------- the guest-side probe: one ssh session, shell builtins and cat ----------

/**
 * The script the guest user's shell runs for `status`: cloud-init's own result files (no Python started in the
 * guest), then one line per attachment. Sections start with `@name`.
 */
export function guestProbeScript(attachments: Vm["attachments"]): string {
  return [
    `echo @cloud-init`,
    CLOUD_INIT_PROBE,
    `echo @attachments`,
    ...attachments.map((a, i) => attachmentProbe(i, a)),
  ].join("; ");
}
