import { expect, test } from "bun:test";
import { join } from "node:path";
import { aivm, BUN, isolatedEnv, ROOT } from "./helpers/cli.ts";
import { describeUp, up, UpReport } from "../lib/flows/up.ts";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { resolveVm } from "../lib/config/resolve.ts";
import { fakeRunner } from "./helpers/fake-runner.ts";

const report = (over: Partial<UpReport["changes"]> = {}, changed = true): UpReport => ({
  vm: "box", ip: "10.77.0.100", network: "aivm-net", changed,
  changes: { network: "created", firewall: "applied", image: "fetched", store: "recorded", vm: "created", state: "started", sshConfig: "written", ...over },
});

test("describeUp: a first run lists what it did; a second says nothing changed", () => {
  expect(describeUp(report())).toEqual([
    "network aivm-net: created",
    "firewall: applied",
    "image: fetched",
    "vm box: created, started",
    "ssh config: written",
    "config: recorded box",
    "ready: box at 10.77.0.100; connect with `ssh box` or `aivm vm ssh`",
  ]);
  const again = describeUp(report({ network: "unchanged", firewall: "unchanged", image: "cached", store: "unchanged", vm: "unchanged", state: "unchanged", sshConfig: "unchanged" }, false));
  expect(again.at(-1)).toBe("nothing changed: box is already up at 10.77.0.100");
});

test("a second `aivm up` while the first still runs waits for it (saying so), then goes on", async () => {
  const env = isolatedEnv();
  // a libvirt that never answers: after the wait, up stops at its first read (exit 69) and records nothing
  const cfg = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
  mkdirSync(join(env.XDG_CONFIG_HOME!, "aivm"), { recursive: true });
  writeFileSync(cfg, '[defaults.paths]\nlibvirt_uri = "qemu+unix:///system?socket=/nonexistent/aivm-test.sock"\n');
  const lock = join(env.XDG_DATA_HOME!, "aivm", "vms", "box", ".lock");
  const holder = Bun.spawn([BUN, "-e", `const { acquireLock } = await import(${JSON.stringify(join(ROOT, "lib/lock.ts"))}); acquireLock(${JSON.stringify(lock)}); console.log("held"); await Bun.sleep(20000);`], { stdout: "pipe", env });
  const reader = (holder.stdout as ReadableStream<Uint8Array>).getReader();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain("held");
  try {
    const pending = aivm(["up", "--vm", "box", "--yes"], { env });
    await Bun.sleep(1500);
    holder.kill();
    const r = await pending;
    expect(r.stderr).toContain("up: waiting for another aivm process working on box");
    expect(r.exitCode).toBe(69);
    expect(r.stdout).toBe("");
    expect(readFileSync(cfg, "utf8")).not.toContain("[[vms]]");
  } finally {
    holder.kill();
  }
});

test("an image checksum mismatch stops `aivm up` before libvirt, nftables or the store change", async () => {
  const dir = mkdtempSync(join(tmpdir(), "aivm-up-"));
  const src = join(dir, "base.img");
  writeFileSync(src, "not the pinned image");
  const doc = { defaults: { image: { url: `file://${src}`, sha256: "a".repeat(64) }, paths: { image_cache: join(dir, "cache"), vm_root: join(dir, "vms") } } };
  const vm = resolveVm(doc, "box");
  const { runner, fake } = fakeRunner();
  fake.on(["virsh", "-q", "-c", "qemu:///system", "version", "--daemon"], { stdout: "Running against daemon: 9.0.0\n" });
  fake.on(["virsh", "-q", "-c", "qemu:///system", "domstate", "box"], { exitCode: 1, stderr: "error: failed to get domain 'box'" });
  fake.on(["install"], {}).on(["mkdir"], {}).on(["cp"], (argv) => { writeFileSync(argv.at(-1)!, "not the pinned image"); return {}; }).on(["rm"], {});
  const config = join(dir, "config.toml");
  const err = (await up(runner, config, doc, vm).catch((e: Error) => e)) as Error;
  expect(String(err.message)).toContain("sha256 mismatch");
  expect(fake.commands().filter((c) => /^(nft|virsh .* (net-define|net-start|define|start))/.test(c))).toEqual([]);
  expect(existsSync(config)).toBe(false);
  expect(existsSync(join(dir, "cache")) ? readdirSync(join(dir, "cache")).filter((f) => f.endsWith(".img")) : []).toEqual([]);
});

test("a failed aivm up leaves nothing: libvirtd unreachable (exit 69) or a failed fetch (exit 1); no lock file, no empty directory", async () => {
  const env = isolatedEnv();
  const home = env.HOME!;
  const files = (d: string): string[] => readdirSync(d, { recursive: true }).map(String).filter((p) => !p.startsWith(".cache/bun")).sort();
  const cfg = join(home, ".config", "aivm", "config.toml");
  mkdirSync(join(home, ".config", "aivm"), { recursive: true });
  mkdirSync(join(home, ".ssh"));
  writeFileSync(join(home, ".ssh", "id.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEexampleEXAMPLEexampleEXAMPLEexample me\n");
  const store = (uri: string, url: string) => `[defaults.vm]\nname = "box"\naccel = "tcg"\n\n[defaults.image]\nurl = "${url}"\nsha256 = "${"c".repeat(64)}"\n\n[defaults.paths]\nssh_identity = "${join(home, ".ssh", "id")}"\nlibvirt_uri = "${uri}"\n`;
  writeFileSync(cfg, store("qemu+unix:///system?socket=/nonexistent/aivm-test.sock", `file://${join(home, "missing.img")}`));
  const before = files(home);
  const r = await aivm(["up", "--yes"], { env });
  expect(r.exitCode).toBe(69);
  expect(r.stderr).toContain("aivm: libvirt: cannot reach libvirtd");
  expect(files(home)).toEqual(before);
  // reachable (libvirt's test driver), but the image cannot be fetched: nothing cached, no lock, no cache directory
  const src = join(home, "src.img");
  writeFileSync(src, "not the pinned bytes");
  writeFileSync(cfg, store("test:///default", `file://${src}`));
  const before2 = files(home);
  const f = await aivm(["up", "--yes"], { env });
  expect(f.exitCode).toBe(1);
  expect(f.stderr).toContain("sha256 mismatch");
  expect(files(home)).toEqual(before2);
}, 30_000);
