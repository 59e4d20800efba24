// Oracles: `cloud-init schema -c` on rendered user-data; cloud-init's own YAML 1.1 parser (PyYAML) reads every
// document back to the object we meant; cloud-init's network renderers accept the network-config; genisoimage
// builds a seed labelled cidata holding the three files.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderUserData, HostKey, renderMetaData, renderNetworkConfig, seedArgv, userDataObject } from "../../lib/cloud-init.ts";
import { resolveVm } from "../../lib/config/resolve.ts";
import { macAddress } from "../../lib/domain.ts";

const has = (t: string) => !!Bun.which(t);
for (const t of ["cloud-init", "genisoimage", "ssh-keygen"]) {
  if (!has(t) && process.env.CI === "true") throw new Error(`${t} is missing (install cloud-init, genisoimage, openssh-client)`);
}
const CLOUD_PY = "/usr/bin/python3"; // cloud-init's interpreter on Debian, with its PyYAML

const dir = mkdtempSync(join(tmpdir(), "aivm-ci-"));

const run = (argv: string[]) => {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
};

function hostKey(): HostKey {
  const f = join(dir, "hostkey");
  rmSync(f, { force: true });
  rmSync(f + ".pub", { force: true });
  expect(run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aivm host key", "-f", f]).code).toBe(0);
  return { privateKey: readFileSync(f, "utf8"), publicKey: readFileSync(f + ".pub", "utf8") };
}

const vm = (name: string, user = "agent") =>
  resolveVm({ defaults: { vm: { name, user }, paths: { vm_root: "/tmp/a b", image_cache: "/c", ssh_identity: "/k/id", libvirt_uri: "qemu:///system" } } });

const KEYS = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLEexample me@laptop",
  `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE it's "me": #1 - ü ✓ <&> {a: [b]} key: value`,
  "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ 52:54:00:12:34:56",
];
const VMS = ["box", "aivm-host", "x1-2-3", "a".repeat(63)];

/** PyYAML's reading of a file, as JSON. */
function pyLoad(file: string): unknown {
  const r = run([CLOUD_PY, "-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))", file]);
  expect(r.err).toBe("");
  return JSON.parse(r.out);
}

describe.skipIf(!has("cloud-init") || !has("ssh-keygen"))("cloud-init schema -c user-data", () => {
  let n = 0;
  for (const name of VMS) {
    for (const key of KEYS) {
      const label = `${name.slice(0, 12)} / ${key.slice(0, 40)}`;
      test(label, () => {
        const hk = hostKey();
        const o = { authorizedKey: key, hostKey: hk, uid: 1000 + n, gid: 1000 + n };
        n++;
        const file = join(dir, `user-data-${n}`);
        writeFileSync(file, renderUserData(vm(name), o));
        const r = run(["cloud-init", "schema", "-c", file]);
        expect(r.out + r.err).toContain("Valid cloud-config");
        expect(r.code).toBe(0);
        expect(pyLoad(file)).toEqual(JSON.parse(JSON.stringify(userDataObject(vm(name), o))));
      });
    }
  }

  test("the schema check can fail (an invalid key type is refused)", () => {
    const file = join(dir, "bad-user-data");
    writeFileSync(file, renderUserData(vm("box"), { authorizedKey: KEYS[0]!, hostKey: hostKey() }).replace("ssh_pwauth: false", "ssh_pwauth: [1]"));
    expect(run(["cloud-init", "schema", "-c", file]).code).not.toBe(0);
  });
});

describe.skipIf(!has("cloud-init"))("meta-data and network-config, read by cloud-init's parser and renderers", () => {
  for (const name of VMS) {
    test(`${name.slice(0, 12)}: meta-data`, () => {
      const file = join(dir, `meta-${name}`);
      writeFileSync(file, renderMetaData(vm(name), name === "box" ? "1:30" : undefined));
      expect(pyLoad(file)).toEqual({ "instance-id": name === "box" ? "1:30" : `${name}-1`, "local-hostname": name });
    });

    test(`${name.slice(0, 12)}: network-config renders for netplan, networkd and ENI`, () => {
      const file = join(dir, `net-${name}`);
      writeFileSync(file, renderNetworkConfig(vm(name)));
      expect(pyLoad(file)).toEqual({ version: 2, ethernets: { primary: { match: { macaddress: macAddress(name) }, dhcp4: true, dhcp6: false } } });
      for (const [kind, expectText] of [["netplan", `macaddress: ${macAddress(name)}`], ["networkd", `MACAddress=${macAddress(name)}`], ["eni", "inet dhcp"]] as const) {
        const outDir = join(dir, `out-${kind}-${name}`);
        const r = run(["cloud-init", "devel", "net-convert", "-p", file, "-k", "yaml", "-d", outDir, "-D", "debian", "-O", kind]);
        expect(r.code).toBe(0);
        const files = run(["sh", "-c", 'find "$1" -type f -exec cat {} +', "sh", outDir]).out;
        expect(files).toContain(expectText);
      }
    });
  }
});

describe.skipIf(!has("genisoimage"))("genisoimage builds the NoCloud seed", () => {
  test("label cidata, the three files at the root, content intact", () => {
    const seedDir = join(dir, "seed dir");
    mkdirSync(seedDir, { recursive: true });
    const docs = { "user-data": "#cloud-config\n{}\n", "meta-data": renderMetaData(vm("box")), "network-config": renderNetworkConfig(vm("box")) };
    for (const [f, c] of Object.entries(docs)) writeFileSync(join(seedDir, f), c);
    const out = join(dir, "seed.img");
    const r = run(seedArgv(seedDir, out));
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    if (has("isoinfo")) {
      expect(run(["isoinfo", "-d", "-i", out]).out).toContain("Volume id: cidata");
      const listing = run(["isoinfo", "-R", "-f", "-i", out]).out.split("\n").filter(Boolean).sort();
      expect(listing).toEqual(["/meta-data", "/network-config", "/user-data"]);
      for (const [f, c] of Object.entries(docs)) expect(run(["isoinfo", "-R", "-x", `/${f}`, "-i", out]).out).toBe(c);
    }
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
