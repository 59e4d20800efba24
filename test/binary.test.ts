// The compiled binary, copied alone into an empty directory, runs the commands that need no libvirt.
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, BUN, isolatedEnv, ROOT } from "./helpers/cli.ts";
import pkg from "../package.json" with { type: "json" };

let bin = "";
let cwd = "";
const env = isolatedEnv();

beforeAll(async () => {
  const build = mkdtempSync(join(tmpdir(), "aivm-build-"));
  const p = Bun.spawn([BUN, "build", "./bin/aivm.ts", "--compile", "--minify", "--bytecode", "--format=esm", "--no-compile-autoload-dotenv", "--no-compile-autoload-bunfig", "--outfile", join(build, "aivm")], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if ((await p.exited) !== 0) throw new Error(await new Response(p.stderr).text());
  cwd = mkdtempSync(join(tmpdir(), "aivm-alone-"));
  bin = join(cwd, "aivm");
  copyFileSync(join(build, "aivm"), bin);
  Bun.spawnSync(["chmod", "+x", bin]);
  const init = await aivm(["config", "init", "--defaults", "--yes"], { bin, env, cwd });
  if (init.exitCode !== 0) throw new Error(`config init failed: ${init.stderr}`);
}, 120_000);

describe("dist/aivm alone in a temporary directory", () => {
  test("the directory holds only the binary (templates are embedded)", () => {
    expect(readdirSync(cwd)).toEqual(["aivm"]);
  });

  test("--version and --help", async () => {
    expect(await aivm(["--version"], { bin, env, cwd })).toMatchObject({ exitCode: 0, stdout: `${pkg.version}\n` });
    const help = await aivm(["--help"], { bin, env, cwd });
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain("ssh-config");
  });

  test.each([
    [["net", "xml"], "<network"],
    [["vm", "xml"], "<domain"],
    [["vm", "cloud-init", "--part", "user-data"], "#cloud-config"],
    [["vm", "cloud-init", "--part", "meta-data"], "instance-id"],
    [["vm", "cloud-init", "--part", "network-config"], "version: 2"],
    [["fw", "rules"], "table inet aivm_"],
    [["ssh-config", "print"], "# >>> aivm:"],
  ])("%p prints on stdout from [defaults] alone", async (args, marker) => {
    const r = await aivm(args, { bin, env, cwd });
    expect(r.stderr).not.toContain("aivm:");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(marker);
  });
});
