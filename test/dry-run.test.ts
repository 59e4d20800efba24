// --dry-run prints commands that run as pasted and do what the real run does: the printed text of `config init`,
// `vm create` and `up` (up to the domain start, where libvirt is needed) is run in bash against a fresh temporary
// tree, the real command against another fresh copy of the same tree, and the two results are compared: files,
// modes, contents (key material normalized: ssh-keygen makes a new key each time), and every virsh and nft call.
// virsh, nft, mount and umount are recording fakes on PATH (the host's libvirtd, firewall and mounts are never touched); qemu-img,
// ssh-keygen and genisoimage are the real ones. A dry run itself creates nothing: no vms/<vm>/.lock.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { aivm } from "./helpers/cli.ts";
import { renderManifest, sha256File } from "../lib/image.ts";

const haveTools = !!(Bun.which("qemu-img") && Bun.which("ssh-keygen") && Bun.which("genisoimage"));
const VM = "drybox";
const LOGIN_KEY: Record<string, string> = (() => {
  const d = mkdtempSync(join(tmpdir(), "aivm-dry-key-"));
  Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", join(d, "k")]);
  const k = { "id_aivm_ed25519": readFileSync(join(d, "k"), "utf8"), "id_aivm_ed25519.pub": readFileSync(join(d, "k.pub"), "utf8") };
  rmSync(d, { recursive: true, force: true });
  return k;
})();

/** Recording fakes: every call appended to $AIVM_FAKE_LOG (argv, then stdin); nothing exists in "libvirt". */
const FAKE_VIRSH = `#!/bin/bash
log="$AIVM_FAKE_LOG"
{ printf 'virsh'; printf ' %q' "$@"; printf '\\n'; } >> "$log"
last="\${@: -1}"
case "$last" in
  *" ; echo AIVMSEP"*)
    sep=$(printf '%s' "$last" | sed -n 's/.* ; echo \\(AIVMSEP[a-z0-9]*\\) ; .*/\\1/p')
    first=1
    while IFS= read -r cmd; do
      [ $first = 1 ] || echo "$sep"
      first=0
      case "$cmd" in
        version*) echo "9.0.0" ;;
        net-*) echo "error: failed to get network 'x'" >&2; echo "error: Network not found: no network with matching name 'x'" >&2 ;;
        *) echo "error: failed to get domain 'x'" >&2; echo "error: Domain not found: no domain with matching name 'x'" >&2 ;;
      esac
    done < <(printf '%s\\n' "$last" | sed "s/ ; echo $sep ; /\\n/g")
    exit 1 ;;
esac
for a in "$@"; do
  case "$a" in
    net-define) { echo "--- stdin"; cat; echo "--- end"; } >> "$log"; exit 0 ;;
    define) { echo "--- stdin"; cat; echo "--- end"; } >> "$log"; touch "$log.defined"; exit 0 ;;
    domstate) if [ -e "$log.defined" ]; then echo "shut off"; exit 0; fi; echo "error: failed to get domain '$VM'" >&2; exit 1 ;;
    net-start|net-autostart) exit 0 ;;
    start) echo "error: the test stops here (start)" >&2; exit 1 ;;
    domuuid|domstate|dominfo|dumpxml) echo "error: failed to get domain '$VM'" >&2; exit 1 ;;
    net-info|net-dumpxml|net-dhcp-leases) echo "error: Network not found" >&2; exit 1 ;;
  esac
done
echo "fake virsh: unscripted: $*" >&2
exit 3
`;

const FAKE_NFT = `#!/bin/bash
{ printf 'nft'; printf ' %q' "$@"; printf '\\n'; } >> "$AIVM_FAKE_LOG"
case "$*" in
  "list table inet "*) echo "Error: No such file or directory" >&2; exit 1 ;;
  "-f -") { echo "--- stdin"; cat; echo "--- end"; } >> "$AIVM_FAKE_LOG"; exit 0 ;;
esac
echo "fake nft: unscripted: $*" >&2
exit 3
`;

/** mount and umount: recorded, never run (a unit test must not mount on the host). */
const FAKE_MOUNT = `#!/bin/bash
{ printf '%s' "$(basename "$0")"; printf ' %q' "$@"; printf '\\n'; } >> "$AIVM_FAKE_LOG"
`;

interface Tree { [path: string]: string }

/** Every file and directory under root: type, mode, and content (the keys made in this tree named by their role). */
function snapshot(root: string): Tree {
  const keys = roleKeys(root);
  const out: Tree = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      const rel = relative(root, p);
      if (rel.startsWith("fake.log") || rel === "bin" || rel === ".cache/bun") continue;
      const st = lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out[rel + "/"] = `dir ${mode}`;
        walk(p);
      } else {
        const binary = /ssh_host_ed25519_key$|id_aivm_ed25519$|seed\.img$|disk\.qcow2$|\.img$/.test(rel);
        out[rel] = `file ${mode} ${binary ? `(${st.size > 0 ? "non-empty" : "empty"})` : keys(readFileSync(p, "utf8"))}`;
      }
    }
  };
  walk(root);
  return out;
}

