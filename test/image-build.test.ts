import { describe, expect, test } from "bun:test";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner } from "./helpers/fake-runner.ts";
import type { Paths } from "../lib/config/model.ts";
import { buildDebootstrap, diskPlan, hostAptSources, INCLUDE, parseDeb822, parseSourcesList, pickMirror, recipeFor, recipeKey, recipePath, rootfsPlan } from "../lib/image-build.ts";
import { mountsUnder, parseMountinfo } from "../lib/share/mountinfo.ts";

const M = "http://mirror.invalid/debian";

const DEB822 = `Types: deb
# http://snapshot.invalid/archive/debian/20250520T000000Z
URIs: ${M}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
`;

function paths(): Paths {
  const dir = mkdtempSync(join(tmpdir(), "aivm-ib-"));
  return { vmRoot: join(dir, "vms"), imageCache: join(dir, "cache"), sshIdentity: join(dir, "id"), sshPubkey: join(dir, "id.pub"), libvirtUri: "qemu:///system" };
}

describe("the host's mirror", () => {
  test("deb822: URIs and Suites of deb paragraphs", () => {
    expect(parseDeb822(DEB822)).toEqual([
      { uri: M, suites: ["bookworm", "bookworm-updates"] },
      { uri: "http://mirror.invalid/debian-security", suites: ["bookworm-security"] },
    ]);
  });

  test("deb822: deb-src only and Enabled: no are skipped; several URIs each count", () => {
    const t = `Types: deb-src\nURIs: http://a.invalid/d\nSuites: bookworm\n\nTypes: deb\nEnabled: no\nURIs: http://b.invalid/d\nSuites: bookworm\n\nTypes: deb deb-src\nURIs: http://c.invalid/d http://d.invalid/d\nSuites: bookworm\n`;
    expect(parseDeb822(t).map((s) => s.uri)).toEqual(["http://c.invalid/d", "http://d.invalid/d"]);
  });

  test("sources.list: deb lines with and without options; deb-src and comments ignored", () => {
    const t = `# deb http://x.invalid/d bookworm main\ndeb-src http://y.invalid/d bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] ${M} bookworm main\ndeb http://z.invalid/d bookworm-security main\n`;
    expect(parseSourcesList(t)).toEqual([
      { uri: M, suites: ["bookworm"] },
      { uri: "http://z.invalid/d", suites: ["bookworm-security"] },
    ]);
  });

  test("pick: the source listing the suite, else a main archive, never security; trailing slash dropped", () => {
    const s = parseDeb822(DEB822);
    expect(pickMirror(s, "bookworm")).toBe(M);
    expect(pickMirror(s, "trixie")).toBe(M);
    expect(pickMirror([{ uri: "http://s.invalid/debian-security", suites: ["bookworm-security"] }], "bookworm")).toBeNull();
    expect(pickMirror([{ uri: "cdrom:[x]/", suites: ["bookworm"] }, { uri: `${M}/`, suites: ["bookworm"] }], "bookworm")).toBe(M);
  });

  test("hostAptSources reads sources.list.d/*.sources, *.list and sources.list", () => {
    const root = mkdtempSync(join(tmpdir(), "aivm-apt-"));
    mkdirSync(join(root, "sources.list.d"));
    writeFileSync(join(root, "sources.list.d", "debian.sources"), DEB822);
    writeFileSync(join(root, "sources.list.d", "other.list"), "deb http://o.invalid/d bookworm main\n");
    writeFileSync(join(root, "sources.list.d", "x.disabled"), "deb http://no.invalid/d bookworm main\n");
    writeFileSync(join(root, "sources.list"), "deb http://l.invalid/d bookworm main\n");
    expect(hostAptSources(root).map((s) => s.uri)).toEqual([M, "http://mirror.invalid/debian-security", "http://o.invalid/d", "http://l.invalid/d"]);
    expect(hostAptSources(join(root, "missing"))).toEqual([]);
  });
});

