// `aivm vm ...` through the dispatcher with an injected fake runner.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, ROOT } from "./helpers/cli.ts";
import { FakeBackend } from "./helpers/fake-runner.ts";
import { runMain } from "./helpers/main.ts";
import { inject } from "../lib/cli/_shared.ts";
import { Runner } from "../lib/run.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { loadStore } from "../lib/config/store.ts";
import { vmFiles } from "../lib/vm/files.ts";
import { macAddress } from "../lib/domain.ts";
import { EXIT } from "../lib/errors.ts";
import { renderRuleset } from "../lib/fw.ts";
import { NO_DOMAIN, SHA, storeToml, V } from "./helpers/fixtures.ts";


let root: string;
let cfg: string;
let fake: FakeBackend;
let printed: string[];

const config = (extra = ""): string => storeToml(root, extra);

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "aivm-vmcli-"));
  mkdirSync(join(root, "images"), { recursive: true });
  writeFileSync(join(root, "images", `${SHA}.img`), "");
  writeFileSync(join(root, "images", `${SHA}.json`), JSON.stringify({ sha256: SHA, format: "qcow2", source: "file:///base.qcow2", created: "2026-01-01T00:00:00Z" }));
  writeFileSync(join(root, "id.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd8bA4GkOQ6+9W1fU8vU1mC2o8m9uF3oVb2Q8x6oYy user@host\n");
  mkdirSync(join(root, "cfg"), { recursive: true });
  cfg = join(root, "cfg", "config.toml");
  writeFileSync(cfg, config());
  fake = new FakeBackend();
  printed = [];
  inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes, print: (t) => printed.push(t) });
});
afterEach(() => { delete inject.runner; });

const vm = () => resolveVm(loadStore(cfg).doc);

function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const i = argv.indexOf("--");
  return runMain(i < 0 ? [...argv, "--config", cfg] : [...argv.slice(0, i), "--config", cfg, ...argv.slice(i)]);
}

/** The real tools' effects on disk, for a create. */
function scriptCreate() {
  const f = vmFiles(vm());
  fake.on([...V, "domuuid", "box"], NO_DOMAIN);
  fake.diskTools();
  fake.on([...V, "define", "/dev/stdin"], {});
  void f;
}

const onDisk = () => fake.onDisk();

const ssh = (a: string[]) => a[0] === "ssh";
const lease = (ip: string) => ({ stdout: `2026-03-01 12:00:00  ${macAddress("box")}  ipv4  ${ip}/24  box  -\n` });

