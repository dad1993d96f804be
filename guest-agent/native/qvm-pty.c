/*
 * qvm-pty: run a program on a new pseudo-terminal and relay it to plain pipes.
 *
 * Node has no pty support without a native addon built for the guest's exact Node ABI, so the
 * guest agent runs this small static helper instead:
 *
 *   qvm-pty ROWS COLS PROGRAM [ARG...]
 *
 *   fd 0  bytes typed into the terminal
 *   fd 1  bytes the terminal prints
 *   fd 3  control socket: the helper writes "pid N\n" once the program runs; the agent writes
 *         "ROWS COLS\n" lines to resize the terminal.
 *
 * The helper exits with the program's exit code, or kills itself with the signal that killed
 * the program, so the agent reports the program's own status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define CONTROL_FD 3
#define BUF_SIZE 65536

static pid_t child = -1;

static void forward_signal(int sig) {
  if (child > 0) kill(child, sig);
}

static int write_all(int fd, const char *buf, ssize_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, (size_t)len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= n;
  }
  return 0;
}

static void apply_resize_lines(int master, char *line_buf, size_t *line_len, const char *data, ssize_t n) {
  for (ssize_t i = 0; i < n; i++) {
    if (data[i] != '\n') {
      if (*line_len < 63) line_buf[(*line_len)++] = data[i];
      continue;
    }
    line_buf[*line_len] = '\0';
    unsigned rows = 0, cols = 0;
    if (sscanf(line_buf, "%u %u", &rows, &cols) == 2 && rows > 0 && cols > 0 && rows < 10000 && cols < 10000) {
      struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
      ioctl(master, TIOCSWINSZ, &ws);
    }
    *line_len = 0;
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: qvm-pty ROWS COLS PROGRAM [ARG...]\n");
    return 2;
  }
  struct winsize ws = {.ws_row = (unsigned short)atoi(argv[1]), .ws_col = (unsigned short)atoi(argv[2])};
  if (ws.ws_row == 0) ws.ws_row = 24;
  if (ws.ws_col == 0) ws.ws_col = 80;

  int master = -1;
  child = forkpty(&master, NULL, NULL, &ws);
  if (child < 0) {
    perror("qvm-pty: forkpty");
    return 1;
  }
  if (child == 0) {
    close(CONTROL_FD);
    execvp(argv[3], &argv[3]);
    fprintf(stderr, "qvm-pty: cannot run %s: %s\r\n", argv[3], strerror(errno));
    _exit(127);
  }

  struct sigaction sa = {.sa_handler = forward_signal};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaction(forwarded[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char pid_line[32];
  int pid_len = snprintf(pid_line, sizeof pid_line, "pid %d\n", (int)child);
  int control_open = write_all(CONTROL_FD, pid_line, pid_len) == 0;

  static char buf[BUF_SIZE];
  char line_buf[64];
  size_t line_len = 0;
  int stdin_open = 1;
  for (;;) {
    struct pollfd fds[3] = {
        {.fd = master, .events = POLLIN},
        {.fd = stdin_open ? 0 : -1, .events = POLLIN},
        {.fd = control_open ? CONTROL_FD : -1, .events = POLLIN},
    };
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n <= 0) break; /* EIO: the program and everything holding the terminal has exited */
      if (write_all(1, buf, n) < 0) break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n <= 0) {
        stdin_open = 0; /* keep the terminal open: the program decides when it is done */
      } else if (write_all(master, buf, n) < 0) {
        stdin_open = 0;
      }
    }
    if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(CONTROL_FD, buf, sizeof buf);
      if (n <= 0) control_open = 0;
      else apply_resize_lines(master, line_buf, &line_len, buf, n);
    }
  }

  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
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
    return 128 + sig;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