/** The keys this tree made (the guest's host key, the login key) replaced by their role, and what derives from them. */
function roleKeys(root: string): (text: string) => string {
  const find = (dir: string, name: string) => {
    const walk = (d: string): string | null => {
      if (!existsSync(d)) return null;
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (n === name) return p;
        if (lstatSync(p).isDirectory()) { const r = walk(p); if (r) return r; }
      }
      return null;
    };
    return walk(dir);
  };
  const hostKey = find(root, "ssh_host_ed25519_key");
  const login = find(join(root, "home"), "id_aivm_ed25519.pub");
  const subs: [string, string][] = [];
  if (hostKey && existsSync(hostKey + ".pub")) {
    const pub = readFileSync(hostKey + ".pub", "utf8").trim();
    subs.push([JSON.stringify(readFileSync(hostKey, "utf8")), "<HOST PRIVATE KEY>"]);
    subs.push([pub.split(" ").slice(0, 2).join(" "), "<HOST KEY>"]);
    subs.push([new Bun.CryptoHasher("sha256").update(pub).digest("hex").slice(0, 12), "<HOST KEY HASH>"]);
  }
  if (login) subs.push([readFileSync(login, "utf8").trim().split(" ").slice(0, 2).join(" "), "<LOGIN KEY>"]);
  return (text) => subs.reduce((t, [from, to]) => t.split(from).join(to), text);
}