describe("the recipe", () => {
  test("key is stable and changes with suite, mirror and packages", () => {
    const a = recipeKey(recipeFor("bookworm", M));
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(recipeKey(recipeFor("bookworm", M))).toBe(a);
    expect(recipeKey(recipeFor("trixie", M))).not.toBe(a);
    expect(recipeKey(recipeFor("bookworm", "http://other.invalid/debian"))).not.toBe(a);
    expect(recipeKey({ ...recipeFor("bookworm", M), include: [...INCLUDE, "vim"] })).not.toBe(a);
  });

  test("packages include the ones debootstrap cannot resolve by itself", () => {
    expect(INCLUDE).toContain("python3-cffi-backend");
    expect(INCLUDE).toEqual(expect.arrayContaining(["cloud-init", "openssh-server", "sudo", "linux-image-cloud-amd64", "netplan.io"]));
  });

  test("rootfs plan: minbase debootstrap, NoCloud only, no host keys, empty machine-id, wait-online masked", () => {
    const r = recipeFor("bookworm", M);
    const plan = rootfsPlan(r, "/c/w/rootfs");
    expect(plan[0]!.argv).toEqual(["debootstrap", "--variant=minbase", `--include=${INCLUDE.join(",")}`, "--components=main", "bookworm", "/c/w/rootfs", M]);
    expect(plan.every((c) => c.privileged)).toBe(true);
    const cmds = plan.map((c) => c.argv.join(" "));
    expect(cmds).toContain("ln -sfn /dev/null /c/w/rootfs/etc/systemd/system/systemd-networkd-wait-online.service");
    expect(cmds).toContain("find /c/w/rootfs/etc/ssh -maxdepth 1 -name ssh_host_* -delete");
    expect(cmds).toContain("truncate -s 0 /c/w/rootfs/etc/machine-id");
    const cfg = plan.find((c) => c.argv[1]?.endsWith("90-aivm.cfg"))!;
    expect(cfg.argv[0]).toBe("tee");
    expect(cfg.input).toContain("datasource_list: [ NoCloud, None ]");
    expect(plan.find((c) => c.argv[1] === "/c/w/rootfs/etc/fstab")!.input).toContain("/dev/vda / ext4");
  });

  test("disk plan: mkfs.ext4 -d (no loop devices) then qcow2; chown only when not root", () => {
    const r = recipeFor("bookworm", M);
    const asRoot = diskPlan(r, "/w").map((c) => c.argv.join(" "));
    expect(asRoot[0]).toBe("mkfs.ext4 -q -F -L aivm-root -d /w/rootfs /w/disk.raw 3G");
    expect(asRoot[1]).toBe("qemu-img convert -O qcow2 /w/disk.raw /w/disk.qcow2");
    expect(asRoot.some((c) => c.startsWith("chown"))).toBe(false);
    expect(diskPlan(r, "/w", { uid: 1000, gid: 1000 }).map((c) => c.argv.join(" "))).toContain("chown 1000:1000 /w/disk.qcow2 /w/vmlinuz /w/initrd");
  });

  test("mountsUnder (shared with share): only mounts below the dir, deepest first, octal escapes decoded", () => {
    const line = (id: number, target: string) => `${id} 1 0:1 / ${target} rw shared:1 - proc proc rw`;
    const m = parseMountinfo(["/proc", "/c/w/rootfs/proc", "/c/w/rootfs/sys", "/c/w/rootfs/sys/fs/x", "/c/w/rootfs2/p", "/c/w/rootfs/a\\040b"].map((t, i) => line(i + 10, t)).join("\n"));
    const got = mountsUnder("/c/w/rootfs", m);
    expect([...got].sort()).toEqual(["/c/w/rootfs/a b", "/c/w/rootfs/proc", "/c/w/rootfs/sys", "/c/w/rootfs/sys/fs/x"]);
    expect(got.indexOf("/c/w/rootfs/sys/fs/x")).toBeLessThan(got.indexOf("/c/w/rootfs/sys"));
  });
});

