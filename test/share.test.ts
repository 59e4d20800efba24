// lib/share.ts planners by table, and share commands through the dispatcher with a fake runner.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runMain } from "./helpers/main.ts";
import { FakeBackend, fakeRunner, testHost } from "./helpers/fake-runner.ts";
import type { Vm } from "../lib/config/model.ts";
import { inject } from "../lib/cli/_shared.ts";
import { Runner } from "../lib/run.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { loadStore } from "../lib/config/store.ts";
import { exportRoot, sharedTag, shareRoot, shareToken, stageRoot, vmFilesystems } from "../lib/share/names.ts";
import { guestPathProblem } from "../lib/validate.ts";
import { containingAttachment, overlapping, planAttachment, withAttachment, withoutAttachment } from "../lib/share/input.ts";
import { EXIT, UsageError } from "../lib/errors.ts";
import { approveFolder, resolveThrough, sensitiveHit } from "../lib/share/preflight.ts";
import { realHost } from "../lib/host.ts";
import { releaseVmMounts } from "../lib/share/host-mounts.ts";
import { mountsUnder, parseMountinfo, type MountEntry } from "../lib/share/mountinfo.ts";
import { fstabEscape, fstabLine, GUEST_MOUNT_SCRIPT, GUEST_UNMOUNT_SCRIPT, guestIds, guestMountArgs, remoteCommand, sessionCommand } from "../lib/share/guest.ts";
import { GUEST_GIT_SCRIPT } from "../lib/git.ts";
import { attachFolder, detachFolder, restartWithDevices } from "../lib/flows/attach.ts";
import { macAddress } from "../lib/domain.ts";
import { attachment, recordedToml, storeToml, V } from "./helpers/fixtures.ts";


let root: string;
let cfg: string;
let fake: FakeBackend;
let printed: string[];

const config = (extra = ""): string => storeToml(root, extra);

const recorded = recordedToml;

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "aivm-share-")));
  mkdirSync(join(root, "cfg"), { recursive: true });
  cfg = join(root, "cfg", "config.toml");
  writeFileSync(cfg, config());
  fake = new FakeBackend();
  printed = [];
  inject.runner = ({ dryRun, yes }) => new Runner(fake, { isRoot: true, interactive: false, dryRun, yes, print: (t) => printed.push(t) });
});
afterEach(() => { delete inject.runner; });

const vm = (): Vm => resolveVm(loadStore(cfg).doc);

const run = (...argv: string[]) => runMain([...argv, "--config", cfg]);

const att = attachment;

// ---------- names ----------

describe("tokens and tags", () => {
  test.each([
    ["/home/u/my projé", /^my_proje-[0-9a-f]{10}$/],
    ["/srv/a b/c", /^c-[0-9a-f]{10}$/],
    ["/", /^root-[0-9a-f]{10}$/],
    ["/x/..hidden", /^hidden-[0-9a-f]{10}$/],
    ["/x/" + "n".repeat(80), /^n{24}-[0-9a-f]{10}$/],
  ])("shareToken(%p)", (p, re) => {
    expect(shareToken(p)).toMatch(re);
    expect(shareToken(p)).toMatch(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/);
  });
  test("same basename, different folders: different tokens; same folder: same token", () => {
    expect(shareToken("/a/proj")).not.toBe(shareToken("/b/proj"));
    expect(shareToken("/a/proj")).toBe(shareToken("/a/proj"));
  });
  test("shared tags are at most 36 characters and distinct", () => {
    for (const p of ["/a", "/x/" + "y".repeat(100), "/home/u/my projé"]) {
      expect(sharedTag(p).length).toBeLessThanOrEqual(36);
      expect(sharedTag(p)).toStartWith("aivm-");
    }
    expect(sharedTag("/a/p")).not.toBe(sharedTag("/b/p"));
  });
  test("every VM has the aivm-root device; shared folders add one each", () => {
    const v = { ...vm(), attachments: [att("/p"), att("/q", { mode: "shared" }), att("/r", { mode: "git" })] };
    expect(vmFilesystems(v)).toEqual([
      { source: join(v.dir, "export"), tag: "aivm-root", readonly: false },
      { source: "/q", tag: sharedTag("/q"), readonly: false },
    ]);
  });
});