describe("aivm vm", () => {
  test("xml: the domain for the resolved VM, without libvirt", async () => {
    const r = await run("vm", "xml");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("<name>box</name>");
    expect(r.stdout).toContain(`<source file='${join(root, "vms", "box", "disk.qcow2")}'/>`);
    expect(r.stdout).toContain("type='qemu'");
    expect(fake.calls).toEqual([]);
  });

  test("cloud-init before create: a placeholder host key, said on stderr; a bad --part is exit 2", async () => {
    const r = await run("vm", "cloud-init", "--part", "user-data");
    expect(r.code).toBe(0);
    expect(r.stdout).toStartWith("#cloud-config");
    expect(r.stdout).toContain("PLACEHOLDER");
    expect(r.stderr).toContain("no host key yet");
    const n = await run("vm", "cloud-init", "--part", "network-config");
    expect(n.code).toBe(0);
    expect(n.stderr).toBe("");
    expect((await run("vm", "cloud-init", "--part", "vendor-data")).code).toBe(EXIT.USAGE);
    expect(fake.calls).toEqual([]);
  });

  test("create --dry-run prints the plan and changes nothing (no dir, no config write)", async () => {
    scriptCreate();
    const before = readFileSync(cfg, "utf8");
    const r = await run("vm", "create", "--dry-run");
    expect(r.code).toBe(0);
    const text = printed.join("\n");
    expect(text).toContain("qemu-img create -q -f qcow2 -F qcow2 -b");
    expect(text).toContain("# step: Define VM box");
    expect(fake.commands()).toEqual([`${V.join(" ")} domuuid box`]);
    expect(existsSync(join(root, "vms", "box"))).toBe(false);
    expect(readFileSync(cfg, "utf8")).toBe(before);
  });

  test("create --yes builds the VM and records it in the store; a second create changes nothing", async () => {
    scriptCreate();
    const r = await run("vm", "create", "--yes");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    expect(fake.commands().some((c) => c.includes("define /dev/stdin"))).toBe(true);
    expect(loadStore(cfg).doc.vms?.map((v) => v.name)).toEqual(["box"]);
    fake.on([...V, "domuuid", "box"], { stdout: "0b3c1c1e-0000-4000-8000-000000000001\n" });
    for (const p of [vmFiles(vm()).disk, vmFiles(vm()).seed]) writeFileSync(p, "");
    fake.calls.length = 0;
    const again = await run("vm", "create", "--yes");
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("nothing changed");
    expect(fake.commands()).toEqual([`${V.join(" ")} domuuid box`]);
  });

  test("create without --yes and no terminal: exit 2, nothing left behind", async () => {
    scriptCreate();
    const r = await run("vm", "create");
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stderr).toContain("--yes");
    expect(existsSync(join(root, "vms", "box"))).toBe(false);
  });

  test("up re-applies the firewall before starting", async () => {
    fake.on(["nft", "list", "table"], { exitCode: 1, stderr: "Error: No such file or directory\n" });
    fake.on(["nft", "-f", "-"], {});
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "start", "box"], {});
    const r = await run("vm", "up", "--yes");
    expect(r.code).toBe(0);
    const cmds = fake.commands();
    expect(cmds.indexOf("nft -f -")).toBeLessThan(cmds.indexOf(`${V.join(" ")} start box`));
    expect(fake.calls.find((c) => c.argv?.join(" ") === "nft -f -")!.input).toBe(renderRuleset(vm().network));
  });

  test("up of a VM that was never created: exit 1 pointing at vm create; nothing changed, not even the firewall", async () => {
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    const r = await run("vm", "up", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("not created: run aivm vm create");
    expect(fake.commands().filter((c) => c.startsWith("nft"))).toEqual([]);
    // the lock file's directories are gone again: no empty VM dir, no new vm_root
    expect(existsSync(join(root, "vms"))).toBe(false);
  });

  test("down: ACPI shutdown, no destroy when the guest stops", async () => {
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "domstate", "box"], { stdout: "running\n" }, 1);
    fake.on([...V, "shutdown", "box"], {});
    const r = await run("vm", "down", "--yes");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("box: shut down");
    expect(fake.commands().some((c) => c.includes("destroy"))).toBe(false);
  });

  test("a second concurrent operation on the same VM waits for the first (a progress line), then does its work", async () => {
    const lock = vmFiles(vm()).lock;
    mkdirSync(join(lock, ".."), { recursive: true });
    const holder = Bun.spawn([BUN, "-e", `import { acquireLock } from ${JSON.stringify(join(ROOT, "lib/lock.ts"))}; acquireLock(${JSON.stringify(lock)}); console.log("held"); await Bun.sleep(20000);`], { stdout: "pipe", stderr: "inherit" });
    try {
      const reader = holder.stdout.getReader();
      const { value } = await reader.read();
      expect(new TextDecoder().decode(value)).toContain("held");
      fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
      const pending = run("vm", "down", "--yes");
      await Bun.sleep(600);
      expect(fake.calls).toEqual([]); // still waiting: nothing ran
      holder.kill();
      await holder.exited;
      const r = await pending;
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("vm down: waiting for another aivm process working on box");
      expect(fake.commands()).toEqual([`${V.join(" ")} domstate box`]);
    } finally {
      holder.kill();
      await holder.exited;
    }
  });

  test("delete --yes: destroy, undefine, remove the VM dir", async () => {
    mkdirSync(join(root, "vms", "box"), { recursive: true });
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "destroy", "box"], {});
    fake.on([...V, "undefine", "box"], {});
    onDisk();
    const r = await run("vm", "delete", "--yes");
    expect(r.code).toBe(0);
    expect(fake.calls.filter((c) => c.kind === "remove").map((c) => c.path)).toEqual([join(root, "vms", "box")]);
    expect(existsSync(join(root, "vms", "box"))).toBe(false);
  });

  test("up with libvirtd unreachable: exit 69 naming the socket, no firewall change", async () => {
    fake.on([...V, "domstate", "box"], { exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n" });
    const r = await run("vm", "up", "--yes");
    expect(r.code).toBe(69);
    expect(r.stderr).toContain("/var/run/libvirt/libvirt-sock");
    expect(fake.commands().filter((c) => c.startsWith("nft"))).toEqual([]);
  });

  test("delete forgets the VM: its store record goes, its network record stays, and says how to remove the network", async () => {
    writeFileSync(cfg, config(`[[networks]]\nname = "aivm-net"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n`));
    mkdirSync(join(root, "vms", "box"), { recursive: true });
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "undefine", "box"], {});
    onDisk();
    const r = await run("vm", "delete", "--yes");
    expect(r.code).toBe(0);
    const doc = loadStore(cfg).doc;
    expect(doc.vms ?? []).toEqual([]);
    expect(doc.networks?.map((n) => n.name)).toEqual(["aivm-net"]);
    expect(r.stderr).toContain("`aivm net destroy aivm-net`");
  });

  test("delete of a VM that does not exist: exit 0, says so", async () => {
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    const r = await run("vm", "delete", "--yes");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("does not exist");
    expect(existsSync(join(root, "vms", "box"))).toBe(false);
  });

  test("list --json and status --json", async () => {
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], lease("10.77.0.9"));
    const l = await run("vm", "list", "--json");
    expect(l.code).toBe(0);
    expect(JSON.parse(l.stdout)).toEqual([{ name: "box", state: "running", network: "aivm-net", ip: "10.77.0.9" }]);
    const t = await run("vm", "list");
    expect(t.stdout).toBe("box\trunning\taivm-net\t10.77.0.9\n");
    const s = await run("vm", "status", "--json");
    expect(JSON.parse(s.stdout)).toMatchObject({ name: "box", state: "running", ip: "10.77.0.9", image: { sha256: SHA, cached: true }, recorded: false });
  });

  test("ip prints the address; no lease on a running VM is exit 1 with a hint", async () => {
    fake.on([...V, "net-dhcp-leases"], lease("10.77.0.9"));
    expect(await run("vm", "ip")).toMatchObject({ code: 0, stdout: "10.77.0.9\n" });
    fake.on([...V, "net-dhcp-leases"], { stdout: "" });
    fake.on([...V, "domifaddr"], { stdout: "" });
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    const r = await run("vm", "ip");
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("no IP address yet");
  });

  test("ssh -- CMD passes the remote exit code through, with no message", async () => {
    fake.on([...V, "net-dhcp-leases"], lease("10.77.0.9"));
    fake.on(ssh, { exitCode: 3 });
    const r = await run("vm", "ssh", "--", "exit", "3");
    expect(r.code).toBe(3);
    expect(r.stderr).toBe("");
    const argv = fake.calls.find((c) => c.argv?.[0] === "ssh")!.argv!;
    expect(argv.join(" ")).toContain("StrictHostKeyChecking=yes");
    expect(argv.join(" ")).toContain("10.77.0.9");
    expect(argv.slice(-2)).toEqual(["--", "exit 3"]);
    // each argument arrives whole: quoted for the guest's shell; --shell sends its line as typed
    fake.on(ssh, { exitCode: 0 });
    await run("vm", "ssh", "--", "touch", "two words.txt", "it's");
    expect(fake.calls.filter((c) => c.argv?.[0] === "ssh").at(-1)!.argv!.slice(-2)).toEqual(["--", `touch 'two words.txt' 'it'\\''s'`]);
    await run("vm", "ssh", "--shell", "cd /tmp && ls *.txt");
    expect(fake.calls.filter((c) => c.argv?.[0] === "ssh").at(-1)!.argv!.slice(-2)).toEqual(["--", "cd /tmp && ls *.txt"]);
    expect((await run("vm", "ssh", "--shell", "true", "--", "true")).code).toBe(2);
    fake.on(ssh, { exitCode: 0 });
    expect((await run("vm", "ssh", "--", "true")).code).toBe(0);
  });

  test("wait --timeout must be whole seconds (exit 2); wait prints the IP", async () => {
    expect((await run("vm", "wait", "--timeout", "soon")).code).toBe(EXIT.USAGE);
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], lease("10.77.0.9"));
    fake.on(ssh, { exitCode: 0, stdout: 'result\n{"v1": {"errors": []}}\n' });
    expect(await run("vm", "wait", "--timeout", "5")).toMatchObject({ code: 0, stdout: "10.77.0.9\n" });
  });

  test("console-log prints the log; absent is exit 1 with a hint", async () => {
    const r = await run("vm", "console-log");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no console log");
    expect(r.stderr).toContain("hint:");
    mkdirSync(join(root, "vms", "box"), { recursive: true });
    writeFileSync(join(root, "vms", "box", "console.log"), "[    0.000000] Linux version 6.1\n");
    expect(await run("vm", "console-log")).toMatchObject({ code: 0, stdout: "[    0.000000] Linux version 6.1\n" });
  });

  test("update of a VM that is not created: exit 1, says so (more in test/vm-update.test.ts)", async () => {
    fake.on([...V, "domstate", "box"], NO_DOMAIN);
    const r = await run("vm", "update", "--yes");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("not created");
  });
});

describe("vm cloud-init: the guest's private host key is a secret", () => {
  test("redacted unless --show-secrets", async () => {
    const f = vmFiles(vm());
    mkdirSync(f.dir, { recursive: true });
    writeFileSync(f.hostKey, "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n");
    writeFileSync(f.hostKeyPub, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHostKey12 box\n");
    const r = await run("vm", "cloud-init", "--part", "user-data");
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain("SECRETKEYMATERIAL");
    expect(r.stdout).toContain("REDACTED");
    expect(r.stdout).toContain("AAAAC3NzaC1lZDI1NTE5AAAAIHostKey"); // the public half stays
    const shown = await run("vm", "cloud-init", "--part", "user-data", "--show-secrets");
    expect(shown.stdout).toContain("SECRETKEYMATERIAL");
  });
});
