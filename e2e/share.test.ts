// Real-VM suite for folder sharing and sessions: `aivm share` (shared-root rw/ro, git), `aivm ssh DIR`, against a real
// libvirtd in a private network namespace and a real Debian guest. Opt-in with AIVM_E2E=1 (see lifecycle.test.ts).
//
// Mount namespaces matter here: libvirtd (and the virtiofsd it starts) lives in `ip netns exec`'s own mount namespace,
// so the run directory is made a shared mount BEFORE libvirtd starts (its copy is then a slave and sees binds made
// later), and aivm runs in the host's mount namespace and only the lab's network namespace (nsenter --net), exactly
// like an aivm run on a host without namespaces.
// The host user is simulated as uid/gid 4242 (SUDO_UID/SUDO_GID): the shared folder belongs to 4242, the guest user
// is created with 4242, and a file the guest user writes must show up on the host owned by 4242.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  isolatedEnv, uniqueNamesConfig, added, alive, BUN, ensureDir, inNs, inventory, must, preflight, priv, ROOT, setTranscript, sh,
  inNet, startLab, stopLab, systemLibvirtdAnswers, Transcript, URI, type Inventory, type Lab, type Out,
} from "./harness.ts";
import { binaryRunner, orderedSteps } from "./steps.ts";

const ENABLED = process.env.AIVM_E2E === "1";
const CI = process.env.CI === "true";
const KEEP = process.env.AIVM_E2E_KEEP === "1";
const CACHE_HOME = process.env.AIVM_E2E_CACHE || "/var/tmp/aivm-e2e-cache";
/** our own build, so a concurrent rebuild of dist/aivm by someone else cannot swap the binary mid-run */
const BIN = process.env.AIVM_E2E_BIN || join(ROOT, "dist/aivm-share-e2e");
const OWNER = 4242;

const missing = ENABLED ? [...preflight(), ...(Bun.which("nsenter") ? [] : ["nsenter"])] : [];
const runIt = ENABLED && missing.length === 0;
if (!ENABLED) console.error("e2e share: skipped (set AIVM_E2E=1)");
else if (missing.length && !CI) console.error(`e2e share: skipped: missing ${missing.join(", ")}`);
if (ENABLED && missing.length && CI) test("e2e preflight", () => { throw new Error(`e2e: missing ${missing.join(", ")}`); });

const tag = Math.random().toString(16).slice(2, 8);
const names = { vm: `e2e-sh-${tag}`, net: `e2e-shnet-${tag}` };
const figures: Record<string, string> = {};
const t0 = Date.now();
let runDir = "";
let env: Record<string, string> = {};
let lab: Lab | null = null;
let baseline: Inventory | null = null;
let vmDir = "";
let configFile = "";
let proj = "";
let roDir = "";
let repo = "";
let guarded = "";
let tornDown = false;
let sharedMount = false;

const { step, state } = orderedSteps();
/** dist/aivm in the lab with the isolated HOME/XDG environment */
const { run: aivm, ok: aivmOk } = binaryRunner((args) => inNetEnv([BIN, ...args]));

/** argv in the lab's network namespace but the host's mount namespace. */
const inNetEnv = (argv: string[], withEnv = true): string[] => (lab ? inNet(lab, argv, withEnv ? env : undefined) : priv(argv));



/** a command in the guest as the guest user (through `aivm vm ssh`, no folder logic) */
const guest = (cmd: string) => aivm(["vm", "ssh", "--vm", names.vm, "--shell", cmd], { timeoutMs: 120_000 });
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const hostMounts = () => readFileSync("/proc/self/mountinfo", "utf8");
const esc = (p: string) => p.replace(/[ \t\n\\]/g, (c) => "\\" + c.charCodeAt(0).toString(8).padStart(3, "0"));
const configText = () => (existsSync(configFile) ? readFileSync(configFile, "utf8") : "");