/** A fresh tree: HOME with a login key (unless noKey), a store, a cached base image, the fakes. */
async function freshTree(root: string, o: { noKey?: boolean; noConfig?: boolean; noSshDir?: boolean } = {}): Promise<Record<string, string>> {
  rmSync(root, { recursive: true, force: true });
  for (const d of ["home/.ssh", "my cfg", "bin", "images", ".cache"]) mkdirSync(join(root, d), { recursive: true });
  chmodSync(join(root, "home/.ssh"), 0o700);
  if (o.noSshDir) rmSync(join(root, "home/.ssh"), { recursive: true });
  writeFileSync(join(root, "bin/virsh"), FAKE_VIRSH.replaceAll("$VM", VM), { mode: 0o755 });
  writeFileSync(join(root, "bin/nft"), FAKE_NFT, { mode: 0o755 });
  for (const m of ["mount", "umount"]) writeFileSync(join(root, "bin", m), FAKE_MOUNT, { mode: 0o755 });
  const base = join(root, "images", "base.qcow2");
  Bun.spawnSync(["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"]);
  const sha = await sha256File(base);
  Bun.spawnSync(["mv", base, join(root, "images", `${sha}.img`)]);
  writeFileSync(join(root, "images", `${sha}.json`), renderManifest({ sha256: sha, format: "qcow2", source: "file:///base.qcow2", created: "2026-01-01T00:00:00.000Z" }));
  // the same login key in every fresh tree (the user's key does not change between the runs compared)
  if (!o.noKey) for (const n of ["id_aivm_ed25519", "id_aivm_ed25519.pub"]) writeFileSync(join(root, "home/.ssh", n), LOGIN_KEY[n]!, { mode: n.endsWith(".pub") ? 0o644 : 0o600 });
  if (!o.noConfig) {
    writeFileSync(join(root, "my cfg", "config.toml"), [
      `[defaults.vm]`, `name = "${VM}"`, `accel = "tcg"`, ``,
      `[defaults.network]`, `name = "drynet"`, `subnet = "10.213.7.0/24"`, ``,
      `[defaults.image]`, `url = "file:///base.qcow2"`, `sha256 = "${sha}"`, ``,
      // a space in the VM root: every printed path must be quoted
      `[defaults.paths]`, `vm_root = "${join(root, "my vms")}"`, `image_cache = "${join(root, "images")}"`,
      `ssh_identity = "${join(root, "home/.ssh/id_aivm_ed25519")}"`, `libvirt_uri = "test:///default"`, ``,
    ].join("\n"));
  }
  const env: Record<string, string> = {
    PATH: `${join(root, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: join(root, "home"),
    XDG_CONFIG_HOME: join(root, "cfg-xdg"),
    XDG_CACHE_HOME: join(root, ".cache"),
    XDG_DATA_HOME: join(root, "data"),
    AIVM_CONFIG: join(root, "my cfg", "config.toml"),
    AIVM_FAKE_LOG: join(root, "fake.log"),
    NO_COLOR: "1",
  };
  // the fakes must be the ones found: never the host's nft or libvirtd
  expect(Bun.which("nft", { PATH: env.PATH! })).toBe(join(root, "bin/nft"));
  expect(Bun.which("virsh", { PATH: env.PATH! })).toBe(join(root, "bin/virsh"));
  return env;
}

function fakeLog(root: string): string {
  return existsSync(join(root, "fake.log")) ? readFileSync(join(root, "fake.log"), "utf8") : "";
}

/** Run the printed text in bash, stopping before the first line that matches `stop` (the rest needs libvirt). */
function runPrinted(text: string, env: Record<string, string>, cwd: string, stop?: RegExp): { code: number; stderr: string; script: string } {
  let script = text;
  if (stop) {
    const lines = text.split("\n");
    const i = lines.findIndex((l) => stop.test(l));
    if (i >= 0) script = lines.slice(0, i).join("\n");
  }
  const r = Bun.spawnSync(["bash", "-e", "-o", "pipefail", "-c", script], { env, cwd });
  return { code: r.exitCode, stderr: r.stderr.toString(), script };
}

/** `aivm help raw`, run up to the domain start, against `aivm up` (which stops there too); the store record aside. */
async function compareRaw(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "aivm-raw-"));
  try {
    let env = await freshTree(root);
    const raw = await aivm(["help", "raw"], { env, cwd: root });
    expect(raw.exitCode).toBe(0);
    env = await freshTree(root);
    const pasted = runPrinted(raw.stdout, env, root, / start drybox$/);
    expect({ code: pasted.code, stderr: pasted.stderr }).toEqual({ code: 0, stderr: "" });
    const noStore = (t: Tree) => Object.fromEntries(Object.entries(t).filter(([k]) => !k.startsWith("my cfg/")));
    const afterPaste = noStore(snapshot(root));
    const pasteCalls = fakeLog(root);
    env = await freshTree(root);
    expect((await aivm(["up", "--yes"], { env, cwd: root })).exitCode).toBe(1);
    expect(afterPaste).toEqual(noStore(snapshot(root)));
    const realCalls = fakeLog(root).split("\n").filter((l) => !/^virsh .*(AIVMSEP|domuuid|domstate|net-info|net-dumpxml)|^nft list | start /.test(l)).join("\n");
    expect(pasteCalls).toEqual(realCalls);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function compare(args: string[], o: { noKey?: boolean; noConfig?: boolean; noSshDir?: boolean; stop?: RegExp; realExit?: number }): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "aivm-dry-"));
  try {
    // 1. the dry run: prints, changes nothing (no lock file, no VM directory)
    let env = await freshTree(root, o);
    const before = snapshot(root);
    const dry = await aivm([...args, "--dry-run"], { env, cwd: root });
    expect({ code: dry.exitCode, stderr: dry.stderr.split("\n").filter((l) => l.startsWith("aivm:")) }).toEqual({ code: 0, stderr: [] });
    expect(snapshot(root)).toEqual(before);
    const readsOnly = fakeLog(root);
    expect(readsOnly).not.toMatch(/net-define|define|start|nft -f/);
    // 2. the printed text, pasted into bash
    env = await freshTree(root, o);
    const pasted = runPrinted(dry.stdout, env, root, o.stop);
    expect({ code: pasted.code, stderr: pasted.stderr }).toEqual({ code: 0, stderr: "" });
    const afterPaste = snapshot(root);
    const pasteCalls = fakeLog(root);
    // 3. the real run on the same fresh tree
    env = await freshTree(root, o);
    const real = await aivm(args, { env, cwd: root });
    expect({ code: real.exitCode }).toEqual({ code: o.realExit ?? 0 });
    const afterReal = snapshot(root);
    const realCalls = fakeLog(root)
      .split("\n")
      // the reads aivm makes first (virsh batches, single reads, nft list) are not printed by a dry run
      .filter((l) => !/^virsh .*(AIVMSEP|domuuid|domstate|net-info|net-dumpxml)|^nft list /.test(l))
      .join("\n");
    const printedCalls = pasteCalls.split("\n").filter((l) => !/ start /.test(l)).join("\n");
    expect(afterPaste).toEqual(afterReal);
    expect(printedCalls).toEqual(realCalls.split("\n").filter((l) => !/ start /.test(l)).join("\n"));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

describe.skipIf(!haveTools)("--dry-run text runs as pasted and does what the real run does", () => {
  test("config init --defaults (no key, no --yes: the real run makes none, so none is printed)", async () => {
    await compare(["config", "init", "--defaults"], { noKey: true, noConfig: true });
  }, 60_000);

  test("config init --defaults --yes (the key is made: ~/.ssh made with mode 0700, ssh-keygen)", async () => {
    await compare(["config", "init", "--defaults", "--yes"], { noKey: true, noConfig: true, noSshDir: true });
  }, 60_000);

  test("vm create (a VM root with a space in it; seed/ made before its files; the store records the VM)", async () => {
    await compare(["vm", "create", "--yes"], {});
  }, 120_000);

  test("up, to the domain start (network, firewall, store record, disk, key, seed, domain)", async () => {
    await compare(["up", "--yes"], { stop: / start drybox$/, realExit: 1 });
  }, 120_000);

  test("help raw: its network, firewall and VM sections make what aivm up makes (up to the start)", async () => {
    await compareRaw();
  }, 120_000);
});

