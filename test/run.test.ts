import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, statSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fakeRunner } from "./helpers/fake-runner.ts";
import { Runner, ZxBackend } from "../lib/run.ts";
import { AivmError, UsageError } from "../lib/errors.ts";
import { shellJoin, shellQuote } from "../lib/shell.ts";
import { describeAction } from "../lib/steps.ts";

describe("shellQuote", () => {
  test.each([
    ["plain", "plain"],
    ["/a/b.c", "/a/b.c"],
    ["", "''"],
    ["a b", "'a b'"],
    ["it's", `'it'\\''s'`],
    ["$HOME;rm -rf /", "'$HOME;rm -rf /'"],
    ["line\nbreak", "'line\nbreak'"],
    ["*", "'*'"],
  ])("%p -> %p", (input, expected) => {
    expect(shellQuote(input)).toBe(expected);
  });

  test("a quoted argv round-trips through a real shell byte for byte", async () => {
    const hostile = ["a b", "it's", "$HOME", "`id`", "x;y", "ünï", "tab\there", "new\nline", "--", ""];
    const r = await new Runner(new ZxBackend(), { isRoot: true }).read(["bash", "-c", `printf '%s\\0' "$@"`, "argv0", ...hostile]);
    expect(r.stdout.split("\0").slice(0, -1)).toEqual(hostile);
    // and the dry-run text, pasted into a shell, runs the same argv
    const text = shellJoin(["printf", "%s\\0", ...hostile]);
    const r2 = await new Runner(new ZxBackend(), { isRoot: true }).read(["bash", "-c", text]);
    expect(r2.stdout.split("\0").slice(0, -1)).toEqual(hostile);
  });
});

describe("dry-run", () => {
  test("exec, writeFile, remove and steps are printed, not run", async () => {
    const { runner, fake, printed } = fakeRunner({ dryRun: true });
    await runner.exec(["virsh", "net-define", "/dev/stdin"], { input: "<network/>" });
    await runner.writeFile("/tmp/x y", "content\n", 0o600);
    await runner.remove("/tmp/dir");
    await runner.step({ title: "Create network", why: "the VM needs it", consent: true, actions: [{ kind: "run", argv: ["virsh", "net-start", "n"] }] });
    expect(fake.calls).toEqual([]);
    expect(printed).toEqual([
      "virsh net-define /dev/stdin <<'AIVM_EOF'\n<network/>\nAIVM_EOF",
      "install -m 600 /dev/null '/tmp/x y'\ncat > '/tmp/x y' <<'AIVM_EOF'\ncontent\nAIVM_EOF",
      "rm -rf -- /tmp/dir",
      "# step: Create network (the VM needs it)",
      "virsh net-start n",
    ]);
  });

  test("reads still run under dry-run", async () => {
    const { runner, fake } = fakeRunner({ dryRun: true });
    fake.on(["virsh", "net-info"], { stdout: "Active: yes" });
    expect((await runner.read(["virsh", "net-info", "n"])).stdout).toBe("Active: yes");
  });

  test("a heredoc tag never collides with the content", () => {
    const text = describeAction({ kind: "write", path: "/f", content: "AIVM_EOF\n" });
    expect(text).toBe("cat > /f <<'AIVM_EOF_'\nAIVM_EOF\nAIVM_EOF_");
  });
});

