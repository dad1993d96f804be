/*
 * qvm-exec-data: run a program with its stdin, stdout and stderr carried over a stream socket of
 * their own to the host, instead of through the agent's gRPC stream.
 *
 * Under emulation the Node agent moving every byte through gRPC was the bottleneck of Exec
 * output and of qrexec services (a third of a raw vsock stream). This helper connects once,
 * then relays with plain read/write, so the guest's cost per byte is that of socat.
 *
 *   QVM_EXEC_DATA=vsock:PORT:COOKIE   (or unix:PATH:COOKIE, for tests without vsock)
 *   qvm-exec-data PROGRAM [ARG...]
 *
 *   COOKIE  32 hex digits: the host's name for this process, sent first on the connection
 *   fd 3    control pipe: the helper writes "pid N\n" once the program runs (as qvm-pty does)
 *
 * On the connection, frames as in qrexec (docs/qrexec-protocol.md): u8 type, u32 big-endian
 * length, at most 64 KiB of payload. Host -> helper: STDIN (0x10; empty = EOF). Helper -> host:
 * STDOUT (0x11), STDERR (0x12), each ended by an empty frame, then EXIT (0x13, i32 status:
 * the exit code, or 128+N for signal N) once the program has exited and both outputs ended.
 * Anything else from the host, or an oversize frame, ends the relay and kills the program.
 * Stdin is written to the program without blocking, and the host's next frame is only read
 * once the last one is written, so a program that does not read its stdin never stops its
 * output (no deadlock). Each STDIN frame, once written (or dropped: the program closed its
 * stdin), is acknowledged with STDIN_ACK (0x14, u32 payload bytes); the host keeps at most the
 * agent's stdin window in flight, so this socket's receive buffer never fills. A full one made
 * vhost-device-vsock stop forwarding our output for good (docs/agent-protocol.md).
 *
 * The helper's own errors go to its stderr (the agent's pipe). It exits with the program's
 * status, or kills itself with the program's signal, so the agent reports the program's own end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CONTROL_FD 3
#define MAX_PAYLOAD 65536
#define HEADER 5
#define COOKIE_BYTES 16
#define HOST_CID 2

enum { F_STDIN = 0x10, F_STDOUT = 0x11, F_STDERR = 0x12, F_EXIT = 0x13, F_STDIN_ACK = 0x14 };

static pid_t child = -1;

static void forward_signal(int sig) {
  if (child > 0) kill(child, sig);
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_frame(int sock, int type, const char *payload, size_t len) {
  unsigned char head[HEADER] = {(unsigned char)type, (unsigned char)(len >> 24), (unsigned char)(len >> 16), (unsigned char)(len >> 8), (unsigned char)len};
  if (write_all(sock, head, HEADER) < 0) return -1;
  return len ? write_all(sock, payload, len) : 0;
}

static int send_u32_frame(int sock, int type, uint32_t value) {
  unsigned char p[4] = {(unsigned char)(value >> 24), (unsigned char)(value >> 16), (unsigned char)(value >> 8), (unsigned char)value};
  return send_frame(sock, type, (const char *)p, 4);
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Parses "vsock:PORT:HEX" or "unix:PATH:HEX" and connects; -1 with a message on failure. */
static int connect_host(const char *spec, unsigned char cookie[COOKIE_BYTES]) {
  const char *last = strrchr(spec, ':');
  if (!last || strlen(last + 1) != 2 * COOKIE_BYTES) {
    fprintf(stderr, "qvm-exec-data: QVM_EXEC_DATA is not TRANSPORT:ADDRESS:COOKIE\n");
    return -1;
  }
  for (int i = 0; i < COOKIE_BYTES; i++) {
    int hi = hex_value(last[1 + 2 * i]), lo = hex_value(last[2 + 2 * i]);
    if (hi < 0 || lo < 0) {
      fprintf(stderr, "qvm-exec-data: the cookie is not hex\n");
      return -1;
    }
    cookie[i] = (unsigned char)(hi << 4 | lo);
  }
  int sock = -1;
  if (strncmp(spec, "vsock:", 6) == 0) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = HOST_CID, .svm_port = (unsigned)strtoul(spec + 6, NULL, 10)};
    sock = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock >= 0 && connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
      close(sock);
      sock = -1;
    }
  } else if (strncmp(spec, "unix:", 5) == 0) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = (size_t)(last - (spec + 5));
    if (len >= sizeof addr.sun_path) len = sizeof addr.sun_path - 1;
    memcpy(addr.sun_path, spec + 5, len);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock >= 0 && connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
      close(sock);
      sock = -1;
    }
  } else {
    fprintf(stderr, "qvm-exec-data: unknown transport in QVM_EXEC_DATA\n");
    return -1;
  }
  if (sock < 0) fprintf(stderr, "qvm-exec-data: cannot connect to the host: %s\n", strerror(errno));
  return sock;
}

