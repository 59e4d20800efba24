// cloud-init NoCloud documents for a VM, built as objects and written with a YAML library (never pasted strings),
// and the argv that packs them into the `cidata` seed volume.
import base from "../templates/cloud-init/user-data.yaml" with { type: "text" };
import type { Vm } from "./config/model.ts";
import { macAddress } from "./domain.ts";
import { toYaml } from "./render.ts";

/** The guest's SSH host key pair (ed25519), generated on the host so the host can pin it. */
export interface HostKey {
  privateKey: string;
  publicKey: string;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

function oneLine(what: string, v: string): string {
  const s = v.trim();
  if (!s || CONTROL.test(s)) throw new Error(`${what} must be one line of text without control characters`);
  return s;
}

// PyYAML (cloud-init) reads YAML 1.1, where some plain scalars that YAML 1.2 (Bun) leaves unquoted are not
// strings: 52:54:00:12:34:56 and 1:30 are base-60 integers, 1_000 an integer, 2001-01-01 a date, = a "value".
// Those get double quotes so both parsers read back exactly the string we meant.
const YAML11_IMPLICIT = [
  /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|y|Y|n|N)$/,
  /^(?:~|null|Null|NULL|)$/,
  /^[-+]?(?:0b[01_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+)$/,
  /^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/,
  /^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}/,
  /^(?:<<|=)$/,
];

/** YAML from an object (lib/render.ts toYaml) that YAML 1.1 parsers read back exactly too. */
export function cloudYaml(value: unknown): string {
  const quoted: string[] = [];
  const mark = (s: string): string => {
    if (!YAML11_IMPLICIT.some((re) => re.test(s)) && !/aivmq\d+q/.test(s)) return s;
    quoted.push(s);
    return `aivmq${quoted.length - 1}q`;
  };
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return mark(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [mark(k), walk(x)]));
    return v;
  };
  const text = toYaml(walk(value));
  return quoted.length ? text.replace(/aivmq(\d+)q/g, (_m, i: string) => JSON.stringify(quoted[Number(i)])) : text;
}

function checkHostKey(k: HostKey): HostKey {
  const pub = oneLine("host public key", k.publicKey);
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+( .*)?$/.test(pub)) throw new Error("host public key is not an ssh-ed25519 key");
  const priv = k.privateKey.endsWith("\n") ? k.privateKey : k.privateKey + "\n";
  if (!/^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n$/.test(priv)) {
    throw new Error("host private key is not an OpenSSH private key");
  }
  return { privateKey: priv, publicKey: pub };
}

function checkId(what: string, v: number | undefined): number | undefined {
  if (v === undefined || v === 0) return undefined;
  if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 2) throw new Error(`${what} ${v} is not a valid id`);
  return v;
}

/** The user-data object (exported for tests and `vm cloud-init --json`). */
export function userDataObject(vm: Vm, o: { authorizedKey: string; hostKey: HostKey; uid?: number; gid?: number }): Record<string, unknown> {
  const key = oneLine("authorized key", o.authorizedKey);
  const host = checkHostKey(o.hostKey);
  const uid = checkId("uid", o.uid);
  const gid = checkId("gid", o.gid);
  const user: Record<string, unknown> = {
    name: vm.user,
    groups: ["sudo"],
    shell: "/bin/bash",
    sudo: "ALL=(ALL) NOPASSWD:ALL",
    lock_passwd: true,
    ssh_authorized_keys: [key],
  };
  if (uid !== undefined) user.uid = uid;
  const doc: Record<string, unknown> = {
    hostname: vm.name,
    fqdn: `${vm.name}.localdomain`,
    ...(Bun.YAML.parse(base) as Record<string, unknown>),
    users: [user],
    ssh_keys: { ed25519_private: host.privateKey, ed25519_public: host.publicKey },
  };
  if (gid !== undefined) {
    // cloud-init cannot give a user group a fixed gid: create it first (idempotent, values passed as arguments).
    user.primary_group = vm.user;
    doc.bootcmd = [...((doc.bootcmd as unknown[]) ?? []), ["sh", "-c", 'getent group "$1" >/dev/null || groupadd -o -g "$2" "$1"', "aivm-group", vm.user, String(gid)]];
  }
  return doc;
}

export function renderUserData(vm: Vm, o: { authorizedKey: string; hostKey: HostKey; uid?: number; gid?: number }): string {
  return "#cloud-config\n" + cloudYaml(userDataObject(vm, o));
}

export function renderMetaData(vm: Vm, instanceId?: string): string {
  const id = oneLine("instance id", instanceId ?? `${vm.name}-1`);
  return cloudYaml({ "instance-id": id, "local-hostname": vm.name });
}

/**
 * Network config v2: DHCP on the NIC with the MAC the domain XML gives it. Matching by MAC works with every
 * renderer cloud-init 22.4 has (netplan, networkd, ENI); name globs (en*, eth*) only work with netplan.
 */
export function renderNetworkConfig(vm: Vm): string {
  return cloudYaml({
    version: 2,
    ethernets: {
      primary: { match: { macaddress: macAddress(vm.name) }, dhcp4: true, dhcp6: false },
    },
  });
}

/** Builds the NoCloud seed (ISO 9660 + Joliet + Rock Ridge, label `cidata`) from dir/{user-data,meta-data,network-config}. */
export function seedArgv(dir: string, out: string): string[] {
  const d = dir.endsWith("/") ? dir.slice(0, -1) : dir;
  return [
    "genisoimage", "-quiet", "-input-charset", "utf-8", "-output", out, "-volid", "cidata", "-joliet", "-rock",
    `${d}/user-data`, `${d}/meta-data`, `${d}/network-config`,
  ];
}