// ---------- input ----------

describe("guest paths and attachment planning", () => {
  test.each([
    ["/work/x", undefined],
    ["/home/agent/my projé", undefined],
    ["/work/x/", undefined],
    ["/var/tmp/w", undefined],
    ["/devices", undefined],
    ["/library", undefined],
    ["/mnt/data", undefined],
    ["relative", '"relative" is not an absolute path'],
    ["/", `"/" is the guest's root directory`],
    ["/proc", '"/proc" is under /proc, a system directory of the guest'],
    ["/proc/1", '"/proc/1" is under /proc, a system directory of the guest'],
    ["/proc/../etc", '"/proc/../etc" is not a normalized path (no //, . or .. segments)'],
    ["/work/./x", '"/work/./x" is not a normalized path (no //, . or .. segments)'],
    ["/work//x", '"/work//x" is not a normalized path (no //, . or .. segments)'],
    ["/etc", '"/etc" is under /etc, a system directory of the guest'],
    ["/etc/ssh", '"/etc/ssh" is under /etc, a system directory of the guest'],
    ["/boot/efi", '"/boot/efi" is under /boot, a system directory of the guest'],
    ["/usr/local/bin", '"/usr/local/bin" is under /usr, a system directory of the guest'],
    ["/bin", '"/bin" is under /bin, a system directory of the guest'],
    ["/sbin", '"/sbin" is under /sbin, a system directory of the guest'],
    ["/lib64", '"/lib64" is under /lib64, a system directory of the guest'],
    ["/lib/x86_64-linux-gnu", '"/lib/x86_64-linux-gnu" is under /lib, a system directory of the guest'],
    ["/sys/x", '"/sys/x" is under /sys, a system directory of the guest'],
    ["/dev/shm", '"/dev/shm" is under /dev, a system directory of the guest'],
    ["/run/user/1000", '"/run/user/1000" is under /run, a system directory of the guest'],
    ["/var/lib/docker", '"/var/lib/docker" is under /var/lib, a system directory of the guest'],
    ["/var", '"/var" would hide /var/lib, a system directory of the guest'],
    ["/mnt", '"/mnt" would hide /mnt/aivm-root, a system directory of the guest'],
    ["/mnt/aivm-root/t", '"/mnt/aivm-root/t" is under /mnt/aivm-root, a system directory of the guest'],
    ["/a\nb", '"/a\\nb" contains control characters'],
    [42, "42 is not an absolute path"],
  ])("guestPathProblem(%p) = %p", (p, want) => {
    expect(guestPathProblem(p)).toBe(want as string | undefined);
  });
  test("defaults: shared-root, rw, same path", () => {
    expect(planAttachment(vm(), "/p", {})).toEqual({ att: att("/p"), saved: false });
  });
  test("the saved record wins where options are omitted; a different explicit one is exit 2 naming detach", () => {
    const v = { ...vm(), attachments: [att("/p", { access: "ro", guest_dst: "/g" })] };
    expect(planAttachment(v, "/p", {}).att).toEqual(att("/p", { access: "ro", guest_dst: "/g" }));
    expect(planAttachment(v, "/p", { access: "ro" }).saved).toBe(true);
    for (const o of [{ access: "rw" as const }, { mode: "git" as const }, { guestDst: "/other" }]) {
      let err: unknown;
      try { planAttachment(v, "/p", o); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).hint).toContain("aivm share detach /p");
    }
  });
  test("shared + ro and git + ro are refused (exit 2); shared + ro points at shared-root", () => {
    expect(() => planAttachment(vm(), "/p", { mode: "shared", access: "ro" })).toThrow(/readonly/);
    try { planAttachment(vm(), "/p", { mode: "shared", access: "ro" }); } catch (e) { expect((e as UsageError).hint).toContain("shared-root"); expect((e as UsageError).exitCode).toBe(EXIT.USAGE); }
    expect(() => planAttachment(vm(), "/p", { mode: "git", access: "ro" })).toThrow(UsageError);
  });
  test("a guest path already used by another folder is refused", () => {
    const v = { ...vm(), attachments: [att("/p", { guest_dst: "/g" })] };
    expect(() => planAttachment(v, "/q", { guestDst: "/g" })).toThrow(/already used by \/p/);
  });
  test("overlap: parent or child of an attached folder, not siblings or the folder itself", () => {
    const v = { ...vm(), attachments: [att("/w/a")] };
    expect(overlapping(v, "/w").map((a) => a.host_path)).toEqual(["/w/a"]);
    expect(overlapping(v, "/w/a/b").map((a) => a.host_path)).toEqual(["/w/a"]);
    expect(overlapping(v, "/w/ab")).toEqual([]);
    expect(overlapping(v, "/w/a")).toEqual([]);
  });
  test("store records: add (replacing the same folder) and remove", () => {
    const doc = { vms: [{ name: "box", network: "n" }] };
    withAttachment(doc, "box", att("/p"));
    withAttachment(doc, "box", att("/p", { access: "ro" }));
    expect(doc.vms[0]).toEqual({ name: "box", network: "n", attachments: [att("/p", { access: "ro" })] } as never);
    withoutAttachment(doc, "box", "/p");
    expect(doc.vms[0]).toEqual({ name: "box", network: "n" });
  });
});

