/* delay-proxy — a TCP proxy that adds a fixed one-way delay (benchmarks)
 * and injects faults on command (tests).
 *
 *   delay-proxy [-d MS] [-r RATE] [-l ADDR] [-q BYTES] [-P FILE] [-c FIFO]
 *               LISTEN_PORT:TARGET_HOST:TARGET_PORT ...
 *
 * Every connection accepted on LISTEN_PORT (on ADDR, default 127.0.0.1) is
 * joined to a new connection to TARGET_HOST:TARGET_PORT.  Bytes travelling
 * in either direction are handed on MS milliseconds (a decimal, e.g. 0.5)
 * after the proxy received them, in the order they were received, so the
 * proxy behaves like a long wire: it adds latency but does not limit
 * throughput (it keeps reading while earlier bytes wait; only when more
 * than BYTES, default 64 MiB, wait in one direction does it stop reading
 * that side).  An end of stream is passed on after the same delay
 * (shutdown(SHUT_WR)); a connection error closes both sides.
 *
 * Link model (-r RATE, bytes/s with K/M/G suffixes, powers of 1000: 125M
 * is 1 Gbit/s): each listener (each proxied server) gets one wire per
 * direction, shared by all its connections.  Bytes received are first
 * serialized onto their wire at RATE (a chunk starts when the wire has
 * sent everything before it, in arrival order) and then delayed by MS, so
 * a transfer costs MS + size / RATE and parallel connections to one
 * server share its bandwidth.  The queue limit then defaults to 1 MiB +
 * RATE × MS (what the wire holds plus a switch's buffer) instead of
 * 64 MiB, so a sender feels the link as on a real one.
 *
 * LISTEN_PORT may be 0 (the kernel picks one).  Once every listener is
 * ready the proxy prints one line per listener on stdout,
 *   "listen LISTEN_PORT TARGET_HOST:TARGET_PORT"
 * with the actual port, followed by "ready", and writes its pid to FILE
 * (-P).  It runs until SIGTERM or SIGINT.
 *
 * Faults (-c FIFO: a named pipe, created if missing, read for commands,
 * one per line; write them with `echo CMD > FIFO`):
 *   reset               close every connection now with a TCP reset on
 *                       both sides (queued bytes are dropped);
 *   blackhole SECONDS   stall: for SECONDS (a decimal) nothing is read or
 *                       written on any connection, old or newly accepted,
 *                       while every connection stays open; then
 *                       forwarding resumes where it stopped;
 *   pass                end a black hole now and disarm an `after`;
 *   after BYTES CMD     arm CMD (reset or blackhole): it runs once BYTES
 *                       more bytes have been forwarded (both directions,
 *                       all connections), so a fault lands mid-transfer;
 *                       with reset, the connection that carried the last
 *                       byte is the one reset ("drop a connection after N
 *                       bytes").  A later `after` replaces an armed one.
 * Each command is acknowledged on stdout, after it took effect, by a line
 *   "ctl ok CMD" (or "ctl armed CMD" for after, then "ctl fired CMD" when
 *   it runs, "ctl bad CMD" for a line it does not understand),
 * and "ctl blackhole over" when a black hole ends by itself.
 *
 * One thread, epoll, non-blocking sockets; each direction has a queue of
 * timestamped chunks and a timerfd armed for the head chunk's due time.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BLOCK_SIZE      (256u * 1024u)  /* one read lands in one block */
#define SMALL_CHUNK     (16u * 1024u)   /* shorter reads are copied out */
#define MAX_IOV         64
#define MAX_LISTENERS   16

/* ---- chunk queue --------------------------------------------------- */

/* Bytes received at one time; handed on at `due_ns`. */
struct chunk {
    struct chunk *next;
    uint64_t due_ns;
    size_t len;          /* valid bytes in data */
    size_t off;          /* bytes of data already sent */
    size_t cap;          /* allocated bytes of data (for accounting) */
    unsigned char data[];
};

#define MAX_FREE_BLOCKS 64                /* keep at most 16 MiB spare */

static struct chunk *block_freelist;
static unsigned block_free_count;

static struct chunk *block_get(void)
{
    struct chunk *c = block_freelist;
    if (c) {
        block_freelist = c->next;
        block_free_count--;
        return c;
    }
    c = malloc(sizeof(*c) + BLOCK_SIZE);
    if (c)
        c->cap = BLOCK_SIZE;
    return c;
}

