// The floor under any HTTP server on this machine: one thread, epoll, a fixed chat-completion
// answer to every request, nothing else. `smg-bench --router-cmd Benchmarks/floor/floor` drives
// it like a router (it takes `--port N` and ignores the other flags), so its CPU per request,
// saturated and at a fixed rate, is what the kernel and the machine charge for a request and a
// wake-up without any framework. Build: cc -O2 -o Benchmarks/floor/floor Benchmarks/floor/floor.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY "{\"id\":\"floor\",\"object\":\"chat.completion\",\"model\":\"sim-model\",\"choices\":[{\"index\":0," \
             "\"message\":{\"role\":\"assistant\",\"content\":\"the floor answers\"},\"finish_reason\":\"stop\"}]}"

struct conn { int fd; size_t len; char buf[65536]; };

// A complete request in c->buf: its length (head and Content-Length body), or 0.
static size_t complete(struct conn *c) {
    c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4, body = 0;
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (cl && cl < end) body = strtoul(cl + 17, NULL, 10);
    return c->len >= head + body ? head + body : 0;
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; i++) if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) { perror("floor: bind"); return 1; }
    char response[512];
    int rlen = snprintf(response, sizeof response, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n\r\n%s", strlen(BODY), BODY);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, events[64];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    fprintf(stdout, "floor listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        for (int i = 0; i < n; i++) {
            if (!events[i].data.ptr) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            struct conn *c = events[i].data.ptr;
            int fd = c->fd;
            ssize_t got = read(fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
            if (got <= 0) { if (got < 0 && errno == EAGAIN) continue; close(fd); free(c); continue; }
            c->len += (size_t)got;
            size_t used;
            while ((used = complete(c)) > 0) {
                if (write(fd, response, (size_t)rlen) != rlen) break;
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
            }
            if (c->len >= sizeof c->buf - 1) { close(fd); free(c); }
        }
    }
}
