// `aivm image build --debootstrap`: a cloud-init-ready Debian image built offline from the host's own apt mirror.
// debootstrap a minbase rootfs, configure it for NoCloud, pack it with `mkfs.ext4 -d` (no loop devices), convert to
// qcow2 and put it into the content-addressed cache with its kernel and initrd for direct kernel boot.
// Keyed by recipe (suite, packages, mirror, the files written, a version): a second build reuses the cached result.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Paths } from "./config/model.ts";
import type { Runner } from "./run.ts";
import { AivmError, EXIT, UsageError } from "./errors.ts";
import { cachedImage, CachedImage, sha256File } from "./image.ts";
import { mountsUnder, readMounts } from "./share/mountinfo.ts";
import { log } from "./log.ts";
import { sha256hex } from "./digest.ts";

/** Bump when the build steps change in a way the recipe hash does not already capture. */
export const RECIPE_VERSION = 1;

/** python3-cffi-backend must be named: debootstrap does not resolve the virtual package it provides. */
export const INCLUDE = [
  "systemd-sysv", "udev", "cloud-init", "python3-cffi-backend", "openssh-server", "linux-image-cloud-amd64",
  "isc-dhcp-client", "netplan.io", "sudo", "iproute2", "kmod", "ca-certificates", "git",
  // systemd-logind needs the system bus; without it the ACPI power button (`virsh shutdown`) is ignored
  "dbus",
];

export const DISK_SIZE = "3G";
export const CMDLINE = "root=/dev/vda rw console=ttyS0";

const SUITE = /^[a-z][a-z0-9-]{1,31}$/;

// ---------- the host's mirror ----------

export interface AptSource { uri: string; suites: string[] }