static void chunk_free(struct chunk *c)
{
    if (c->cap == BLOCK_SIZE && block_free_count < MAX_FREE_BLOCKS) {
        c->next = block_freelist;
        block_freelist = c;
        block_free_count++;
    } else {
        free(c);
    }
}

/* ---- connections ---------------------------------------------------- */

enum ev_kind { EV_LISTENER, EV_SOCKET, EV_TIMER, EV_SIGNAL, EV_CONTROL,
               EV_BLACKHOLE };

/* What an epoll event points at. */
struct ev_tag {
    enum ev_kind kind;
    void *owner;
    int index;           /* side or direction index */
};

struct conn;

/* Bytes flowing from side `from` to side `to`. */
struct direction {
    struct conn *conn;
    int from, to;        /* 0: client, 1: target */
    struct chunk *head, *tail;
    size_t queued;       /* bytes allocated for queued chunks */
    bool eof_seen;       /* `from` ended; pass the end on after the delay */
    uint64_t eof_due_ns;
    bool eof_sent;
    uint64_t *wire_free_ns;   /* the link's wire (-r): when it is idle */
    int timer_fd;
    uint64_t timer_armed_ns; /* 0: disarmed */
    struct ev_tag timer_tag;
};

struct side {
    int fd;
    bool connected;      /* target side: non-blocking connect finished */
    bool registered;     /* fd is in the epoll set */
    uint32_t events;     /* registered epoll events */
    struct ev_tag tag;
};

struct conn {
    struct side side[2];
    struct direction dir[2];   /* dir[0]: client→target, dir[1]: back */
    bool closing;
    struct conn *next_dead;
    struct conn *prev_live, *next_live;  /* every open connection */
};

struct listener {
    int fd;
    unsigned port;
    char target_host[256];
    char target_port[16];
    uint64_t wire_free_ns[2]; /* -r: per direction, when the wire idles */
    struct ev_tag tag;
};

static int epfd;
static uint64_t delay_ns;
static uint64_t link_rate;       /* bytes/s per wire, 0: unlimited */
static size_t queue_limit = 64u * 1024u * 1024u;
static struct conn *dead_conns;
static struct conn *live_conns;

/* Faults (see the header). */
static bool blackholed;          /* nothing moves */
static int blackhole_timer = -1; /* timerfd: end of the black hole */
static bool after_armed;         /* `after` waits for its bytes */
static uint64_t after_left;      /* bytes still to forward before it runs */
static char after_cmd[128];      /* the command it runs */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "delay-proxy: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void conn_close(struct conn *c);

/* Register the events side `s` of `c` needs now: EPOLLIN while its
 * outgoing queue has room and it has not ended, EPOLLOUT while due data
 * waits for it (or its connect is pending). */
static void side_update(struct conn *c, int s)
{
    struct side *sd = &c->side[s];
    struct direction *out = &c->dir[s];       /* bytes read from s */
    struct direction *in = &c->dir[1 - s];    /* bytes written to s */
    uint32_t ev = 0;

    if (sd->fd < 0)
        return;
    if (blackholed) {
        ev = 0;
    } else if (!sd->connected) {
        ev = EPOLLOUT;
    } else {
        if (!out->eof_seen && out->queued < queue_limit)
            ev |= EPOLLIN;
        if (in->head && in->head->due_ns <= now_ns())
            ev |= EPOLLOUT;
    }
    if (ev == sd->events && sd->registered)
        return;
    /* With no interest the fd leaves the set: EPOLLHUP is reported
     * whatever the mask, and would spin once both halves are shut. */
    if (ev == 0) {
        if (sd->registered && epoll_ctl(epfd, EPOLL_CTL_DEL, sd->fd, NULL) < 0)
            die("epoll_ctl");
        sd->registered = false;
        sd->events = 0;
        return;
    }
    struct epoll_event e = { .events = ev, .data.ptr = &sd->tag };
    if (epoll_ctl(epfd, sd->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                  sd->fd, &e) < 0)
        die("epoll_ctl");
    sd->registered = true;
    sd->events = ev;
}

