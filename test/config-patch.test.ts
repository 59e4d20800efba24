// Store writes keep the user's layout (issue 14): only what changed is rewritten; comments, order, spacing and the
// formatting of everything else stay byte for byte. Records are matched by name / host_path, never by index.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { patchToml, pruneEmpty, sameValue } from "../lib/config/patch.ts";
import { plain, renderToml } from "../lib/config/toml.ts";
import { loadStore, saveStore, updateStore } from "../lib/config/store.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { recordVm, resolveVm } from "../lib/config/resolve.ts";
import { withAttachment, withoutAttachment } from "../lib/share/input.ts";
import { setVerbosity } from "../lib/log.ts";

setVerbosity({ quiet: true });

const ANNOTATED = `# my aivm store
# hand-annotated: keep these notes

[defaults.vm]
cpus = 4          # plenty
memory_mib = 8192

# the lab network
[[networks]]
name = "aivm-net"
subnet = "10.77.0.0/24"

[networks.firewall]
allow_tcp_ports = [
  22,   # ssh
  8080,
]

# VM a: for the frontend
[[vms]]
name = "a"   # first VM
network = "aivm-net"

[[vms.attachments]]
host_path = "/home/x/p"   # project
mode = "shared"

# VM b: the backend
[[vms]]
name = "b"
network = "aivm-net"
cpus = 2 # small
`;

const parse = (t: string) => plain(Bun.TOML.parse(t)) as StoreDoc;
const DOC = parse(ANNOTATED);

function patched(change: (d: StoreDoc) => void): string {
  const next = structuredClone(DOC);
  change(next);
  const out = patchToml(ANNOTATED, DOC, next);
  expect(out).not.toBeNull();
  expect(sameValue(parse(out!), plain(next))).toBe(true);
  return out!;
}

/** ANNOTATED with the lines from..to (1-based, inclusive) replaced by `add`. */
function edit(from: number, to: number, add: string[] = []): string {
  const l = ANNOTATED.split("\n");
  l.splice(from - 1, to - from + 1, ...add);
  return l.join("\n");
}

describe("patchToml: only what changed is rewritten", () => {
  test("removing the first of two VMs removes its attachments and its comment; the other VM keeps its own", () => {
    expect(patched((d) => d.vms!.splice(0, 1))).toBe(edit(19, 27));
  });

  test("removing the last VM keeps the attachments of the one before it (toml-patch 3.3.0 dropped them)", () => {
    expect(patched((d) => d.vms!.splice(1, 1))).toBe(edit(28, 33));
  });

  test("a new attachment goes after the VM's last one, before the next VM's comment", () => {
    expect(patched((d) => d.vms![0]!.attachments!.push({ host_path: "/srv/q", mode: "git" })))
      .toBe(edit(27, 27, ["", "[[vms.attachments]]", 'host_path = "/srv/q"', 'mode = "git"', ""]));
  });

  test("a first attachment for the last VM goes at its end", () => {
    expect(patched((d) => { d.vms![1]!.attachments = [{ host_path: "/srv/q" }]; })).toBe(ANNOTATED + '\n[[vms.attachments]]\nhost_path = "/srv/q"\n');
  });

  test("a changed value keeps its key, its trailing comment and the comment's column", () => {
    expect(patched((d) => { d.defaults!.vm!.cpus = 2; d.vms![1]!.cpus = 3; }))
      .toBe(ANNOTATED.replace("cpus = 4          # plenty", "cpus = 2          # plenty").replace("cpus = 2 # small", "cpus = 3 # small"));
  });

  test("a new key goes after the table's last key; a removed key's line goes", () => {
    expect(patched((d) => { d.vms![1]!.memory_mib = 4096; delete d.defaults!.vm!.memory_mib; }))
      .toBe(ANNOTATED.replace("memory_mib = 8192\n", "").replace("cpus = 2 # small\n", "cpus = 2 # small\nmemory_mib = 4096\n"));
  });

  test("new records and tables in aivm's layout (sections, not inline tables), after their siblings", () => {
    const out = patched((d) => {
      d.networks!.push({ name: "n2", subnet: "10.1.0.0/24", firewall: { enabled: false } });
      d.vms!.push({ name: "c", network: "n2", image: { url: "https://x/y.img", sha256: "a".repeat(64) }, attachments: [{ host_path: "/z" }] });
      d.defaults!.paths = { ssh_identity: "~/.ssh/k" };
    });
    expect(out).toContain('  8080,\n]\n\n[[networks]]\nname = "n2"\nsubnet = "10.1.0.0/24"\n\n[networks.firewall]\nenabled = false\n\n# VM a');
    expect(out).toContain('memory_mib = 8192\n\n[defaults.paths]\nssh_identity = "~/.ssh/k"\n\n# the lab network');
    expect(out.endsWith('cpus = 2 # small\n\n[[vms]]\nname = "c"\nnetwork = "n2"\n\n[vms.image]\nurl = "https://x/y.img"\nsha256 = "' + "a".repeat(64) + '"\n\n[[vms.attachments]]\nhost_path = "/z"\n')).toBe(true);
  });

  test("integers stay plain: 2048 and 1048576, never 2_048", () => {
    const out = patched((d) => { d.vms![0]!.memory_mib = 2048; d.defaults!.vm!.memory_mib = 1048576; });
    expect(out).toContain("memory_mib = 2048\n");
    expect(out).toContain("memory_mib = 1048576\n");
    expect(out).not.toMatch(/\d_\d/);
  });

  test("a layout it cannot keep (dotted keys) is null: the caller renders the whole file", () => {
    const text = "[defaults]\nvm.cpus = 2\n";
    expect(patchToml(text, parse(text), { defaults: { vm: { cpus: 3 } } })).toBeNull();
  });

  test("our own rendering patched into another of our renderings is that rendering, byte for byte", () => {
    const a: StoreDoc = { defaults: { vm: { cpus: 2 } }, networks: [{ name: "x", subnet: "10.9.0.0/24" }], vms: [{ name: "v", network: "x", attachments: [{ host_path: "/p", mode: "git", access: "ro", guest_dst: "/q" }] }] };
    const b: StoreDoc = { defaults: { network: { name: "y" } }, networks: [{ name: "y", subnet: "10.8.0.0/24", firewall: { enabled: false } }], vms: [{ name: "w", network: "y", image: { url: "file:///i", sha256: "c".repeat(64) } }] };
    expect(patchToml(renderToml(a), a, b)).toBe(renderToml(b));
    expect(patchToml(renderToml(b), b, a)).toBe(renderToml(a));
  });
});

