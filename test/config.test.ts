// Config validation (file:line:col, exit 78, file untouched), names at the edge, the TOML emitter, and the
// `aivm config` commands (real CLI subprocesses, plus init/edit in-process with a fake Runner).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import TOML from "@iarna/toml";
import { aivm, isolatedEnv, ROOT } from "./helpers/cli.ts";
import { fakeRunner } from "./helpers/fake-runner.ts";
import { bigDoc } from "./helpers/config-writer.ts";
import { setVerbosity } from "../lib/log.ts";
import { editConfig, initConfig, lintProblems } from "../lib/flows/init.ts";
import { context, type Ctx } from "../lib/cli/_shared.ts";
import { loadStore, parseStore } from "../lib/config/store.ts";
import { renderToml } from "../lib/config/toml.ts";
import { UBUNTU_2404, StoreDoc } from "../lib/config/model.ts";
import { realRunner, Runner } from "../lib/run.ts";
import type { AivmError } from "../lib/errors.ts";

const FIX = join(ROOT, "test/fixtures/config");
setVerbosity({ quiet: true });
const tmp = () => mkdtempSync(join(tmpdir(), "aivm-cfg-"));

/** A fixture copied to a temp dir, with its bytes and mtime to check it stays untouched. */
function copyFixture(name: string): { path: string; bytes: Buffer; mtime: number } {
  const path = join(tmp(), name);
  copyFileSync(join(FIX, name), path);
  return { path, bytes: readFileSync(path), mtime: statSync(path).mtimeMs };
}

function expectUntouched(f: { path: string; bytes: Buffer; mtime: number }): void {
  expect(readFileSync(f.path).equals(f.bytes)).toBe(true);
  expect(statSync(f.path).mtimeMs).toBe(f.mtime);
}

const BAD_TYPES = [
  "3:1: defaults.vm.cpus must be an integer",
  "5:1: unknown key colour in defaults.vm",
  '8:3: defaults.network.subnet: "10.77.0.1/24" is not an IPv4 CIDR with a clean network address (e.g. 10.77.0.0/24)',
  "18:1: networks[1].firewall.enabled must be a boolean",
  "19:1: networks[1].firewall.allow_tcp_ports: 70000 is not a port (1-65535)",
  '27:1: vms[0].attachments[0].host_path: "relative/path" is not an absolute path',
  "32:1: unknown key extra",
];

