import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, isolatedEnv } from "./helpers/cli.ts";
import { aliasProblems, parseSshG } from "../lib/ssh-alias.ts";
import { fakeRunner } from "./helpers/fake-runner.ts";
import { readIpFile } from "../lib/vm/files.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { ADDED_EOL_NOTE, beginMarker, endMarker, knownHostsLine, knownIp, NO_IP_NOTE, removeBlock, removeSshConfig, renderSshBlock, sshArgv, upsertBlock, upsertSshConfig } from "../lib/ssh-config.ts";

const tmp = mkdtempSync(join(tmpdir(), "aivm-sshcfg-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const vm = (name = "box", o: { root?: string; identity?: string; user?: string } = {}) =>
  resolveVm({
    defaults: {
      vm: { name, user: o.user ?? "agent" },
      paths: { vm_root: o.root ?? "/srv/vms", image_cache: "/c", ssh_identity: o.identity ?? "/home/me/.ssh/id_aivm_ed25519", libvirt_uri: "qemu:///system" },
    },
  });

const PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGKJX1N8+Efyqr+S1H2uZtk7yRWeLo4BiydMHKYR93XT root@host";

describe("knownHostsLine", () => {
  test("pinned under the VM name, comment dropped", () => {
    expect(knownHostsLine(vm(), PUB)).toBe("box ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGKJX1N8+Efyqr+S1H2uZtk7yRWeLo4BiydMHKYR93XT");
    expect(knownHostsLine(vm("other"), PUB + "\n")).toStartWith("other ssh-ed25519 ");
  });
  test.each([["garbage"], ["ssh-ed25519"], ["ssh-ed25519 AAAA\nbox ssh-rsa BBBB"], ["ssh-dss AAAA"]])("refuses %p", (k) => {
    expect(() => knownHostsLine(vm(), k)).toThrow();
  });
});

describe("sshArgv", () => {
  const pinned = (kh: string) => ["-o", "IdentitiesOnly=yes", "-o", `UserKnownHostsFile=${kh}`, "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=box"];
  test.each([
    ["plain", vm(), {}, ["ssh", "-F", "/dev/null", "-o", "IdentityFile=/home/me/.ssh/id_aivm_ed25519", ...pinned("/srv/vms/box/known_hosts"), "agent@10.0.0.5"]],
    [
      "batch with timeout and a command",
      vm(),
      { batch: true, connectTimeoutS: 5, command: ["cloud-init", "status", "--wait"] },
      ["ssh", "-F", "/dev/null", "-o", "IdentityFile=/home/me/.ssh/id_aivm_ed25519", ...pinned("/srv/vms/box/known_hosts"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "agent@10.0.0.5", "--", "cloud-init", "status", "--wait"],
    ],
    ["tty", vm(), { tty: true }, ["ssh", "-F", "/dev/null", "-o", "IdentityFile=/home/me/.ssh/id_aivm_ed25519", ...pinned("/srv/vms/box/known_hosts"), "-t", "agent@10.0.0.5"]],
    ["no tty", vm(), { tty: false, command: [] }, ["ssh", "-F", "/dev/null", "-o", "IdentityFile=/home/me/.ssh/id_aivm_ed25519", ...pinned("/srv/vms/box/known_hosts"), "-T", "agent@10.0.0.5"]],
    [
      "paths with spaces, quotes and %",
      vm("box", { root: `/tmp/a  b/"q"\\100%`, identity: "/k/my key%1" }),
      {},
      ["ssh", "-F", "/dev/null", "-o", `IdentityFile="/k/my key%%1"`, ...pinned(`"/tmp/a  b/\\"q\\"\\\\100%%/box/known_hosts"`), "agent@10.0.0.5"],
    ],
  ] as const)("%s", (_what, v, o, want) => {
    expect(sshArgv(v, "10.0.0.5", o as Parameters<typeof sshArgv>[2])).toEqual([...want]);
  });
  test.each([
    ["a bad IP", () => sshArgv(vm(), "10.0.0.5; rm -rf /")],
    ["a zero timeout", () => sshArgv(vm(), "10.0.0.5", { connectTimeoutS: 0 })],
    ["a ${VAR} in a path", () => sshArgv(vm("box", { identity: "/k/${HOME}/id" }), "10.0.0.5")],
    ["a newline in a path", () => sshArgv(vm("box", { identity: "/k/a\nb" }), "10.0.0.5")],
  ])("refuses %s", (_what, f) => {
    expect(f).toThrow();
  });
});

describe("renderSshBlock", () => {
  test.each([
    ["plain", vm(), "10.77.0.5"],
    ["spaces and quotes", vm("dev-box", { root: `/tmp/a b/"x"`, identity: "/k/my id#1", user: "dev" }), "192.168.122.9"],
  ])("%s: snapshot", (_what, v, ip) => {
    const b = renderSshBlock(v, ip);
    expect(b.startsWith(beginMarker(v.name) + "\n")).toBe(true);
    expect(b.endsWith(endMarker(v.name) + "\n")).toBe(true);
    expect(b).toMatchSnapshot();
  });
  test("no IP yet: a note in place of HostName, still a valid block", () => {
    const b = renderSshBlock(vm(), null);
    expect(b).toContain(`Host box\n  ${NO_IP_NOTE}\n`);
    expect(b).not.toContain("HostName ");
    expect(upsertBlock("", "box", b)).toBe(b);
  });
  test("refuses a bad IP", () => {
    expect(() => renderSshBlock(vm(), "10.0.0.5\nHost *")).toThrow();
  });
});

describe("upsertBlock / removeBlock", () => {
  const A = renderSshBlock(vm("box"), "10.0.0.5");
  const A2 = renderSshBlock(vm("box"), "10.0.0.6");
  const B = renderSshBlock(vm("other"), "10.0.0.7");
  const crlf = (s: string) => s.replace(/\n/g, "\r\n");

  const cases: [string, string][] = [
    ["empty file", ""],
    ["other hosts, final newline", "Host github.com\n  User git\n\nHost *\n  ServerAliveInterval 30\n"],
    ["no final newline", "Host github.com\n  User git"],
    ["CRLF lines", "Host github.com\r\n  User git\r\n"],
    ["CRLF, no final newline", "Host github.com\r\n  User git"],
    ["another aivm block", "Include ~/.ssh/extra\n" + B],
    ["unicode and tabs", "# Über host ✓\nHost x\n\tUser ü\n"],
  ];

  for (const [name, text] of cases) {
    test(`${name}: append, replace, remove keep the rest byte-for-byte`, () => {
      const once = upsertBlock(text, "box", A);
      const added = !(text === "" || text.endsWith("\n"));
      const prefix = added ? text + (text.includes("\r\n") ? "\r\n" : "\n") : text;
      // a line break aivm had to add is noted on the begin marker, so that remove can take it away again
      const note = (b: string) => (added ? b.replace("# >>> aivm:box >>>", `# >>> aivm:box >>>${ADDED_EOL_NOTE}`) : b);
      expect(once.startsWith(prefix)).toBe(true);
      expect(once.slice(prefix.length).replace(/\r\n/g, "\n")).toBe(note(A));
      if (text.includes("\r\n")) expect(once.slice(prefix.length)).toBe(crlf(note(A)));
      // same block again: identical
      expect(upsertBlock(once, "box", A)).toBe(once);
      // a changed block replaces the old one in place
      const twice = upsertBlock(once, "box", A2);
      expect(twice.startsWith(prefix)).toBe(true);
      expect(twice.slice(prefix.length).replace(/\r\n/g, "\n")).toBe(note(A2));
      // remove gives back the original bytes, final line break or not
      expect(removeBlock(twice, "box")).toBe(text);
      expect(removeBlock(once, "box")).toBe(text);
      expect(removeBlock(text, "box")).toBe(text);
    });
  }

  test("replaces in the middle without touching either side", () => {
    const before = "Host a\n  User x\n";
    const after = "Host *\r\n  User y";
    const text = before + A + after;
    expect(upsertBlock(text, "box", A2)).toBe(before + A2 + after);
    expect(removeBlock(text, "box")).toBe(before + after);
  });

  test("two aivm blocks: each VM's block is its own", () => {
    let text = "Host z\n";
    text = upsertBlock(text, "box", A);
    text = upsertBlock(text, "other", B);
    expect(text).toBe("Host z\n" + A + B);
    expect(upsertBlock(text, "box", A2)).toBe("Host z\n" + A2 + B);
    expect(removeBlock(text, "other")).toBe("Host z\n" + A);
    expect(removeBlock(text, "box")).toBe("Host z\n" + B);
  });

  test("a VM whose name prefixes another's does not match it", () => {
    const text = renderSshBlock(vm("box-2"), "10.0.0.8");
    expect(removeBlock(text, "box")).toBe(text);
    expect(upsertBlock(text, "box", A)).toBe(text + A);
  });

  test("a duplicated block is collapsed into one", () => {
    expect(upsertBlock("x\n" + A + "y\n" + A + "z\n", "box", A2)).toBe("x\n" + A2 + "y\nz\n");
    expect(removeBlock("x\n" + A + "y\n" + A + "z\n", "box")).toBe("x\ny\nz\n");
  });

  test.each([
    ["a begin marker without an end", "a\n" + beginMarker("box") + "\nHost box\n"],
    ["an end marker without a begin", endMarker("box") + "\n"],
    ["nested begin markers", beginMarker("box") + "\n" + beginMarker("box") + "\n" + endMarker("box") + "\n"],
  ])("refuses to guess with %s", (_what, text) => {
    expect(() => upsertBlock(text, "box", A)).toThrow(/fix the file|marker/);
    expect(() => removeBlock(text, "box")).toThrow();
  });

  test("refuses a block without its markers", () => {
    expect(() => upsertBlock("", "box", "Host box\n")).toThrow(/must start with/);
    expect(() => upsertBlock("", "box", B)).toThrow(/must start with/);
  });
});

describe("upsertSshConfig / removeSshConfig", () => {
  const v = vm();
  let n = 0;
  const fresh = () => join(tmp, `home${n++}`);

  test("missing ~/.ssh: created 0700, file written 0600 after consent", async () => {
    const home = fresh();
    const file = join(home, ".ssh", "config");
    const { runner, fake } = fakeRunner({ yes: true });
    fake.real(["ssh", "-G"]);
    fake.on(["mkdir"], { exitCode: 0 });
    expect(await upsertSshConfig(runner, v, "10.0.0.5", file)).toBe("written");
    expect(fake.calls[0]).toMatchObject({ kind: "exec", argv: ["mkdir", "-p", "-m", "700", join(home, ".ssh")] });
    expect(fake.calls[1]).toMatchObject({ kind: "write", path: file, content: renderSshBlock(v, "10.0.0.5"), mode: 0o600 });
  });

  test("unchanged block: nothing written, nothing asked", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    writeFileSync(file, "Host a\n" + renderSshBlock(v, "10.0.0.5"));
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    fake.real(["ssh", "-G"]);
    expect(await upsertSshConfig(runner, v, "10.0.0.5", file)).toBe("unchanged");
    expect(fake.commands()).toEqual([`ssh -G -F ${file} box`]); // only the read that checks nothing overrides the block
  });

  test("a Host stanza above aivm's block wins in ssh: upsert warns, naming what it overrides (ssh -G, for real)", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    writeFileSync(file, "Host box\n  HostName 10.9.9.9\n  StrictHostKeyChecking no\n\n");
    const { runner, fake } = fakeRunner({ yes: true });
    fake.real(["ssh", "-G"]);
    let err = "";
    const o = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => ((err += t), true)) as typeof process.stderr.write;
    try {
      await upsertSshConfig(runner, v, "10.0.0.5", file);
    } finally {
      process.stderr.write = o;
    }
    expect(err).toContain("`ssh box` does not use aivm's block");
    expect(err).toContain("HostName is 10.9.9.9, not 10.0.0.5");
    expect(err).toContain("StrictHostKeyChecking is false");
  });

  test("aliasProblems: every option aivm's block sets is compared", () => {
    const g = parseSshG("hostname 10.0.0.5\nuser agent\nstricthostkeychecking true\nhostkeyalias box\nuserknownhostsfile /v/known_hosts /v/other\n");
    expect(aliasProblems(v, "10.0.0.5", "/v/known_hosts", g)).toEqual([]);
    expect(aliasProblems(v, "10.0.0.6", "/v/kh", g)).toEqual(["HostName is 10.0.0.5, not 10.0.0.6", "UserKnownHostsFile is /v/known_hosts /v/other, not /v/kh"]);
  });

  test("a change asks first: no terminal and no --yes refuses (exit 2), nothing written", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    writeFileSync(file, "Host a\n");
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    fake.real(["ssh", "-G"]);
    await expect(upsertSshConfig(runner, v, "10.0.0.5", file)).rejects.toMatchObject({ exitCode: 2 });
    expect(fake.calls).toEqual([]);
  });

  test("a change the user declines: exit 1, nothing written", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    writeFileSync(file, "Host a\n");
    const questions: string[] = [];
    const { runner, fake } = fakeRunner({ yes: false, interactive: true, ask: async (q) => (questions.push(q), "n") });
    fake.real(["ssh", "-G"]);
    await expect(upsertSshConfig(runner, v, "10.0.0.5", file)).rejects.toMatchObject({ exitCode: 1 });
    expect(questions[0]).toContain(file);
    expect(fake.calls).toEqual([]);
  });

  test("approved: the rest of the file is kept", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    writeFileSync(file, "Host a\r\n  User q");
    const { runner, fake } = fakeRunner({ yes: false, interactive: true, ask: async () => "y" });
    fake.real(["ssh", "-G"]);
    expect(await upsertSshConfig(runner, v, "10.0.0.9", file)).toBe("written");
    expect(fake.calls[0]).toMatchObject({ kind: "write", path: file, content: "Host a\r\n  User q\r\n" + renderSshBlock(v, "10.0.0.9").replace(beginMarker("box"), beginMarker("box") + ADDED_EOL_NOTE).replace(/\n/g, "\r\n") });
  });

  test("a symlinked config is written through to its target", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const real = join(home, "dotfiles-ssh-config");
    writeFileSync(real, "Host a\n");
    symlinkSync(real, join(home, ".ssh", "config"));
    const { runner, fake } = fakeRunner();
    fake.real(["ssh", "-G"]);
    expect(await upsertSshConfig(runner, v, "10.0.0.5", join(home, ".ssh", "config"))).toBe("written");
    expect(fake.calls[0]).toMatchObject({ kind: "write", path: real });
  });

  test("--dry-run prints the write and asks nothing", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    const { runner, fake, printed } = fakeRunner({ dryRun: true, yes: false, interactive: false });
    expect(await upsertSshConfig(runner, v, "10.0.0.5", file)).toBe("written");
    expect(fake.calls).toEqual([]);
    expect(printed.join("\n")).toContain(`cat > ${file}`);
    expect(printed.join("\n")).toContain("HostKeyAlias box");
  });

  test("remove: drops only the block; no block or no file: unchanged", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    const { runner, fake } = fakeRunner();
    fake.real(["ssh", "-G"]);
    expect(await removeSshConfig(runner, v, file)).toBe("unchanged");
    writeFileSync(file, "Host a\n");
    expect(await removeSshConfig(runner, v, file)).toBe("unchanged");
    writeFileSync(file, "Host a\n" + renderSshBlock(v, "10.0.0.5") + "Host b\n");
    expect(await removeSshConfig(runner, v, file)).toBe("removed");
    expect(fake.calls).toEqual([{ kind: "write", path: file, content: "Host a\nHost b\n", mode: 0o644 }]); // its own mode kept
  });

  test("the file's mode is kept (0644 stays 0644); group/other write bits, which ssh refuses, are dropped", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    for (const [mode, want] of [[0o644, 0o644], [0o600, 0o600], [0o640, 0o640], [0o664, 0o644], [0o666, 0o644]] as const) {
      writeFileSync(file, "Host a\n");
      chmodSync(file, mode);
      const { runner, fake } = fakeRunner();
      fake.unmatched = "ok"; // the ssh -G check after the write
      expect(await upsertSshConfig(runner, v, "10.0.0.5", file)).toBe("written");
      expect(fake.calls.filter((c) => c.kind === "write").map((c) => c.mode)).toEqual([want]);
    }
  });

  test("a file without a final line break: upsert then remove on disk gives back the same bytes and mode", async () => {
    const home = fresh();
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const file = join(home, ".ssh", "config");
    const original = "Host github.com\n  User git";
    writeFileSync(file, original);
    chmodSync(file, 0o644);
    const { runner, fake } = fakeRunner();
    fake.onDisk();
    fake.unmatched = "ok"; // the ssh -G check after the write
    await upsertSshConfig(runner, v, "10.0.0.5", file);
    expect(readFileSync(file, "utf8")).not.toBe(original);
    await removeSshConfig(runner, v, file);
    expect(readFileSync(file, "utf8")).toBe(original);
  });
});

