/* Loopback-only listeners for a Ray cluster whose nodes all run on one machine
   (resulic.services.local_cluster; built and loaded with LD_PRELOAD by resulic.services.loopback).

   Ray 2.60's `ray start` binds its GCS and raylets to every interface and its agents to the
   machine's address, with no option to change that, even with --node-ip-address 127.0.0.1
   (which it resolves to the machine's address on Linux). This library, preloaded into every
   process of such a cluster, moves each bind of a wildcard or of the machine's own address to the
   loopback, and each connection to the machine's own address to the loopback too, so the nodes
   still find one another. Never for nodes on separate machines: they could not reach each other.
   Linux only (getifaddrs, dlsym RTLD_NEXT). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <unistd.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*addr_fn)(int, const struct sockaddr *, socklen_t);

static const unsigned char V4MAPPED_LOOPBACK[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};

/* Is this IPv4 address (network order) one of this machine's own, other than the loopback? */
static int own_v4(in_addr_t address) {
    struct ifaddrs *list, *it;
    int found = 0;
    if (getifaddrs(&list) != 0) return 0;
    for (it = list; it && !found; it = it->ifa_next)
        if (it->ifa_addr && it->ifa_addr->sa_family == AF_INET)
            found = ((struct sockaddr_in *)it->ifa_addr)->sin_addr.s_addr == address;
    freeifaddrs(list);
    return found;
}

static int own_v6(const struct in6_addr *address) {
    struct ifaddrs *list, *it;
    int found = 0;
    if (IN6_IS_ADDR_V4MAPPED(address)) {
        in_addr_t v4;
        memcpy(&v4, &address->s6_addr[12], 4);
        return own_v4(v4);
    }
    if (getifaddrs(&list) != 0) return 0;
    for (it = list; it && !found; it = it->ifa_next)
        if (it->ifa_addr && it->ifa_addr->sa_family == AF_INET6)
            found = memcmp(&((struct sockaddr_in6 *)it->ifa_addr)->sin6_addr, address, 16) == 0;
    freeifaddrs(list);
    return found;
}

/* Sockets whose bind this library moved to the loopback, by port: a process that binds both its
   machine address and 127.0.0.1 on one port (Ray's dashboard agent) shares the first socket. */
#define MOVED_MAX 256
static struct { int fd; unsigned short port; } moved[MOVED_MAX];
static int moved_count;
static pthread_mutex_t moved_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember(int fd, unsigned short port) {
    pthread_mutex_lock(&moved_lock);
    if (moved_count < MOVED_MAX) {
        moved[moved_count].fd = fd;
        moved[moved_count].port = port;
        moved_count++;
    }
    pthread_mutex_unlock(&moved_lock);
}

/* A socket of ours still bound to the loopback at this port (network order), or -1. */
static int moved_to(unsigned short port) {
    int found = -1, i;
    pthread_mutex_lock(&moved_lock);
    for (i = moved_count - 1; i >= 0 && found < 0; i--) {
        struct sockaddr_storage now;
        socklen_t len = sizeof now;
        if (moved[i].port != port || getsockname(moved[i].fd, (struct sockaddr *)&now, &len) != 0) continue;
        if (now.ss_family == AF_INET && ((struct sockaddr_in *)&now)->sin_port == port) found = moved[i].fd;
        if (now.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&now)->sin6_port == port) found = moved[i].fd;
    }
    pthread_mutex_unlock(&moved_lock);
    return found;
}

static int share_if_moved(int fd, unsigned short port, int result) {
    int first;
    if (result == 0 || errno != EADDRINUSE || port == 0 || (first = moved_to(port)) < 0) return result;
    return dup2(first, fd) < 0 ? -1 : 0;
}

/* After a moved bind: remember the port it got (the one asked for, or the kernel's choice). */
static int bound(int fd, int result) {
    struct sockaddr_storage now;
    socklen_t len = sizeof now;
    if (result != 0 || getsockname(fd, (struct sockaddr *)&now, &len) != 0) return result;
    if (now.ss_family == AF_INET) remember(fd, ((struct sockaddr_in *)&now)->sin_port);
    if (now.ss_family == AF_INET6) remember(fd, ((struct sockaddr_in6 *)&now)->sin6_port);
    return result;
}

/* Every TCP/UDP socket binds to the loopback: any other address (a wildcard, the machine's own)
   becomes 127.0.0.1 (IPv6 sockets: ::ffff:127.0.0.1, so IPv4 clients still reach them). */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static addr_fn real;
    if (!real) real = (addr_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if ((ntohl(a.sin_addr.s_addr) >> 24) == 127)  /* already on the loopback (127.0.0.0/8) */
            return share_if_moved(fd, a.sin_port, real(fd, addr, len));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return bound(fd, real(fd, (const struct sockaddr *)&a, sizeof a));
    }
    if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        int off = 0;
        memcpy(&a, addr, sizeof a);
        if (IN6_IS_ADDR_LOOPBACK(&a.sin6_addr) || memcmp(&a.sin6_addr, V4MAPPED_LOOPBACK, 16) == 0)
            return share_if_moved(fd, a.sin6_port, real(fd, addr, len));
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        memcpy(&a.sin6_addr, V4MAPPED_LOOPBACK, 16);
        return bound(fd, real(fd, (const struct sockaddr *)&a, sizeof a));
    }
    return real(fd, addr, len);
}

/* A connection to this machine's own address goes to the loopback, where its listeners now are.
   So does one to ::1: the IPv6 wildcard listeners it used to reach are now on ::ffff:127.0.0.1
   (a server bound to ::1 alone is then out of reach: none of Ray's is). */
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static addr_fn real;
    if (!real) real = (addr_fn)dlsym(RTLD_NEXT, "connect");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY) || own_v4(a.sin_addr.s_addr)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) || IN6_IS_ADDR_LOOPBACK(&a.sin6_addr) || own_v6(&a.sin6_addr)) {
            memcpy(&a.sin6_addr, V4MAPPED_LOOPBACK, 16);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
