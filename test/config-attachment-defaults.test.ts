// A hand-written [[vms.attachments]] with only host_path gets the README's defaults (shared-root, rw, the same path
// in the guest) wherever it is read: share list, list, and the host binds vm up restores.
import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, isolatedEnv } from "./helpers/cli.ts";
import { parseStore } from "../lib/config/store.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { restoreHostBinds } from "../lib/share/host-mounts.ts";
import { fakeRunner, testHost } from "./helpers/fake-runner.ts";
import { storeToml } from "./helpers/fixtures.ts";
import { realHost } from "../lib/host.ts";
import { exportRoot, shareToken, stageRoot } from "../lib/share/names.ts";
import { setVerbosity } from "../lib/log.ts";

setVerbosity({ quiet: true });

const TEXT = '[[networks]]\nname = "aivm-net"\nsubnet = "10.77.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n\n[[vms.attachments]]\nhost_path = "/srv/project"\n\n[[vms.attachments]]\nhost_path = "/srv/docs"\naccess = "ro"\n';
const WANT = [
  { host_path: "/srv/project", mode: "shared-root", access: "rw", guest_dst: "/srv/project" },
  { host_path: "/srv/docs", mode: "shared-root", access: "ro", guest_dst: "/srv/docs" },
];

describe("attachment defaults on load", () => {
  test("the resolved VM carries mode, access and guest_dst", () => {
    expect(resolveVm(parseStore(TEXT, "c.toml"), "box").attachments).toEqual(WANT as never);
  });

  test("vm up restores its host bind (restoreHostBinds binds shared-root attachments)", async () => {
    const root = realpathSync(mkdtempSync(join(tmpdir(), "aivm-attroot-")));
    const proj = join(root, "proj");
    mkdirSync(proj);
    const text = storeToml(root, `[[networks]]\nname = "aivm-net"\nsubnet = "10.77.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "aivm-net"\n\n[[vms.attachments]]\nhost_path = "${proj}"\n`);
    const vm = resolveVm(parseStore(text, "c.toml"), "box");
    expect(vm.attachments).toEqual([{ host_path: proj, mode: "shared-root", access: "rw", guest_dst: proj }]);
    mkdirSync(exportRoot(vm), { recursive: true });
    const stage = join(stageRoot(vm), shareToken(proj));
    const { runner, fake } = fakeRunner({ yes: true, host: testHost({ stat: (x) => realHost.stat(x === stage ? proj : x) }) });
    fake.on(["install"], {}).on(["mount"], {}).on(["umount"], {}).on(["rmdir"], {});
    const r = await restoreHostBinds(runner, vm, { configPath: join(root, "etc", "config.toml"), paths: vm.paths, homes: [] });
    expect(r).toEqual({ bound: [proj], skipped: [] });
  });

  test("share list and list show them (real CLI)", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "aivm-att-")), "config.toml");
    writeFileSync(path, TEXT);
    const env = isolatedEnv();
    const s = await aivm(["share", "list", "--config", path], { env });
    expect(s.exitCode).toBe(0);
    expect(s.stdout).toBe("box\tshared-root\trw\t/srv/project\t/srv/project\toff\nbox\tshared-root\tro\t/srv/docs\t/srv/docs\toff\n");
    const l = await aivm(["list", "--json", "--config", path], { env: { ...env, PATH: "/nonexistent" } });
    expect(JSON.parse(l.stdout).attachments).toEqual(WANT.map(({ host_path, ...a }) => ({ host_path, vm: "box", ...a })));
  }, 20_000);
});