static void timer_arm(struct direction *d, uint64_t due)
{
    if (d->timer_armed_ns == due)
        return;
    struct itimerspec its = { 0 };
    if (due) {
        its.it_value.tv_sec = (time_t)(due / 1000000000u);
        its.it_value.tv_nsec = (long)(due % 1000000000u);
    }
    if (timerfd_settime(d->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime");
    d->timer_armed_ns = due;
}

/* Send every due byte of direction `d`; then arm its timer for the next
 * chunk or pass a due end of stream on.  Returns false if the connection
 * was closed. */
static void count_forwarded(struct conn *c, size_t n);

static bool direction_flush(struct direction *d)
{
    struct conn *c = d->conn;
    struct side *to = &c->side[d->to];
    uint64_t now = now_ns();

    if (blackholed) {
        timer_arm(d, 0);
        side_update(c, 0);
        side_update(c, 1);
        return true;
    }
    while (to->connected && d->head && d->head->due_ns <= now) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (struct chunk *ch = d->head; ch && n < MAX_IOV && ch->due_ns <= now;
             ch = ch->next) {
            iov[n].iov_base = ch->data + ch->off;
            iov[n].iov_len = ch->len - ch->off;
            n++;
        }
        ssize_t w = writev(to->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_close(c);
            return false;
        }
        size_t left = (size_t)w;
        while (left > 0) {
            struct chunk *ch = d->head;
            size_t rest = ch->len - ch->off;
            if (left < rest) {
                ch->off += left;
                left = 0;
            } else {
                left -= rest;
                d->head = ch->next;
                if (!d->head)
                    d->tail = NULL;
                d->queued -= ch->cap;
                chunk_free(ch);
            }
        }
        count_forwarded(c, (size_t)w);
        if (c->closing)
            return false;       /* an `after reset` fired on it */
        if (blackholed)
            return direction_flush(d);
    }

    uint64_t next_due = 0;
    if (d->head) {
        if (d->head->due_ns > now)
            next_due = d->head->due_ns;
    } else if (d->eof_seen && !d->eof_sent) {
        if (d->eof_due_ns <= now) {
            if (to->connected) {
                shutdown(to->fd, SHUT_WR);
                d->eof_sent = true;
            }
        } else {
            next_due = d->eof_due_ns;
        }
    }
    timer_arm(d, next_due);

    if (c->dir[0].eof_sent && c->dir[1].eof_sent) {
        conn_close(c);
        return false;
    }
    side_update(c, d->to);
    side_update(c, d->from);
    return true;
}

/* When `len` bytes received now on direction `d` are due at the other
 * side: after the wire (if any) has serialized them, plus the delay. */
static uint64_t due_after(struct direction *d, size_t len)
{
    uint64_t now = now_ns();
    if (!link_rate || !d->wire_free_ns)
        return now + delay_ns;
    uint64_t start = *d->wire_free_ns > now ? *d->wire_free_ns : now;
    uint64_t end = start + (uint64_t)((double)len * 1e9 / (double)link_rate);
    *d->wire_free_ns = end;
    return end + delay_ns;
}

/* Read what side `s` has (until EAGAIN or the queue limit) into its
 * outgoing queue, stamped with the time it is due (due_after). */
static void side_read(struct conn *c, int s)
{
    struct direction *d = &c->dir[s];
    struct side *sd = &c->side[s];

    while (!d->eof_seen && d->queued < queue_limit) {
        struct chunk *blk = block_get();
        if (!blk)
            die("malloc");
        ssize_t r = read(sd->fd, blk->data, BLOCK_SIZE);
        if (r <= 0) {
            chunk_free(blk);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                conn_close(c);
                return;
            }
            d->eof_seen = true;
            d->eof_due_ns = due_after(d, 0);
            break;
        }
        struct chunk *ch = blk;
        if ((size_t)r < SMALL_CHUNK) {
            ch = malloc(sizeof(*ch) + (size_t)r);
            if (!ch)
                die("malloc");
            ch->cap = (size_t)r;
            memcpy(ch->data, blk->data, (size_t)r);
            chunk_free(blk);
        }
        ch->next = NULL;
        ch->len = (size_t)r;
        ch->off = 0;
        ch->due_ns = due_after(d, ch->len);
        if (d->tail)
            d->tail->next = ch;
        else
            d->head = ch;
        d->tail = ch;
        d->queued += ch->cap;
        if ((size_t)r < BLOCK_SIZE)
            break;    /* drained the socket for now */
    }
    direction_flush(d);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void side_init(struct conn *c, int s, int fd, bool connected)
{
    struct side *sd = &c->side[s];
    sd->fd = fd;
    sd->connected = connected;
    sd->events = 0;
    sd->registered = false;
    sd->tag = (struct ev_tag){ EV_SOCKET, c, s };
}

static void direction_init(struct conn *c, int from)
{
    struct direction *d = &c->dir[from];
    memset(d, 0, sizeof(*d));
    d->conn = c;
    d->from = from;
    d->to = 1 - from;
    d->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (d->timer_fd < 0)
        die("timerfd_create");
    d->timer_tag = (struct ev_tag){ EV_TIMER, c, from };
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &d->timer_tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, d->timer_fd, &e) < 0)
        die("epoll_ctl");
}

