/* The pod sandbox's pause process for real test nodes: it holds the pod's
 * namespaces, reaps zombies (it is PID 1 of the sandbox) and exits on
 * SIGINT/SIGTERM. Built static by scripts/realnode.sh into the image
 * realnode.local/pause:1, which containerd pins as its sandbox image. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo) { (void)signo; exit(2); }

static void on_child(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  if (getpid() != 1) fprintf(stderr, "pause: not PID 1 of its namespace\n");
  struct sigaction stop = {.sa_handler = on_stop};
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGTERM, &stop, NULL);
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
}
