import { describe, expect, test } from "bun:test";
import { aivm } from "./helpers/cli.ts";
import pkg from "../package.json" with { type: "json" };
import { formatError } from "../lib/errors.ts";

describe("dispatcher", () => {
  test("--version prints the version on stdout", async () => {
    const r = await aivm(["--version"]);
    expect(r).toMatchObject({ exitCode: 0, stdout: `${pkg.version}\n`, stderr: "" });
  });

  test("--help lists every command group on stdout, without colour codes when piped", async () => {
    const r = await aivm(["--help"]);
    expect(r.exitCode).toBe(0);
    for (const c of ["config", "net", "fw", "image", "vm", "share", "ssh-config", "up", "code", "ssh", "status", "list", "doctor", "host", "help", "completion"]) {
      expect(r.stdout).toContain(c);
    }
    expect(r.stdout).not.toContain("\x1b[");
    expect(r.stderr).toBe("");
  });

  test.each([
    [["vm", "--help"], ["create", "up", "down", "restart", "delete", "list", "status", "ip", "wait", "ssh", "xml", "cloud-init", "console-log", "update"]],
    [["net", "--help"], ["create", "destroy", "status", "list", "xml"]],
    [["fw", "--help"], ["apply", "remove", "status", "rules"]],
    [["image", "--help"], ["fetch", "build", "list", "path", "verify", "prune"]],
    [["share", "--help"], ["attach", "detach", "list", "sync"]],
    [["ssh-config", "--help"], ["print", "upsert", "remove"]],
    [["config", "--help"], ["init", "show", "path", "edit", "lint"]],
  ])("%p names its subcommands", async (args, subs) => {
    const r = await aivm(args);
    expect(r.exitCode).toBe(0);
    for (const s of subs) expect(r.stdout).toContain(s);
  });

  test("every leaf command has --help", async () => {
    const r = await aivm(["vm", "up", "--help"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("--dry-run");
    expect(r.stdout).toContain("--yes");
    expect(r.stdout).toContain("--vm");
  });

  test("an unknown command is a usage error (exit 2), one line on stderr, nothing on stdout", async () => {
    const r = await aivm(["frobnicate"]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr.split("\n")[0]).toBe("aivm: unknown command: frobnicate");
  });

  test("an unknown command with --help is still exit 2 (a script can tell a missing command from a present one)", async () => {
    for (const argv of [["frobnicate", "--help"], ["vm", "frobnicate", "--help"], ["--help", "attach-nothing"]]) {
      const r = await aivm(argv);
      expect(r.exitCode).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^aivm: unknown command: /);
    }
    expect((await aivm(["vm", "up", "--help"])).exitCode).toBe(0);
  });

  test("an unknown subcommand and a missing subcommand are usage errors", async () => {
    expect((await aivm(["vm", "frobnicate"])).exitCode).toBe(2);
    const r = await aivm(["vm"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("which subcommand?");
  });

  test("an unknown flag is refused (citty alone would ignore it)", async () => {
    const r = await aivm(["net", "xml", "--frobnicate"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe("aivm: unknown option: --frobnicate\nhint: see --help\n");
  });
});
