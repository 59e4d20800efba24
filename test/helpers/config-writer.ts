// Spawned by test/config-store.test.ts as a separate process:
//   add-network CONFIG NAME SUBNET   add one [[networks]] record through updateStore
//   loop-save CONFIG                 save two large documents in turn, forever (the test kill -9s it)
//   hold-lock CONFIG                 take the store lock, print "locked", sleep (the test kill -9s it)

import type { StoreDoc } from "../../lib/config/model.ts";
import { lockPath, updateStore } from "../../lib/config/store.ts";
import { acquireLock } from "../../lib/lock.ts";

const [mode, path, ...rest] = process.argv.slice(2);

/** A large valid document; `variant` changes every record so two variants differ throughout. */
export function bigDoc(variant: number, count = 250): StoreDoc {
  return {
    defaults: { vm: { cpus: 1 + variant, memory_mib: 2048 }, network: { name: "aivm-net", subnet: "10.77.0.0/24" } },
    networks: Array.from({ length: count }, (_, i) => ({
      name: `net-${variant}-${i}`,
      subnet: `10.${(i >> 8) + 100 + variant}.${i & 255}.0/24`,
      firewall: { enabled: variant % 2 === 0, allow_tcp_ports: [1000 + i, 2000 + i], block_cidrs: ["10.0.0.0/8", "192.168.0.0/16"] },
    })),
  };
}

if (import.meta.main) {
  if (mode === "add-network") {
    const [name, subnet] = rest as [string, string];
    updateStore(path!, (doc) => {
      doc.networks ??= [];
      doc.networks.push({ name, subnet });
    });
    process.stdout.write("ok\n");
  } else if (mode === "loop-save") {
    // say when the first save is done, so the test's kill lands among real saves however slow this machine is
    updateStore(path!, () => bigDoc(0));
    process.stdout.write("saving\n");
    for (let i = 1; ; i++) updateStore(path!, () => bigDoc(i % 2));
  } else if (mode === "hold-lock") {
    acquireLock(lockPath(path!));
    process.stdout.write("locked\n");
    setInterval(() => {}, 1 << 30);
  } else {
    process.stderr.write(`config-writer: unknown mode ${mode}\n`);
    process.exit(2);
  }
}
