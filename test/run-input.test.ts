import { expect, test } from "bun:test";
import { realRunner } from "../lib/run.ts";

// virsh define/net-define read the document from /dev/stdin: stdin must be something open(2) accepts (not a socket)
test("real runner: a command given input can open /dev/stdin", async () => {
  const r = await realRunner().exec(["cat", "/dev/stdin"], { input: "<network/>\n" });
  expect(r).toEqual({ exitCode: 0, stdout: "<network/>\n", stderr: "" });
});

test("real runner with input: a missing program is exit 127, a timeout kills it", async () => {
  const runner = realRunner();
  expect((await runner.exec(["aivm-no-such-program"], { input: "x", nothrow: true })).exitCode).toBe(127);
  const t0 = Date.now();
  expect((await runner.exec(["sleep", "5"], { input: "x", nothrow: true, timeoutMs: 200 })).exitCode).not.toBe(0);
  expect(Date.now() - t0).toBeLessThan(3000);
});
