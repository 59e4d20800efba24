import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./helpers/cli.ts";
import { spliceReadme } from "../lib/config/reference.ts";
import { EXIT } from "../lib/errors.ts";

const readme = readFileSync(join(ROOT, "README.md"), "utf8");

test("the README's config reference is the one generated from the schema (run `bun lib/config/reference.ts`)", () => {
  expect(readme).toBe(spliceReadme(readme));
});

test("the README lists every exit code of the table", () => {
  for (const code of Object.values(EXIT)) expect(readme).toMatch(new RegExp(`^\\| ${code} \\|`, "m"));
});

test("the README's test command is what CI runs", () => {
  expect(readme).toContain("\nmake test ");
  expect(readFileSync(join(ROOT, ".ci/run"), "utf8")).toContain("make test");
});