// ---------- preflight ----------

describe("safety preflight", () => {
  let home: string;
  beforeEach(() => {
    home = join(root, "home", "u");
    for (const d of [".ssh", ".config/gh", "proj/sub"]) mkdirSync(join(home, d), { recursive: true });
  });
  test.each([
    ["home itself", (h: string) => h, /is a home directory/],
    ["a parent of home", (h: string) => join(h, ".."), /contains the home directory/],
    ["/", () => "/", /contains the home directory/],
    ["~/.ssh", (h: string) => join(h, ".ssh"), /is the secrets directory/],
    ["inside ~/.ssh", (h: string) => join(h, ".ssh", "keys"), /inside the secrets directory/],
    ["~/.config (parent of ~/.config/gh)", (h: string) => join(h, ".config"), /contains the secrets directory/],
    ["/etc/ssh", () => "/etc/ssh", /is \/etc\/ssh/],
    ["/etc", () => "/etc", /contains \/etc\/ssh/],
    ["/root", () => "/root", /is \/root|contains/],
    ["a project in home", (h: string) => join(h, "proj"), null],
    ["a subfolder of a project", (h: string) => join(h, "proj", "sub"), null],
  ])("%s", (_n, path, want) => {
    const hit = sensitiveHit(path(home), { homes: [home], realpath: (x) => resolveThrough(realHost, x) });
    if (want === null) expect(hit).toBeNull();
    else expect(hit).toMatch(want);
  });
  test("compared after symlink resolution: a link to ~/.ssh, and a home reached through a link", () => {
    symlinkSync(join(home, ".ssh"), join(root, "innocent"));
    const realpath = (x: string) => resolveThrough(realHost, x);
    expect(sensitiveHit(join(root, "innocent"), { homes: [home], realpath })).toMatch(/secrets directory/);
    symlinkSync(home, join(root, "homelink"));
    expect(sensitiveHit(join(home, ".gnupg"), { homes: [join(root, "homelink")], realpath })).toMatch(/secrets directory/);
  });
  test("override: --yes (logged), typing yes; a bare y or no terminal refuses with exit 2", async () => {
    const p = join(home, ".ssh");
    const ctx = { homes: [home], configPath: join(root, "cfg", "config.toml"), paths: vm().paths };
    await approveFolder(fakeRunner({ yes: true }).runner, "t", p, ctx);
    await approveFolder(fakeRunner({ yes: false, interactive: true, ask: async () => "yes\n" }).runner, "t", p, ctx);
    await expect(approveFolder(fakeRunner({ yes: false, interactive: true, ask: async () => "y" }).runner, "t", p, ctx)).rejects.toThrow(/refusing/);
    await expect(approveFolder(fakeRunner({ yes: false, interactive: false }).runner, "t", p, ctx)).rejects.toMatchObject({ exitCode: EXIT.USAGE });
    await approveFolder(fakeRunner({ yes: false, interactive: false }).runner, "t", join(home, "proj"), ctx);
  });
});