describe("steps and consent", () => {
  const step = { title: "Apply firewall", why: "isolation", consent: true, actions: [{ kind: "run" as const, argv: ["nft", "-f", "-"], input: "table inet t {}" }] };

  test("without a terminal and without --yes a consent step is refused with exit 2, nothing run", async () => {
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    const err = await runner.step(step).catch((e) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect(err.exitCode).toBe(2);
    expect(err.hint).toContain("--yes");
    expect(fake.calls).toEqual([]);
  });

  test("--yes runs without asking", async () => {
    const asked: string[] = [];
    const { runner, fake } = fakeRunner({ yes: true, ask: async (q) => (asked.push(q), "n") });
    fake.on(["nft"], {});
    await runner.step(step);
    expect(asked).toEqual([]);
    expect(fake.calls[0]).toEqual({ kind: "exec", argv: ["nft", "-f", "-"], input: "table inet t {}" });
  });

  test("answers: s shows then asks again, a approves the rest, n aborts", async () => {
    const answers = ["s", "a"];
    const asked: string[] = [];
    const { runner, fake } = fakeRunner({ yes: false, interactive: true, ask: async (q) => (asked.push(q), answers.shift() ?? "n") });
    fake.on(["nft"], {});
    await runner.step(step);
    await runner.step(step); // approved by "all"
    expect(asked).toEqual(["Approve this step? [y]es/[a]ll/[s]how/[N]o ", "Approve this step? [y]es/[a]ll/[s]how/[N]o "]);
    expect(fake.commands()).toEqual(["nft -f -", "nft -f -"]);

    const no = fakeRunner({ yes: false, interactive: true, ask: async () => "" });
    const err = await no.runner.step(step).catch((e) => e);
    expect(err).toBeInstanceOf(AivmError);
    expect(err.message).toContain("not approved");
    expect(no.fake.calls).toEqual([]);
  });

  test("a step without consent runs without asking even without --yes", async () => {
    const { runner, fake } = fakeRunner({ yes: false, interactive: false });
    fake.on(["qemu-img"], {});
    await runner.step({ title: "Create disk", why: "x", actions: [{ kind: "run", argv: ["qemu-img", "create"] }] });
    expect(fake.commands()).toEqual(["qemu-img create"]);
  });
});

describe("sudo and failures", () => {
  test("privileged commands get sudo only when not root; -n without a terminal", async () => {
    const asRoot = fakeRunner({ isRoot: true });
    asRoot.fake.on(["nft"], {});
    await asRoot.runner.exec(["nft", "list", "ruleset"], { privileged: true });
    expect(asRoot.fake.commands()).toEqual(["nft list ruleset"]);

    const user = fakeRunner({ isRoot: false, interactive: false });
    user.fake.on(["sudo"], {}).on(["virsh"], {});
    await user.runner.exec(["nft", "list", "ruleset"], { privileged: true });
    await user.runner.exec(["virsh", "list"]);
    expect(user.fake.commands()).toEqual(["sudo -n nft list ruleset", "virsh list"]);
  });

  test("a failing command becomes one line naming it, its code and the last stderr line", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(["qemu-img"], { exitCode: 1, stderr: "warning\nqemu-img: Could not open 'x': No such file\n" });
    const err = await runner.exec(["qemu-img", "info", "x"], { what: "image info" }).catch((e) => e);
    expect(err).toBeInstanceOf(AivmError);
    expect(err.message).toBe("image info: `qemu-img info x` exited 1: qemu-img: Could not open 'x': No such file");
  });

  test("okCodes and nothrow", async () => {
    const { runner, fake } = fakeRunner();
    fake.on(["grep"], { exitCode: 1 });
    expect((await runner.read(["grep", "x"], { okCodes: [0, 1] })).exitCode).toBe(1);
    expect((await runner.read(["grep", "x"], { nothrow: true })).exitCode).toBe(1);
    await expect(runner.read(["grep", "x"])).rejects.toBeInstanceOf(AivmError);
  });
});

describe("ZxBackend (real processes)", () => {
  const runner = new Runner(new ZxBackend(), { isRoot: true });

  test("exit codes, stdin and stderr come back", async () => {
    const r = await runner.read(["sh", "-c", "cat; echo err >&2; exit 3"], { input: "in\n", nothrow: true });
    expect(r).toEqual({ exitCode: 3, stdout: "in\n", stderr: "err\n" });
  });

  test("a missing program is exit 127 with a clear message", async () => {
    const err = await runner.read(["aivm-no-such-program-xyz"]).catch((e) => e);
    expect(err.message).toBe("aivm-no-such-program-xyz: aivm-no-such-program-xyz: command not found (is it installed? `aivm doctor` checks the host)");
  });

  test("writeFile is atomic: no temp file left, mode applied", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aivm-run-"));
    const path = join(dir, "sub", "f.txt");
    await runner.writeFile(path, "hello", 0o600);
    expect(readFileSync(path, "utf8")).toBe("hello");
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, "sub"))).toEqual(["f.txt"]);
  });
});
