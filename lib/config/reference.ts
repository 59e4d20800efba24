// The README's config reference, generated from the model (a test keeps README.md equal to it).

import { ATTACHMENT_KEYS, BUILTIN, FIREWALL_KEYS, IMAGE_KEYS, NETWORK_KEYS, PATHS_KEYS, VM_KEYS } from "./model.ts";


const DEFAULTS: Record<string, Record<string, unknown>> = {
  vm: { name: "aivm-<hostname>", ...BUILTIN.vm },
  network: { ...BUILTIN.network, bridge: "aivm-<8 hex of sha256(name)>", gateway: "first address", dhcp_start: ".100 (or first+1)", dhcp_end: ".200 (or last)" },
  firewall: BUILTIN.firewall,
  image: { url: "Ubuntu 24.04 cloud image", sha256: "pinned" },
  paths: { vm_root: "$XDG_DATA_HOME/aivm/vms", image_cache: "$XDG_CACHE_HOME/aivm/images", ssh_identity: "~/.ssh/id_aivm_ed25519", libvirt_uri: "qemu:///system" },
  attachment: { mode: "shared-root", access: "rw", guest_dst: "same as host_path" },
};

export function configReference(): string {
  const sections: [string, string, Record<string, { type: string; doc: string }>][] = [
    ["vm", "VM keys (`[defaults.vm]`, `[[vms]]`)", VM_KEYS],
    ["network", "network keys (`[defaults.network]`, `[[networks]]`)", NETWORK_KEYS],
    ["firewall", "firewall keys (`[defaults.firewall]`, `[networks.firewall]`)", FIREWALL_KEYS],
    ["image", "image keys (`[defaults.image]`, `[vms.image]`)", IMAGE_KEYS],
    ["paths", "path keys (`[defaults.paths]`)", PATHS_KEYS],
    ["attachment", "attachment keys (`[[vms.attachments]]`)", ATTACHMENT_KEYS],
  ];
  const out: string[] = [];
  for (const [sec, title, keys] of sections) {
    out.push(`**${title}**`, "", "| key | type | default | meaning |", "|---|---|---|---|");
    for (const [k, spec] of Object.entries(keys)) {
      const d = DEFAULTS[sec]?.[k];
      const shown = d === undefined ? "" : Array.isArray(d) ? (d.length ? d.join(" ") : "[]") : String(d);
      out.push(`| \`${k}\` | ${spec.type} | ${shown.replaceAll("|", "\\|")} | ${spec.doc.replaceAll("|", "\\|")} |`);
    }
    out.push("");
  }
  return out.join("\n");
}

export function spliceReadme(readme: string): string {
  const start = "<!-- config-reference:start -->";
  const end = "<!-- config-reference:end -->";
  const a = readme.indexOf(start);
  const b = readme.indexOf(end);
  if (a < 0 || b < a) throw new Error("README has no config-reference markers");
  return readme.slice(0, a + start.length) + "\n" + configReference() + readme.slice(b);
}

if (import.meta.main) {
  const path = new URL("../../README.md", import.meta.url).pathname;
  await Bun.write(path, spliceReadme(await Bun.file(path).text()));
}