describe("invalid config files: exit 78, file:line:col, file untouched (real CLI)", () => {
  test.each([
    [["config", "show"]],
    [["config", "show", "--json"]],
    [["config", "show", "-v"]],
    [["config", "lint"]],
    [["up", "--dry-run", "--yes"]],
  ])("malformed TOML: %p", async (args) => {
    const f = copyFixture("malformed.toml");
    const r = await aivm([...args, "--config", f.path]);
    expect(r.exitCode).toBe(78);
    const line = `${f.path}:4:21: Unterminated string`;
    if (args[1] === "lint") expect(r.stdout).toBe(line + "\n");
    else expect(r.stderr.split("\n")[0]).toBe(`aivm: config: ${line}`);
    expectUntouched(f);
  });

  test("AIVM_CONFIG names the file too", async () => {
    const f = copyFixture("malformed.toml");
    const r = await aivm(["config", "show"], { env: { ...isolatedEnv(), AIVM_CONFIG: f.path } });
    expect(r.exitCode).toBe(78);
    expect(r.stderr).toStartWith(`aivm: config: ${f.path}:4:21: Unterminated string\n`);
    expectUntouched(f);
  });

  test("wrong types and unknown keys: the first problem with its line:col, and a hint to lint", async () => {
    const f = copyFixture("bad-types.toml");
    const r = await aivm(["config", "show", "--config", f.path]);
    expect(r.exitCode).toBe(78);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(`aivm: config: ${f.path}:${BAD_TYPES[0]}\nhint: ${BAD_TYPES.length - 1} more problem(s): run \`aivm config lint\`\n`);
    expectUntouched(f);
  });

  test("config lint lists every problem, one per line, exit 78", async () => {
    const f = copyFixture("bad-types.toml");
    const r = await aivm(["config", "lint", "--config", f.path]);
    expect(r.exitCode).toBe(78);
    expect(r.stdout).toBe(BAD_TYPES.map((l) => `${f.path}:${l}\n`).join(""));
    expectUntouched(f);
  });

  test("config lint --json: every problem with line and col", async () => {
    const f = copyFixture("bad-types.toml");
    const r = await aivm(["config", "lint", "--json", "--config", f.path]);
    expect(r.exitCode).toBe(78);
    const j = JSON.parse(r.stdout);
    expect(j.ok).toBe(false);
    expect(j.path).toBe(f.path);
    expect(j.problems.map((p: { line: number; col: number; message: string }) => `${p.line}:${p.col}: ${p.message}`)).toEqual(BAD_TYPES);
  });

  test("config lint: a clean file exits 0 with nothing on stdout", async () => {
    const f = copyFixture("valid.toml");
    const r = await aivm(["config", "lint", "--config", f.path]);
    expect(r).toMatchObject({ exitCode: 0, stdout: "" });
    const j = await aivm(["config", "lint", "--json", "--config", f.path]);
    expect(JSON.parse(j.stdout)).toEqual({ path: f.path, ok: true, problems: [] });
  });

  test("config lint: a missing file exits 78 with a hint", async () => {
    const path = join(tmp(), "none.toml");
    const r = await aivm(["config", "lint", "--config", path]);
    expect(r.exitCode).toBe(78);
    expect(r.stderr).toBe(`aivm: config: ${path}: no such file\nhint: create it with \`aivm config init\`\n`);
    expect(existsSync(path)).toBe(false);
  });

  test("duplicate names and shared bridges are reported where they sit", () => {
    const text = '[[networks]]\nname = "a"\nbridge = "br0"\n\n[[networks]]\nname = "b"\nbridge = "br0"\n\n[[networks]]\nname = "a"\n';
    const path = join(tmp(), "dup.toml");
    writeFileSync(path, text);
    expect(lintProblems(path).map((p) => `${p.line}:${p.col}: ${p.message}`)).toEqual([
      "10:1: duplicate network name a",
      "7:1: networks[1]: bridge br0 is also used by network a",
      "5:1: networks[1]: network b: subnet 10.77.0.0/24 (not set: the built-in default) overlaps network a (10.77.0.0/24)",
    ]);
  });

  test("problems inside [[vms]] tables point at the right record", () => {
    const text = '[[vms]]\nname = "a"\nnetwork = "n"\n\n[[vms]]\nname = "b"\nnetwork = "n"\n[vms.image]\nsha256 = "nope"\n\n[[vms.attachments]]\nhost_path = "/x"\nmode = "weird"\n';
    const path = join(tmp(), "vms.toml");
    writeFileSync(path, text);
    expect(lintProblems(path).map((p) => `${p.line}:${p.col}: ${p.message}`)).toEqual([
      '9:1: vms[1].image.sha256: "nope" is not a sha256 hex digest (64 lowercase hex characters)',
      "13:1: vms[1].attachments[0].mode: must be one of shared-root, shared, git",
    ]);
  });

  test("guest_dst in a file gets the command line's check: /proc/../etc, /etc and /var are refused", () => {
    const path = join(tmp(), "g.toml");
    const att = (g: string) => `[[vms.attachments]]\nhost_path = "/x${g.length}"\nguest_dst = "${g}"\n`;
    writeFileSync(path, '[[vms]]\nname = "a"\nnetwork = "n"\n\n' + ["/proc/../etc", "/etc/ssh", "/var", "/work/ok"].map(att).join("\n"));
    expect(lintProblems(path).map((p) => `${p.line}:${p.col}: ${p.message}`)).toEqual([
      '7:1: vms[0].attachments[0].guest_dst: "/proc/../etc" is not a normalized path (no //, . or .. segments)',
      '11:1: vms[0].attachments[1].guest_dst: "/etc/ssh" is under /etc, a system directory of the guest',
      '15:1: vms[0].attachments[2].guest_dst: "/var" would hide /var/lib, a system directory of the guest',
    ]);
  });
});

