/*
 * qvm-qmp-add-fd SOCKET QEMU-PID FDSET ro|rw IMAGE: opens the disk image IMAGE (read-only or
 * read-write, never through a symbolic link), connects to the QMP monitor at SOCKET, checks that
 * the process serving it is QEMU-PID, and hands QEMU the open descriptor with QMP `add-fd` into
 * fd set FDSET (the descriptor travels as SCM_RIGHTS, which Node cannot send). Prints QEMU's
 * reply to `add-fd` on stdout; exits 0 when QEMU took it.
 *
 * qvmd runs it as root to plug a USB stick into a running domain: the jailed VMM has no
 * permission on the image and never opens it; it opens /dev/fdset/FDSET afterwards (QMP
 * `blockdev-add`), on qvmd's own monitor, and QEMU dups the descriptor whose access mode
 * matches. This helper keeps nothing: it leaves once QEMU answered. The image must be a regular
 * file. The monitor is a second one (qvmd holds the first), used for nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LINE 65536
#define TIMEOUT_S 10

static char buf[MAX_LINE + 1];
static size_t have;

static int fail(const char *what, const char *why) {
  fprintf(stderr, "qvm-qmp-add-fd: %s: %s\n", what, why);
  return 1;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "qvm-qmp-add-fd: QEMU did not answer within 10 s\n";
  ssize_t n = write(2, msg, sizeof msg - 1);
  (void)n;
  _exit(1);
}

/* The next line QEMU sent, without its newline; NULL at end of stream or when too long. */
static char *read_line(int sock) {
  static size_t consumed;
  if (consumed) {
    memmove(buf, buf + consumed, have - consumed);
    have -= consumed;
    consumed = 0;
  }
  for (;;) {
    char *nl = memchr(buf, '\n', have);
    if (nl) {
      *nl = '\0';
      consumed = (size_t)(nl - buf) + 1;
      return buf;
    }
    if (have == MAX_LINE) return NULL;
    ssize_t n = read(sock, buf + have, MAX_LINE - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return NULL;
    have += (size_t)n;
  }
}

/* The next line that is not an asynchronous event (QMP events carry "event"). */
static char *read_reply(int sock) {
  for (;;) {
    char *line = read_line(sock);
    if (!line || !strstr(line, "\"event\"")) return line;
  }
}

static int send_all(int sock, const char *text) {
  size_t len = strlen(text);
  while (len) {
    ssize_t n = send(sock, text, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    text += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Parses a decimal in [min, max]; -1 when it is not one. */
static long number(const char *text, long min, long max) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || end == text || *end != '\0' || v < min || v > max) return -1;
  return v;
}

int main(int argc, char **argv) {
  if (argc != 6 || number(argv[2], 1, 0x7fffffff) < 0 || number(argv[3], 0, 0x7fffffff) < 0 ||
      (strcmp(argv[4], "ro") != 0 && strcmp(argv[4], "rw") != 0) || argv[5][0] != '/') {
    fprintf(stderr, "usage: qvm-qmp-add-fd SOCKET QEMU-PID FDSET ro|rw /ABSOLUTE/IMAGE\n");
    return 2;
  }
  const char *socket_path = argv[1];
  pid_t qemu_pid = (pid_t)number(argv[2], 1, 0x7fffffff);
  long fdset = number(argv[3], 0, 0x7fffffff);
  int readonly = strcmp(argv[4], "ro") == 0;
  const char *image = argv[5];
  signal(SIGALRM, on_alarm);
  alarm(TIMEOUT_S);

  /* O_NONBLOCK: a FIFO put in the image's place must not hang the open; cleared below. */
  int fd = open(image, (readonly ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) return fail(image, "is a symbolic link: plug the image itself");
    if (errno == EROFS) return fail(image, "is on a read-only filesystem: plug it read-only");
    return fail(image, strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return fail(image, strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(image, "is not a regular file");
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return fail(image, strerror(errno));

  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof addr.sun_path) return fail(socket_path, "path too long for a socket");
  strcpy(addr.sun_path, socket_path);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return fail("socket", strerror(errno));
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) return fail(socket_path, strerror(errno));
  /* The descriptor goes only to the domain's own QEMU, whatever the socket file was replaced with. */
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return fail(socket_path, strerror(errno));
  if (cred.pid != qemu_pid) {
    fprintf(stderr, "qvm-qmp-add-fd: %s is served by pid %ld, not QEMU's %ld\n", socket_path, (long)cred.pid, (long)qemu_pid);
    return 1;
  }

  char *line = read_line(sock);
  if (!line || !strstr(line, "\"QMP\"")) return fail(socket_path, "no QMP greeting");
  if (send_all(sock, "{\"execute\":\"qmp_capabilities\"}\n") != 0) return fail(socket_path, strerror(errno));
  line = read_reply(sock);
  if (!line || !strstr(line, "\"return\"")) return fail("qmp_capabilities", line ? line : "no reply");

  char command[128];
  snprintf(command, sizeof command, "{\"execute\":\"add-fd\",\"arguments\":{\"fdset-id\":%ld}}\n", fdset);
  struct iovec iov = {.iov_base = command, .iov_len = strlen(command)};
  union {
    char space[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  ssize_t sent;
  do sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  if (sent != (ssize_t)iov.iov_len) return fail("add-fd", sent < 0 ? strerror(errno) : "short write");
  close(fd);

  line = read_reply(sock);
  if (!line) return fail("add-fd", "no reply");
  printf("%s\n", line);
  if (!strstr(line, "\"return\"")) {
    fprintf(stderr, "qvm-qmp-add-fd: add-fd: %s\n", line);
    return 1;
  }
  close(sock);
  return 0;
}
