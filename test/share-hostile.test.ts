// The guest is hostile: the unit half of the proof for docs/threat-model.md rows S3-S9 and G1-G4 (the "guard" steps
// in e2e/share.test.ts are the half that runs from inside a real guest).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { updateStore } from "../lib/config/store.ts";
import { writeFileAtomicSync } from "../lib/fsutil.ts";
import { acquireLock } from "../lib/lock.ts";
import { ensureVm } from "../lib/vm/create.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Vm } from "../lib/config/model.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { loadStore } from "../lib/config/store.ts";
import { EXIT } from "../lib/errors.ts";
import { realHost } from "../lib/host.ts";
import { printable } from "../lib/render.ts";
import { bindFolder, folderBindPlan, folderBound, stagedProblem, unexpectedMounts } from "../lib/share/folder-bind.ts";
import { GUARDED, guardProblem, guardState, missingGuarded } from "../lib/share/git-guard.ts";
import { ensureExportMount, exportMountPlan, exportState, restoreHostBinds } from "../lib/share/host-mounts.ts";
import { parseMountinfo, type MountEntry } from "../lib/share/mountinfo.ts";
import { exportRoot, shareRoot, shareToken, stageRoot } from "../lib/share/names.ts";
import { approveFolder, approveSaved, judgeFolder, storeExposure } from "../lib/share/preflight.ts";
import { fakeRunner, testHost } from "./helpers/fake-runner.ts";
import { attachment, recordedToml, storeToml, V } from "./helpers/fixtures.ts";
import { runMain } from "./helpers/main.ts";
import { inject } from "../lib/cli/_shared.ts";
import { shellJoin, shellQuote } from "../lib/shell.ts";

let root: string;
let cfg: string;
let home: string;

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "aivm-hostile-")));
  home = join(root, "home");
  mkdirSync(join(home, ".ssh"), { recursive: true });
  mkdirSync(join(root, "cfg"));
  cfg = join(root, "cfg", "config.toml");
  writeFileSync(cfg, storeToml(root, recordedToml()));
});
afterEach(() => {
  delete inject.runner;
  rmSync(root, { recursive: true, force: true });
});

const vm = (): Vm => resolveVm(loadStore(cfg).doc);
const ctx = () => ({ configPath: cfg, paths: vm().paths, homes: [home] });
const entry = (target: string, o: Partial<MountEntry> = {}): MountEntry => ({ target, root: "/", options: "rw,relatime", optional: "", fstype: "ext4", source: "/dev/vda", ...o });
const argvs = (as: { kind: string; argv?: string[] }[]) => as.map((a) => a.argv!.join(" "));