// ---------- host mounts ----------

const entry = (target: string, o: Partial<MountEntry> = {}): MountEntry => ({ target, root: "/", options: "rw,relatime", optional: "", fstype: "ext4", source: "/dev/vda", ...o });

describe("host binds", () => {
  test("mountinfo: octal escapes, optional fields, the last mount on a path wins", () => {
    const m = parseMountinfo([
      "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
      "54 27 254:0 /srv/my\\040proj /v/export/t rw,relatime shared:3 - ext4 /dev/vda rw",
      "55 54 254:0 /srv/other /v/export/t ro,relatime master:4 - ext4 /dev/vda rw",
    ].join("\n"));
    expect(m.get("/v/export/t")).toEqual({ target: "/v/export/t", root: "/srv/other", options: "ro,relatime", optional: "master:4", fstype: "ext4", source: "/dev/vda" });
    expect(parseMountinfo("60 27 0:1 /a\\040b /x\\040y rw - tmpfs t rw").get("/x y")?.root).toBe("/a b");
  });
  test("before vm.dir is removed every mount under it is unmounted, deepest first; a survivor refuses the delete", async () => {
    const v = vm();
    const exp = exportRoot(v);
    const table = new Map([[exp, entry(exp)], [`${exp}/a`, entry(`${exp}/a`)], ["/elsewhere", entry("/elsewhere")], [`${v.dir}x`, entry(`${v.dir}x`)]]);
    expect(mountsUnder(v.dir, table)).toEqual([`${exp}/a`, exp]);
    const { runner, fake } = fakeRunner();
    fake.on(["umount"], {});
    await releaseVmMounts(runner, v, () => new Map());
    expect(fake.commands()).toEqual([]);
    await expect(releaseVmMounts(runner, v, () => table)).rejects.toThrow(/still mounted under/);
    expect(fake.commands()).toEqual([`umount ${exp}/a`, `umount ${exp}`]);
  });
  test("a umount that takes its propagated copy with it: the copy is not unmounted again (it would fail: not mounted)", async () => {
    const v = vm();
    const exp = exportRoot(v);
    const share = shareRoot(v);
    let table = new Map([[exp, entry(exp)], [`${exp}/t/.git/config`, entry(`${exp}/t/.git/config`)], [`${share}/t/.git/config`, entry(`${share}/t/.git/config`)]]);
    const { runner, fake } = fakeRunner();
    fake.on(["umount"], (argv) => {
      const t = argv.at(-1)!;
      table = new Map([...table].filter(([k]) => k !== t && !k.endsWith(t.slice(v.dir.length).replace(/^\/(export|share)/, ""))));
      return {};
    });
    await releaseVmMounts(runner, v, () => table);
    expect(fake.commands()).toEqual([`umount ${exp}/t/.git/config`, `umount ${exp}`]);
  });
});

// ---------- guest side ----------