/* Close both sides of `c`; the memory is freed after the current batch of
 * epoll events (other events may still point at it). */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev_live)
        c->prev_live->next_live = c->next_live;
    else if (live_conns == c)
        live_conns = c->next_live;
    if (c->next_live)
        c->next_live->prev_live = c->prev_live;
    for (int i = 0; i < 2; i++) {
        if (c->side[i].fd >= 0)
            close(c->side[i].fd);
        c->side[i].fd = -1;
        struct direction *d = &c->dir[i];
        close(d->timer_fd);
        while (d->head) {
            struct chunk *ch = d->head;
            d->head = ch->next;
            chunk_free(ch);
        }
        d->tail = NULL;
    }
    c->next_dead = dead_conns;
    dead_conns = c;
}

static void listener_accept(struct listener *l)
{
    for (;;) {
        int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            if (errno == ECONNABORTED)
                continue;
            fprintf(stderr, "delay-proxy: accept: %s\n", strerror(errno));
            return;
        }
        struct addrinfo hints = { .ai_family = AF_UNSPEC,
                                  .ai_socktype = SOCK_STREAM };
        struct addrinfo *ai = NULL;
        int rc = getaddrinfo(l->target_host, l->target_port, &hints, &ai);
        if (rc != 0) {
            fprintf(stderr, "delay-proxy: %s: %s\n", l->target_host,
                    gai_strerror(rc));
            close(cfd);
            continue;
        }
        int tfd = socket(ai->ai_family,
                         ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (tfd < 0) {
            freeaddrinfo(ai);
            close(cfd);
            continue;
        }
        bool connected = true;
        if (connect(tfd, ai->ai_addr, ai->ai_addrlen) < 0) {
            if (errno != EINPROGRESS) {
                freeaddrinfo(ai);
                close(tfd);
                close(cfd);
                continue;
            }
            connected = false;
        }
        freeaddrinfo(ai);
        set_nodelay(cfd);
        set_nodelay(tfd);

        struct conn *c = calloc(1, sizeof(*c));
        if (!c)
            die("calloc");
        c->next_live = live_conns;
        if (live_conns)
            live_conns->prev_live = c;
        live_conns = c;
        side_init(c, 0, cfd, true);
        side_init(c, 1, tfd, connected);
        direction_init(c, 0);
        direction_init(c, 1);
        c->dir[0].wire_free_ns = &l->wire_free_ns[0];
        c->dir[1].wire_free_ns = &l->wire_free_ns[1];
        side_update(c, 0);
        side_update(c, 1);
    }
}

