// Which VM a command works on: one rule (--vm > the folder's VM > the only VM > a pick list; without a terminal,
// exit 2 listing the candidates), the same for every VM-scoped command; status and help plan say which rule chose.
// Also the commands that came with it: top-level attach/detach, list --section, help tree.
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, isolatedEnv } from "./helpers/cli.ts";
import { chooseVm } from "../lib/config/resolve.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { root } from "../lib/cli/root.ts";
import { commandTree, formatTree } from "../lib/command-tree.ts";
import { formatListing, type Listing } from "../lib/flows/list.ts";

const att = (p: string) => ({ host_path: p, mode: "shared-root" as const, access: "rw" as const, guest_dst: p });
const doc = (vms: { name: string; atts?: string[] }[]): StoreDoc => ({
  networks: [{ name: "n1", subnet: "10.201.0.0/24" }],
  vms: vms.map((v) => ({ name: v.name, network: "n1", attachments: (v.atts ?? []).map(att) })),
});

describe("chooseVm: the rule, by table", () => {
  const two = doc([{ name: "a", atts: ["/src/proj", "/data"] }, { name: "b", atts: ["/src/proj/sub", "/shared"] }]);
  const cases: [string, StoreDoc, { name?: string; folder?: string | null }, unknown][] = [
    ["--vm wins over everything", two, { name: "b", folder: "/src/proj" }, { name: "b", rule: "--vm" }],
    ["the folder itself is attached", two, { folder: "/src/proj" }, { name: "a", rule: "folder" }],
    ["a folder inside an attached one", two, { folder: "/src/proj/x/y" }, { name: "a", rule: "folder" }],
    ["the nearest attached parent wins", two, { folder: "/src/proj/sub/deep" }, { name: "b", rule: "folder" }],
    ["a sibling with a common prefix is not inside", two, { folder: "/src/project2" }, { candidates: ["a", "b"] }],
    ["no folder: several VMs are candidates", two, { folder: null }, { candidates: ["a", "b"] }],
    ["the only VM", doc([{ name: "solo" }]), { folder: "/elsewhere" }, { name: "solo", rule: "only" }],
    ["no VM recorded: the one [defaults] describes", { defaults: { vm: { name: "dflt" } } }, { folder: "/x" }, { name: "dflt", rule: "defaults" }],
    ["a folder attached to two VMs: those two are the candidates", doc([{ name: "a", atts: ["/p"] }, { name: "b", atts: ["/p"] }, { name: "c" }]), { folder: "/p/q" }, { candidates: ["a", "b"] }],
  ];
  for (const [name, d, o, want] of cases) {
    test(name, () => {
      expect(chooseVm(d, o)).toMatchObject(want as object);
    });
  }
  test("each choice says why", () => {
    expect((chooseVm(two, { folder: "/src/proj/x" }) as { why: string }).why).toBe("/src/proj/x is inside /src/proj, which is attached to it");
    expect((chooseVm(two, { folder: null }) as { why: string }).why).toContain("2 VMs");
  });
});