describe("guest fstab and scripts", () => {
  test("fstab fields are octal-escaped", () => {
    expect(fstabEscape("/a b\tc\\d")).toBe("/a\\040b\\011c\\134d");
  });
  test.each([
    [att("/h/my proj", { guest_dst: "/g/my proj" }), `/mnt/aivm-root/${shareToken("/h/my proj")} /g/my\\040proj none bind,nofail,x-systemd.requires-mounts-for=/mnt/aivm-root 0 0`],
    [att("/h/p", { access: "ro" }), `/mnt/aivm-root/${shareToken("/h/p")} /h/p none bind,ro,nofail,x-systemd.requires-mounts-for=/mnt/aivm-root 0 0`],
    [att("/h/p", { mode: "shared" }), `${sharedTag("/h/p")} /h/p virtiofs nofail 0 0`],
  ])("fstabLine %#", (a, line) => {
    expect(fstabLine(a)).toBe(line);
    expect(line.split(" ")).toHaveLength(6);
  });
  test("the scripts are valid sh", () => {
    for (const s of [GUEST_MOUNT_SCRIPT, GUEST_UNMOUNT_SCRIPT, GUEST_GIT_SCRIPT]) {
      const r = Bun.spawnSync(["sh", "-n", "-c", s]);
      expect(r.exitCode).toBe(0);
    }
  });
  test("remote words survive ssh's join-with-spaces and the guest shell's split (spaces, quotes, non-ASCII, $)", () => {
    const words = ["sh", "-c", "echo 'x' \"$1\"", "my projé", "it's", "$HOME", "a\\b", ""];
    const joined = remoteCommand(words).join(" ");
    const r = Bun.spawnSync(["sh", "-c", `for a in ${joined}; do printf '%s\\0' "$a"; done`]);
    expect(r.stdout.toString().split("\0").slice(0, -1)).toEqual(words);
  });
  test("the session command: mounted (builtins only, no sudo) -> cd and run --shell's line as typed; exit code kept", () => {
    const d = join(root, "my projé");
    mkdirSync(join(d, "sub"), { recursive: true });
    // /proc is a mount point here: the check passes and no sudo runs
    const cmd = sessionCommand(att("/h", { guest_dst: "/proc" }), { shell: "pwd; echo '$HOME' ; exit 7" }, join(d, "sub"));
    expect(cmd).toHaveLength(1);
    const r = Bun.spawnSync(["sh", "-c", cmd[0]!]);
    expect({ code: r.exitCode, out: r.stdout.toString() }).toEqual({ code: 7, out: `${join(d, "sub")}\n$HOME\n` });
  });
  test("the session command: -- CMD ARG... keeps every argument whole (spaces, quotes, $, ;) and the exit code", () => {
    const d = join(root, "argv case");
    mkdirSync(d, { recursive: true });
    const run = (argv: string[]) => Bun.spawnSync(["sh", "-c", sessionCommand(att("/h", { guest_dst: "/proc" }), { argv }, d)[0]!]);
    expect(run(["sh", "-c", "exit 7"]).exitCode).toBe(7);
    expect(run(["touch", "two words.txt", "it's $HOME; rm -rf x"]).exitCode).toBe(0);
    expect(readdirSync(d).sort()).toEqual(["it's $HOME; rm -rf x", "two words.txt"]);
    const words = ["printf", "%s|", "a b", "", "'q'", "\\n", "é"];
    expect(run(words).stdout.toString()).toBe("a b||'q'|\\n|é|");
  });
  test("the session command: not mounted -> the mount script under sudo, with its arguments quoted", () => {
    const a = att("/h/my proj", { guest_dst: "/nowhere/my proj" });
    const cmd = sessionCommand(a, { argv: ["true"] })[0]!;
    expect(cmd).toContain(`[ "$p" = '/nowhere/my\\040proj' ]`);
    expect(cmd).toContain(remoteCommand(["sudo", "-n", "sh", "-c", GUEST_MOUNT_SCRIPT, "aivm-mount", ...guestMountArgs(a)]).join(" "));
    // locally: the folder is not mounted, so it tries sudo (absent or refusing here) and stops with exit 1
    const r = Bun.spawnSync(["sh", "-c", cmd.replace("sudo -n", "false")]);
    expect(r.exitCode).toBe(1);
  });
  test("git mode: no mount check; interactive: a login shell", () => {
    const cmd = sessionCommand(att("/r", { mode: "git" }), {})[0]!;
    expect(cmd).not.toContain("mountinfo");
    expect(cmd).toBe(`cd /r || exit 1; exec "\${SHELL:-/bin/sh}" -l`);
  });
  test("a folder inside an attached one: that attachment, started in the matching guest directory", () => {
    const v = { ...vm(), attachments: [att("/w", { guest_dst: "/g" }), att("/w/a/b", { guest_dst: "/gb" })] };
    expect(containingAttachment(v, "/w/a/b/c")).toEqual({ att: att("/w/a/b", { guest_dst: "/gb" }), cwd: "/gb/c" });
    expect(containingAttachment(v, "/w/a")).toEqual({ att: att("/w", { guest_dst: "/g" }), cwd: "/g/a" });
    expect(containingAttachment(v, "/w")).toEqual({ att: att("/w", { guest_dst: "/g" }), cwd: "/g" });
    expect(containingAttachment(v, "/wx")).toBeUndefined();
  });
  test("the mount script keeps exactly one fstab line per folder (run against a scratch fstab)", () => {
    // the fstab part of the script, isolated: same awk + append logic on a copy
    const f = join(root, "fstab");
    writeFileSync(f, "/dev/vda / ext4 defaults 0 1\n");
    const script = GUEST_MOUNT_SCRIPT.slice(GUEST_MOUNT_SCRIPT.indexOf("tmp=")).replaceAll("/etc/fstab", f).replace("tmp=/etc/fstab.aivm.$$", `tmp=${f}.aivm.$$`);
    const a = att("/h/my proj");
    const run1 = () => Bun.spawnSync(["sh", "-c", `key=$1 line=$2\n${script}`, "x", guestMountArgs(a)[5]!, guestMountArgs(a)[6]!]);
    run1();
    run1();
    expect(readFileSync(f, "utf8")).toBe(`/dev/vda / ext4 defaults 0 1\n${fstabLine(a)}\n`);
  });
});

