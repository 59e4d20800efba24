// A TCP listener for the firewall checks: greets every connection with the token, then closes it.
// Usage: bun e2e/listen.ts ADDR PORT   (prints "listening" on stdout once bound)
const [addr, port] = Bun.argv.slice(2);
Bun.listen({
  hostname: addr!,
  port: Number(port),
  socket: {
    open(s) {
      s.write("aivm-e2e-ok\n");
      s.end();
    },
    data() {},
  },
});
console.log(`listening ${addr}:${port}`);