describe("every VM-scoped command follows the rule (the CLI, as a subprocess)", () => {
  function setup(): { env: Record<string, string>; proj: string; other: string } {
    const env = isolatedEnv();
    const proj = realpathSync(mkdtempSync(join(tmpdir(), "aivm-proj-")));
    const other = realpathSync(mkdtempSync(join(tmpdir(), "aivm-other-")));
    mkdirSync(join(proj, "sub"));
    const cfg = join(env.HOME!, "c.toml");
    writeFileSync(cfg, `[defaults.paths]\nvm_root = "${join(env.HOME!, "vms")}"\nlibvirt_uri = "test:///default"\n\n[[networks]]\nname = "n1"\nsubnet = "10.201.0.0/24"\n\n[[vms]]\nname = "box-a"\nnetwork = "n1"\n\n[[vms]]\nname = "box-b"\nnetwork = "n1"\n\n[[vms.attachments]]\nhost_path = "${proj}"\nmode = "shared-root"\naccess = "rw"\nguest_dst = "${proj}"\n`);
    env.AIVM_CONFIG = cfg;
    return { env, proj, other };
  }

  test("no terminal and no rule decides: exit 2, one line listing the candidates, naming --vm", async () => {
    const { env, other } = setup();
    for (const args of [["vm", "xml"], ["ssh-config", "print"], ["help", "plan"], ["help", "raw"], ["vm", "cloud-init"], ["status"], ["image", "path"]]) {
      const r = await aivm(args, { env, cwd: other });
      expect({ args, code: r.exitCode }).toEqual({ args, code: 2 });
      expect(r.stderr).toContain("which VM?");
      expect(r.stderr).toContain("box-a, box-b");
      expect(r.stderr).toContain("--vm NAME");
      expect(r.stderr.split("\n").filter((l) => l.startsWith("aivm:"))).toHaveLength(1);
    }
  }, 60_000);

  test("in an attached folder (or below it) that folder's VM is chosen; --vm still wins", async () => {
    const { env, proj } = setup();
    expect((await aivm(["ssh-config", "print"], { env, cwd: proj })).stdout).toContain("Host box-b\n");
    expect((await aivm(["ssh-config", "print"], { env, cwd: join(proj, "sub") })).stdout).toContain("Host box-b\n");
    expect((await aivm(["ssh-config", "print", "--vm", "box-a"], { env, cwd: proj })).stdout).toContain("Host box-a\n");
    // help plan and status say which rule chose
    const plan = await aivm(["help", "plan"], { env, cwd: join(proj, "sub") });
    expect(plan.stdout).toContain(`# VM box-b on network n1 (chosen: ${join(proj, "sub")} is inside ${proj}, which is attached to it)`);
    expect(plan.stdout).toMatch(/aivm vm create .*--vm box-b/);
    const st = await aivm(["status", "--json"], { env, cwd: proj });
    expect(st.exitCode).toBe(0);
    expect(JSON.parse(st.stdout).chosen).toEqual({ rule: "folder", why: `${proj} is attached to it` });
    expect((await aivm(["status"], { env, cwd: proj })).stdout).toStartWith(`VM box-b (chosen: ${proj} is attached to it)`);
    // a DIR argument is the folder the rule looks at
    const other = await aivm(["detach", proj, "--dry-run"], { env, cwd: "/" });
    expect(other.stderr).not.toContain("which VM?");
  }, 60_000);
});

describe("top-level attach and detach are share attach and detach", () => {
  test("the same command: its own --help, the same flags", async () => {
    const a = await aivm(["attach", "--help"]);
    expect(a.exitCode).toBe(0);
    expect(a.stdout).toContain("aivm attach");
    expect(a.stdout).toContain("--mode");
    const d = await aivm(["detach", "--help"]);
    expect(d.exitCode).toBe(0);
    expect(d.stdout).toContain("aivm detach");
    const bad = await aivm(["attach", "--mode", "nfs", "."], { env: { ...isolatedEnv(), TERM: "xterm" } });
    expect(bad.exitCode).toBe(2);
    // one plain line (citty colours its message whatever stderr is), and the hint
    expect(bad.stderr).toBe("aivm: usage: Invalid value for argument: --mode (nfs). Expected one of: shared-root, shared, git.\nhint: see `aivm --help`\n");
    const share = (await import("../lib/cli/share.ts")).default;
    const subs = share.subCommands as Record<string, unknown>;
    const top = root.subCommands as Record<string, () => Promise<unknown>>;
    expect(await top.attach!()).toBe(subs.attach);
    expect(await top.detach!()).toBe(subs.detach);
  });
});