describe("guest user ids", () => {
  test("SUDO_UID/SUDO_GID win; else the process ids when not root", () => {
    expect(guestIds(vm(), testHost({ env: { SUDO_UID: "1234", SUDO_GID: "99" } }))).toEqual({ uid: 1234, gid: 99 });
    expect(guestIds(vm(), testHost({ env: { SUDO_UID: "1234" } }))).toEqual({ uid: 1234, gid: 1234 });
    expect(guestIds(vm(), testHost({ env: {}, uid: 1000, gid: 100 }))).toEqual({ uid: 1000, gid: 100 });
    expect(guestIds({ ...vm(), attachments: [] }, testHost({ env: {}, uid: 0, gid: 0 }))).toEqual({});
  });
});

// ---------- detach ----------

describe("detach", () => {
  test("a failed guest unmount keeps the record and reports it; the host bind is left alone", async () => {
    writeFileSync(cfg, config(recorded([att("/h/p")])));
    const v = vm();
    mkdirSync(v.dir, { recursive: true });
    writeFileSync(join(v.dir, "ip"), "10.77.0.5\n");
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "net-dhcp-leases"], { stdout: "" });
    fake.on([...V, "domifaddr"], { stdout: ` vnet0 52:54:00:00:00:00 ipv4 10.77.0.5/24\n`.replace("52:54:00:00:00:00", macAddress("box")) });
    fake.on(["ssh"], (argv) => (argv.includes("true") ? {} : { exitCode: 32, stderr: "umount: /h/p: target is busy." }));
    const r = await detachFolder(runner, cfg, v, att("/h/p"));
    expect(r.removed).toBe(false);
    expect(r.problems.join()).toMatch(/target is busy/);
    expect(fake.commands().some((c) => c.startsWith("umount"))).toBe(false);
    expect(vm().attachments).toEqual([att("/h/p")]);
  });
  test("a shut-off VM: host unbind, then the record goes", async () => {
    writeFileSync(cfg, config(recorded([att("/h/p")])));
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    const r = await detachFolder(runner, cfg, vm(), att("/h/p"));
    expect(r).toEqual({ removed: true, problems: [] });
    expect(vm().attachments).toEqual([]);
  });
});

// ---------- commands ----------

