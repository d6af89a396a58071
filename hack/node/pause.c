/* The pod sandbox's pause process (containerd's sandbox_image, lossgate.local/pause:1): it holds the
 * pod's namespaces, reaps the zombies that land on it as PID 1, and exits on SIGTERM/SIGINT.
 * Built with `gcc -static` by devtools/lossgate_dev/devenv/images.py: no registry serves one here. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  /* Reap every exited child: as PID 1 the orphans of the pod are ours. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("lossgate pause 1");
    return 0;
  }
  if (getpid() != 1) {
    fputs("warning: pause should be the first process of its PID namespace\n", stderr);
  }
  struct sigaction term = {0};
  term.sa_handler = on_term;
  sigemptyset(&term.sa_mask);
  if (sigaction(SIGTERM, &term, NULL) < 0 || sigaction(SIGINT, &term, NULL) < 0) {
    perror("sigaction");
    return 1;
  }
  struct sigaction child = {0};
  child.sa_handler = on_child;
  sigemptyset(&child.sa_mask);
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