static void on_socket(struct conn *c, int s, uint32_t events)
{
    struct side *sd = &c->side[s];
    if (blackholed)
        return;         /* an event of this batch, from before the stall */
    if (!sd->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(sd->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            conn_close(c);
            return;
        }
        sd->connected = true;
        /* Data the client sent meanwhile may now be due. */
        if (!direction_flush(&c->dir[1 - s]))
            return;
        side_update(c, 0);
        side_update(c, 1);
        return;
    }
    if (events & EPOLLOUT) {
        if (!direction_flush(&c->dir[1 - s]))
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        side_read(c, s);
}

static void on_timer(struct direction *d)
{
    uint64_t ticks;
    if (read(d->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        die("read timerfd");
    d->timer_armed_ns = 0;
    direction_flush(d);
}

/* ---- faults ----------------------------------------------------------- */

static void ctl_say(const char *what, const char *cmd)
{
    printf("ctl %s %s\n", what, cmd);
    fflush(stdout);
}

/* Close `c` with a reset on both sides. */
static void conn_reset(struct conn *c)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    for (int i = 0; i < 2; i++)
        if (c->side[i].fd >= 0)
            setsockopt(c->side[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_close(c);
}

static void reset_all(void)
{
    while (live_conns)
        conn_reset(live_conns);
}

/* Resume every connection after a black hole. */
static void blackhole_end(void)
{
    struct itimerspec off = { 0 };
    blackholed = false;
    timerfd_settime(blackhole_timer, 0, &off, NULL);
    struct conn *c = live_conns;
    while (c) {
        struct conn *next = c->next_live;
        side_update(c, 0);
        side_update(c, 1);
        if (direction_flush(&c->dir[0]))
            direction_flush(&c->dir[1]);
        c = next;
    }
}

static void blackhole_start(double seconds)
{
    blackholed = true;
    struct itimerspec its = { 0 };
    uint64_t ns = (uint64_t)(seconds * 1e9);
    if (ns == 0)
        ns = 1;
    its.it_value.tv_sec = (time_t)(ns / 1000000000u);
    its.it_value.tv_nsec = (long)(ns % 1000000000u);
    if (timerfd_settime(blackhole_timer, 0, &its, NULL) < 0)
        die("timerfd_settime");
    for (struct conn *c = live_conns; c; c = c->next_live) {
        side_update(c, 0);
        side_update(c, 1);
        timer_arm(&c->dir[0], 0);
        timer_arm(&c->dir[1], 0);
    }
}

/* Parse and run one fault command (`on`: the connection that triggered
 * an `after`, or NULL).  Returns false if the command is not understood
 * (nothing happened). */
static bool run_fault(const char *cmd, struct conn *on, bool dry_run)
{
    char word[16], extra[2];
    double secs;
    if (sscanf(cmd, "%15s %1s", word, extra) == 1 &&
        strcmp(word, "reset") == 0) {
        if (dry_run)
            return true;
        if (on)
            conn_reset(on);
        else
            reset_all();
        return true;
    }
    if (sscanf(cmd, "%15s %lf %1s", word, &secs, extra) == 2 &&
        strcmp(word, "blackhole") == 0 && secs >= 0 && secs <= 86400) {
        if (!dry_run)
            blackhole_start(secs);
        return true;
    }
    return false;
}

/* Account `n` forwarded bytes of `c`; fire an armed `after`. */
static void count_forwarded(struct conn *c, size_t n)
{
    if (!after_armed)
        return;
    if (n < after_left) {
        after_left -= n;
        return;
    }
    after_armed = false;
    run_fault(after_cmd, c, false);
    ctl_say("fired", after_cmd);
}

static void run_command(char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    while (*line == ' ' || *line == '\t')
        line++;
    if (!*line)
        return;
    unsigned long long bytes;
    int used = 0;
    if (strcmp(line, "pass") == 0) {
        after_armed = false;
        if (blackholed)
            blackhole_end();
        ctl_say("ok", line);
    } else if (sscanf(line, "after %llu %n", &bytes, &used) == 1 && used &&
               run_fault(line + used, NULL, true) &&
               strlen(line + used) < sizeof after_cmd) {
        strcpy(after_cmd, line + used);
        after_left = bytes ? bytes : 1;
        after_armed = true;
        ctl_say("armed", line);
    } else if (run_fault(line, NULL, false)) {
        ctl_say("ok", line);
    } else {
        ctl_say("bad", line);
    }
}

/* Read what the control pipe holds and run its complete lines. */
static void control_read(int fd)
{
    static char buf[4096];
    static size_t have;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            run_command(start);
            start = nl + 1;
        }
        have = strlen(start);
        memmove(buf, start, have);
        if (have == sizeof buf - 1)
            have = 0;           /* an absurd line: drop it */
    }
}

static int control_open(const char *path)
{
    if (mkfifo(path, 0600) < 0 && errno != EEXIST)
        die(path);
    /* Read-write: the pipe never reports an end when writers go. */
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        die(path);
    static struct ev_tag tag = { EV_CONTROL, NULL, 0 };
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl");
    blackhole_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (blackhole_timer < 0)
        die("timerfd_create");
    static struct ev_tag btag = { EV_BLACKHOLE, NULL, 0 };
    struct epoll_event be = { .events = EPOLLIN, .data.ptr = &btag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, blackhole_timer, &be) < 0)
        die("epoll_ctl");
    return fd;
}

static int listener_open(struct listener *l, const char *addr)
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)l->port) };
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "delay-proxy: bad listen address %s\n", addr);
        return -1;
    }
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        fprintf(stderr, "delay-proxy: bind %s:%u: %s\n", addr, l->port,
                strerror(errno));
        return -1;
    }
    if (listen(l->fd, 128) < 0)
        die("listen");
    socklen_t len = sizeof(sin);
    getsockname(l->fd, (struct sockaddr *)&sin, &len);
    l->port = ntohs(sin.sin_port);
    l->tag = (struct ev_tag){ EV_LISTENER, l, 0 };
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = &l->tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &e) < 0)
        die("epoll_ctl");
    return 0;
}

