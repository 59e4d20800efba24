// A hand-written [[vms.attachments]] with only host_path gets the README's defaults (shared-root, rw, the same path
// in the guest) wherever it is read: share list, list, and the host binds vm up restores.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, isolatedEnv } from "./helpers/cli.ts";
import { parseStore } from "../lib/config/store.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { restoreHostBinds } from "../lib/share/host-mounts.ts";
import { fakeRunner, testHost } from "./helpers/fake-runner.ts";
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
    const vm = resolveVm(parseStore(TEXT, "c.toml"), "box");
    const { runner, fake } = fakeRunner({ host: testHost({ exists: () => true }) });
    fake.unmatched = "ok";
    expect(await restoreHostBinds(runner, vm)).toEqual(["/srv/project", "/srv/docs"]);
    expect(fake.calls.some((c) => (c.argv ?? []).join(" ").includes("mount --bind /srv/project "))).toBe(true);
  });

  test("share list and list show them (real CLI)", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "aivm-att-")), "config.toml");
    writeFileSync(path, TEXT);
    const env = isolatedEnv();
    const s = await aivm(["share", "list", "--config", path], { env });
    expect(s.exitCode).toBe(0);
    expect(s.stdout).toBe("box\tshared-root\trw\t/srv/project\t/srv/project\nbox\tshared-root\tro\t/srv/docs\t/srv/docs\n");
    const l = await aivm(["list", "--json", "--config", path], { env: { ...env, PATH: "/nonexistent" } });
    expect(JSON.parse(l.stdout).attachments).toEqual(WANT.map(({ host_path, ...a }) => ({ host_path, vm: "box", ...a })));
  }, 20_000);
});
