import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveVm } from "../lib/config/resolve.ts";
import { userDataObject, HostKey, renderUserData, renderMetaData, renderNetworkConfig, cloudYaml, seedArgv } from "../lib/cloud-init.ts";
import { macAddress } from "../lib/domain.ts";

const vm = (name = "box", user = "agent") =>
  resolveVm({ defaults: { vm: { name, user }, paths: { vm_root: "/srv/vms", image_cache: "/c", ssh_identity: "/k/id", libvirt_uri: "qemu:///system" } } });

// a throwaway key pair, generated once for these tests
const HOST: HostKey = {
  privateKey: [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACBiiV9TfPhH8qq/ktR9rmbZO8kVni6OAYsnTBymEfd10wAAAIjP1Hqyz9R6",
    "sgAAAAtzc2gtZWQyNTUxOQAAACBiiV9TfPhH8qq/ktR9rmbZO8kVni6OAYsnTBymEfd10w",
    "AAAECZcgZwQf584EZDiJleW/JfX3/httzooOfIlaREj3vmqGKJX1N8+Efyqr+S1H2uZtk7",
    "yRWeLo4BiydMHKYR93XTAAAABGhvc3QB",
    "-----END OPENSSH PRIVATE KEY-----",
    "",
  ].join("\n"),
  publicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGKJX1N8+Efyqr+S1H2uZtk7yRWeLo4BiydMHKYR93XT host\n",
};
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEexampleEXAMPLEexampleEXAMPLEexample me@laptop";
const HOSTILE_KEY = `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE it's "me": #1 - ü ✓ <&> {a: [b]} 52:54:00:12:34:56`;

const PRUNE_BOOTCMD = ["sh", "-c", "if [ -x /usr/local/sbin/aivm-prune-locate ]; then /usr/local/sbin/aivm-prune-locate; fi"];

describe("renderUserData", () => {
  const cases: [string, Parameters<typeof renderUserData>[1]][] = [
    ["plain", { authorizedKey: KEY, hostKey: HOST }],
    ["uid-gid", { authorizedKey: KEY, hostKey: HOST, uid: 1001, gid: 1002 }],
    ["uid0-ignored", { authorizedKey: KEY, hostKey: HOST, uid: 0, gid: 0 }],
    ["hostile-key", { authorizedKey: HOSTILE_KEY, hostKey: HOST }],
  ];
  for (const [name, o] of cases) {
    test(`${name}: snapshot`, () => {
      expect(renderUserData(vm(), o)).toMatchSnapshot();
    });
    test(`${name}: starts with #cloud-config and parses back to the same object`, () => {
      const text = renderUserData(vm(), o);
      expect(text.startsWith("#cloud-config\n")).toBe(true);
      expect(Bun.YAML.parse(text)).toEqual(userDataObject(vm(), o));
    });
  }

  test("the user, keys and policy", () => {
    const d = Bun.YAML.parse(renderUserData(vm("box", "dev"), { authorizedKey: HOSTILE_KEY, hostKey: HOST, uid: 1500 })) as Record<string, any>;
    expect(d.users).toEqual([
      { name: "dev", groups: ["sudo"], shell: "/bin/bash", sudo: "ALL=(ALL) NOPASSWD:ALL", lock_passwd: true, ssh_authorized_keys: [HOSTILE_KEY], uid: 1500 },
    ]);
    expect(d.ssh_pwauth).toBe(false);
    expect(d.disable_root).toBe(true);
    expect(d.ssh_deletekeys).toBe(true);
    expect(d.ssh_genkeytypes).toBeUndefined();
    expect(d.ssh_keys).toEqual({ ed25519_private: HOST.privateKey, ed25519_public: HOST.publicKey.trim() });
    expect(d.hostname).toBe("box");
    expect(d.fqdn).toBe("box.localdomain");
    expect(d.packages).toBeUndefined();
    expect(d.package_update).toBeUndefined();
    const drop = d.write_files.find((f: { path: string }) => f.path === "/etc/ssh/sshd_config.d/10-aivm.conf");
    expect(drop.content).toContain("PasswordAuthentication no\n");
    expect(drop.content).toContain("PermitRootLogin no\n");
    expect(drop.content).toContain("HostKey /etc/ssh/ssh_host_ed25519_key\n");
  });

  test("uid and gid absent or 0: no uid, no group creation", () => {
    for (const o of [{}, { uid: 0, gid: 0 }]) {
      const d = userDataObject(vm(), { authorizedKey: KEY, hostKey: HOST, ...o }) as Record<string, any>;
      expect(d.users[0].uid).toBeUndefined();
      expect(d.users[0].primary_group).toBeUndefined();
      expect(d.bootcmd).toEqual([PRUNE_BOOTCMD]);
    }
  });

  test("gid: the user's group is created with that gid before the user, values passed as arguments", () => {
    const d = userDataObject(vm(), { authorizedKey: KEY, hostKey: HOST, gid: 4242 }) as Record<string, any>;
    expect(d.users[0].primary_group).toBe("agent");
    expect(d.bootcmd).toEqual([PRUNE_BOOTCMD, ["sh", "-c", 'getent group "$1" >/dev/null || groupadd -o -g "$2" "$1"', "aivm-group", "agent", "4242"]]);
  });

  test("updatedb (mlocate, plocate) skips the shared folders: the script, at every boot, once at first boot, after dpkg", () => {
    const d = userDataObject(vm(), { authorizedKey: KEY, hostKey: HOST }) as Record<string, any>;
    const script = d.write_files.find((f: { path: string }) => f.path === "/usr/local/sbin/aivm-prune-locate");
    expect(script.permissions).toBe("0755");
    expect(d.runcmd).toEqual([["/usr/local/sbin/aivm-prune-locate"]]);
    expect(d.write_files.find((f: { path: string }) => f.path === "/etc/apt/apt.conf.d/99aivm-prune-locate").content).toContain("DPkg::Post-Invoke");
    const dir = mkdtempSync(join(tmpdir(), "aivm-updatedb-"));
    const file = join(dir, "script");
    writeFileSync(file, script.content, { mode: 0o755 });
    const run = (conf: string | null) => {
      const c = join(dir, "updatedb.conf");
      rmSync(c, { force: true });
      if (conf !== null) writeFileSync(c, conf);
      expect(Bun.spawnSync(["sh", file, c]).exitCode).toBe(0);
      const once = conf === null ? null : readFileSync(c, "utf8");
      // idempotent: a second run changes nothing
      expect(Bun.spawnSync(["sh", file, c]).exitCode).toBe(0);
      expect(conf === null ? null : readFileSync(c, "utf8")).toBe(once);
      return once;
    };
    // Debian's mlocate/plocate default (abridged): the words are appended inside the quotes
    expect(run('PRUNE_BIND_MOUNTS="yes"\nPRUNEPATHS="/tmp /var/spool /media"\nPRUNEFS="NFS afs proc"\n')).toBe(
      'PRUNE_BIND_MOUNTS="yes"\nPRUNEPATHS="/tmp /var/spool /media /mnt/aivm-root"\nPRUNEFS="NFS afs proc virtiofs"\n',
    );
    // already there (anywhere in the list): unchanged; missing variables: added
    expect(run('PRUNEFS="virtiofs NFS"\nPRUNEPATHS="/mnt/aivm-root"\n')).toBe('PRUNEFS="virtiofs NFS"\nPRUNEPATHS="/mnt/aivm-root"\n');
    expect(run("# empty\n")).toBe('# empty\nPRUNEFS="virtiofs"\nPRUNEPATHS="/mnt/aivm-root"\n');
    // no locate installed: nothing created (a later package install brings its own file, fixed after dpkg)
    expect(run(null)).toBeNull();
    expect(existsSync(join(dir, "updatedb.conf"))).toBe(false);
  });

  test.each([
    ["a newline in the authorized key", { authorizedKey: KEY + "\nssh-rsa AAAA evil" }, /one line/],
    ["an empty authorized key", { authorizedKey: "  " }, /one line/],
    ["a non-ed25519 host key", { hostKey: { ...HOST, publicKey: "ssh-rsa AAAA x" } }, /ssh-ed25519/],
    ["a garbage private key", { hostKey: { ...HOST, privateKey: "hello" } }, /private key/],
    ["a negative uid", { uid: -1 }, /not a valid id/],
    ["a fractional gid", { gid: 1.5 }, /not a valid id/],
  ])("refuses %s", (_what, patch, err) => {
    expect(() => renderUserData(vm(), { authorizedKey: KEY, hostKey: HOST, ...patch })).toThrow(err);
  });
});

