// Oracle: the rendered network XML against libvirt's own schema (virt-xml-validate FILE network).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StoreDoc } from "../../lib/config/model.ts";
import { renderNetworkXml } from "../../lib/net.ts";
import { resolveNetwork } from "../../lib/config/resolve.ts";

const has = (t: string) => !!Bun.which(t);
if (!has("virt-xml-validate") && process.env.CI === "true") throw new Error("virt-xml-validate is missing (install libvirt-clients / libxml2-utils); CI may not skip oracles");

const dir = mkdtempSync(join(tmpdir(), "aivm-oracle-net-"));
const long = "n" + "-x".repeat(31); // 63 characters

const configs: [string, StoreDoc, string?][] = [
  ["defaults only", {}],
  ["custom bridge, /29", { networks: [{ name: "tiny", bridge: "br_tiny-0", subnet: "192.168.50.8/29" }] }, "tiny"],
  ["/16 with explicit gateway and range", { networks: [{ name: "big", subnet: "172.30.0.0/16", gateway: "172.30.255.254", dhcp_start: "172.30.1.0", dhcp_end: "172.30.200.255" }] }, "big"],
  ["/8", { defaults: { network: { name: "huge", subnet: "10.0.0.0/8" } } }],
  ["63-character name, 15-character bridge", { networks: [{ name: long, bridge: "Br-0123456789_x" }] }, long],
];

describe.skipIf(!has("virt-xml-validate"))("virt-xml-validate network", () => {
  for (const [what, doc, name] of configs) {
    test(what, () => {
      const file = join(dir, `${what.replace(/\W+/g, "_")}.xml`);
      writeFileSync(file, renderNetworkXml(resolveNetwork(doc, name)));
      const r = Bun.spawnSync(["virt-xml-validate", file, "network"], { stdout: "pipe", stderr: "pipe" });
      expect({ code: r.exitCode, err: r.exitCode ? r.stderr.toString() : "" }).toEqual({ code: 0, err: "" });
    });
  }
  test("the validator rejects a broken document (the oracle can fail)", () => {
    const file = join(dir, "broken.xml");
    writeFileSync(file, renderNetworkXml(resolveNetwork({})).replace("mode='nat'", "mode='sideways'"));
    expect(Bun.spawnSync(["virt-xml-validate", file, "network"], { stdout: "pipe", stderr: "pipe" }).exitCode).not.toBe(0);
  });
});