describe("S3: aivm's own state is never shared, whatever --yes says", () => {
  test.each([
    ["the config store's directory", () => join(root, "cfg")],
    ["a folder inside it", () => join(root, "cfg", "sub")],
    ["vm_root", () => join(root, "vms")],
    ["a VM's own directory", () => join(root, "vms", "box")],
    ["the image cache", () => join(root, "images")],
    ["a parent of all of them", () => root],
  ])("%s", async (_n, path) => {
    mkdirSync(path(), { recursive: true });
    expect(judgeFolder(realHost, path(), ctx()).refused).toBeTruthy();
    const { runner } = fakeRunner({ yes: true });
    await expect(approveFolder(runner, "share attach", path(), ctx())).rejects.toMatchObject({ exitCode: EXIT.USAGE, why: expect.stringContaining("--yes does not change this") });
  });
  test("through a symbolic link too", () => {
    mkdirSync(join(root, "vms", "box"), { recursive: true });
    symlinkSync(join(root, "vms", "box"), join(root, "innocent"));
    expect(judgeFolder(realHost, join(root, "innocent"), ctx()).refused).toContain("aivm's VM directories");
  });
  test("an ordinary project is not refused", () => {
    mkdirSync(join(root, "proj"));
    expect(judgeFolder(realHost, join(root, "proj"), ctx())).toEqual({});
  });
  test("the CLI: exit 2, one line, nothing recorded", async () => {
    const { runner } = fakeRunner({ yes: true });
    inject.runner = () => runner;
    const r = await runMain(["share", "attach", join(root, "vms"), "--yes", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(vm().attachments).toEqual([]);
  });
});

describe("S4: a config store inside a read-write attachment: aivm refuses to act", () => {
  test("rw: refused with the reason; ro and git mode: fine", () => {
    const doc = (access: "rw" | "ro", mode: "shared-root" | "git" = "shared-root") => ({ vms: [{ name: "box", network: "n", attachments: [attachment(join(root, "cfg"), { access, mode })] }] });
    expect(storeExposure(realHost, doc("rw"), cfg)).toContain("which box can write");
    expect(storeExposure(realHost, doc("ro"), cfg)).toBeNull();
    expect(storeExposure(realHost, doc("rw", "git"), cfg)).toBeNull();
  });
  test("every command loading the store refuses (exit 1); config edit still opens it", async () => {
    writeFileSync(cfg, storeToml(root, recordedToml([attachment(root)])));
    const r = await runMain(["list", "--config", cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("refusing to act: the config store");
    expect((await runMain(["config", "path", "--config", cfg])).code).toBe(0);
  });
});

describe("S5: a saved attachment gets the same preflight every time it is bound", () => {
  test("a secrets folder: skipped with a warning without consent; bound with --yes or a typed yes", async () => {
    const ssh = join(home, ".ssh");
    expect(await approveSaved(fakeRunner({ yes: false, interactive: false }).runner, vm(), ssh, ctx())).toBe(false);
    expect(await approveSaved(fakeRunner({ yes: true }).runner, vm(), ssh, ctx())).toBe(true);
    expect(await approveSaved(fakeRunner({ yes: false, interactive: true, ask: async () => "yes" }).runner, vm(), ssh, ctx())).toBe(true);
    expect(await approveSaved(fakeRunner({ yes: false, interactive: true, ask: async () => "y" }).runner, vm(), ssh, ctx())).toBe(false);
  });
  test("aivm's own state: never bound, even with --yes", async () => {
    expect(await approveSaved(fakeRunner({ yes: true }).runner, vm(), join(root, "images"), ctx())).toBe(false);
  });
  test("restoreHostBinds before a start: the planted ~/.ssh record is skipped, the project is bound", async () => {
    const proj = join(root, "proj");
    mkdirSync(proj);
    writeFileSync(cfg, storeToml(root, recordedToml([attachment(join(home, ".ssh")), attachment(proj)])));
    const v = vm();
    mkdirSync(exportRoot(v), { recursive: true });
    const stage = join(stageRoot(v), shareToken(proj));
    const { runner, fake } = fakeRunner({ yes: false, interactive: false, host: testHost({ env: { ...process.env, HOME: home }, stat: (x) => realHost.stat(x === stage ? proj : x) }) });
    fake.on(["install"], {}).on(["mount"], {}).on(["umount"], {}).on(["rmdir"], {});
    const r = await restoreHostBinds(runner, v, ctx());
    expect(r).toEqual({ bound: [proj], skipped: [join(home, ".ssh")] });
    expect(fake.commands().some((c) => c.includes(".ssh"))).toBe(false);
  });
});

describe("S6: the export root is read-only to the guest; mount points live where no guest reaches", () => {
  test("the plan: the private share directory bound read-only onto the export root, made shared", () => {
    const v = vm();
    const exp = exportRoot(v);
    const tmp = join(stageRoot(v), ".export");
    // read-only before it is bound onto the export root: a remount after the bind would not reach other namespaces
    expect(argvs(exportMountPlan(v, new Map()))).toEqual([
      `install -d -m 0700 ${tmp}`, `mount --bind ${shareRoot(v)} ${tmp}`, `mount -o remount,bind,ro ${tmp}`,
      `mount --bind ${tmp} ${exp}`, `umount ${tmp}`, `rmdir ${tmp}`, `mount --make-shared ${exp}`,
    ]);
    expect(argvs(exportMountPlan(v, new Map([[tmp, entry(tmp)]])))[0]).toBe(`umount ${tmp}`); // left by an interrupted run
    expect(exportMountPlan(v, new Map([[exp, entry(exp, { options: "ro", optional: "shared:3" })]]))).toEqual([]);
  });
  // The real kernel, in a private mount namespace: a namespace that is a slave of this one (virtiofsd's, a namespaced
  // libvirtd's) sees the export root read-only only when the mount was read-only before it was bound there.
  const asRoot = process.getuid?.() === 0 && !!Bun.which("unshare");
  test.skipIf(!asRoot)("the plan on a real kernel: read-only in a slave mount namespace too (a remount after the bind is not)", () => {
    const v = vm();
    const probe = (plan: string[][]) => {
      mkdirSync(exportRoot(v), { recursive: true });
      mkdirSync(shareRoot(v), { recursive: true });
      const script = [
        `mount --bind ${shellQuote(root)} ${shellQuote(root)} && mount --make-shared ${shellQuote(root)} || exit 9`,
        `unshare -m --propagation slave sh -c 'while [ ! -e "$1/go" ]; do sleep 0.05; done; if touch "$1/probe" 2>/dev/null; then echo writable; else echo read-only; fi' sh ${shellQuote(exportRoot(v))} &`,
        ...plan.map(shellJoin),
        `touch ${shellQuote(join(shareRoot(v), "go"))}; wait`,
      ].join("\n");
      const r = Bun.spawnSync(["unshare", "-m", "--propagation", "private", "sh", "-ec", script]);
      rmSync(join(shareRoot(v), "go"), { force: true });
      return r.stdout.toString().trim() || r.stderr.toString();
    };
    expect(probe(exportMountPlan(v, new Map()).map((a) => (a as { argv: string[] }).argv))).toBe("read-only");
    expect(probe([["mount", "--bind", shareRoot(v), exportRoot(v)], ["mount", "-o", "remount,bind,ro", exportRoot(v)]])).toBe("writable");
  });
  test("an export root left writable by an earlier aivm: replaced when the VM is off; while it runs, a warning", async () => {
    const v = vm();
    const exp = exportRoot(v);
    const legacy = `1 2 0:1 / ${exp} rw,relatime shared:1 - ext4 /dev/vda rw\n1 2 0:1 /x ${exp}/x rw,relatime shared:1 - ext4 /dev/vda rw`;
    expect(exportState(v, parseMountinfo(legacy))).toBe("legacy");
    const host = testHost({ readFile: (p) => (p === "/proc/self/mountinfo" ? legacy : realHost.readFile(p)) });
    const running = fakeRunner({ host });
    running.fake.on(["install"], {});
    expect(await ensureExportMount(running.runner, v, { running: true })).toBe("legacy");
    expect(running.fake.commands().filter((c) => c.startsWith("umount") || c.startsWith("mount"))).toEqual([]);
    const off = fakeRunner({ host });
    off.fake.on(["install"], {}).on(["umount"], {}).on(["mount"], {});
    await ensureExportMount(off.runner, v, { running: false });
    expect(off.fake.commands().filter((c) => c.startsWith("umount"))).toEqual([`umount ${exp}/x`, `umount ${exp}`]);
  });
  test("binding never creates or mounts onto a path a guest could have planted in the export root", () => {
    const v = vm();
    const p = join(root, "proj");
    const plan = folderBindPlan(realHost, v, attachment(p), new Map());
    const all = argvs([...plan.prepare, ...plan.guard, ...plan.carry]);
    // the mount point is made in the private share directory; the only command naming the export path is the final bind
    expect(all.filter((c) => c.includes(exportRoot(v)))).toEqual([`mount --rbind ${join(stageRoot(v), shareToken(p))} ${join(exportRoot(v), shareToken(p))}`]);
    expect(all).toContain(`install -d -m 0755 ${join(shareRoot(v), shareToken(p))}`);
  });
});

describe("S7: a folder whose path changes under aivm (a symlink swapped in) is never bound", () => {
  test("stagedProblem: the path must still resolve to itself, and the stage must hold that very directory", () => {
    const real = join(root, "real");
    mkdirSync(real);
    mkdirSync(join(root, "other"));
    expect(stagedProblem(realHost, real, real)).toBeNull();
    expect(stagedProblem(realHost, join(root, "other"), real)).toContain("is not");
    symlinkSync(join(root, "other"), join(root, "swapped"));
    expect(stagedProblem(realHost, join(root, "other"), join(root, "swapped"))).toContain("now resolves to");
  });
  test("bindFolder: a failed check unmounts the stage and binds nothing into the export", async () => {
    const p = join(root, "proj");
    mkdirSync(p);
    const v = vm();
    const { runner, fake } = fakeRunner(); // the fake mounts nothing: the stage does not hold the folder
    fake.on(["install"], {}).on(["mount"], {}).on(["umount"], {});
    await expect(bindFolder(runner, v, attachment(p), new Map())).rejects.toThrow(/refusing to bind/);
    expect(fake.commands().some((c) => c.startsWith("mount --rbind"))).toBe(false);
  });
  test("unexpectedMounts: a mount that appeared anywhere aivm did not mean to put one", () => {
    const before = new Map([["/a", entry("/a")]]);
    const after = new Map([["/a", entry("/a")], ["/s/.git", entry("/s/.git")], ["/etc", entry("/etc")]]);
    expect(unexpectedMounts(before, after, ["/s/.git"])).toEqual(["/etc"]);
  });
});

describe("G1-G4: the git guard", () => {
  const repo = () => {
    const p = join(root, "repo");
    mkdirSync(join(p, ".git", "hooks"), { recursive: true });
    writeFileSync(join(p, ".git", "config"), "[core]\n");
    return p;
  };
  test("which folders it covers", () => {
    const p = repo();
    expect(guardState(realHost, attachment(p)).kind).toBe("dir");
    expect(guardState(realHost, attachment(p, { access: "ro" })).kind).toBe("none");
    expect(guardState(realHost, attachment(p, { git_guard: "off" })).kind).toBe("none");
    expect(guardState(realHost, attachment(p, { mode: "shared" })).kind).toBe("none");
    mkdirSync(join(root, "plain"));
    expect(guardState(realHost, attachment(join(root, "plain"))).kind).toBe("none");
    writeFileSync(join(root, "plain", ".git"), "gitdir: /elsewhere\n");
    expect(guardState(realHost, attachment(join(root, "plain"))).kind).toBe("gitfile");
  });
  test("the plan: .git a mount point, config/hooks/commondir/modules/remotes/branches read-only; the missing ones made first, owned like .git", () => {
    const p = repo();
    const v = vm();
    const s = join(stageRoot(v), shareToken(p));
    expect(missingGuarded(realHost, attachment(p)).map((g) => g.name)).toEqual(["commondir", "modules", "remotes", "branches"]);
    const plan = folderBindPlan(realHost, v, attachment(p), new Map());
    const g = argvs(plan.guard);
    const st = realHost.stat(join(p, ".git"))!;
    expect(g[0]).toBe(`install -m 0644 -o ${st.uid} -g ${st.gid} /dev/stdin ${join(p, ".git", "commondir")}`);
    expect((plan.guard[0] as { input?: string }).input).toBe(".\n");
    expect(g).toContain(`mount --bind ${s}/.git ${s}/.git`);
    for (const x of GUARDED.map((y) => y.name)) expect(g).toContain(`mount -o remount,bind,ro ${s}/.git/${x}`);
    // the guard is made inside the private stage, before the folder is carried into the export in one recursive bind
    expect(argvs(plan.carry)[0]).toStartWith("mount --rbind");
  });
  test("a planted symlink where the guard would bind is refused, not followed", () => {
    const p = repo();
    rmSync(join(p, ".git", "hooks"), { recursive: true });
    symlinkSync("/etc", join(p, ".git", "hooks"));
    expect(guardProblem(realHost, attachment(p))).toContain("symbolic link");
    const q = join(root, "q");
    mkdirSync(q);
    symlinkSync(join(p, ".git"), join(q, ".git"));
    expect(guardProblem(realHost, attachment(q))).toContain("symbolic link");
  });
  test("a folder bound before the guard existed counts as not bound (it is redone with the guard)", () => {
    const p = repo();
    const v = vm();
    const t = join(exportRoot(v), shareToken(p));
    const host = testHost({ stat: (x) => realHost.stat(x === t ? p : x) });
    expect(folderBound(host, v, attachment(p), new Map([[t, entry(t)]]))).toBe(false);
    const guarded = new Map([[t, entry(t)], [join(t, ".git"), entry(join(t, ".git"))], ...GUARDED.map((x) => [join(t, ".git", x.name), entry(join(t, ".git", x.name))] as const)]);
    expect(folderBound(host, v, attachment(p), guarded)).toBe(true);
  });
  test("--mode shared on a repository: exit 2 unless --git-guard off (then recorded, with a warning)", async () => {
    const p = repo();
    const { runner, fake } = fakeRunner({ yes: true });
    fake.on([...V, "domstate", "box"], { exitCode: 1, stderr: "error: failed to get domain 'box'" });
    inject.runner = () => runner;
    const r = await runMain(["share", "attach", p, "--mode", "shared", "--yes", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--git-guard off");
    const off = await runMain(["share", "attach", p, "--mode", "shared", "--git-guard", "off", "--yes", "--config", cfg]);
    expect(off.code).toBe(0);
    expect(off.stderr).toContain("the git guard is off");
    expect(vm().attachments[0]).toMatchObject({ mode: "shared", git_guard: "off" });
  });
});

describe("what a real git obeys (why commondir is guarded)", () => {
  const git = (cwd: string, ...args: string[]) => Bun.spawnSync(["git", ...args], { cwd, env: { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" } });
  test.skipIf(!Bun.which("git"))("a commondir holding '.' leaves the repository working; one naming another directory makes git read that config", () => {
    const r = join(root, "r");
    mkdirSync(r);
    git(r, "init", "-q");
    git(r, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "one");
    writeFileSync(join(r, ".git", "commondir"), ".\n");
    expect(git(r, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "two").exitCode).toBe(0);
    expect(git(r, "log", "--oneline").stdout.toString().trim().split("\n")).toHaveLength(2);
    // what the guard prevents: the guest writes commondir pointing at its own git directory and config
    Bun.spawnSync(["cp", "-r", join(r, ".git"), join(root, "evil")]);
    writeFileSync(join(root, "evil", "config"), `[core]\n\tfsmonitor = "touch ${join(root, "ran")}; false"\n`);
    writeFileSync(join(r, ".git", "commondir"), join(root, "evil") + "\n");
    git(r, "status");
    expect(Bun.file(join(root, "ran")).size).toBe(0); // exists (size 0): the host's git ran the guest's command
    expect(realHost.exists(join(root, "ran"))).toBe(true);
  });
});

test("guest text reaches the terminal without control characters", () => {
  expect(printable("fix \x1b]0;pwned\x07 title\x1b[2J")).toBe("fix \\x1b]0;pwned\\x07 title\\x1b[2J");
  expect(printable("a\tb\nc")).toBe("a\tb\nc");
});

describe("S8: nothing aivm writes follows a symlink it did not make", () => {
  const victim = () => {
    const p = join(root, "victim");
    writeFileSync(p, "precious\n");
    return p;
  };
  test("its own files: a planted symlink or a non-regular file is refused, nothing written through it", () => {
    const v = victim();
    symlinkSync(v, join(root, "link"));
    expect(() => writeFileAtomicSync(join(root, "link"), "x")).toThrow(/symbolic link, which aivm did not make/);
    expect(readFileSync(v, "utf8")).toBe("precious\n");
    mkdirSync(join(root, "adir"));
    expect(() => writeFileAtomicSync(join(root, "adir"), "x")).toThrow(/not a regular file/);
  });
  test("the config store may be a symlink (dotfiles): written through to its target, the link kept", () => {
    const target = join(root, "dotfiles-config.toml");
    writeFileSync(target, "");
    const link = join(root, "cfg", "linked.toml");
    symlinkSync(target, link);
    updateStore(link, (d) => { d.defaults = { vm: { cpus: 3 } }; });
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(target, "utf8")).toContain("cpus = 3");
  });
  test("lock files: a planted symlink is refused and its target is not truncated", () => {
    const v = victim();
    const lock = join(root, "vms", "box", ".lock");
    mkdirSync(join(root, "vms", "box"), { recursive: true });
    symlinkSync(v, lock);
    expect(() => acquireLock(lock, { waitMs: 0 })).toThrow(/symbolic link/);
    expect(readFileSync(v, "utf8")).toBe("precious\n");
    symlinkSync(v, join(root, "cfg", ".aivm-config.lock"));
    expect(() => updateStore(cfg, (d) => { d.defaults = {}; })).toThrow(/symbolic link/);
    expect(readFileSync(v, "utf8")).toBe("precious\n");
  });
  test.each(["disk.qcow2", "seed.img", "ssh_host_ed25519_key", "known_hosts"])("vm create with %s planted as a symlink: refused, nothing written, the target untouched", async (name) => {
    const v = victim();
    const dir = join(root, "vms", "box");
    mkdirSync(dir, { recursive: true });
    symlinkSync(v, join(dir, name));
    mkdirSync(join(root, "images"), { recursive: true });
    writeFileSync(join(root, "images", `${"b".repeat(64)}.img`), "");
    writeFileSync(join(root, "images", `${"b".repeat(64)}.json`), JSON.stringify({ sha256: "b".repeat(64), format: "qcow2", source: "file:///x", created: "2026-01-01" }));
    writeFileSync(join(root, "id.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJd8bA4GkOQ6+9W1fU8vU1mC2o8m9uF3oVb2Q8x6oYy u@h\n");
    const { runner, fake } = fakeRunner();
    fake.on([...V, "domuuid", "box"], { exitCode: 1, stderr: "error: failed to get domain 'box'\n" });
    fake.diskTools();
    await expect(ensureVm(runner, vm())).rejects.toThrow(/symbolic link, which aivm did not make/);
    expect(readFileSync(v, "utf8")).toBe("precious\n");
    expect(fake.commands().filter((c) => !c.startsWith("virsh"))).toEqual([]);
  });
});