describe("renderMetaData", () => {
  test.each([
    ["default instance id", undefined, { "instance-id": "box-1", "local-hostname": "box" }],
    ["given instance id", "box-7", { "instance-id": "box-7", "local-hostname": "box" }],
    ["an instance id YAML 1.1 would read as a number", "1:30", { "instance-id": "1:30", "local-hostname": "box" }],
  ])("%s", (_what, id, want) => {
    const text = renderMetaData(vm(), id);
    expect(Bun.YAML.parse(text)).toEqual(want);
    expect(text).toMatchSnapshot();
  });
  test("refuses a multi-line instance id", () => {
    expect(() => renderMetaData(vm(), "a\nb")).toThrow(/one line/);
  });
});

describe("renderNetworkConfig", () => {
  test.each([["box"], ["aivm-host"], ["kboot"]])("%s: v2, DHCPv4 on the NIC with the domain's MAC", (name) => {
    const text = renderNetworkConfig(vm(name));
    expect(Bun.YAML.parse(text)).toEqual({ version: 2, ethernets: { primary: { match: { macaddress: macAddress(name) }, dhcp4: true, dhcp6: false } } });
    expect(text).toMatchSnapshot();
  });
});

describe("cloudYaml", () => {
  // strings YAML 1.1 (PyYAML, cloud-init) would read as something else when left plain
  const tricky = ["52:54:00:12:34:56", "1:30", "1_000", "2001-01-01", "=", "<<", "on", "No", "~", "", "0644", "0x1f", ".5", "1e3", ".inf", "aivmq0q", "x aivmq1q y"];
  test.each(tricky.map((s) => [s]))("%p is double-quoted and reads back as that string", (s) => {
    const text = cloudYaml({ k: s, [s || "empty"]: "v", l: [s] });
    expect(text).toContain(`k: ${JSON.stringify(s)}\n`);
    expect(Bun.YAML.parse(text)).toEqual({ k: s, [s || "empty"]: "v", l: [s] });
  });
  test("plain strings stay plain", () => {
    expect(cloudYaml({ a: "agent", b: "/bin/bash", c: 3, d: true })).toBe("a: agent\nb: /bin/bash\nc: 3\nd: true\n");
  });
});

describe("seedArgv", () => {
  test.each([
    ["/srv/vms/box/seed", "/srv/vms/box/seed.img"],
    ["/tmp/a b/seed/", "/tmp/a b/seed.img"],
  ])("%s -> %s", (dir, out) => {
    const d = dir.replace(/\/$/, "");
    expect(seedArgv(dir, out)).toEqual([
      "genisoimage", "-quiet", "-input-charset", "utf-8", "-output", out, "-volid", "cidata", "-joliet", "-rock",
      `${d}/user-data`, `${d}/meta-data`, `${d}/network-config`,
    ]);
  });
});
