import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner, testHost } from "./helpers/fake-runner.ts";
import { aivm, isolatedEnv, ROOT, BUN } from "./helpers/cli.ts";
import { accelCheck, doctor, findProgram, formatChecks, installDepsStep, isDebianLike, programChecks, storageCheck, traversalBlockers } from "../lib/doctor.ts";
import { realHost } from "../lib/host.ts";
import { resolvePaths } from "../lib/config/resolve.ts";
import { planLines } from "../lib/cli/help.ts";
import { parseTable } from "../lib/libvirt/parse.ts";
import { formatListing, listAll } from "../lib/flows/list.ts";

const URI = "qemu:///system";

describe("doctor checks", () => {
  test("programs: found on PATH or at an absolute path, else the package to install", () => {
    const host = testHost({ which: (n: string) => (n === "virsh" ? "/usr/bin/virsh" : null) });
    const checks = programChecks(host);
    expect(checks[0]).toEqual({ name: "program virsh", ok: true, detail: "/usr/bin/virsh" });
    const nft = checks.find((c) => c.name === "program nft")!;
    expect(nft.ok).toBe(false);
    expect(nft.fix).toContain("nftables");
    expect(findProgram(host, ["nope-x", "/bin/sh"])).toBe("/bin/sh");
  });

  test("acceleration: KVM or an optional TCG warning with the reason", () => {
    expect(accelCheck({ kvmUsable: true, cpuVirt: true }).ok).toBe(true);
    const tcg = accelCheck({ kvmUsable: true, cpuVirt: false });
    expect(tcg).toMatchObject({ ok: false, optional: true });
    expect(tcg.detail).toContain("vmx or svm");
  });

  test("storage: every ancestor must let others traverse", () => {
    const modes: Record<string, number> = { "/": 0o755, "/home": 0o755, "/home/u": 0o700, "/home/u/vms": 0o755 };
    const host = testHost({ stat: (p: string) => (p in modes ? { ...realHost.stat("/")!, mode: modes[p]! } : null) });
    expect(traversalBlockers(host, "/home/u/vms/x")).toEqual(["/home/u"]);
    const dir = mkdtempSync(join(tmpdir(), "aivm-st-"));
    mkdirSync(join(dir, "closed/vms"), { recursive: true });
    chmodSync(dir, 0o755);
    chmodSync(join(dir, "closed"), 0o700);
    const c = storageCheck(realHost, { ...resolvePaths({}), vmRoot: join(dir, "closed/vms"), imageCache: dir });
    expect(c.ok).toBe(false);
    expect(c.fix).toContain(`chmod o+x ${join(dir, "closed")}`);
  });

  test("doctor: libvirtd unreachable and nft failing are failures with fixes; exit status comes from the non-optional ones", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(["virsh"], { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory" });
    fake.on(["nft", "list", "tables"], { exitCode: 1, stderr: "Error: Operation not permitted" });
    const checks = await doctor(runner, resolvePaths({}));
    const lv = checks.find((c) => c.name === "libvirtd")!;
    expect(lv.ok).toBe(false);
    expect(lv.detail).toContain("/var/run/libvirt/libvirt-sock");
    expect(checks.find((c) => c.name.startsWith("firewall"))).toMatchObject({ ok: false, detail: "Operation not permitted" });
    expect(formatChecks(checks).join("\n")).toContain("FAIL  libvirtd");
  });
});

describe("host install-deps", () => {
  test.each([
    ["ID=debian\nVERSION_ID=12", true],
    ['ID=ubuntu\nID_LIKE="debian"', true],
    ['ID=linuxmint\nID_LIKE="ubuntu debian"', true],
    ["ID=fedora", false],
    ["", false],
  ])("%p is Debian-like: %p", (text, want) => {
    expect(isDebianLike(text)).toBe(want);
  });

  test("one consent step: apt-get update then install, privileged", async () => {
    const { runner, printed } = fakeRunner({ dryRun: true, isRoot: false });
    await runner.step(installDepsStep(["a", "b"]));
    expect(printed).toEqual([
      "# step: Install host packages (aivm needs libvirt, qemu, nftables, an ISO tool and OpenSSH)",
      "sudo env DEBIAN_FRONTEND=noninteractive apt-get update",
      "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends a b",
    ]);
  });

  test("without a terminal and --yes it refuses (exit 2) before running anything", async () => {
    const r = await aivm(["host", "install-deps"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--yes");
  });
});

describe("help plan", () => {
  test("--config is added only for a non-default store, shell-quoted", () => {
    const env = isolatedEnv();
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      expect(planLines(join(env.XDG_CONFIG_HOME!, "aivm", "config.toml")).join("\n")).not.toContain("--config");
      const lines = planLines("/tmp/my store.toml");
      expect(lines[0]).toStartWith("1. aivm config init --config '/tmp/my store.toml'");
      expect(lines.filter((l) => l.includes("--config '/tmp/my store.toml'")).length).toBe(lines.length);
    } finally {
      process.env = saved;
    }
  });
});

describe("list", () => {
  test("parses virsh tables", () => {
    expect(parseTable(" 1    web   running\n -    db    shut off\n", 1, [2])).toEqual(new Map([["web", "running"], ["db", "shut off"]]));
    expect(parseTable(" aivm-net   active   yes   yes\n", 0, [1, 2])).toEqual(new Map([["aivm-net", "active"]]));
  });

  test("store records with live state; unreachable libvirtd is unknown, not absent", async () => {
    const doc = { vms: [{ name: "a", network: "n", attachments: [{ host_path: "/p", mode: "git" as const, access: "rw" as const, guest_dst: "/p" }] }, { name: "b", network: "n" }], networks: [{ name: "n" }] };
    const { runner, fake } = fakeRunner();
    fake.on(["virsh", "-q", "-c", URI, "list", "--all"], { stdout: " 3  a  running\n" });
    fake.on(["virsh", "-q", "-c", URI, "net-list", "--all"], { stdout: " n  active  yes  yes\n" });
    const l = await listAll(runner, doc);
    expect(l.vms!.map((v) => [v.name, v.state, v.attachments])).toEqual([["a", "running", 1], ["b", "absent", 0]]);
    expect(l.networks![0]).toMatchObject({ name: "n", active: true, vms: ["a", "b"] });
    expect(l.attachments).toEqual([{ host_path: "/p", vm: "a", mode: "git", access: "rw", guest_dst: "/p" }]);
    expect(formatListing(l)).toContain("a  state=running");

    const down = fakeRunner();
    down.fake.on(["virsh"], { exitCode: 1, stderr: "error: failed to connect to the hypervisor" });
    const l2 = await listAll(down.runner, doc);
    expect(l2.libvirt!.reachable).toBe(false);
    expect(l2.vms![0]!.state).toBe("unknown (libvirtd unreachable)");
    expect(l2.networks![0]!.active).toBeNull();
  });
});

