// Oracle: OpenSSH itself (`ssh -G`, which parses the config and prints the result without connecting) reads the
// managed block, and the ssh argv, back to exactly the values we meant, including paths with spaces, quotes and %.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveVm } from "../../lib/config/resolve.ts";
import { renderSshBlock, sshArgv, upsertBlock } from "../../lib/ssh-config.ts";

const has = (t: string) => !!Bun.which(t);
if (!has("ssh") && process.env.CI === "true") throw new Error("ssh is missing (install openssh-client)");


const dir = mkdtempSync(join(tmpdir(), "aivm-ssh-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const vm = (name: string, root: string, identity: string, user = "agent") =>
  resolveVm({ defaults: { vm: { name, user }, paths: { vm_root: root, image_cache: "/c", ssh_identity: identity, libvirt_uri: "qemu:///system" } } });

const CASES = [
  { name: "box", root: "/srv/vms", identity: join(dir, "id_aivm_ed25519"), ip: "10.77.0.5" },
  // two spaces: a path split at whitespace would read back with one
  { name: "spaced", root: "/tmp/My  VMs", identity: join(dir, "my  keys", "id"), ip: "192.168.50.20" },
  { name: "hostile", root: `/tmp/a b/"q" it's #1 100% ü`, identity: join(dir, `x\\y "z" %d #2 ü`), ip: "10.0.0.2" },
];
// ssh -i ignores a file that does not exist
for (const c of CASES) {
  mkdirSync(join(c.identity, ".."), { recursive: true });
  writeFileSync(c.identity, "");
}
/** ssh -G prints IdentityFile before its %-token expansion (the expansion turns %% back into %) */
const raw = (p: string) => p.replaceAll("%", "%%");

/** `ssh -G` output as a map of lower-case keys to their values (a key given several times keeps every value). */
function sshG(argv: string[]): Map<string, string[]> {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: dir } });
  // ssh -G warns about a -i file that does not exist and about stdin not being a terminal; nothing else is expected
  const noise = /^(Pseudo-terminal will not be allocated|Warning: Identity file .* not accessible)/;
  expect(r.stderr.toString().split("\n").filter((l) => l && !noise.test(l))).toEqual([]);
  expect(r.exitCode).toBe(0);
  const m = new Map<string, string[]>();
  for (const line of r.stdout.toString().split("\n")) {
    const i = line.indexOf(" ");
    if (i < 0) continue;
    const k = line.slice(0, i);
    m.set(k, [...(m.get(k) ?? []), line.slice(i + 1)]);
  }
  return m;
}

describe.skipIf(!has("ssh"))("ssh -G -F FILE <vm>", () => {
  test("the block printed before an IP is known still parses (no HostName: ssh would use the alias)", () => {
    const c = CASES[0]!;
    const v = vm(c.name, c.root, c.identity);
    const file = join(dir, "config-no-ip");
    writeFileSync(file, renderSshBlock(v, null));
    const g = sshG(["ssh", "-G", "-F", file, v.name]);
    expect(g.get("hostname")).toEqual([v.name]);
    expect(g.get("hostkeyalias")).toEqual([v.name]);
  });

  for (const c of CASES) {
    test(`${c.name}: the block reads back`, () => {
      const v = vm(c.name, c.root, c.identity);
      const file = join(dir, `config-${c.name}`);
      // among other hosts, including a catch-all after it
      writeFileSync(file, upsertBlock("Host github.com\n  User git\n", v.name, renderSshBlock(v, c.ip)) + "Host *\n  ServerAliveInterval 30\n");
      const g = sshG(["ssh", "-G", "-F", file, v.name]);
      expect(g.get("hostname")).toEqual([c.ip]);
      expect(g.get("user")).toEqual(["agent"]);
      expect(g.get("identityfile")).toEqual([raw(c.identity)]);
      expect(g.get("identitiesonly")).toEqual(["yes"]);
      expect(g.get("userknownhostsfile")).toEqual([join(c.root, c.name, "known_hosts")]);
      expect(g.get("stricthostkeychecking")).toEqual(["true"]);
      expect(g.get("hostkeyalias")).toEqual([v.name]);
      expect(g.get("serveraliveinterval")).toEqual(["30"]);
      // the other host is untouched by the block
      expect(sshG(["ssh", "-G", "-F", file, "github.com"]).get("user")).toEqual(["git"]);
    });

    test(`${c.name}: the ssh argv reads back`, () => {
      const v = vm(c.name, c.root, c.identity);
      const argv = sshArgv(v, c.ip, { batch: true, connectTimeoutS: 7 });
      const g = sshG([argv[0]!, "-G", ...argv.slice(1)]);
      expect(g.get("hostname")).toEqual([c.ip]);
      expect(g.get("user")).toEqual(["agent"]);
      expect(g.get("identityfile")).toEqual([raw(c.identity)]);
      expect(g.get("userknownhostsfile")).toEqual([join(c.root, c.name, "known_hosts")]);
      expect(g.get("stricthostkeychecking")).toEqual(["true"]);
      expect(g.get("hostkeyalias")).toEqual([v.name]);
      expect(g.get("batchmode")).toEqual(["yes"]);
      expect(g.get("connecttimeout")).toEqual(["7"]);
    });
  }
});
