// Imported first by bin/aivm.ts: citty decides on colour when it loads, and only honours NO_COLOR=1 exactly.
if (process.env.NO_COLOR !== undefined || !process.stdout.isTTY) process.env.NO_COLOR = "1";
export {};
