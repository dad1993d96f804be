/*
 * qvm-peercred: prints the peer credentials of the Unix socket on fd 3 as "pid uid gid".
 *
 * Node has no getsockopt(SO_PEERCRED). qvmd passes each accepted admin connection to this helper
 * as fd 3 and decides from the answer whether to serve the caller. The kernel fills these values
 * at connect time, so the caller cannot forge them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/socket.h>

int main(void) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(3, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    perror("qvm-peercred: getsockopt(SO_PEERCRED) on fd 3");
    return 1;
  }
  printf("%d %u %u\n", (int)cred.pid, (unsigned)cred.uid, (unsigned)cred.gid);
  return 0;
}
