// Services of the admin domain (the host, "@adminvm"/dom0 in policy). Only what the standard
// policy sends there exists; anything else answers 127 like a missing service in a domain.
import { PassThrough } from "node:stream";
import { EXIT_NO_SERVICE } from "@qvm/protocol";
import type { ServiceProcess } from "./router.js";

type HostService = (arg: string, out: PassThrough) => number;

const HOST_SERVICES: Record<string, HostService> = {
  // Qubes' qubes.GetDate: the current UTC time, ISO 8601 to the second.
  "qubes.GetDate": (_arg, out) => {
    out.write(`${new Date().toISOString().replace(/\.\d{3}Z$/, "+00:00")}\n`);
    return 0;
  },
};

export function runHostService(service: string, argument: string): ServiceProcess {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  stdin.resume();
  const impl = HOST_SERVICES[service];
  let code: number = EXIT_NO_SERVICE;
  if (impl) code = impl(argument, stdout);
  else stderr.write(`qrexec: the admin domain has no service ${service}\n`);
  stdout.end();
  stderr.end();
  return { stdin, stdout, stderr, exit: Promise.resolve({ code, signal: null }), cancel() {} };
}
