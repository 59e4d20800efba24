// G5: git mode's pull, with a real git. The "guest" is a local clone reached through the remote aivm names
// (aivm-<vm>), as ssh would reach the guest's clone. What the guest pushes into lands in refs/aivm/<vm>/* only; the
// host's branch moves only by fast-forward, after consent.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Vm } from "../lib/config/model.ts";
import { resolveVm } from "../lib/config/resolve.ts";
import { parseStore } from "../lib/config/store.ts";
import { EXIT, type AivmError } from "../lib/errors.ts";
import { syncFolder } from "../lib/flows/git-sync.ts";
import { gitRemoteName } from "../lib/git.ts";
import { realRunner } from "../lib/run.ts";
import { attachment, recordedToml, storeToml } from "./helpers/fixtures.ts";

const env = { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1", GIT_AUTHOR_NAME: "a", GIT_AUTHOR_EMAIL: "a@b", GIT_COMMITTER_NAME: "a", GIT_COMMITTER_EMAIL: "a@b" };
const git = (cwd: string, ...args: string[]): string => {
  const r = Bun.spawnSync(["git", ...args], { cwd, env });
  if (r.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
};

let root: string, host: string, guest: string, vm: Vm;
const saved = { ...process.env };

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), "aivm-gitsync-")));
  host = join(root, "proj");
  guest = join(root, "guest-clone");
  mkdirSync(host);
  git(host, "init", "-q", "-b", "main");
  writeFileSync(join(host, "a.txt"), "one\n");
  git(host, "add", "a.txt");
  git(host, "commit", "-q", "-m", "one");
  git(root, "clone", "-q", host, guest);
  git(host, "remote", "add", gitRemoteName({ name: "box" } as Vm), guest);
  const text = storeToml(root, recordedToml([attachment(host, { mode: "git" })]));
  vm = resolveVm(parseStore(text, join(root, "config.toml")));
  Object.assign(process.env, { GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" });
});
afterEach(() => {
  process.env = { ...saved };
  rmSync(root, { recursive: true, force: true });
});

const guestCommit = (subject: string, file = "a.txt") => {
  writeFileSync(join(guest, file), subject + "\n");
  git(guest, "add", file);
  git(guest, "commit", "-q", "-m", subject);
};

describe.skipIf(!Bun.which("git"))("G5: share sync --pull from a guest's clone", () => {
  test("fetches into refs/aivm/box/* only: the host's branches, tags and hooks are untouched until consent", async () => {
    guestCommit("two");
    git(guest, "branch", "evil");
    git(guest, "tag", "v9");
    writeFileSync(join(guest, ".git", "hooks", "post-merge"), `#!/bin/sh\ntouch ${join(root, "ran")}\n`, { mode: 0o755 });
    const before = git(host, "rev-parse", "main");
    const err = (await syncFolder(realRunner({ interactive: false }), vm, host, "pull").catch((e) => e)) as AivmError;
    expect(err.exitCode).toBe(EXIT.USAGE); // no terminal, no --yes: nothing moves
    expect(git(host, "rev-parse", "main")).toBe(before);
    const refs = git(host, "for-each-ref", "--format=%(refname)").split("\n").filter((r) => !r.startsWith("refs/remotes/"));
    expect(refs.sort()).toEqual(["refs/aivm/box/evil", "refs/aivm/box/main", "refs/heads/main"]);
    expect(git(host, "tag")).toBe("");
  });

  test("with consent: a fast-forward to the guest's commits; no hook of the guest runs on the host", async () => {
    guestCommit("two");
    guestCommit("three \x1b]0;pwned\x07", "b.txt");
    writeFileSync(join(guest, ".git", "hooks", "post-merge"), `#!/bin/sh\ntouch ${join(root, "ran")}\n`, { mode: 0o755 });
    const r = await syncFolder(realRunner({ yes: true }), vm, host, "pull");
    expect(r).toMatchObject({ branch: "main", moved: true, commits: 2 });
    expect(git(host, "rev-parse", "main")).toBe(git(guest, "rev-parse", "main"));
    expect(await Bun.file(join(root, "ran")).exists()).toBe(false);
  });

  test("diverged histories: refused, exit 1, the host's branch kept; the guest's commits wait in refs/aivm/box/main", async () => {
    guestCommit("guest side");
    writeFileSync(join(host, "c.txt"), "host\n");
    git(host, "add", "c.txt");
    git(host, "commit", "-q", "-m", "host side");
    const before = git(host, "rev-parse", "main");
    const err = (await syncFolder(realRunner({ yes: true }), vm, host, "pull").catch((e) => e)) as AivmError;
    expect(err.exitCode).toBe(EXIT.FAILED);
    expect(err.message).toContain("not a fast-forward");
    expect(git(host, "rev-parse", "main")).toBe(before);
    expect(git(host, "rev-parse", "refs/aivm/box/main")).toBe(git(guest, "rev-parse", "main"));
  });

  test("a guest that rewrote history (forced): fetched, shown as diverged, never merged", async () => {
    git(guest, "commit", "-q", "--amend", "-m", "rewritten");
    const before = git(host, "rev-parse", "main");
    const err = (await syncFolder(realRunner({ yes: true }), vm, host, "pull").catch((e) => e)) as AivmError;
    expect(err.exitCode).toBe(EXIT.FAILED);
    expect(git(host, "rev-parse", "main")).toBe(before);
  });

  test("nothing new: exit 0, nothing moved", async () => {
    const r = await syncFolder(realRunner({ yes: true }), vm, host, "pull");
    expect(r).toMatchObject({ moved: false, commits: 0 });
  });
});