/** `deb` entries of deb822 *.sources text (Types/URIs/Suites/Enabled), comments ignored. */
export function parseDeb822(text: string): AptSource[] {
  const found: AptSource[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = "";
    for (const line of para.split("\n")) {
      if (line.startsWith("#") || !line.trim()) continue;
      if (/^\s/.test(line) && last) {
        fields.set(last, `${fields.get(last)} ${line.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (!m) continue;
      last = m[1]!.toLowerCase();
      fields.set(last, m[2]!.trim());
    }
    const types = (fields.get("types") ?? "").split(/\s+/);
    if (!types.includes("deb") || (fields.get("enabled") ?? "yes").toLowerCase() === "no") continue;
    const suites = (fields.get("suites") ?? "").split(/\s+/).filter(Boolean);
    for (const uri of (fields.get("uris") ?? "").split(/\s+/).filter(Boolean)) found.push({ uri, suites });
  }
  return found;
}

/** `deb [options] URI suite components...` lines of a one-line-style sources.list. */
export function parseSourcesList(text: string): AptSource[] {
  const found: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m) found.push({ uri: m[1]!, suites: [m[2]!] });
  }
  return found;
}

/**
 * The mirror to debootstrap `suite` from: the first source listing that suite, else the first source of a main archive
 * (a suite name without a `-updates`/`-security` part). Only http, https and file URIs (what debootstrap can use).
 */
export function pickMirror(sources: AptSource[], suite: string): string | null {
  const usable = sources.filter((s) => /^(https?|file):\/\//.test(s.uri));
  const exact = usable.find((s) => s.suites.includes(suite));
  const main = exact ?? usable.find((s) => s.suites.some((x) => !x.includes("-")));
  return main ? main.uri.replace(/\/+$/, "") : null;
}

/** Read the host's apt sources (/etc/apt/sources.list.d/*.sources and *.list, /etc/apt/sources.list). */
export function hostAptSources(root = "/etc/apt"): AptSource[] {
  const read = (p: string) => { try { return readFileSync(p, "utf8"); } catch { return ""; } };
  const found: AptSource[] = [];
  const dir = join(root, "sources.list.d");
  let names: string[] = [];
  try { names = readdirSync(dir).sort(); } catch {}
  for (const n of names) {
    if (n.endsWith(".sources")) found.push(...parseDeb822(read(join(dir, n))));
    else if (n.endsWith(".list")) found.push(...parseSourcesList(read(join(dir, n))));
  }
  found.push(...parseSourcesList(read(join(root, "sources.list"))));
  return found;
}

// ---------- the recipe ----------

/** Files written into the rootfs after debootstrap (path inside the rootfs -> content). */
export function rootfsFiles(): Record<string, string> {
  return {
    "/etc/fstab": "# written by aivm image build\n/dev/vda / ext4 defaults,errors=remount-ro 0 1\n",
    // a placeholder; cloud-init sets the VM's name from meta-data
    "/etc/hostname": "localhost\n",
    "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "/etc/cloud/cloud.cfg.d/90-aivm.cfg": [
      "# written by aivm image build: only the NoCloud seed (a virtio disk labelled cidata), never a network metadata service",
      "datasource_list: [ NoCloud, None ]",
      // the root filesystem is the whole disk (no partition table): nothing to grow, resizefs still grows the fs
      // minbase has no `locales`: update-locale refuses the default en_US.UTF-8; C.UTF-8 is built into libc
      "locale: C.UTF-8",
      // sudo resolves the hostname cloud-init sets
      "manage_etc_hosts: true",
      "growpart:",
      "  mode: \"off\"",
      "",
    ].join("\n"),
  };
}

export interface Recipe {
  version: number;
  suite: string;
  mirror: string;
  include: string[];
  diskSize: string;
  cmdline: string;
  files: Record<string, string>;
}

export function recipeFor(suite: string, mirror: string): Recipe {
  return { version: RECIPE_VERSION, suite, mirror, include: INCLUDE, diskSize: DISK_SIZE, cmdline: CMDLINE, files: rootfsFiles() };
}

/** The recipe key: 16 hex digits of the sha256 of the recipe's canonical JSON. */
export function recipeKey(r: Recipe): string {
  return sha256hex(JSON.stringify(r)).slice(0, 16);
}

export function recipePath(paths: Paths, key: string): string {
  return join(paths.imageCache, "recipes", `${key}.sha256`);
}

// ---------- the plan ----------

export interface Cmd { argv: string[]; privileged?: boolean; input?: string; title?: string }

/** Commands that debootstrap and configure the rootfs (all need root). */
export function rootfsPlan(r: Recipe, rootfs: string): Cmd[] {
  const cmds: Cmd[] = [
    {
      title: `debootstrap ${r.suite} (minbase + ${r.include.length} packages) from ${r.mirror}`,
      argv: ["debootstrap", "--variant=minbase", `--include=${r.include.join(",")}`, "--components=main", r.suite, rootfs, r.mirror],
      privileged: true,
    },
  ];
  for (const [path, content] of Object.entries(r.files)) {
    cmds.push({ argv: ["install", "-d", "-m", "0755", join(rootfs, path, "..")], privileged: true });
    cmds.push({ argv: ["tee", join(rootfs, path)], input: content, privileged: true });
  }
  cmds.push(
    // networkd-wait-online waits 2 minutes for links netplan never configures
    { argv: ["ln", "-sfn", "/dev/null", join(rootfs, "etc/systemd/system/systemd-networkd-wait-online.service")], privileged: true },
    // host keys come from cloud-init (generated on the host and pinned); never ship shared ones
    { argv: ["find", join(rootfs, "etc/ssh"), "-maxdepth", "1", "-name", "ssh_host_*", "-delete"], privileged: true },
    // every VM gets its own machine-id on first boot
    { argv: ["truncate", "-s", "0", join(rootfs, "etc/machine-id")], privileged: true },
    { argv: ["rm", "-f", join(rootfs, "var/lib/dbus/machine-id")], privileged: true },
    { argv: ["find", join(rootfs, "var/cache/apt/archives"), "-name", "*.deb", "-delete"], privileged: true },
  );
  return cmds;
}

/** Commands that pack the rootfs into a qcow2 disk owned by the caller. */
export function diskPlan(r: Recipe, work: string, owner?: { uid: number; gid: number }): Cmd[] {
  const raw = join(work, "disk.raw");
  const qcow = join(work, "disk.qcow2");
  const cmds: Cmd[] = [
    { title: `mkfs.ext4 -d: pack the rootfs into a ${r.diskSize} ext4 filesystem`, argv: ["mkfs.ext4", "-q", "-F", "-L", "aivm-root", "-d", join(work, "rootfs"), raw, r.diskSize], privileged: true },
    { title: "qemu-img convert: raw -> qcow2", argv: ["qemu-img", "convert", "-O", "qcow2", raw, qcow], privileged: true },
    { argv: ["rm", "-f", raw], privileged: true },
  ];
  if (owner) cmds.push({ argv: ["chown", `${owner.uid}:${owner.gid}`, qcow, join(work, "vmlinuz"), join(work, "initrd")], privileged: true });
  cmds.push({ argv: ["chmod", "0644", qcow, join(work, "vmlinuz"), join(work, "initrd")] });
  return cmds;
}

// ---------- apply ----------

export interface BuildOptions { suite: string; mirror?: string }

async function run(runner: Runner, c: Cmd): Promise<string> {
  if (c.title) log.info(c.title);
  const started = Date.now();
  const ticker = c.title ? setInterval(() => log.info(`  ... still running (${Math.round((Date.now() - started) / 1000)} s)`), 30_000) : undefined;
  try {
    const r = await runner.exec(c.argv, { privileged: c.privileged, input: c.input, what: `image build: ${c.argv[0]}` });
    if (c.title) log.info(`  done in ${Math.round((Date.now() - started) / 1000)} s`);
    return r.stdout;
  } finally {
    if (ticker) clearInterval(ticker);
  }
}

/** The one file in `dir` named `prefix*` (the newest version when several). */
function newestNamed(dir: string, prefix: string): string {
  const names = readdirSync(dir).filter((n) => n.startsWith(prefix)).sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  if (!names.length) throw new AivmError("image build", `the rootfs has no ${dir}/${prefix}*`, EXIT.FAILED, "is linux-image-cloud-amd64 in the package list?");
  return join(dir, names[names.length - 1]!);
}

export async function buildDebootstrap(runner: Runner, paths: Paths, opts: BuildOptions): Promise<{ image: CachedImage; built: boolean }> {
  if (!SUITE.test(opts.suite)) throw new UsageError("image build", `bad suite name ${JSON.stringify(opts.suite)}`, "e.g. --suite bookworm");
  const mirror = opts.mirror ?? pickMirror(hostAptSources(), opts.suite);
  if (!mirror) throw new UsageError("image build", "no usable deb mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list", "pass --mirror URL");
  if (!/^(https?|file):\/\/\S+$/.test(mirror)) throw new UsageError("image build", `mirror must be an http(s):// or file:// URL, got ${JSON.stringify(mirror)}`);

  const recipe = recipeFor(opts.suite, mirror.replace(/\/+$/, ""));
  const key = recipeKey(recipe);
  const rpath = recipePath(paths, key);
  if (existsSync(rpath)) {
    const sha = readFileSync(rpath, "utf8").trim();
    const img = /^[0-9a-f]{64}$/.test(sha) ? cachedImage(paths, sha) : null;
    if (img?.kernel && img.initrd) {
      log.info(`image build: recipe ${key} already built: ${img.path}`);
      return { image: img, built: false };
    }
  }

  const cache = paths.imageCache;
  const work = join(cache, `.build-${key}-${process.pid}`);
  const rootfs = join(work, "rootfs");
  const owner = runner.isRoot ? undefined : { uid: process.getuid!(), gid: process.getgid!() };
  const t0 = Date.now();
  log.info(`image build: recipe ${key} (debootstrap ${recipe.suite}); this takes several minutes`);
  await runner.exec(["mkdir", "-p", join(cache, "recipes"), work]);
  try {
    for (const c of rootfsPlan(recipe, rootfs)) await run(runner, c);
    const kernel = runner.dryRun ? join(rootfs, "boot/vmlinuz-VERSION") : newestNamed(join(rootfs, "boot"), "vmlinuz-");
    const initrd = runner.dryRun ? join(rootfs, "boot/initrd.img-VERSION") : newestNamed(join(rootfs, "boot"), "initrd.img-");
    await run(runner, { argv: ["cp", kernel, join(work, "vmlinuz")], privileged: true });
    await run(runner, { argv: ["cp", initrd, join(work, "initrd")], privileged: true });
    for (const c of diskPlan(recipe, work, owner)) await run(runner, c);

    const qcow = join(work, "disk.qcow2");
    const sha = runner.dryRun ? "0".repeat(64) : await sha256File(qcow);
    const img = join(cache, `${sha}.img`);
    const vmlinuz = join(cache, `${sha}.vmlinuz`);
    const initrdOut = join(cache, `${sha}.initrd`);
    await runner.exec(["mv", "-f", join(work, "vmlinuz"), vmlinuz]);
    await runner.exec(["mv", "-f", join(work, "initrd"), initrdOut]);
    await runner.exec(["mv", "-f", qcow, img]);
    const manifest = {
      sha256: sha,
      format: "qcow2",
      source: `debootstrap:${recipe.suite}`,
      kernel: `${sha}.vmlinuz`,
      initrd: `${sha}.initrd`,
      cmdline: CMDLINE,
      recipe: key,
      mirror: recipe.mirror,
      packages: recipe.include,
      created: new Date().toISOString(),
    };
    // the manifest last: an image without one is not in the cache
    await runner.writeFile(join(cache, `${sha}.json`), JSON.stringify(manifest, null, 2) + "\n", 0o644);
    await runner.writeFile(rpath, sha + "\n", 0o644);
    log.info(`image build: done in ${Math.round((Date.now() - t0) / 1000)} s: ${img}`);
    const image = runner.dryRun
      ? { sha256: sha, path: img, format: "qcow2" as const, kernel: vmlinuz, initrd: initrdOut, cmdline: CMDLINE }
      : cachedImage(paths, sha);
    if (!image) throw new AivmError("image build", `the built image ${sha} is not readable from the cache`, EXIT.FAILED);
    return { image, built: true };
  } finally {
    // a failed debootstrap can leave /proc and /sys mounted inside the rootfs: unmount before removing
    for (const m of mountsUnder(rootfs, readMounts(runner.host)).filter((m) => m !== rootfs)) await runner.exec(["umount", "-l", m], { privileged: true, nothrow: true });
    await runner.exec(["rm", "-rf", "--one-file-system", work], { privileged: true, nothrow: true });
  }
}
