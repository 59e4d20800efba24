// One validation for lint and every load (issue 14): what resolution used to refuse without a position is a lint
// problem at file:line:col, exit 78 in every command; a store that validated always resolves.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aivm, isolatedEnv } from "./helpers/cli.ts";
import { lintProblems } from "../lib/flows/init.ts";
import { parseStore } from "../lib/config/store.ts";
import { networkNames, resolveNetwork, resolveVm, vmNames } from "../lib/config/resolve.ts";
import { EXIT } from "../lib/errors.ts";
import { urlProblem } from "../lib/validate.ts";

const tmp = () => mkdtempSync(join(tmpdir(), "aivm-val-"));

function store(text: string): string {
  const path = join(tmp(), "config.toml");
  writeFileSync(path, text);
  return path;
}

const lines = (path: string) => lintProblems(path).map((p) => `${p.line}:${p.col}: ${p.message}`);

/** The examples: each was "no problems" in lint and an error (without a position) elsewhere. */
const CASES: [string, string, string][] = [
  [
    "a gateway inside the DHCP range",
    '[[networks]]\nname = "lab"\nsubnet = "10.88.0.0/24"\ngateway = "10.88.0.150"\n',
    "4:1: networks[0].gateway: network lab: gateway 10.88.0.150 lies inside the DHCP range 10.88.0.100-10.88.0.200",
  ],
  [
    "a gateway outside the subnet",
    '[[networks]]\nname = "lab"\nsubnet = "10.88.0.0/24"\ngateway = "10.99.0.1"\n',
    "4:1: networks[0].gateway: network lab: gateway 10.99.0.1 is not a host address in 10.88.0.0/24",
  ],
  [
    "dhcp_start after dhcp_end",
    '[defaults.network]\nsubnet = "10.88.0.0/24"\ndhcp_start = "10.88.0.200"\ndhcp_end = "10.88.0.100"\n',
    "3:1: defaults.network.dhcp_start: network aivm-net: dhcp_start 10.88.0.200 is after dhcp_end 10.88.0.100",
  ],
  [
    "a /7 subnet",
    '[[networks]]\nname = "lab"\nsubnet = "10.0.0.0/7"\n',
    "3:1: networks[0].subnet: network lab: subnet 10.0.0.0/7 must be from /8 to /29",
  ],
  [
    "a VM naming a missing network",
    '[[networks]]\nname = "lab"\nsubnet = "10.88.0.0/24"\n\n[[vms]]\nname = "box"\nnetwork = "nope"\n',
    "7:1: vms[0].network: network nope is neither a [[networks]] record nor the [defaults.network] name (aivm-net)",
  ],
  [
    "two networks with overlapping subnets",
    '[[networks]]\nname = "a"\nsubnet = "10.88.0.0/16"\n\n[[networks]]\nname = "b"\nsubnet = "10.88.7.0/24"\n',
    "7:1: networks[1].subnet: network b: subnet 10.88.7.0/24 overlaps network a (10.88.0.0/16)",
  ],
  [
    "file://host/path",
    '[defaults.image]\nurl = "file://host/srv/base.qcow2"\nsha256 = "' + "a".repeat(64) + '"\n',
    '2:1: defaults.image.url: "file://host/srv/base.qcow2" is not a local file URL: write file:///path/to/image (no host after file://)',
  ],
];

describe("config lint reports what resolution used to refuse, with file:line:col", () => {
  for (const [what, text, want] of CASES) {
    test(what, () => {
      expect(lines(store(text))).toEqual([want]);
    });
  }

  test("several problems at once, each at its own position", () => {
    const path = store('[[networks]]\nname = "lab"\nsubnet = "10.0.0.0/7"\n\n[[networks]]\nname = "x"\nsubnet = "10.200.0.0/24"\ngateway = "10.200.0.0"\n');
    expect(lines(path)).toEqual([
      "3:1: networks[0].subnet: network lab: subnet 10.0.0.0/7 must be from /8 to /29",
      "8:1: networks[1].gateway: network x: gateway 10.200.0.0 is not a host address in 10.200.0.0/24",
    ]);
  });

  test("a network that inherits a subnet from [defaults.network] is checked against it, located at the record", () => {
    const path = store('[defaults.network]\nname = "lab"\nsubnet = "10.88.0.0/24"\n\n[[networks]]\nname = "lab"\ngateway = "10.1.0.1"\n');
    expect(lines(path)).toEqual(["7:1: networks[0].gateway: network lab: gateway 10.1.0.1 is not a host address in 10.88.0.0/24"]);
  });

  test("the VM may name the [defaults.network] network before it is recorded", () => {
    expect(lines(store('[defaults.network]\nname = "lab"\n\n[[vms]]\nname = "box"\nnetwork = "lab"\n'))).toEqual([]);
  });
});

