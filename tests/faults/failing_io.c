/*
 * A real I/O fault for the fault tests, loaded with LD_PRELOAD into a meldnet
 * process: while the switch file exists, the calls it names fail on every
 * file under one folder, as a dying disk or a full filesystem would make
 * them fail. Nothing is mocked inside meldnet: its code makes the same libc
 * calls as always and gets the kernel-style error back.
 *
 *   MELDNET_FAULT_DIR     files whose path starts with this are affected
 *   MELDNET_FAULT_SWITCH  a file; while it exists, its words say what fails:
 *                         "fsync" (fsync, fdatasync, sync_file_range fail
 *                         with EIO), "write" (write, pwrite, writev fail
 *                         with EIO), "enospc" (the writes fail with ENOSPC)
 *
 * Why a preload shim rather than a device-mapper error target: dm needs a
 * block device and the device-mapper kernel module, which a CI container
 * does not have; the shim needs only a C compiler and fails exactly the
 * calls that reach the kernel for the files under test.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { FAIL_NONE = 0, FAIL_FSYNC = 1, FAIL_WRITE = 2, FAIL_ENOSPC = 4 };

/* What the switch says now (read on every call: the tests flip it while the
 * process runs). */
static int faults(void) {
    const char *sw = getenv("MELDNET_FAULT_SWITCH");
    if (!sw) return FAIL_NONE;
    static ssize_t (*real_read)(int, void *, size_t);
    static int (*real_open)(const char *, int, ...);
    if (!real_read) real_read = dlsym(RTLD_NEXT, "read");
    if (!real_open) real_open = dlsym(RTLD_NEXT, "open");
    int fd = real_open(sw, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FAIL_NONE;
    char buf[128];
    ssize_t n = real_read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    int f = FAIL_NONE;
    if (strstr(buf, "fsync")) f |= FAIL_FSYNC;
    if (strstr(buf, "write")) f |= FAIL_WRITE;
    if (strstr(buf, "enospc")) f |= FAIL_ENOSPC;
    return f;
}

/* Whether `fd` is a file under MELDNET_FAULT_DIR. */
static int affected(int fd) {
    const char *dir = getenv("MELDNET_FAULT_DIR");
    if (!dir || !*dir) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strncmp(path, dir, strlen(dir)) == 0;
}

/* The error a write gets now, or 0. */
static int write_error(int fd) {
    int f = faults();
    if (!(f & (FAIL_WRITE | FAIL_ENOSPC)) || !affected(fd)) return 0;
    return (f & FAIL_ENOSPC) ? ENOSPC : EIO;
}

static int sync_fails(int fd) {
    return (faults() & FAIL_FSYNC) && affected(fd);
}

/* The next definition of `name` (libc's), looked up once. */
#define REAL(name) \
    static __typeof__(&name) real_##name; \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    int e = write_error(fd);
    if (e) { errno = e; return -1; }
    return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t at) {
    REAL(pwrite);
    int e = write_error(fd);
    if (e) { errno = e; return -1; }
    return real_pwrite(fd, buf, n, at);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t at) {
    REAL(pwrite64);
    int e = write_error(fd);
    if (e) { errno = e; return -1; }
    return real_pwrite64(fd, buf, n, at);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    int e = write_error(fd);
    if (e) { errno = e; return -1; }
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t at) {
    REAL(pwritev);
    int e = write_error(fd);
    if (e) { errno = e; return -1; }
    return real_pwritev(fd, iov, cnt, at);
}

int fsync(int fd) {
    REAL(fsync);
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_fdatasync(fd);
}

int sync_file_range(int fd, off_t at, off_t n, unsigned int flags) {
    REAL(sync_file_range);
    if (sync_fails(fd)) { errno = EIO; return -1; }
    return real_sync_file_range(fd, at, n, flags);
}
