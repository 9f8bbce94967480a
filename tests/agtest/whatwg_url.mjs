// Reads one JSON string per line on stdin, answers one JSON object per line: how the WHATWG URL
// parser (the one browsers use, here Node's) reads it. Used by the redirect URI differential test.
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let answer;
  try {
    const u = new URL(JSON.parse(line));
    answer = {
      ok: true,
      href: u.href,
      protocol: u.protocol,
      username: u.username,
      password: u.password,
      hostname: u.hostname,
      port: u.port,
      pathname: u.pathname,
      search: u.search,
      hash: u.hash,
    };
  } catch (e) {
    answer = { ok: false, error: String(e && e.code ? e.code : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