describe("every command refuses those stores with exit 78 and the position (real CLI)", () => {
  for (const [what, text, want] of CASES) {
    for (const args of [["config", "lint"], ["list", "--json"], ["up", "--dry-run", "--yes"]]) {
      test(`${what}: ${args.join(" ")}`, async () => {
        const path = store(text);
        const r = await aivm([...args, "--config", path], { env: isolatedEnv() });
        expect(r.exitCode).toBe(EXIT.CONFIG);
        expect(r.stdout + r.stderr).toContain(`${path}:${want}`);
      }, 20_000);
    }
  }
});

describe("resolution never fails on a store that validated", () => {
  const VALID = [
    "",
    '[defaults.network]\nsubnet = "10.5.0.0/29"\n',
    '[defaults.network]\nname = "lab"\nsubnet = "172.20.0.0/16"\ngateway = "172.20.255.254"\ndhcp_start = "172.20.0.10"\ndhcp_end = "172.20.0.20"\n',
    '[defaults.network]\nname = "lab"\nsubnet = "10.88.0.0/24"\n\n[[networks]]\nname = "lab"\n\n[[networks]]\nname = "b"\nsubnet = "10.89.0.0/24"\n\n[[vms]]\nname = "x"\nnetwork = "lab"\n\n[[vms]]\nname = "y"\nnetwork = "b"\n',
    '[[vms]]\nname = "only"\nnetwork = "aivm-net"\n[[vms.attachments]]\nhost_path = "/srv/p"\n',
  ];
  for (const [i, text] of VALID.entries()) {
    test(`store ${i}: every VM and every network resolves`, () => {
      const doc = parseStore(text, "c.toml");
      for (const n of networkNames(doc)) expect(resolveNetwork(doc, n).name).toBe(n);
      for (const v of vmNames(doc)) expect(resolveVm(doc, v).name).toBe(v);
    });
  }
});

describe("urlProblem", () => {
  test.each([
    ["file:///srv/base.qcow2", undefined],
    ["https://example.org/x.img", undefined],
    ["file://host/srv/base.qcow2", "not a local file URL"],
    ["file://localhost/srv/base.qcow2", "not a local file URL"],
    ["https:///x.img", "has no host"],
    ["http://example.org/x.img", "not an https:// or file:// URL"],
  ] as const)("%s", (url, want) => {
    const p = urlProblem(url);
    if (want === undefined) expect(p).toBeUndefined();
    else expect(p).toContain(want);
  });
});

describe("a config path that is a directory, unreadable, or explicitly named and missing: one line, exit 78 (real CLI)", () => {
  test("config lint on a directory", async () => {
    const dir = tmp();
    const r = await aivm(["config", "lint", "--config", dir]);
    expect([r.exitCode, r.stdout, r.stderr]).toEqual([EXIT.CONFIG, "", `aivm: config: ${dir}: is a directory, not a config file\n`]);
  });

  test("config lint and list on an unreadable file", async () => {
    for (const args of [["config", "lint"], ["list"]]) {
      const r = await aivm([...args, "--config", "/proc/self/mem"]);
      expect([r.exitCode, r.stdout, r.stderr]).toEqual([EXIT.CONFIG, "", "aivm: config: /proc/self/mem: cannot read: input/output error\n"]);
    }
  });

  for (const args of [["up", "--dry-run", "--yes"], ["up", "--yes"], ["net", "create", "--yes"], ["share", "attach", "/tmp", "--yes"], ["list"], ["config", "show"], ["config", "edit"], ["config", "discover", "--yes"]]) {
    test(`--config /typo.toml: ${args.join(" ")} says it does not exist and creates nothing`, async () => {
      const path = join(tmp(), "typo.toml");
      const r = await aivm([...args, "--config", path], { env: { ...isolatedEnv(), EDITOR: "true" } });
      expect(r.exitCode).toBe(EXIT.CONFIG);
      expect(r.stderr.split("\n")[0]).toBe(`aivm: config: ${path}: no such file`);
      expect(existsSync(path)).toBe(false);
    }, 20_000);
  }

  test("AIVM_CONFIG naming a missing file is refused the same way", async () => {
    const path = join(tmp(), "typo.toml");
    const r = await aivm(["up", "--yes"], { env: { ...isolatedEnv(), AIVM_CONFIG: path } });
    expect(r.exitCode).toBe(EXIT.CONFIG);
    expect(existsSync(path)).toBe(false);
  }, 20_000);

  test("config init creates the file it is pointed at; config path only prints it", async () => {
    const path = join(tmp(), "new.toml");
    expect((await aivm(["config", "path", "--config", path])).stdout).toBe(`${path}\n`);
    const r = await aivm(["config", "init", "--defaults", "--dry-run", "--config", path]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`cat > ${path} <<'AIVM_EOF'`);
  }, 20_000);
});
