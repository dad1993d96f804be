// Resolves a user name to the identity a process runs as, from /etc/passwd.
import { readFileSync } from "node:fs";

export interface GuestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export function parsePasswd(text: string): GuestUser[] {
  const users: GuestUser[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || !f[0]) continue;
    users.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] || "/", shell: f[6] || "/bin/sh" });
  }
  return users;
}

export function lookupUser(name: string, passwdPath = "/etc/passwd"): GuestUser | undefined {
  return parsePasswd(readFileSync(passwdPath, "utf8")).find((u) => u.name === name);
}