describe("aivm share", () => {
  test("bad input: exit 2, one line, config untouched", async () => {
    const before = readFileSync(cfg, "utf8");
    writeFileSync(join(root, "file"), "x");
    mkdirSync(join(root, "plain"));
    for (const args of [
      ["share", "attach", join(root, "missing")],
      ["share", "attach", join(root, "file")],
      ["share", "attach", join(root, "plain"), "--guest-dst", "rel"],
      ["share", "attach", join(root, "plain"), "--guest-dst", "/proc/x"],
      ["share", "attach", join(root, "plain"), "--guest-dst", "/sys"],
      ["share", "attach", join(root, "plain"), "--guest-dst", "/dev/x"],
      ["share", "attach", join(root, "plain"), "--mode", "nfs"],
      ["share", "attach", join(root, "plain"), "--access", "rx"],
      ["share", "sync", join(root, "plain")],
    ]) {
      fake.on(["git"], { exitCode: 128, stderr: "fatal: not a git repository" });
      const r = await run(...args, "--yes");
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr.split("\n").filter((l) => l.startsWith("aivm:"))).toHaveLength(1);
    }
    fake.on(["git"], { exitCode: 128, stderr: "fatal: not a git repository" });
    const g = await run("share", "attach", join(root, "plain"), "--mode", "git", "--yes");
    expect(g.code).toBe(2);
    expect(g.stderr).toContain("not a git work tree");
    expect(readFileSync(cfg, "utf8")).toBe(before);
    expect(fake.commands().every((c) => c.startsWith("git "))).toBe(true);
  });
  test("attach --dry-run on a VM not created yet prints the record and binds nothing (nothing is bound before the VM exists)", async () => {
    const before = readFileSync(cfg, "utf8");
    mkdirSync(join(root, "my projé"));
    fake.on([...V, "domstate", "box"], { exitCode: 1, stderr: "error: failed to get domain 'box'" });
    const r = await run("share", "attach", join(root, "my projé"), "--dry-run");
    expect(r.code).toBe(0);
    const text = r.stdout + printed.join("\n");
    expect(text).toContain(`host_path = "${join(root, "my projé")}"`);
    expect(text).not.toContain("mount");
    expect(readFileSync(cfg, "utf8")).toBe(before);
    expect(existsSync(vm().dir)).toBe(false);
  });
  test("detach of a folder that is not attached: nothing to do, exit 0", async () => {
    mkdirSync(join(root, "p"));
    const r = await run("share", "detach", join(root, "p"));
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("not attached");
  });
  test("list: tab-separated rows and --json", async () => {
    writeFileSync(cfg, config(recorded([att("/h/p"), att("/h/r", { mode: "git" })])));
    const r = await run("share", "list");
    expect(r.stdout).toBe("box\tshared-root\trw\t/h/p\t/h/p\toff\nbox\tgit\trw\t/h/r\t/h/r\toff\n");
    const j = await run("share", "list", "--json");
    expect(JSON.parse(j.stdout)).toEqual([
      { vm: "box", ...att("/h/p"), guard: "off", guard_detail: expect.stringContaining("not a git repository") },
      { vm: "box", ...att("/h/r", { mode: "git" }), guard: "off", guard_detail: expect.stringContaining("git mode") },
    ]);
  });
  test("attach of a sensitive folder without --yes and without a terminal: exit 2, nothing recorded", async () => {
    const home = join(root, "home");
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const old = process.env.HOME;
    process.env.HOME = home;
    try {
      const before = readFileSync(cfg, "utf8");
      const r = await run("share", "attach", join(home, ".ssh"));
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("secrets directory");
      expect(readFileSync(cfg, "utf8")).toBe(before);
    } finally {
      process.env.HOME = old;
    }
  });
});

// ---------- attach flows (fake libvirt) ----------