describe("list --section", () => {
  const l: Listing = {
    libvirt: { reachable: true, uri: "test:///default" },
    vms: [{ name: "a", recorded: true, state: "running", network: "n", ip: "10.0.0.2", attachments: 1 }],
    networks: [{ name: "n", recorded: true, active: true, bridge: "br", subnet: "10.0.0.0/24", vms: ["a"] }],
    attachments: [{ host_path: "/p", vm: "a", mode: "shared-root", access: "rw", guest_dst: "/p" }],
  };
  test("only the sections asked for, in the order asked", () => {
    expect(formatListing({ attachments: l.attachments, vms: l.vms }).split("\n").filter((x) => !x.startsWith(" "))).toEqual(["ATTACHMENTS", "VMS"]);
  });
  test("the CLI: repeatable, --json keeps only those keys, a bad section is exit 2; attachments alone asks libvirt nothing", async () => {
    const env = isolatedEnv();
    const cfg = join(env.HOME!, "c.toml");
    writeFileSync(cfg, `[defaults.paths]\nlibvirt_uri = "qemu+unix:///system?socket=/nonexistent/sock"\n\n[[networks]]\nname = "n1"\nsubnet = "10.201.0.0/24"\n\n[[vms]]\nname = "box-a"\nnetwork = "n1"\n\n[[vms.attachments]]\nhost_path = "/p"\nmode = "shared-root"\naccess = "rw"\nguest_dst = "/p"\n`);
    env.AIVM_CONFIG = cfg;
    const j = await aivm(["list", "--section", "attachments", "--section", "vms", "--json"], { env });
    expect(j.exitCode).toBe(0);
    expect(Object.keys(JSON.parse(j.stdout))).toEqual(["libvirt", "attachments", "vms"]);
    const only = await aivm(["list", "--section=attachments", "--json"], { env });
    expect(JSON.parse(only.stdout)).toEqual({ attachments: [{ host_path: "/p", vm: "box-a", mode: "shared-root", access: "rw", guest_dst: "/p" }] });
    expect(only.stderr).toBe(""); // no "live state unknown": libvirt was not asked
    const text = await aivm(["list", "--section", "networks"], { env });
    expect(text.stdout.split("\n")[0]).toBe("NETWORKS");
    expect(text.stdout).not.toContain("VMS");
    for (const bad of [["--section", "disks"], ["--section", "disks", "--section", "vms"]]) {
      const r = await aivm(["list", ...bad], { env });
      expect(r.exitCode).toBe(2);
    }
  }, 30_000);
});

describe("help tree", () => {
  test("every command of the definitions, each with its purpose", async () => {
    const nodes = await commandTree(root);
    const text = formatTree(nodes);
    const lines = text.split("\n");
    expect(lines[0]).toMatch(/^aivm\s+Local libvirt/);
    for (const n of nodes.filter((x) => x.path)) {
      const word = n.path.split(" ").at(-1)!;
      expect(lines.some((l) => new RegExp(`[├└]── ${word}( \\[[A-Z]+\\])?\\s+${n.description.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`).test(l))).toBe(true);
    }
    const r = await aivm(["help", "tree"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trimEnd()).toBe(text);
    const j = JSON.parse((await aivm(["help", "tree", "--json"])).stdout) as { command: string; description: string }[];
    expect(j.map((x) => x.command)).toEqual(nodes.map((n) => (n.path ? `aivm ${n.path}` : "aivm")));
    expect(j.find((x) => x.command === "aivm attach")!.description).toBe(nodes.find((n) => n.path === "attach")!.description);
  }, 30_000);

  test("help raw --json: the same sections as data", async () => {
    const env = isolatedEnv();
    const r = await aivm(["help", "raw", "--json"], { env });
    expect(r.exitCode).toBe(0);
    const j = JSON.parse(r.stdout) as { vm: string; chosen: { rule: string }; sections: { title: string; lines: string[] }[] };
    expect(j.chosen.rule).toBe("defaults");
    expect(j.sections.map((s) => s.title.split(" ")[0])).toEqual(["3.", "4.", "5.", "6.", "6.", "7.", "8."]);
    expect(j.sections[0]!.lines[0]).toContain("net-define /dev/stdin");
  }, 30_000);
});