describe("names are rejected at the edge with exit 2 (real CLI)", () => {
  const bad = ["bad name", "a;b", "a<b", 'a"b', "a'b", "a\nb", "a".repeat(64), "Upper", "-lead", ""];
  test.each(bad.map((b) => [b]))("--vm %p", async (name) => {
    const env = isolatedEnv();
    const r = await aivm(["up", "--dry-run", "--yes", `--vm=${name}`], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toStartWith("aivm: invalid VM name: ");
    expect(existsSync(join(env.XDG_CONFIG_HOME!, "aivm"))).toBe(false);
  });

  test("context() checks --vm before it loads anything; 63 characters are fine", () => {
    expect(() => context({ vm: "a b", config: "/nonexistent/dir/x.toml" })).toThrow(/invalid VM name/);
    const x = join(tmp(), "x.toml");
    writeFileSync(x, "");
    expect(() => context({ vm: "a".repeat(63), config: x })).not.toThrow();
  });

  test("network and VM names in the file are validated (exit 78)", () => {
    const path = join(tmp(), "n.toml");
    writeFileSync(path, '[[networks]]\nname = "my net"\n\n[[vms]]\nname = "x;y"\nnetwork = "a<b"\n');
    expect(lintProblems(path).map((p) => `${p.line}:${p.col}`)).toEqual(["2:1", "5:1", "6:1"]);
  });
});

describe("TOML emitter", () => {
  test("round trip: renderToml(parse(x)) is stable", () => {
    for (const doc of [loadStore(join(FIX, "valid.toml")).doc, bigDoc(0, 20), bigDoc(1, 3)]) {
      const once = renderToml(doc);
      const parsed = parseStore(once, "x.toml");
      expect(parsed).toEqual(doc);
      expect(renderToml(parsed)).toBe(once);
    }
  });

  test("integers are written plainly (2048, not 2_048)", () => {
    const text = renderToml({ defaults: { vm: { memory_mib: 2048, disk_gib: 40, cpus: 16 } }, networks: [{ name: "n", firewall: { allow_tcp_ports: [65535, 10000] } }] });
    expect(text).toContain("memory_mib = 2048\n");
    expect(text).toContain("allow_tcp_ports = [65535, 10000]\n");
    expect(text).not.toMatch(/\d_\d/);
    // the library we parse with would have written 2_048: proof the emitter is ours
    expect(TOML.stringify({ a: 2048 } as never)).toContain("2_048");
  });

  test("hostile strings survive: quotes, backslashes, newlines, control characters, unicode", () => {
    const weird = 'a "q" \\ b\n\tc\u0001 é 🐧 <&>';
    const doc: StoreDoc = { vms: [{ name: "v", network: "n", attachments: [{ host_path: "/x", mode: "shared", access: "rw", guest_dst: "/" + weird }] }] };
    const text = renderToml(doc);
    expect(text.split("\n").filter((l) => l.startsWith("guest_dst")).length).toBe(1);
    expect(() => parseStore(text, "x")).toThrow(/control characters/); // the value itself is refused by the schema...
    expect((TOML.parse(text) as { vms: { attachments: { guest_dst: string }[] }[] }).vms[0]!.attachments[0]!.guest_dst).toBe("/" + weird); // ...but the TOML is exact
  });
});

describe("config path and show (real CLI)", () => {
  test("config path: XDG default, --config, AIVM_CONFIG", async () => {
    const env = isolatedEnv();
    expect((await aivm(["config", "path"], { env })).stdout).toBe(join(env.XDG_CONFIG_HOME!, "aivm", "config.toml") + "\n");
    expect((await aivm(["config", "path", "--config", "/x/y.toml"], { env })).stdout).toBe("/x/y.toml\n");
    expect((await aivm(["config", "path"], { env: { ...env, AIVM_CONFIG: "/z.toml" } })).stdout).toBe("/z.toml\n");
  });

  test("config show prints the file as stored, byte for byte", async () => {
    const f = copyFixture("valid.toml");
    const r = await aivm(["config", "show", "--config", f.path]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(f.bytes.toString("utf8"));
  });

  test("config show without a file exits 78 with a hint", async () => {
    const r = await aivm(["config", "show", "--config", join(tmp(), "none.toml")]);
    expect(r.exitCode).toBe(78);
    expect(r.stderr).toContain("hint: create it with `aivm config init --config ");
  });

  test("config show --json -v: the resolved view on stdout, logs only on stderr", async () => {
    const f = copyFixture("valid.toml");
    const r = await aivm(["config", "show", "--json", "-v", "--config", f.path]);
    expect(r.exitCode).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(Object.keys(j)).toEqual(["path", "defaults", "networks", "vms"]);
    expect(Object.keys(j.defaults)).toEqual(["vm", "network", "firewall", "image", "paths"]);
    expect(j.path).toBe(f.path);
    expect(j.networks).toHaveLength(1);
    expect(j.networks[0]).toMatchObject({ name: "lab", subnet: "10.88.0.0/24", gateway: "10.88.0.1", recorded: true, firewall: { allowTcp: [8080] } });
    expect(j.vms).toHaveLength(1);
    expect(j.vms[0]).toMatchObject({ name: "box", recorded: true, cpus: 2, memoryMib: 2048, network: { name: "lab" }, image: { url: "file:///srv/images/base.qcow2" } });
    expect(j.vms[0].attachments[0].host_path).toBe('/home/u/My Project "q" & <x>');
  });

  test("config show --json with only [defaults]: the network and VM `up` would create", async () => {
    const path = join(tmp(), "c.toml");
    writeFileSync(path, '[defaults.vm]\nname = "solo"\n[defaults.network]\nname = "lan"\nsubnet = "10.90.0.0/24"\n');
    const j = JSON.parse((await aivm(["config", "show", "--json", "--config", path])).stdout);
    expect(j.networks.map((n: { name: string; recorded: boolean }) => [n.name, n.recorded])).toEqual([["lan", false]]);
    expect(j.vms.map((v: { name: string; recorded: boolean; network: { subnet: string } }) => [v.name, v.recorded, v.network.subnet])).toEqual([["solo", false, "10.90.0.0/24"]]);
    expect(j.defaults.image).toEqual(UBUNTU_2404);
  });
});

describe("config init (real CLI)", () => {
  test("no terminal and neither --defaults nor --yes: exit 2, nothing written", async () => {
    const env = isolatedEnv();
    const r = await aivm(["config", "init"], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("pass --defaults (or --yes)");
    expect(existsSync(join(env.XDG_CONFIG_HOME!, "aivm", "config.toml"))).toBe(false);
  });

  test("--yes: writes [defaults], creates the SSH key, prints the path; again: exit 2 untouched; --force replaces", async () => {
    const env = isolatedEnv();
    const path = join(env.XDG_CONFIG_HOME!, "aivm", "config.toml");
    const r = await aivm(["config", "init", "--yes"], { env });
    expect(r.stderr).not.toContain("aivm:");
    expect(r).toMatchObject({ exitCode: 0, stdout: path + "\n" });
    const doc = loadStore(path).doc;
    expect(Object.keys(doc.defaults!)).toEqual(["vm", "network", "firewall", "image", "paths"]);
    expect(doc.defaults!.paths!.ssh_identity).toBe("~/.ssh/id_aivm_ed25519");
    expect(existsSync(join(env.HOME!, ".ssh/id_aivm_ed25519"))).toBe(!!Bun.which("ssh-keygen"));
    expect(doc.defaults!.image).toEqual(UBUNTU_2404);
    const bytes = readFileSync(path);
    const again = await aivm(["config", "init", "--defaults"], { env });
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toContain("already has [defaults]");
    expect(readFileSync(path).equals(bytes)).toBe(true);
    const sha = "ab".repeat(32);
    const forced = await aivm(["config", "init", "--force", "--defaults", "--image-url", "file:///srv/base.qcow2", "--image-sha256", sha], { env });
    expect(forced.exitCode).toBe(0);
    expect(loadStore(path).doc.defaults!.image).toEqual({ url: "file:///srv/base.qcow2", sha256: sha });
  }, 20_000);

  test.each([
    [["--image-url", "file:///x.img"], "go together"],
    [["--image-sha256", "ab".repeat(32)], "go together"],
    [["--image-url", "ftp://x", "--image-sha256", "ab".repeat(32)], "is not an https:// or file:// URL"],
    [["--image-url", "file:///x.img", "--image-sha256", "XYZ"], "is not a sha256"],
  ])("bad image pin %p: exit 2, nothing written", async (extra, msg) => {
    const env = isolatedEnv();
    const r = await aivm(["config", "init", "--defaults", ...extra], { env });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(msg);
    expect(existsSync(join(env.XDG_CONFIG_HOME!, "aivm"))).toBe(false);
  });
});

describe("config init (fake Runner)", () => {
  let home: string;
  let savedHome: string | undefined;
  beforeEach(() => {
    savedHome = process.env.HOME;
    home = tmp();
    process.env.HOME = home;
    process.env.XDG_DATA_HOME = join(home, ".local/share");
    process.env.XDG_CACHE_HOME = join(home, ".cache");
  });
  afterEach(() => {
    process.env.HOME = savedHome;
  });

  const init = (path: string, runner: Runner, o: Parameters<typeof initConfig>[2]) => initConfig(runner, loadStore(path), o);

  const ROUTES = "default via 192.168.1.1 dev eth0\n10.77.0.0/16 dev wg0 scope link\n192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.5\n";

  test("picks a /24 free of routes and stored networks, keeps an existing key, runs no ssh-keygen", async () => {
    mkdirSync(join(home, ".ssh"));
    writeFileSync(join(home, ".ssh/id_ed25519"), "k");
    writeFileSync(join(home, ".ssh/id_ed25519.pub"), "k");
    const path = join(tmp(), "config.toml");
    writeFileSync(path, renderToml({ networks: [{ name: "old", subnet: "10.78.0.0/24" }] }));
    const { runner, fake } = fakeRunner({ yes: false });
    fake.on(["ip", "-4", "route"], { stdout: ROUTES });
    await init(path, runner, { defaults: true });
    expect(fake.commands()).toEqual(["ip -4 route"]);
    const d = loadStore(path).doc;
    expect(d.defaults!.network!.subnet).toBe("10.79.0.0/24");
    expect(d.defaults!.paths!.ssh_identity).toBe("~/.ssh/id_ed25519");
    expect(d.networks).toEqual([{ name: "old", subnet: "10.78.0.0/24" }]); // records kept
  });

  test("no key: ssh-keygen after consent (--yes); --dry-run prints it and the file, writes nothing", async () => {
    const path = join(tmp(), "config.toml");
    const { runner, fake } = fakeRunner({ yes: true });
    fake.on(["ip", "-4", "route"], { stdout: "" }).on(["mkdir"], {}).on(["ssh-keygen"], {});
    await init(path, runner, {});
    expect(fake.commands().slice(-1)[0]).toMatch(new RegExp(`^ssh-keygen -q -t ed25519 -N  -C aivm@\\S+ -f ${home}/.ssh/id_aivm_ed25519$`));
    expect(loadStore(path).doc.defaults!.network!.subnet).toBe("10.77.0.0/24");

    const p2 = join(tmp(), "config.toml");
    const dry = fakeRunner({ dryRun: true, yes: false });
    dry.fake.on(["ip", "-4", "route"], { stdout: ROUTES });
    await init(p2, dry.runner, { defaults: true });
    expect(existsSync(p2)).toBe(false);
    expect(dry.fake.commands()).toEqual(["ip -4 route"]); // only the read ran
    // as the real run: without --yes and without a terminal no key is made, so none is printed
    expect(dry.printed.join("\n")).not.toContain("ssh-keygen");
    const p3 = join(tmp(), "config.toml");
    const dryYes = fakeRunner({ dryRun: true, yes: true });
    dryYes.fake.on(["ip", "-4", "route"], { stdout: ROUTES });
    await init(p3, dryYes.runner, { defaults: true });
    expect(dryYes.fake.commands()).toEqual(["ip -4 route"]);
    expect(dryYes.printed.join("\n")).toMatch(/ssh-keygen -q -t ed25519 -N '' -C aivm@\S+ -f \S+id_aivm_ed25519/);
  });

  test("--defaults with no terminal and no key: writes the config, warns, creates nothing", async () => {
    const path = join(tmp(), "config.toml");
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    fake.on(["ip", "-4", "route"], { stdout: "" });
    await init(path, runner, { defaults: true });
    expect(fake.commands()).toEqual(["ip -4 route"]);
    expect(loadStore(path).doc.defaults!.paths!.ssh_identity).toBe("~/.ssh/id_aivm_ed25519");
  });

  test("review on a terminal: 'n' writes nothing (exit 1), Enter accepts", async () => {
    mkdirSync(join(home, ".ssh"));
    writeFileSync(join(home, ".ssh/id_rsa"), "k");
    writeFileSync(join(home, ".ssh/id_rsa.pub"), "k");
    const path = join(tmp(), "config.toml");
    const asked: string[] = [];
    const answers = ["n", ""];
    const { runner, fake } = fakeRunner({ yes: false, interactive: true, ask: async (q) => { asked.push(q); return answers.shift()!; } });
    fake.on(["ip", "-4", "route"], { stdout: "" });
    let err: unknown;
    try { await init(path, runner, {}); } catch (e) { err = e; }
    expect((err as AivmError).exitCode).toBe(1);
    expect(existsSync(path)).toBe(false);
    expect(asked).toEqual(["Use these values? [Y/n] "]);
    await init(path, runner, {});
    expect(loadStore(path).doc.defaults!.paths!.ssh_identity).toBe("~/.ssh/id_rsa");
  });

  test("existing [defaults] without --force: exit 2, file untouched", async () => {
    const f = copyFixture("valid.toml");
    const { runner } = fakeRunner();
    let err: unknown;
    try { await init(f.path, runner, { defaults: true }); } catch (e) { err = e; }
    expect((err as AivmError).exitCode).toBe(2);
    expectUntouched(f);
  });
});

describe("config edit", () => {
  let saved: Record<string, string | undefined>;
  beforeEach(() => { saved = { EDITOR: process.env.EDITOR, VISUAL: process.env.VISUAL }; delete process.env.VISUAL; });
  afterEach(() => { process.env.EDITOR = saved.EDITOR; process.env.VISUAL = saved.VISUAL; });

  /** An "editor" that replaces the file with `content` (and optionally touches the real config meanwhile). */
  function editorWriting(content: string, alsoWrite?: [string, string]): void {
    const dir = tmp();
    writeFileSync(join(dir, "new.toml"), content);
    const extra = alsoWrite ? `printf '%s' '${alsoWrite[1]}' > '${alsoWrite[0]}'\n` : "";
    const script = join(dir, "ed.sh");
    writeFileSync(script, `#!/bin/sh\ncp '${join(dir, "new.toml")}' "$1"\n${extra}`);
    chmodSync(script, 0o755);
    process.env.EDITOR = script;
  }

  const edit = (path: string, runner = realRunner({ interactive: false })) => editConfig(runner, path);

  test("a valid edit is saved verbatim (comments kept)", async () => {
    const f = copyFixture("valid.toml");
    const next = f.bytes.toString() + "\n# added\n[[networks]]\nname = \"other\"\nsubnet = \"10.91.0.0/24\"\n";
    editorWriting(next);
    await edit(f.path);
    expect(readFileSync(f.path, "utf8")).toBe(next);
  });

  test("an invalid edit without a terminal: exit 78, file untouched, the edit kept in a file it names", async () => {
    const f = copyFixture("valid.toml");
    editorWriting('[defaults.vm]\ncpus = "x"\n');
    let err: unknown;
    try { await edit(f.path); } catch (e) { err = e; }
    expect((err as AivmError).exitCode).toBe(78);
    expectUntouched(f);
    const kept = /kept in (\S+)$/.exec((err as AivmError).why)![1]!;
    expect(readFileSync(kept, "utf8")).toBe('[defaults.vm]\ncpus = "x"\n');
  });

  test("an invalid edit on a terminal: re-edit is offered; 'n' discards", async () => {
    const f = copyFixture("valid.toml");
    editorWriting("[defaults.vm\n");
    const answers = ["y", "n"];
    let err: unknown;
    try { await edit(f.path, realRunner({ interactive: true, ask: async () => answers.shift()! })); } catch (e) { err = e; }
    expect(answers).toEqual([]); // asked twice: the editor ran twice
    expect((err as AivmError).exitCode).toBe(78);
    expectUntouched(f);
  });

  test("a broken file can be fixed through edit", async () => {
    const f = copyFixture("malformed.toml");
    editorWriting("[defaults.vm]\ncpus = 2\n");
    await edit(f.path);
    expect(readFileSync(f.path, "utf8")).toBe("[defaults.vm]\ncpus = 2\n");
  });

  test("the file changed on disk during the edit: exit 1, the other write survives", async () => {
    const f = copyFixture("valid.toml");
    editorWriting("[defaults.vm]\ncpus = 3\n", [f.path, "# other writer\n"]);
    let err: unknown;
    try { await edit(f.path); } catch (e) { err = e; }
    expect((err as AivmError).exitCode).toBe(1);
    expect(readFileSync(f.path, "utf8")).toBe("# other writer\n");
    // the user's edited text is not thrown away: it is kept next to the store, 0600, in a file the error names
    const kept = /your edit is kept in (\S+)$/.exec((err as AivmError).why)![1]!;
    expect(kept.startsWith(f.path + ".edit-")).toBe(true);
    expect(readFileSync(kept, "utf8")).toBe("[defaults.vm]\ncpus = 3\n");
    expect(statSync(kept).mode & 0o777).toBe(0o600);
  });

  test("no change: nothing written", async () => {
    const f = copyFixture("valid.toml");
    editorWriting(f.bytes.toString());
    await edit(f.path);
    expectUntouched(f);
  });
});
