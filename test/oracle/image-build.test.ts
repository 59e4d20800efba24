import { expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootfsFiles } from "../../lib/image-build.ts";

const has = (t: string) => !!Bun.which(t);

test("the image's cloud.cfg.d drop-in passes cloud-init schema", () => {
  if (!has("cloud-init")) {
    if (process.env.CI === "true") throw new Error("cloud-init is not installed (needed under CI=true)");
    console.warn("skip: cloud-init not installed");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "aivm-cfg-"));
  const file = join(dir, "90-aivm.cfg");
  writeFileSync(file, "#cloud-config\n" + rootfsFiles()["/etc/cloud/cloud.cfg.d/90-aivm.cfg"]);
  const r = Bun.spawnSync(["cloud-init", "schema", "-c", file]);
  expect({ code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() }).toMatchObject({ code: 0 });
});
