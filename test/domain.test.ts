import { describe, expect, test } from "bun:test";
import { resolveVm } from "../lib/config/resolve.ts";
import type { StoreDoc } from "../lib/config/model.ts";
import { macAddress, DomainSpec, renderDomainXml } from "../lib/domain.ts";

function vmFixture(name = "box", vmRoot = "/srv/vms"): ReturnType<typeof resolveVm> {
  const doc: StoreDoc = {
    defaults: { vm: { name, cpus: 3, memory_mib: 3072 }, paths: { vm_root: vmRoot, image_cache: "/cache", ssh_identity: "/keys/id", libvirt_uri: "qemu:///system" } },
  };
  return resolveVm(doc);
}

const HOSTILE = `/tmp/a b/it's "q" & <x> ü ✓`;

export const SPECS: Record<string, DomainSpec> = {
  bios: { vm: vmFixture(), type: "qemu", disk: "/srv/vms/box/disk.qcow2", diskFormat: "qcow2", seed: "/srv/vms/box/seed.img", consoleLog: "/srv/vms/box/console.log", filesystems: [] },
  uefi: {
    vm: vmFixture(), type: "kvm", uuid: "0C6F2A4E-1D1B-4C55-9B51-2B3F6A7C8D9E", disk: "/d.qcow2", diskFormat: "qcow2", seed: "/s.img", consoleLog: "/c.log",
    firmware: { loader: "/usr/share/OVMF/OVMF_CODE_4M.fd", varsTemplate: "/usr/share/OVMF/OVMF_VARS_4M.fd", nvram: "/srv/vms/box/nvram.fd" },
    filesystems: [{ source: "/home/me/project", tag: "aivm-0", readonly: false }],
  },
  kernel: {
    vm: vmFixture("kboot"), type: "qemu", disk: "/d.qcow2", diskFormat: "qcow2", seed: "/s.img", consoleLog: "/c.log",
    kernel: { kernel: "/cache/abc.vmlinuz", initrd: "/cache/abc.initrd", cmdline: "root=/dev/vda rw console=ttyS0" },
    filesystems: [
      { source: "/a", tag: "t0", readonly: false },
      { source: "/b", tag: "t1", readonly: false },
      { source: "/c", tag: "t2", readonly: true },
    ],
    virtiofsd: "/usr/lib/qemu/virtiofsd",
  },
  hostile: {
    vm: vmFixture("hostile", "/tmp/a b"), type: "qemu", disk: `${HOSTILE}/disk.qcow2`, diskFormat: "qcow2", seed: `${HOSTILE}/seed.img`, consoleLog: `${HOSTILE}/console.log`,
    firmware: { loader: `${HOSTILE}/code.fd`, varsTemplate: `${HOSTILE}/vars.fd`, nvram: `${HOSTILE}/nvram.fd` },
    kernel: { kernel: `${HOSTILE}/vmlinuz`, initrd: `${HOSTILE}/initrd`, cmdline: `root=/dev/vda rw x="a&b" y='<c>'` },
    filesystems: [{ source: HOSTILE, tag: `tag "&<>'`, readonly: false }],
    virtiofsd: `${HOSTILE}/virtiofsd`,
  },
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Node = any;
const parse = (xml: string): Node => (Bun.XML.parse(xml) as Node).domain;
const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

describe("macAddress", () => {
  test.each([["box"], ["aivm-host"], ["a"], ["x".repeat(63)]])("%s: 52:54:00 prefix, six lowercase octets, stable", (name) => {
    const mac = macAddress(name);
    expect(mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(macAddress(name)).toBe(mac);
  });
  test("different names get different MACs", () => {
    const macs = new Set(Array.from({ length: 200 }, (_, i) => macAddress(`vm-${i}`)));
    expect(macs.size).toBe(200);
  });
  test("known value", () => {
    expect(macAddress("box")).toBe("52:54:00:26:f8:56");
  });
});

describe("renderDomainXml", () => {
  for (const [name, spec] of Object.entries(SPECS)) {
    test(`${name}: snapshot`, () => {
      expect(renderDomainXml(spec)).toMatchSnapshot();
    });

    test(`${name}: every value reads back exactly`, () => {
      const d = parse(renderDomainXml(spec));
      expect(d["@type"]).toBe(spec.type);
      expect(d.name).toBe(spec.vm.name);
      expect(d.memory).toEqual({ "@unit": "MiB", "#text": String(spec.vm.memoryMib) });
      expect(d.vcpu["#text"]).toBe(String(spec.vm.cpus));
      expect(d.memoryBacking).toEqual({ source: { "@type": "memfd" }, access: { "@mode": "shared" } });
      expect(d.os.type).toEqual({ "@arch": "x86_64", "@machine": "q35", "#text": "hvm" });
      expect(d.on_poweroff).toBe("destroy");
      expect(d.on_reboot).toBe("restart");
      expect(d.on_crash).toBe("destroy");
      const [disk, seed] = list(d.devices.disk);
      expect(disk.driver["@type"]).toBe("qcow2");
      expect(disk.source["@file"]).toBe(spec.disk);
      expect(disk.target).toEqual({ "@dev": "vda", "@bus": "virtio" });
      expect(seed["@device"]).toBe("disk");
      expect(seed.driver["@type"]).toBe("raw");
      expect(seed.source["@file"]).toBe(spec.seed);
      expect(seed.target).toEqual({ "@dev": "vdb", "@bus": "virtio" });
      expect("readonly" in seed).toBe(true);
      expect(d.devices.interface.source["@network"]).toBe(spec.vm.network.name);
      expect(d.devices.interface.mac["@address"]).toBe(macAddress(spec.vm.name));
      expect(d.devices.interface.model["@type"]).toBe("virtio");
      expect(d.devices.serial.log).toEqual({ "@file": spec.consoleLog, "@append": "on" });
      expect(d.devices.console.target["@type"]).toBe("serial");
      expect(d.devices.rng["@model"]).toBe("virtio");
      expect(d.devices.graphics).toBeUndefined();
      if (spec.uuid) expect(d.uuid).toBe(spec.uuid.toLowerCase());
      else expect(d.uuid).toBeUndefined();
      if (spec.firmware) {
        expect(d.os.loader).toEqual({ "@readonly": "yes", "@type": "pflash", "#text": spec.firmware.loader });
        expect(d.os.nvram).toEqual({ "@template": spec.firmware.varsTemplate, "#text": spec.firmware.nvram });
      } else {
        expect(d.os.loader).toBeUndefined();
      }
      if (spec.kernel) {
        expect([d.os.kernel, d.os.initrd, d.os.cmdline]).toEqual([spec.kernel.kernel, spec.kernel.initrd, spec.kernel.cmdline]);
        expect(d.os.boot).toBeUndefined();
      } else {
        expect(d.os.kernel).toBeUndefined();
        expect(d.os.boot).toEqual({ "@dev": "hd" });
      }
      const fss = list(d.devices.filesystem);
      expect(fss.length).toBe(spec.filesystems.length);
      fss.forEach((fs: Node, i: number) => {
        const want = spec.filesystems[i]!;
        expect(fs["@type"]).toBe("mount");
        expect(fs["@accessmode"]).toBe("passthrough");
        expect(fs.driver).toEqual({ "@type": "virtiofs" });
        expect(fs.source["@dir"]).toBe(want.source);
        expect(fs.target["@dir"]).toBe(want.tag);
        expect("readonly" in fs).toBe(want.readonly);
        expect(fs.binary?.["@path"]).toBe(spec.virtiofsd);
      });
    });
  }

  test("kvm: the host CPU; qemu (TCG): QEMU's qemu64 model, never host-passthrough", () => {
    expect(parse(renderDomainXml({ ...SPECS.bios!, type: "kvm" })).cpu).toEqual({ "@mode": "host-passthrough", "@check": "none", "@migratable": "on" });
    const tcg = parse(renderDomainXml({ ...SPECS.bios!, type: "qemu" })).cpu;
    expect(tcg["@mode"]).toBe("custom");
    expect(tcg.model).toEqual({ "@fallback": "forbid", "#text": "qemu64" });
  });

  test("no blank lines left by empty fragments", () => {
    expect(renderDomainXml(SPECS.bios!)).not.toMatch(/\n\s*\n\s*\S/);
  });

  test.each([
    ["a bad uuid", { uuid: "not-a-uuid" }, /not a UUID/],
    ["a duplicate virtiofs tag", { filesystems: [{ source: "/a", tag: "t", readonly: false }, { source: "/b", tag: "t", readonly: false }] }, /used twice/],
    ["an empty virtiofs tag", { filesystems: [{ source: "/a", tag: "", readonly: false }] }, /empty/],
    ["a control character in a path", { disk: "/a\x01b" }, /control characters/],
    ["an unknown domain type", { type: "xen" as "kvm" }, /not kvm or qemu/],
  ])("refuses %s", (_what, patch, err) => {
    expect(() => renderDomainXml({ ...SPECS.bios!, ...patch } as DomainSpec)).toThrow(err);
  });
});