describe("knownIp", () => {
  test("reads <vm.dir>/ip; missing or not an address: null", () => {
    const root = join(tmp, "vms");
    const v = vm("box", { root });
    expect(knownIp(v)).toBeNull();
    mkdirSync(v.dir, { recursive: true });
    writeFileSync(join(v.dir, "ip"), "10.0.0.5\n");
    expect(knownIp(v)).toBe("10.0.0.5");
    writeFileSync(join(v.dir, "ip"), "garbage\n");
    expect(knownIp(v)).toBeNull();
    // told apart for messages: missing is not malformed
    expect(readIpFile(v)).toEqual({ malformed: "garbage", path: join(v.dir, "ip") });
    rmSync(join(v.dir, "ip"));
    expect(readIpFile(v)).toEqual({ missing: true, path: join(v.dir, "ip") });
  });
});

describe("aivm ssh-config (the command, as a subprocess with an isolated HOME)", () => {

  test("print/upsert/remove: no IP yet is exit 1; print is the block on stdout; upsert asks, writes 0600 once; remove", async () => {
    const env = isolatedEnv();
    const vmDir = join(env.XDG_DATA_HOME!, "aivm", "vms", "box");
    const sshDir = join(env.HOME!, ".ssh");
    const file = join(sshDir, "config");

    // before `vm wait`: print shows the block without HostName (and says why); upsert refuses, exit 1
    const none = await aivm(["ssh-config", "print", "--vm", "box"], { env });
    expect(none.exitCode).toBe(0);
    expect(none.stdout).toContain(`Host box\n  ${NO_IP_NOTE}\n  User agent\n`);
    expect(none.stdout).not.toContain("HostName ");
    expect(none.stderr).toContain("no IP known yet");
    expect(none.stderr).toContain("aivm vm wait");
    const noIp = await aivm(["ssh-config", "upsert", "--vm", "box", "--yes"], { env });
    expect(noIp.exitCode).toBe(1);
    expect(noIp.stderr).toContain("no IP known yet");
    expect(noIp.stderr).toContain("aivm vm wait");
    expect(existsSync(file)).toBe(false);

    mkdirSync(vmDir, { recursive: true });
    writeFileSync(join(vmDir, "ip"), "10.77.0.42\n");
    const p = await aivm(["ssh-config", "print", "--vm", "box", "-v"], { env });
    expect(p.exitCode).toBe(0);
    expect(p.stdout).toStartWith("# >>> aivm:box >>>\nHost box\n  HostName 10.77.0.42\n");
    expect(p.stdout).toContain(`UserKnownHostsFile ${join(vmDir, "known_hosts")}\n`);

    const refused = await aivm(["ssh-config", "upsert", "--vm", "box"], { env });
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain("--yes");
    expect(existsSync(file)).toBe(false);

    const dry = await aivm(["ssh-config", "upsert", "--vm", "box", "--dry-run"], { env });
    expect(dry.exitCode).toBe(0);
    expect(dry.stdout).toContain("HostName 10.77.0.42");
    expect(existsSync(file)).toBe(false);

    const w = await aivm(["ssh-config", "upsert", "--vm", "box", "--yes"], { env });
    expect(w.exitCode).toBe(0);
    expect(w.stdout).toBe("");
    expect(readFileSync(file, "utf8")).toBe(p.stdout);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(sshDir).mode & 0o777).toBe(0o700);

    const mtime = statSync(file).mtimeMs;
    const again = await aivm(["ssh-config", "upsert", "--vm", "box"], { env });
    expect(again.exitCode).toBe(0);
    expect(again.stderr).toContain("nothing changed");
    expect(statSync(file).mtimeMs).toBe(mtime);

    writeFileSync(file, "Host a\n  User q\n" + readFileSync(file, "utf8") + "Host b");
    const rm = await aivm(["ssh-config", "remove", "--vm", "box", "--yes"], { env });
    expect(rm.exitCode).toBe(0);
    expect(readFileSync(file, "utf8")).toBe("Host a\n  User q\nHost b");
  }, 30_000);

  test("a bad --vm name is exit 2", async () => {
    const r = await aivm(["ssh-config", "print", "--vm", "Bad;Name"], { env: isolatedEnv() });
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
  });
});