/* Parse "LISTEN_PORT:HOST:PORT" (HOST may be [v6]). */
static int parse_mapping(const char *arg, struct listener *l)
{
    char *end;
    unsigned long lp = strtoul(arg, &end, 10);
    if (end == arg || *end != ':' || lp > 65535)
        return -1;
    const char *host = end + 1;
    const char *colon = strrchr(host, ':');
    if (!colon || colon == host)
        return -1;
    size_t hlen = (size_t)(colon - host);
    if (host[0] == '[' && hlen >= 2 && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen >= sizeof(l->target_host) || strlen(colon + 1) == 0 ||
        strlen(colon + 1) >= sizeof(l->target_port))
        return -1;
    memcpy(l->target_host, host, hlen);
    l->target_host[hlen] = '\0';
    strcpy(l->target_port, colon + 1);
    l->port = (unsigned)lp;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: delay-proxy [-d MS] [-r RATE] [-l ADDR] [-q BYTES] [-P PIDFILE]\n"
        "                   [-c FIFO] LISTEN_PORT:TARGET_HOST:TARGET_PORT ...\n"
        "Adds MS milliseconds (default 0) of one-way delay in each\n"
        "direction; with RATE (bytes/s, K/M/G = 1000^n, e.g. 125M for\n"
        "1 Gbit/s) each proxied server gets one wire per direction at that\n"
        "rate before the delay.  Listens on ADDR (default 127.0.0.1).  FIFO\n"
        "takes fault commands: reset | blackhole SECONDS | pass |\n"
        "after BYTES reset|blackhole SECONDS.\n");
}

/* The command line. */
struct options {
    const char *listen_addr;
    const char *pidfile;
    const char *control;
    double delay_ms;
    bool queue_given;
    int first_mapping, n_mappings;
};

/* Parse "RATE" as bytes/s: a decimal with an optional K, M or G (powers
 * of 1000).  Returns 0, or -1 for anything else or a rate below 1 KB/s. */
static int parse_rate(const char *v, uint64_t *out)
{
    char *end;
    double r = strtod(v, &end);
    double mult = 1;
    if (*end == 'K' || *end == 'k')
        mult = 1e3;
    else if (*end == 'M' || *end == 'm')
        mult = 1e6;
    else if (*end == 'G' || *end == 'g')
        mult = 1e9;
    if (mult > 1)
        end++;
    if (end == v || *end || !(r * mult >= 1e3 && r * mult <= 1e12))
        return -1;
    *out = (uint64_t)(r * mult + 0.5);
    return 0;
}

/* Fill `o` from argv; returns -1 (after the usage or a message on stderr)
 * when the line is bad, 1 after -h, else 0.  Sets the globals delay_ns,
 * link_rate and queue_limit. */