static void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: QVM_EXEC_DATA=vsock:PORT:COOKIE qvm-exec-data PROGRAM [ARG...]\n");
    return 126;
  }
  const char *spec = getenv("QVM_EXEC_DATA");
  if (!spec) {
    fprintf(stderr, "qvm-exec-data: QVM_EXEC_DATA is not set\n");
    return 126;
  }
  unsigned char cookie[COOKIE_BYTES];
  int sock = connect_host(spec, cookie);
  unsetenv("QVM_EXEC_DATA"); /* the program never sees the cookie */
  if (sock < 0) return 126;
  if (write_all(sock, cookie, COOKIE_BYTES) < 0) {
    fprintf(stderr, "qvm-exec-data: cannot write to the host: %s\n", strerror(errno));
    return 126;
  }

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) < 0 || pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) {
    perror("qvm-exec-data: pipe");
    return 126;
  }
  pid_t parent = getpid();
  child = fork();
  if (child < 0) {
    perror("qvm-exec-data: fork");
    return 126;
  }
  if (child == 0) {
    /* The program dies with the helper (the agent killing a process kills the helper too). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(CONTROL_FD);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[1], &argv[1]);
    int code = errno == ENOENT ? 127 : 126;
    fprintf(stderr, "qvm-agent: cannot run %s: %s\n", argv[1], strerror(errno));
    _exit(code);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  int to_child = in_pipe[1];
  set_nonblocking(to_child);

  struct sigaction sa = {.sa_handler = forward_signal};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaction(forwarded[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char pid_line[32];
  int pid_len = snprintf(pid_line, sizeof pid_line, "pid %d\n", (int)child);
  write_all(CONTROL_FD, pid_line, (size_t)pid_len);
  close(CONTROL_FD);

  static char buf[MAX_PAYLOAD];
  static char in_buf[MAX_PAYLOAD]; /* one STDIN frame's payload, being written to the program */
  size_t in_len = 0, in_off = 0;
  unsigned char head[HEADER];
  size_t head_len = 0, want = 0;   /* reading a frame: header bytes so far, payload left */
  int reading_payload = 0;
  int sock_open = 1, out_open = 1, err_open = 1, broken = 0;

  while ((out_open || err_open) && !broken) {
    int stdin_pending = in_off < in_len;
    struct pollfd fds[4] = {
        {.fd = out_open ? out_pipe[0] : -1, .events = POLLIN},
        {.fd = err_open ? err_pipe[0] : -1, .events = POLLIN},
        {.fd = sock_open && !stdin_pending ? sock : -1, .events = POLLIN},
        {.fd = stdin_pending && to_child >= 0 ? to_child : -1, .events = POLLOUT},
    };
    if (poll(fds, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      int type = i == 0 ? F_STDOUT : F_STDERR;
      if (n <= 0) {
        if (i == 0) out_open = 0;
        else err_open = 0;
        if (send_frame(sock, type, NULL, 0) < 0) broken = 1;
      } else if (send_frame(sock, type, buf, (size_t)n) < 0) {
        broken = 1;
      }
    }
    if (fds[3].revents & (POLLOUT | POLLERR | POLLHUP)) {
      ssize_t n = write(to_child, in_buf + in_off, in_len - in_off);
      if (n > 0) in_off += (size_t)n;
      else if (n < 0 && errno != EAGAIN && errno != EINTR) in_off = in_len; /* the program closed stdin: drop */
    }
    if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n;
      if (!reading_payload) {
        n = read(sock, head + head_len, HEADER - head_len);
        if (n > 0) {
          head_len += (size_t)n;
          if (head_len == HEADER) {
            want = (size_t)head[1] << 24 | (size_t)head[2] << 16 | (size_t)head[3] << 8 | head[4];
            if (head[0] != F_STDIN || want > MAX_PAYLOAD) {
              fprintf(stderr, "qvm-exec-data: the host sent a bad frame; stopping\n");
              broken = 1;
            } else if (want == 0) {
              if (to_child >= 0) close(to_child);
              to_child = -1;
              head_len = 0;
            } else {
              reading_payload = 1;
              in_len = 0;
              in_off = 0;
            }
          }
        }
      } else {
        n = read(sock, in_buf + in_len, want - in_len);
        if (n > 0) {
          in_len += (size_t)n;
          if (to_child < 0) in_off = in_len; /* stdin already closed: nothing to write */
          if (in_len == want) {
            reading_payload = 0;
            head_len = 0;
          }
        }
      }
      if (n == 0) {
        /* The host closed its side: no more stdin. Output still goes out until the program ends. */
        sock_open = 0;
        if (to_child >= 0) close(to_child);
        to_child = -1;
      } else if (n < 0 && errno != EINTR && errno != EAGAIN) {
        broken = 1;
      }
    }
    /* A whole STDIN frame is written (or dropped): the host may send that much more. */
    if (!reading_payload && in_len > 0 && in_off == in_len && !broken) {
      if (sock_open && send_u32_frame(sock, F_STDIN_ACK, (uint32_t)in_len) < 0) broken = 1;
      in_len = in_off = 0;
    }
  }
  if (broken) kill(child, SIGKILL);
  if (to_child >= 0) close(to_child);

  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (!broken) {
    send_u32_frame(sock, F_EXIT, (uint32_t)code);
  }
  shutdown(sock, SHUT_WR);
  close(sock);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
  }
  return code;
}