describe("buildDebootstrap", () => {
  test("bad suite: usage error, nothing run", async () => {
    const { runner, fake } = fakeRunner();
    await expect(buildDebootstrap(runner, paths(), { suite: "Bad Suite", mirror: M })).rejects.toMatchObject({ exitCode: 2 });
    expect(fake.calls).toEqual([]);
  });

  test("a mirror that is not a URL: usage error", async () => {
    const { runner } = fakeRunner();
    await expect(buildDebootstrap(runner, paths(), { suite: "bookworm", mirror: "--foo" })).rejects.toMatchObject({ exitCode: 2 });
  });

  test("dry run prints the whole build and writes nothing", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true });
    const p = paths();
    const r = await buildDebootstrap(runner, p, { suite: "bookworm", mirror: M });
    expect(r.built).toBe(true);
    expect(fake.calls).toEqual([]);
    const text = printed.join("\n");
    expect(text).toContain("debootstrap --variant=minbase");
    expect(text).toContain("mkfs.ext4 -q -F -L aivm-root -d");
    expect(text).toContain("qemu-img convert -O qcow2");
    expect(text).toMatch(/rm -rf --one-file-system .*\.build-/);
    expect(existsSync(p.imageCache)).toBe(false);
  });

  test("same recipe with the image still cached: not built again, nothing run", async () => {
    const p = paths();
    const sha = "a".repeat(64);
    const key = recipeKey(recipeFor("bookworm", M));
    mkdirSync(join(p.imageCache, "recipes"), { recursive: true });
    writeFileSync(recipePath(p, key), sha + "\n");
    for (const ext of ["img", "vmlinuz", "initrd"]) writeFileSync(join(p.imageCache, `${sha}.${ext}`), "x");
    writeFileSync(join(p.imageCache, `${sha}.json`), JSON.stringify({ sha256: sha, format: "qcow2", source: "debootstrap:bookworm", kernel: `${sha}.vmlinuz`, initrd: `${sha}.initrd`, cmdline: "root=/dev/vda rw console=ttyS0", created: "x" }));
    const { runner, fake } = fakeRunner();
    const r = await buildDebootstrap(runner, p, { suite: "bookworm", mirror: M });
    expect(r.built).toBe(false);
    expect(r.image).toEqual({ sha256: sha, path: join(p.imageCache, `${sha}.img`), format: "qcow2", kernel: join(p.imageCache, `${sha}.vmlinuz`), initrd: join(p.imageCache, `${sha}.initrd`), cmdline: "root=/dev/vda rw console=ttyS0" });
    expect(fake.calls).toEqual([]);
  });

  test("a failed debootstrap removes the work dir and reports the step", async () => {
    const p = paths();
    const { runner, fake } = fakeRunner();
    fake.on(["mkdir"], {});
    fake.on(["debootstrap"], { exitCode: 1, stderr: "E: Couldn't download packages" });
    fake.on(["rm"], {});
    await expect(buildDebootstrap(runner, p, { suite: "bookworm", mirror: M })).rejects.toThrow(/debootstrap.*Couldn't download/);
    const last = fake.commands().at(-1)!;
    expect(last).toMatch(new RegExp(`^rm -rf --one-file-system ${p.imageCache}/\\.build-[0-9a-f]{16}-\\d+$`));
    expect(existsSync(recipePath(p, recipeKey(recipeFor("bookworm", M))))).toBe(false);
  });

  test("a recipe pointing at an image no longer cached builds again", async () => {
    const p = paths();
    const key = recipeKey(recipeFor("bookworm", M));
    mkdirSync(join(p.imageCache, "recipes"), { recursive: true });
    writeFileSync(recipePath(p, key), "b".repeat(64) + "\n");
    const { runner, printed } = fakeRunner({ dryRun: true });
    const r = await buildDebootstrap(runner, p, { suite: "bookworm", mirror: M });
    expect(r.built).toBe(true);
    expect(printed.join("\n")).toContain("debootstrap");
    expect(readFileSync(recipePath(p, key), "utf8")).toBe("b".repeat(64) + "\n");
  });
});