describe.skipIf(!runIt)("aivm e2e: share and sessions on a real guest", () => {
  step("build our own binary; run dir as a shared mount; isolated HOME", async () => {
    await must([BUN, "build", "./bin/aivm.ts", "--compile", "--format=esm", "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", "--outfile", BIN], { live: true });
    runDir = mkdtempSync("/var/tmp/aivm-share-e2e-");
    chmodSync(runDir, 0o755);
    await must(priv(["mount", "--bind", runDir, runDir]));
    await must(priv(["mount", "--make-rshared", runDir]));
    sharedMount = true;
    setTranscript(new Transcript(join(runDir, "transcript.log")));
    env = await isolatedEnv(runDir, CACHE_HOME, { SUDO_UID: String(OWNER), SUDO_GID: String(OWNER) });
    writeFileSync(join(env.HOME!, ".ssh", "id_secret"), "not really\n");
    configFile = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
    // the project folder: a space and a non-ASCII character, owned by the simulated host user
    proj = join(runDir, "work", "my projé");
    mkdirSync(proj, { recursive: true });
    writeFileSync(join(proj, "from-host.txt"), "hello from the host\n");
    for (const p of [proj, join(proj, "from-host.txt")]) chownSync(p, OWNER, OWNER);
    roDir = join(runDir, "work", "reference");
    mkdirSync(roDir);
    writeFileSync(join(roDir, "ref.txt"), "read me\n");
    chownSync(roDir, OWNER, OWNER);
  });

  step("image build --debootstrap (cached by recipe)", async () => {
    const r = await sh([BIN, "image", "build", "--debootstrap"], { env, timeoutMs: 30 * 60_000, live: true });
    if (r.code !== 0) throw new Error(`image build exited ${r.code}: ${r.stderr.trim().split("\n").slice(-5).join(" | ")}`);
    const path = r.stdout.trim();
    env.AIVM_E2E_IMAGE = path;
    env.AIVM_E2E_SHA = basename(path, ".img");
  });

  step("private netns with its own libvirtd (started after the run dir became shared)", async () => {
    if (await systemLibvirtdAnswers()) throw new Error("a libvirtd already answers: the share suite needs its own (run it under the e2e lock)");
    lab = await startLab(runDir, `sh${tag}`);
    figures.libvirtd = lab.mode;
    baseline = await inventory(lab);
  }, 120_000);

  step("config init --defaults with the built image and unique names", async () => {
    await aivmOk(["config", "init", "--defaults", "--yes", "--image-url", `file://${env.AIVM_E2E_IMAGE}`, "--image-sha256", env.AIVM_E2E_SHA!]);
    writeFileSync(configFile, uniqueNamesConfig(readFileSync(configFile, "utf8"), names, CACHE_HOME));
    await aivmOk(["config", "lint"]);
    vmDir = join(env.XDG_DATA_HOME!, "aivm", "vms", names.vm);
  });

  step("bad input: exit 2, one line, config unchanged", async () => {
    const before = configText();
    writeFileSync(join(runDir, "a-file"), "x");
    const notGit = ensureDir(join(runDir, "work", "not-git"));
    const cases: [string[], RegExp][] = [
      [["share", "attach", join(runDir, "nope")], /no such directory/],
      [["share", "attach", join(runDir, "a-file")], /not a directory/],
      [["share", "attach", proj, "--guest-dst", "relative/dir"], /not an absolute path/],
      [["share", "attach", proj, "--guest-dst", "/proc/x"], /under \/proc/],
      [["share", "attach", proj, "--guest-dst", "/sys"], /under \/sys/],
      [["share", "attach", proj, "--guest-dst", "/dev/shm/x"], /under \/dev/],
      [["share", "attach", notGit, "--mode", "git"], /not a git work tree/],
      [["share", "attach", proj, "--mode", "shared", "--access", "ro"], /readonly/],
    ];
    for (const [args, re] of cases) {
      const r = await aivm([...args, "--yes"]);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(re);
      expect(r.stderr.trim().split("\n").filter((l) => l.startsWith("aivm:"))).toHaveLength(1);
    }
    expect(configText()).toBe(before);
  });

  step("safety preflight refuses ~/.ssh without --yes (exit 2, nothing recorded)", async () => {
    const before = configText();
    const r = await aivm(["share", "attach", join(env.HOME!, ".ssh")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/secrets directory/);
    const home = await aivm(["share", "attach", env.HOME!]);
    expect(home.code).toBe(2);
    expect(home.stderr).toMatch(/home directory/);
    expect(configText()).toBe(before);
  });

  step("aivm ssh DIR -- CMD with no VM: creates it (--yes) with DIR attached, runs CMD in DIR", async () => {
    const r = await aivmOk(["ssh", proj, "--yes", "--shell", "pwd; cat from-host.txt"], { timeoutMs: 25 * 60_000, live: true });
    figures["aivm ssh (creates the VM)"] = secs(r.ms);
    expect(r.stdout).toBe(`${proj}\nhello from the host\n`);
    expect(configText()).toContain(`host_path = ${JSON.stringify(proj)}`);
  }, 30 * 60_000);

  step("the guest user has the host user's uid; its files appear on the host owned by that user", async () => {
    expect((await guest("id -u; id -g")).stdout.trim().split("\n")).toEqual([String(OWNER), String(OWNER)]);
    const r = await aivmOk(["ssh", proj, "--shell", "echo from the guest > from-guest.txt"]);
    expect(r.code).toBe(0);
    const st = statSync(join(proj, "from-guest.txt"));
    expect(readFileSync(join(proj, "from-guest.txt"), "utf8")).toBe("from the guest\n");
    expect({ uid: st.uid, gid: st.gid }).toEqual({ uid: OWNER, gid: OWNER });
    // host -> guest after the mount exists
    writeFileSync(join(proj, "later.txt"), "later\n");
    expect((await aivmOk(["ssh", proj, "--", "cat", "later.txt"])).stdout).toBe("later\n");
  });

  step("the remote exit code passes through; aivm ssh . -- true works from inside the folder", async () => {
    expect((await aivm(["ssh", proj, "--shell", "exit 7"])).code).toBe(7);
    expect((await aivm(["ssh", proj, "--", "sh", "-c", "exit 7"])).code).toBe(7);
    expect((await aivm(["vm", "ssh", "--vm", names.vm, "--", "sh", "-c", "exit 9"])).code).toBe(9);
    const r = await sh(inNetEnv(["sh", "-c", `cd ${q(proj)} && exec ${q(BIN)} ssh . -- true`]));
    expect(r.code).toBe(0);
  });

  step("-- CMD ARG...: every argument arrives whole (aivm ssh DIR and aivm vm ssh); --shell sends one line on purpose", async () => {
    // one file named "two words.txt", not "two" and "words.txt"
    await aivmOk(["ssh", proj, "--", "touch", "two words.txt", "it's $HOME; x"]);
    expect(existsSync(join(proj, "two words.txt"))).toBe(true);
    expect(existsSync(join(proj, "it's $HOME; x"))).toBe(true);
    expect(existsSync(join(proj, "two"))).toBe(false);
    expect(existsSync(join(proj, "words.txt"))).toBe(false);
    // rm -r "old build" removes that one folder, not old and build
    for (const d of ["old build", "old", "build"]) mkdirSync(join(proj, d));
    await aivmOk(["ssh", proj, "--", "rm", "-r", "old build"]);
    expect(["old build", "old", "build"].map((d) => existsSync(join(proj, d)))).toEqual([false, true, true]);
    const words = ["a b", "", "'q'", "$HOME", "é;|&"];
    expect((await aivmOk(["ssh", proj, "--", "printf", "%s|", ...words])).stdout).toBe(words.join("|") + "|");
    expect((await aivmOk(["vm", "ssh", "--vm", names.vm, "--", "printf", "%s|", ...words])).stdout).toBe(words.join("|") + "|");
    // the shell line on purpose: its words are split and expanded by the guest's shell
    expect((await aivmOk(["ssh", proj, "--shell", "printf '%s|' $((6*7)) two words"])).stdout).toBe("42|two|words|");
    const both = await aivm(["ssh", proj, "--shell", "true", "--", "true"]);
    expect(both.code).toBe(2);
    for (const f of ["two words.txt", "it's $HOME; x"]) rmSync(join(proj, f));
    rmSync(join(proj, "old"), { recursive: true });
    rmSync(join(proj, "build"), { recursive: true });
  });

  step("the guest keeps the shares out of updatedb; status --detail counts virtiofsd's open files", async () => {
    // cloud-init installed the fixer and the dpkg hook; run against a Debian-style updatedb.conf (minbase has no locate)
    const r = await guest(`test -x /usr/local/sbin/aivm-prune-locate && apt-config dump | grep -c aivm-prune-locate && printf 'PRUNE_BIND_MOUNTS="yes"\\nPRUNEFS="NFS proc"\\nPRUNEPATHS="/tmp /media"\\n' | sudo -n tee /etc/updatedb.conf >/dev/null && sudo -n /usr/local/sbin/aivm-prune-locate && cat /etc/updatedb.conf; sudo -n rm -f /etc/updatedb.conf`);
    expect(r.stdout).toBe('1\nPRUNE_BIND_MOUNTS="yes"\nPRUNEFS="NFS proc virtiofs"\nPRUNEPATHS="/tmp /media /mnt/aivm-root"\n');
    const count = async () => {
      const st = JSON.parse((await aivmOk(["status", "--detail", "--json"])).stdout);
      const ev: string[] = st.layers.find((l: { name: string }) => l.name === "attachments").evidence;
      // the export root's virtiofsd (a forked virtiofsd shows up twice: the busier one serves)
      const counts = ev.filter((e) => /virtiofsd pid \d+ \(.*\/export\): \d+ open files/.test(e)).map((e) => Number(/: (\d+) open files/.exec(e)![1]));
      expect(counts.length).toBeGreaterThan(0);
      return Math.max(...counts);
    };
    const before = await count();
    // the guest holds 40 files of the shared folder open: virtiofsd holds at least as many more
    await aivmOk(["ssh", proj, "--shell", "mkdir -p held && for i in $(seq 1 40); do echo $i > held/f$i; done"]);
    await aivmOk(["ssh", proj, "--shell", "for i in $(seq 1 40); do nohup sleep 300 < held/f$i >/dev/null 2>&1 & done; sleep 1"]);
    const during = await count();
    figures["virtiofsd open files (idle, 40 held by the guest)"] = `${before}, ${during}`;
    expect(during).toBeGreaterThanOrEqual(before + 30);
    await guest("pkill -u $(id -u) -x sleep; true");
    rmSync(join(proj, "held"), { recursive: true, force: true });
  });

  step("bench: warm aivm ssh . -- true vs bare ssh <vm> true", async () => {
    const n = 7;
    const bare: number[] = [];
    const ours: number[] = [];
    const cfg = join(env.HOME!, ".ssh", "config");
    for (let i = 0; i < n; i++) {
      const b = await sh(inNetEnv(["ssh", "-F", cfg, names.vm, "true"]));
      expect(b.code).toBe(0);
      bare.push(b.ms);
      const a = await sh(inNetEnv(["sh", "-c", `cd ${q(proj)} && exec ${q(BIN)} ssh . -- true`]));
      expect(a.code).toBe(0);
      ours.push(a.ms);
    }
    const med = (x: number[]) => [...x].sort((p, q2) => p - q2)[Math.floor(x.length / 2)]!;
    figures["bare ssh <vm> true (median of 7)"] = `${med(bare)} ms`;
    figures["aivm ssh . -- true (warm, median of 7)"] = `${med(ours)} ms`;
    figures["ratio"] = (med(ours) / med(bare)).toFixed(2);
  });

  step("aivm code without `code` on PATH prints the workstation steps for the folder", async () => {
    const r = await aivmOk(["code", proj, "--yes"]);
    expect(r.stdout).toContain(`code --remote ssh-remote+${names.vm} '${proj}'`);
    expect(r.stdout).toMatch(/ProxyJump /);
    expect(r.stdout).toContain(`Host ${names.vm}\n`);
  });

  step("an ro attachment on the running VM: readable, writes refused in the guest and through the root export", async () => {
    await aivmOk(["attach", roDir, "--access", "ro", "--yes"]); // the top-level command: share attach
    expect((await aivmOk(["ssh", roDir, "--", "cat", "ref.txt"])).stdout).toBe("read me\n");
    const w = await aivm(["ssh", roDir, "--", "touch", "x"]);
    expect(w.code).not.toBe(0);
    expect(w.stderr).toMatch(/Read-only file system/);
    // bypassing the guest's ro bind: the export itself is read-only on the host side
    const tok = (await guest(`ls /mnt/aivm-root`)).stdout.split("\n").find((l) => l.startsWith("reference-"));
    expect(tok).toBeDefined();
    const w2 = await guest(`sudo -n touch /mnt/aivm-root/${tok}/x`);
    expect(w2.code).not.toBe(0);
    expect(w2.stderr).toMatch(/Read-only file system/);
    expect(existsSync(join(roDir, "x"))).toBe(false);
  });

  step("guard S6: the export root is read-only in the guest, even to root; a planted link is never made", async () => {
    for (const cmd of ["sudo -n touch /mnt/aivm-root/planted", "sudo -n ln -s /etc /mnt/aivm-root/evil", "sudo -n mkdir /mnt/aivm-root/d"]) {
      const r = await guest(cmd);
      expect({ cmd, code: r.code === 0 ? 0 : 1 }).toEqual({ cmd, code: 1 });
      expect(r.stderr).toMatch(/Read-only file system/);
    }
    expect(existsSync(join(vmDir, "share", "evil")) || existsSync(join(vmDir, "export", "evil"))).toBe(false);
  });

  step("guard G1-G3: a hook, core.fsmonitor and commondir written in the guest (even as root) are refused; a commit in the guest works", async () => {
    guarded = join(runDir, "work", "guarded");
    mkdirSync(guarded);
    const hostGit = (...a: string[]) => must(["git", "-c", "safe.directory=*", "-c", "user.name=host", "-c", "user.email=h@example.invalid", "-C", guarded, ...a], { env: { ...process.env, HOME: env.HOME! } as Record<string, string> });
    await hostGit("init", "-q", "-b", "main");
    writeFileSync(join(guarded, "a.txt"), "one\n");
    await hostGit("add", "a.txt");
    await hostGit("commit", "-qm", "host commit");
    await must(["chown", "-R", `${OWNER}:${OWNER}`, guarded]);
    const config = readFileSync(join(guarded, ".git", "config"), "utf8");
    const hooks = readdirSync(join(guarded, ".git", "hooks")).sort();
    await aivmOk(["share", "attach", guarded, "--yes"]);
    expect((await aivmOk(["share", "list"])).stdout.split("\n")).toContainEqual([names.vm, "shared-root", "rw", guarded, guarded, "on"].join("\t"));
    const attempts = [
      "printf '[core]\\n\\tfsmonitor = touch /tmp/pwn\\n' >> .git/config",
      "git config core.fsmonitor 'touch /tmp/pwn'",
      "sudo -n sh -c 'printf \"#!/bin/sh\\ntouch /tmp/pwn\\n\" > .git/hooks/post-checkout'",
      "sudo -n sh -c 'echo /tmp/evil > .git/commondir'",
      "sudo -n mv .git/hooks .git/hooks-away",
      "sudo -n mv .git .git-away",
    ];
    for (const a of attempts) {
      const r = await aivm(["ssh", guarded, "--shell", a]);
      expect({ a, refused: r.code !== 0 }).toEqual({ a, refused: true });
      expect({ a, why: /Read-only file system|Device or resource busy|could not lock config file/.test(r.stderr) }).toEqual({ a, why: true });
    }
    expect(readFileSync(join(guarded, ".git", "config"), "utf8")).toBe(config);
    expect(readdirSync(join(guarded, ".git", "hooks")).sort()).toEqual(hooks);
    expect(readFileSync(join(guarded, ".git", "commondir"), "utf8").trim()).toBe(".");
    const c = await aivmOk(["ssh", guarded, "--shell", "echo two > b.txt && git add b.txt && git -c user.name=guest -c user.email=g@example.invalid commit -qm 'guest commit' && git log --format=%s"]);
    expect(c.stdout).toBe("guest commit\nhost commit\n");
    expect((await hostGit("log", "--format=%s")).stdout).toBe("guest commit\nhost commit\n");
    expect(existsSync("/tmp/pwn")).toBe(false);
  });

  step("a mode/access different from the saved one is refused (exit 2)", async () => {
    const r = await aivm(["share", "attach", roDir, "--access", "rw", "--yes"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/already attached .* access ro/);
  });

  step("vm down, host binds gone (as after a host reboot), vm up: mounts restored without help; a planted ~/.ssh record is not", async () => {
    // S5: a record the user never made (the guest cannot reach the store; an old or tampered file can) sharing ~/.ssh
    const secrets = join(env.HOME!, ".ssh");
    writeFileSync(configFile, configText() + `\n[[vms.attachments]]\nhost_path = ${JSON.stringify(secrets)}\nmode = "shared-root"\naccess = "rw"\nguest_dst = "/srv/keys"\n`);
    await aivmOk(["vm", "down", "--vm", names.vm, "--yes"], { timeoutMs: 5 * 60_000 });
    const exp = join(vmDir, "export");
    // unmount what a host reboot loses (a bind propagates to the export's peers, so one umount per path is enough)
    const targets = [...new Set(hostMounts().split("\n").map((l) => l.split(" ")[4]).filter((t): t is string => !!t && t.startsWith(exp + "/")))];
    for (const t of targets.reverse()) await sh(priv(["umount", t.replace(/\\040/g, " ")]));
    await sh(priv(["umount", exp]));
    expect(hostMounts()).not.toContain(esc(exp));
    // no --yes and no terminal: the saved folders are bound, the planted secrets folder is skipped with a warning
    const up = await aivmOk(["vm", "up", "--vm", names.vm], { timeoutMs: 15 * 60_000 });
    expect(up.stderr).toContain(`not binding the saved attachment ${secrets}`);
    // shareToken(~/.ssh) is "ssh-<hash>": no mount of that name in the stage, the share or the export
    expect(hostMounts().split("\n").filter((l) => /\/(stage|share|export)\/ssh-[0-9a-f]{10}$/.test(l.split(" ")[4] ?? ""))).toEqual([]);
    await aivmOk(["vm", "wait", "--vm", names.vm], { timeoutMs: 15 * 60_000 });
    figures["vm up (host binds restored before start)"] = secs(up.ms);
    expect((await guest("sudo -n ls -a /mnt/aivm-root")).stdout).not.toMatch(/^ssh-/m);
    expect((await guest("sudo -n grep -rl 'not really' /mnt/aivm-root /srv 2>/dev/null; true")).stdout).toBe("");
    writeFileSync(configFile, configText().replace(/\n\[\[vms\.attachments\]\]\nhost_path = "[^"]*\/\.ssh"\n[^[]*$/, "\n"));
    expect(configText()).not.toContain(secrets);
    const r = await guest(`mountpoint -q ${q(proj)} && mountpoint -q ${q(roDir)} && cat ${q(join(proj, "later.txt"))} ${q(join(roDir, "ref.txt"))}`);
    expect({ code: r.code, out: r.stdout }).toEqual({ code: 0, out: "later\nread me\n" });
    expect((await guest(`touch ${q(join(roDir, "y"))}`)).code).not.toBe(0);
  }, 30 * 60_000);

  step("detach removes the guest mount, its fstab line, the host bind and the record", async () => {
    await aivmOk(["detach", roDir, "--yes"]); // the top-level command: share detach
    expect((await guest(`mountpoint -q ${q(roDir)}`)).code).not.toBe(0);
    expect((await guest("cat /etc/fstab")).stdout).not.toContain("reference-");
    expect(hostMounts()).not.toContain("/export/reference-");
    expect(configText()).not.toContain(roDir);
    const list = await aivmOk(["share", "list"]);
    expect(list.stdout).toContain(proj);
    expect(list.stdout).not.toContain(roDir);
  });

  step("git mode: a commit goes host -> guest and back", async () => {
    repo = join(runDir, "work", "repo");
    mkdirSync(repo);
    const git = (...a: string[]) => must(["git", "-c", "user.name=host", "-c", "user.email=h@example.invalid", "-C", repo, ...a], { env: { ...process.env, HOME: env.HOME! } as Record<string, string> });
    await git("init", "-q", "-b", "main");
    writeFileSync(join(repo, "a.txt"), "one\n");
    await git("add", "a.txt");
    await git("commit", "-qm", "host commit");
    await aivmOk(["share", "attach", repo, "--mode", "git", "--yes"]);
    await aivmOk(["share", "sync", repo, "--push", "--yes"]);
    const g = await guest(`cd ${q(repo)} && cat a.txt && git log --format=%s`);
    expect(g.stdout).toBe("one\nhost commit\n");
    const c = await guest(`cd ${q(repo)} && echo two > b.txt && git add b.txt && git -c user.name=guest -c user.email=g@example.invalid commit -qm 'guest commit' && echo ok`);
    expect(c.stdout.trim()).toBe("ok");
    await aivmOk(["share", "sync", repo, "--pull", "--yes"]);
    expect(readFileSync(join(repo, "b.txt"), "utf8")).toBe("two\n");
    expect((await git("log", "--format=%s")).stdout).toBe("guest commit\nhost commit\n");
  });

  step("shared mode on a running VM: cold-plugged device after a consented restart, mounted and in fstab", async () => {
    const dir = join(runDir, "work", "per-folder");
    mkdirSync(dir);
    writeFileSync(join(dir, "s.txt"), "per folder\n");
    chownSync(dir, OWNER, OWNER);
    const r = await aivmOk(["share", "attach", dir, "--mode", "shared", "--yes"], { timeoutMs: 20 * 60_000, live: true });
    figures["share attach --mode shared (restart)"] = secs(r.ms);
    expect((await guest(`mountpoint -q ${q(dir)} && cat ${q(join(dir, "s.txt"))}`)).stdout).toBe("per folder\n");
    expect((await guest("cat /etc/fstab")).stdout).toMatch(/^aivm-per-folder-[0-9a-f]{10} .* virtiofs nofail 0 0$/m);
    expect((await sh(priv(["virsh", "-q", "-c", URI, "dumpxml", names.vm]))).stdout).toContain(`<source dir='${dir}'/>`);
    await aivmOk(["share", "detach", dir, "--yes"]);
    expect((await guest(`mountpoint -q ${q(dir)}`)).code).not.toBe(0);
  }, 25 * 60_000);

  step("vm delete leaves the host folders intact; fw remove, net destroy", async () => {
    if (KEEP) return;
    try { cpSync(join(vmDir, "console.log"), join(runDir, "console.log")); } catch {}
    await aivmOk(["vm", "delete", "--vm", names.vm, "--yes"], { timeoutMs: 5 * 60_000 });
    expect(readFileSync(join(proj, "from-host.txt"), "utf8")).toBe("hello from the host\n");
    expect(readFileSync(join(roDir, "ref.txt"), "utf8")).toBe("read me\n");
    expect(hostMounts()).not.toContain(esc(vmDir));
    await aivmOk(["fw", "remove", names.net, "--yes"]);
    await aivmOk(["net", "destroy", names.net, "--yes"]);
    tornDown = true;
  });

  test("nothing is left: no domain, network, mount or daemon", async () => {
    if (!runDir || KEEP) return;
    const problems = await teardown();
    expect(problems).toEqual([]);
  }, 5 * 60_000);

  afterAll(async () => {
    if (runDir && !tornDown && !KEEP) await teardown().catch((e) => console.error(`e2e: teardown: ${e}`));
    figures["e2e wall time"] = secs(Date.now() - t0);
    console.error(`e2e share figures:\n${Object.entries(figures).map(([k, v]) => `  ${k}: ${v}`).join("\n")}`);
    if (runDir) writeFileSync(join(ensureDir(join(ROOT, ".cache")), "e2e-share-figures.txt"), JSON.stringify(figures, null, 2) + "\n");
  });
});

async function teardown(): Promise<string[]> {
  const problems: string[] = [];
  if (state.failed && runDir) {
    const dest = ensureDir(join(ROOT, "e2e", "artifacts", basename(runDir)));
    for (const f of ["transcript.log", "console.log"]) try { cpSync(join(runDir, f), join(dest, f)); } catch {}
    try { cpSync(join(vmDir, "console.log"), join(dest, "vm-console.log")); } catch {}
    try { cpSync(`/var/log/libvirt/qemu/${names.vm}.log`, join(dest, "libvirt-qemu.log")); } catch {}
    console.error(`e2e: artifacts in ${dest}`);
  }
  if (lab && baseline) {
    const extra = added(baseline, await inventory(lab));
    for (const [k, v] of Object.entries(extra)) problems.push(`${k} left: ${v!.join(", ")}`);
    if (extra.domains?.length) {
      await sh(priv(["virsh", "-q", "-c", URI, "destroy", names.vm]));
      await sh(priv(["virsh", "-q", "-c", URI, "undefine", names.vm, "--nvram"]));
    }
    for (const n of extra.networks ?? []) {
      await sh(priv(["virsh", "-q", "-c", URI, "net-destroy", n]));
      await sh(priv(["virsh", "-q", "-c", URI, "net-undefine", n]));
    }
  }
  if (lab) {
    const pids = { ...lab.pids };
    problems.push(...(await stopLab(lab)));
    for (const [what, pid] of Object.entries(pids)) if (alive(pid)) problems.push(`${what} (pid ${pid}) still running`);
    lab = null;
  }
  // unmount everything under the run dir (deepest first) BEFORE any recursive delete
  if (sharedMount) {
    const under = hostMounts().split("\n").map((l) => l.split(" ")[4]).filter((t): t is string => !!t && (t === runDir || t.startsWith(runDir + "/")));
    for (const t of under.filter((t) => t !== runDir).reverse()) {
      problems.push(`mount left: ${t}`);
      await sh(priv(["umount", "-l", t.replace(/\\040/g, " ")]));
    }
    await sh(priv(["umount", "-l", runDir]));
    sharedMount = false;
  }
  if (vmDir && existsSync(vmDir)) problems.push(`VM directory left: ${vmDir}`);
  // nothing may be mounted below the run dir any more before a recursive delete (it would reach into shared folders)
  if (!hostMounts().includes(runDir) && !KEEP) rmSync(runDir, { recursive: true, force: true });
  else if (hostMounts().includes(runDir)) problems.push(`still mounted under ${runDir}: left in place`);
  tornDown = true;
  return problems;
}
