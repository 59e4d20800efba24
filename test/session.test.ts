// lib/session.ts: the warm-path test, the TCP probe, the workstation steps, and the session's input checks.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner, testHost } from "./helpers/fake-runner.ts";
import type { AttachmentDoc, Vm } from "../lib/config/model.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { loadStore } from "../lib/config/store.ts";
import { prepareSession, warmIp, workstationSteps } from "../lib/flows/session.ts";
import { realHost } from "../lib/host.ts";
import { vmFiles } from "../lib/vm/files.ts";
import { EXIT } from "../lib/errors.ts";

let root: string;
let cfg: string;
const SHA = "b".repeat(64);

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "aivm-session-")));
  mkdirSync(join(root, "cfg"), { recursive: true });
  cfg = join(root, "cfg", "config.toml");
  writeFileSync(cfg, [
    `[defaults.vm]`, `name = "box"`, ``,
    `[defaults.image]`, `url = "file:///base.qcow2"`, `sha256 = "${SHA}"`, ``,
    `[defaults.paths]`, `vm_root = "${join(root, "vms")}"`, `image_cache = "${join(root, "images")}"`, `ssh_identity = "${join(root, "id")}"`, ``,
  ].join("\n"));
});

const vm = (): Vm => resolveVm(loadStore(cfg).doc);
const att = (p: string, o: Partial<AttachmentDoc> = {}): AttachmentDoc => ({ host_path: p, mode: "git", access: "rw", guest_dst: p, ...o });

describe("warm path", () => {
  let v: Vm;
  beforeEach(() => {
    v = vm();
    mkdirSync(v.dir, { recursive: true });
  });
  test("needs a saved attachment, a created VM, a cached IP, and port 22 answering", async () => {
    const yes = fakeRunner({ host: testHost({ tcpOpen: async () => true }) }).runner;
    const no = fakeRunner({ host: testHost({ tcpOpen: async () => false }) }).runner;
    expect(await warmIp(yes, v, undefined)).toBeNull();
    expect(await warmIp(yes, v, att("/p"))).toBeNull(); // no host key: not created
    writeFileSync(vmFiles(v).hostKey, "k");
    expect(await warmIp(yes, v, att("/p"))).toBeNull(); // no cached IP
    writeFileSync(vmFiles(v).ipCache, "10.77.0.9\n");
    expect(await warmIp(yes, v, att("/p"))).toBe("10.77.0.9");
    expect(await warmIp(no, v, att("/p"))).toBeNull();
  });
  test("shared-root: a missing host bind sends it to the reconcile", async () => {
    writeFileSync(vmFiles(v).hostKey, "k");
    writeFileSync(vmFiles(v).ipCache, "10.77.0.9\n");
    mkdirSync(join(root, "p"));
    const yes = fakeRunner({ host: testHost({ tcpOpen: async () => true }) }).runner;
    expect(await warmIp(yes, v, att(join(root, "p"), { mode: "shared-root" }))).toBeNull();
  });
});

describe("the real host's tcpOpen", () => {
  afterEach(() => {});
  test("true for a listening port, false for a closed one", async () => {
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      expect(await realHost.tcpOpen("127.0.0.1", server.port, 800)).toBe(true);
    } finally {
      server.stop(true);
    }
    expect(await realHost.tcpOpen("127.0.0.1", server.port, 300)).toBe(false);
  });
});

describe("workstation steps", () => {
  test("key copy, pinned host key, a ProxyJump Host block and the code command, with the folder quoted", () => {
    writeFileSync(join(root, "id"), "");
    const text = workstationSteps(vm(), "10.77.0.9", "/w/it's here", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey box", { host: "lab", user: "me" });
    expect(text).toContain(`scp me@lab:${join(root, "id")} ~/.ssh/aivm_box`);
    expect(text).toContain("box ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey");
    expect(text).toContain("Host box\n  HostName 10.77.0.9\n  User agent\n  ProxyJump me@lab\n");
    expect(text).toContain(`code --remote ssh-remote+box '/w/it'\\''s here'`);
  });
});

describe("prepareSession input", () => {
  test("a missing folder, a file, a secrets folder: exit 2 before anything runs", async () => {
    const { runner, fake } = fakeRunner({ yes: false });
    writeFileSync(join(root, "f"), "");
    const home = join(root, "home");
    mkdirSync(join(home, ".ssh"), { recursive: true });
    const old = process.env.HOME;
    process.env.HOME = home;
    try {
      for (const dir of [join(root, "missing"), join(root, "f"), join(home, ".ssh"), home]) {
        await expect(prepareSession({ runner, configPath: cfg, doc: loadStore(cfg).doc }, { dir, what: "ssh" })).rejects.toMatchObject({ exitCode: EXIT.USAGE });
      }
    } finally {
      process.env.HOME = old;
    }
    expect(fake.calls).toEqual([]);
  });
  test("no VM and no consent possible (no terminal, no --yes): exit 2, nothing recorded", async () => {
    const { runner, fake } = fakeRunner({ yes: false });
    fake.on(["git"], { exitCode: 128 });
    mkdirSync(join(root, "proj"));
    const before = loadStore(cfg).text;
    await expect(prepareSession({ runner, configPath: cfg, doc: loadStore(cfg).doc }, { dir: join(root, "proj"), what: "code" })).rejects.toMatchObject({ exitCode: EXIT.USAGE });
    expect(loadStore(cfg).text).toBe(before);
  });
});