static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){ .listen_addr = "127.0.0.1" };
    int opt;
    while ((opt = getopt(argc, argv, "d:r:l:q:P:c:h")) != -1) {
        char *end;
        switch (opt) {
        case 'd':
            o->delay_ms = strtod(optarg, &end);
            if (*end || o->delay_ms < 0 || o->delay_ms > 60000) {
                fprintf(stderr, "delay-proxy: bad delay %s\n", optarg);
                return -1;
            }
            break;
        case 'r':
            if (parse_rate(optarg, &link_rate) < 0) {
                fprintf(stderr, "delay-proxy: bad rate %s (bytes/s, "
                        "1K to 1000G)\n", optarg);
                return -1;
            }
            break;
        case 'l':
            o->listen_addr = optarg;
            break;
        case 'q':
            queue_limit = strtoull(optarg, &end, 10);
            if (*end || queue_limit < BLOCK_SIZE) {
                fprintf(stderr, "delay-proxy: bad queue limit %s\n", optarg);
                return -1;
            }
            o->queue_given = true;
            break;
        case 'P':
            o->pidfile = optarg;
            break;
        case 'c':
            o->control = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    o->first_mapping = optind;
    o->n_mappings = argc - optind;
    if (o->n_mappings < 1 || o->n_mappings > MAX_LISTENERS) {
        usage(stderr);
        return -1;
    }
    delay_ns = (uint64_t)(o->delay_ms * 1e6 + 0.5);
    if (link_rate && !o->queue_given)
        queue_limit = 1024u * 1024u +
                      (size_t)((double)link_rate * o->delay_ms / 1e3);
    return 0;
}

/* SIGTERM/SIGINT end the loop (through a signalfd in the epoll set). */
static void signals_init(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");
    static struct ev_tag signal_tag = { EV_SIGNAL, NULL, 0 };
    struct epoll_event se = { .events = EPOLLIN, .data.ptr = &signal_tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &se) < 0)
        die("epoll_ctl");
}

/* Announce the listeners and "ready" on stdout, then the pid file. */
static void announce(const struct listener *ls, int n, const char *pidfile)
{
    for (int i = 0; i < n; i++)
        printf("listen %u %s:%s\n", ls[i].port, ls[i].target_host,
               ls[i].target_port);
    printf("ready\n");
    fflush(stdout);
    if (pidfile) {
        FILE *f = fopen(pidfile, "w");
        if (!f)
            die(pidfile);
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
}

/* One epoll event; returns false when the proxy should exit. */
static bool dispatch(struct ev_tag *t, uint32_t events, int control_fd)
{
    switch (t->kind) {
    case EV_LISTENER:
        listener_accept(t->owner);
        break;
    case EV_SOCKET: {
        struct conn *c = t->owner;
        if (!c->closing)
            on_socket(c, t->index, events);
        break;
    }
    case EV_TIMER: {
        struct conn *c = t->owner;
        if (!c->closing)
            on_timer(&c->dir[t->index]);
        break;
    }
    case EV_SIGNAL:
        return false;
    case EV_CONTROL:
        control_read(control_fd);
        break;
    case EV_BLACKHOLE: {
        uint64_t ticks;
        if (read(blackhole_timer, &ticks, sizeof ticks) > 0 && blackholed) {
            blackhole_end();
            printf("ctl blackhole over\n");
            fflush(stdout);
        }
        break;
    }
    }
    return true;
}

/* Serve until SIGTERM or SIGINT. */
static void run(int control_fd)
{
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++)
            if (!dispatch(evs[i].data.ptr, evs[i].events, control_fd))
                return;
        while (dead_conns) {
            struct conn *c = dead_conns;
            dead_conns = c->next_dead;
            free(c);
        }
    }
}

int main(int argc, char **argv)
{
    struct options o;
    int r = parse_options(argc, argv, &o);
    if (r != 0)
        return r > 0 ? 0 : 2;

    /* Timers a few µs late would blur a 1 ms delay. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");

    static struct listener listeners[MAX_LISTENERS];
    for (int i = 0; i < o.n_mappings; i++) {
        const char *arg = argv[o.first_mapping + i];
        if (parse_mapping(arg, &listeners[i]) < 0) {
            fprintf(stderr, "delay-proxy: bad mapping %s "
                    "(want LISTEN_PORT:HOST:PORT)\n", arg);
            return 2;
        }
        if (listener_open(&listeners[i], o.listen_addr) < 0)
            return 1;
    }
    signals_init();
    int control_fd = o.control ? control_open(o.control) : -1;
    announce(listeners, o.n_mappings, o.pidfile);
    run(control_fd);
    return 0;
}