describe("attach flows", () => {
  const xml = (tags: string[]) => `<domain type='qemu'><name>box</name><devices>${tags.map((t) => `<filesystem type='mount'><driver type='virtiofs'/><source dir='/x'/><target dir='${t}'/></filesystem>`).join("")}</devices></domain>`;
  beforeEach(() => writeFileSync(cfg, config(recorded())));

  test("shared mode on a running VM: the restart needs consent; without a terminal or --yes exit 2 and nothing is recorded", async () => {
    const { runner, fake } = fakeRunner({ yes: false });
    fake.on([...V, "domstate", "box"], { stdout: "running\n" });
    fake.on([...V, "dumpxml", "--inactive", "box"], { stdout: xml(["aivm-root"]) });
    const before = readFileSync(cfg, "utf8");
    mkdirSync(join(root, "p"));
    await expect(attachFolder(runner, cfg, vm(), att(join(root, "p"), { mode: "shared" }))).rejects.toMatchObject({ exitCode: EXIT.USAGE });
    expect(readFileSync(cfg, "utf8")).toBe(before);
  });
  test("shared-root on a shut-off VM: recorded, export root read-only and shared, folder bound through the checked stage; mounted at the next start", async () => {
    const p = join(root, "p");
    mkdirSync(p);
    const v = vm();
    const tok = shareToken(p);
    const stage = join(stageRoot(v), tok);
    // the fake runs no mount: the host answers as if the stage held the folder
    const host = testHost({ stat: (x) => realHost.stat(x === stage ? p : x) });
    const { runner, fake } = fakeRunner({ host });
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "dumpxml", "--inactive", "box"], { stdout: xml(["aivm-root"]) });
    for (const c of ["install", "mount", "umount", "rmdir"]) fake.on([c], {});
    const r = await attachFolder(runner, cfg, v, att(p));
    expect(r.mounted).toBe(false);
    expect(r.note).toContain("when box starts");
    expect(vm().attachments).toEqual([att(p)]);
    const exp = exportRoot(v);
    const share = join(v.dir, "share");
    expect(fake.commands().filter((c) => !c.startsWith("virsh"))).toEqual([
      `install -d -m 0755 ${exp}`, `install -d -m 0755 ${share}`,
      `install -d -m 0700 ${v.dir}/stage/.export`, `mount --bind ${share} ${v.dir}/stage/.export`, `mount -o remount,bind,ro ${v.dir}/stage/.export`,
      `mount --bind ${v.dir}/stage/.export ${exp}`, `umount ${v.dir}/stage/.export`, `rmdir ${v.dir}/stage/.export`, `mount --make-shared ${exp}`,
      `install -d -m 0755 ${share}/${tok}`, `install -d -m 0755 ${stage}`, `mount --bind ${p} ${stage}`, `mount --make-rprivate ${stage}`,
      `mount --rbind ${stage} ${exp}/${tok}`, `umount -R ${stage}`, `rmdir ${stage}`,
    ]);
  });
  test("a shut-off VM lacking a device is redefined (same UUID) before it is next started", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "dumpxml", "--inactive", "box"], { stdout: xml(["aivm-root"]) });
    fake.on([...V, "domuuid", "box"], { stdout: "0f9d6d7c-3a0b-4c1e-9a53-2d1c7e8b9a10\n" });
    fake.on([...V, "define", "/dev/stdin"], {});
    mkdirSync(join(root, "p"));
    await attachFolder(runner, cfg, vm(), att(join(root, "p"), { mode: "shared" }));
    const define = fake.calls.find((c) => c.argv?.includes("define"))!;
    expect(define.input).toContain("<uuid>0f9d6d7c-3a0b-4c1e-9a53-2d1c7e8b9a10</uuid>");
    expect(define.input).toContain(`<target dir='${sharedTag(join(root, "p"))}'/>`);
    expect(define.input).toContain(`<target dir='aivm-root'/>`);
  });
  test("out of PCI slots at start: an error naming shared-root", async () => {
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domstate", "box"], { stdout: "shut off\n" });
    fake.on([...V, "dumpxml", "--inactive", "box"], { stdout: xml(["aivm-root"]) });
    fake.on([...V, "domuuid", "box"], { stdout: "0f9d6d7c-3a0b-4c1e-9a53-2d1c7e8b9a10\n" });
    fake.on([...V, "define"], {});
    fake.on([...V, "start", "box"], { exitCode: 1, stderr: "error: XML error: No more available PCI slots\n" });
    await expect(restartWithDevices(runner, cfg, vm())).rejects.toMatchObject({ hint: expect.stringContaining("shared-root") });
  });
});