describe("random edits: the result always parses to the wanted document, and untouched comments stay", () => {
  let seed = 14;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  test("500 random changes, applied one after another", () => {
    let text = ANNOTATED;
    for (let i = 0; i < 500; i++) {
      const doc = parse(text);
      const next = structuredClone(doc);
      const vms = (next.vms ??= []);
      switch (rnd(7)) {
        case 0: vms.push({ name: `v${i}`, network: "aivm-net", ...(rnd(2) ? { cpus: 1 + rnd(8) } : {}) }); break;
        case 1: if (vms.length) vms.splice(rnd(vms.length), 1); break;
        case 2: if (vms.length) (vms[rnd(vms.length)]!.attachments ??= []).push({ host_path: `/p/${i}`, ...(rnd(2) ? { mode: "git" as const } : {}) }); break;
        case 3: { const v = vms[rnd(Math.max(1, vms.length))]; if (v?.attachments?.length) { v.attachments.splice(rnd(v.attachments.length), 1); if (!v.attachments.length && rnd(2)) delete v.attachments; } break; }
        case 4: if (vms.length) vms[rnd(vms.length)]!.memory_mib = 1024 * (1 + rnd(16)); break;
        case 5: if (vms.length) { const v = vms[rnd(vms.length)]!; if (v.image) delete v.image; else v.image = { url: `https://h/${i}.img`, sha256: "d".repeat(64) }; } break;
        case 6: next.defaults!.vm!.cpus = 1 + rnd(8); break;
      }
      const out = patchToml(text, doc, next);
      expect(out).not.toBeNull();
      expect(sameValue(parse(out!), plain(pruneEmpty(next)))).toBe(true);
      text = out!;
      for (const c of ["# my aivm store", "# hand-annotated: keep these notes", "# plenty", "# the lab network", "  22,   # ssh"]) expect(text).toContain(c);
    }
    expect(text).not.toContain("\n\n\n");
  });
});

describe("through the store: every writer keeps the user's layout", () => {
  const tmpStore = (text: string) => {
    const path = join(mkdtempSync(join(tmpdir(), "aivm-patch-")), "config.toml");
    writeFileSync(path, text);
    return path;
  };

  test("share attach, share detach, vm delete and up's record on a hand-annotated store keep every comment", () => {
    const path = tmpStore(ANNOTATED);
    const att = { host_path: "/srv/new", mode: "shared-root" as const, access: "rw" as const, guest_dst: "/srv/new" };
    updateStore(path, (d) => withAttachment(d, "b", att));
    expect(readFileSync(path, "utf8")).toBe(ANNOTATED + '\n[[vms.attachments]]\nhost_path = "/srv/new"\nmode = "shared-root"\naccess = "rw"\nguest_dst = "/srv/new"\n');
    updateStore(path, (d) => withoutAttachment(d, "b", "/srv/new"));
    expect(readFileSync(path, "utf8")).toBe(ANNOTATED);
    const vm = resolveVm({ ...DOC, vms: [...DOC.vms!, { name: "c", network: "aivm-net" }] }, "c");
    updateStore(path, (d) => recordVm(d, vm));
    expect(readFileSync(path, "utf8")).toBe(ANNOTATED + '\n[[vms]]\nname = "c"\nnetwork = "aivm-net"\n');
    updateStore(path, (d) => ({ ...d, vms: d.vms!.filter((v) => v.name !== "c" && v.name !== "a") }));
    expect(readFileSync(path, "utf8")).toBe(edit(19, 27));
  });

  test("saveStore keeps the layout too, and a change it cannot patch is still written correctly (whole file)", () => {
    const path = tmpStore("# note\n[defaults]\nvm.cpus = 2\n");
    const store = loadStore(path);
    expect(saveStore(store, { defaults: { vm: { cpus: 3 } } })).toBe(true);
    expect(loadStore(path).doc).toEqual({ defaults: { vm: { cpus: 3 } } });
    const p2 = tmpStore(ANNOTATED);
    const s2 = loadStore(p2);
    s2.doc.vms![1]!.cpus = 6;
    expect(saveStore(s2, s2.doc)).toBe(true);
    expect(readFileSync(p2, "utf8")).toBe(ANNOTATED.replace("cpus = 2 # small", "cpus = 6 # small"));
  });
});
