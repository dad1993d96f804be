// Node cannot open AF_VSOCK sockets, so socat accepts the host's connections on vsock port 1024
// and relays each to the agent's Unix socket. It is restarted if it dies.
import { spawn, type ChildProcess } from "node:child_process";

export function startVsockBridge(port: number, unixPath: string, log: (m: string) => void): { stop(): void } {
  let child: ChildProcess | undefined;
  let stopped = false;
  const run = () => {
    child = spawn("socat", [`VSOCK-LISTEN:${port},reuseaddr,fork`, `UNIX-CONNECT:${unixPath}`], { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", (err) => log(`socat failed to start: ${err.message}`));
    child.on("exit", (code, sig) => {
      if (stopped) return;
      log(`socat exited (${sig ?? code}); restarting in 1 s`);
      setTimeout(run, 1000);
    });
  };
  run();
  return {
    stop() {
      stopped = true;
      child?.kill("SIGTERM");
    },
  };
}
