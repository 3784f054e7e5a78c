/*
 * r1mega-sandbox: run an untrusted program isolated, under limits, and report what it did.
 *
 *   r1mega-sandbox [options] -- CMD [ARGS...]
 *
 * Three processes:
 *
 *   supervisor (this process, outside)   clones the init with new user, PID, mount, network, IPC and
 *     |                                 UTS namespaces, writes its uid/gid maps, reads its stdout and
 *     |                                 stderr through pipes with a byte cap (draining past the cap,
 *     |                                 so the program never blocks on a full pipe), enforces the
 *     |                                 wall-clock limit, and kills the init when it is up: PID 1 of
 *     |                                 a PID namespace dying takes every process in it along, so no
 *     |                                 orphan or double-forked daemon survives. Writes the result.
 *   init (PID 1 inside)                 builds the root: a size-capped tmpfs with read-only binds of
 *     |                                 the paths the program needs (--ro), a size-capped tmpfs
 *     |                                 /scratch (files copied in with --file), /tmp, a fresh /proc
 *     |                                 and /dev/null, zero, urandom; pivots into it; forks the
 *     |                                 program, reaps every process, and reports the program's
 *     |                                 wait status, CPU seconds and peak memory.
 *   program                             clears the environment, closes inherited fds, sets rlimits,
 *                                       drops every capability, sets NO_NEW_PRIVS, installs the
 *                                       seccomp filter last, and execs CMD in /scratch.
 *
 * Where the kernel refuses user namespaces the sandbox refuses to run (exit 125) and names the
 * cause, unless --unisolated is given: then only the rlimits, the environment, the fds, the
 * output cap and the wall clock apply, and a warning says so.
 *
 * Exit status: the program's; 124 when the wall-clock or the CPU-time limit killed it; 128+N when
 * signal N did;
 * 125 when the sandbox itself failed (never the program's fault). --result FILE gets one JSON
 * object: status ("ok", "exit", "signal", "timeout", "error"), exit_code, signal, wall_s, cpu_s,
 * max_rss_kb, stdout_bytes, stderr_bytes, stdout_truncated, stderr_truncated, error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SANDBOX 125
#define MAX_LIST 128

struct options {
    double time_limit_s;       /* wall clock */
    double cpu_limit_s;        /* RLIMIT_CPU (0: time_limit_s rounded up) */
    long memory_mb;            /* RLIMIT_AS */
    long output_limit;         /* bytes kept of stdout and of stderr each */
    long file_size_mb;         /* RLIMIT_FSIZE */
    long scratch_mb;           /* size of the /scratch tmpfs */
    long nproc;                /* RLIMIT_NPROC (counted per uid: the sandbox's own uid) */
    long nofile;               /* RLIMIT_NOFILE */
    int unisolated;            /* explicit opt-out of the namespaces */
    int allow_network;         /* keep the host's network namespace (off: only a down loopback) */
    int quiet;                 /* no notes of the sandbox's own on stderr (the --result file has them) */
    const char *result_path;
    const char *ro[MAX_LIST];  /* host paths bound read-only at the same place */
    int n_ro;
    const char *files[MAX_LIST]; /* SRC[:NAME] copied into /scratch */
    int file_fd[MAX_LIST];     /* ... opened by the supervisor */
    int n_files;
    const char *outputs[MAX_LIST]; /* files of /scratch copied out to output_dir at the end */
    int n_outputs;
    const char *output_dir;
    char **argv;
};

static struct options opt = {
    .time_limit_s = 10, .memory_mb = 1024, .output_limit = 1 << 20, .file_size_mb = 16, .scratch_mb = 64,
    .nproc = 64, .nofile = 64,
};

/* ------------------------------------------------------------------------------------------- */
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "r1mega-sandbox: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    _exit(EXIT_SANDBOX);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = write_all(fd, text, strlen(text));
    close(fd);
    return rc;
}

/* --------------------------------------------------------------------------------- options */
static void usage(void) {
    fprintf(stderr,
            "usage: r1mega-sandbox [--time-limit S] [--cpu-limit S] [--memory-mb MB] [--output-limit BYTES]\n"
            "                      [--file-size-mb MB] [--scratch-mb MB] [--nproc N] [--nofile N]\n"
            "                      [--ro PATH]... [--file SRC[:NAME]]... [--output NAME]... [--output-dir DIR]\n"
            "                      [--result FILE] [--network]\n"
            "                      [--quiet] [--unisolated] -- CMD [ARGS...]\n");
    _exit(EXIT_SANDBOX);
}

static double parse_num(const char *name, const char *v, double lo) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || x < lo) die("%s: expected a number >= %g, got '%s'", name, lo, v);
    return x;
}

static void parse_args(int argc, char **argv) {
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { i++; break; }
        if (!strcmp(a, "--unisolated")) { opt.unisolated = 1; continue; }
        if (!strcmp(a, "--network")) { opt.allow_network = 1; continue; }
        if (!strcmp(a, "--quiet")) { opt.quiet = 1; continue; }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--time-limit")) opt.time_limit_s = parse_num(a, v, 0.001);
        else if (!strcmp(a, "--cpu-limit")) opt.cpu_limit_s = parse_num(a, v, 0.001);
        else if (!strcmp(a, "--memory-mb")) opt.memory_mb = (long)parse_num(a, v, 1);
        else if (!strcmp(a, "--output-limit")) opt.output_limit = (long)parse_num(a, v, 0);
        else if (!strcmp(a, "--file-size-mb")) opt.file_size_mb = (long)parse_num(a, v, 0);
        else if (!strcmp(a, "--scratch-mb")) opt.scratch_mb = (long)parse_num(a, v, 1);
        else if (!strcmp(a, "--nproc")) opt.nproc = (long)parse_num(a, v, 1);
        else if (!strcmp(a, "--nofile")) opt.nofile = (long)parse_num(a, v, 4);
        else if (!strcmp(a, "--result")) opt.result_path = v;
        else if (!strcmp(a, "--ro")) {
            if (opt.n_ro >= MAX_LIST) die("too many --ro");
            if (v[0] != '/') die("--ro %s: expected an absolute path", v);
            opt.ro[opt.n_ro++] = v;
        } else if (!strcmp(a, "--output")) {
            if (opt.n_outputs >= MAX_LIST) die("too many --output");
            if (strchr(v, '/') || !strcmp(v, ".") || !strcmp(v, "..")) die("--output %s: expected a plain file name", v);
            opt.outputs[opt.n_outputs++] = v;
        } else if (!strcmp(a, "--output-dir")) {
            opt.output_dir = v;
        } else if (!strcmp(a, "--file")) {
            if (opt.n_files >= MAX_LIST) die("too many --file");
            opt.files[opt.n_files++] = v;
        } else usage();
    }
    if (i >= argc) usage();
    if (opt.n_outputs && !opt.output_dir) die("--output needs --output-dir");
    opt.argv = argv + i;
    if (opt.cpu_limit_s <= 0) opt.cpu_limit_s = opt.time_limit_s;
}

/* ------------------------------------------------------------------------ the program's side */
static void set_limit(int resource, rlim_t value) {
    struct rlimit r = {value, value};
    if (setrlimit(resource, &r) != 0) die("setrlimit(%d): %s", resource, strerror(errno));
}

static void close_inherited_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) {  /* no /proc: close a generous range */
        for (int fd = 3; fd < 1024; fd++) close(fd);
        return;
    }
    int dfd = dirfd(d), fds[1024], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != dfd) fds[n++] = fd;
    }
    closedir(d);
    for (int k = 0; k < n; k++) close(fds[k]);
}

static void drop_capabilities(void) {
    for (int cap = 0; cap <= 63; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);  /* EINVAL past the last */
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) != 0) die("capset: %s", strerror(errno));
}

/* seccomp: kill-free policy. Syscalls that reach the kernel, new namespaces, other processes or
 * the mount table fail with EPERM; clone3 with ENOSYS (libc then falls back to clone, whose flags
 * a BPF filter can read: namespace flags are refused). Architecture other than the build's: kill. */
#if defined(__x86_64__)
#define AUDIT_ARCH_SELF AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_SELF AUDIT_ARCH_AARCH64
#else
#error "r1mega-sandbox: seccomp filter written for x86_64 and aarch64"
#endif

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

static void install_seccomp(void) {
    const uint32_t ns_flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                              CLONE_NEWUTS | CLONE_NEWCGROUP;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_SELF, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __x86_64__
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),  /* x32 ABI */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
        /* clone: refuse namespace flags */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, ns_flags, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        DENY(SYS_ptrace), DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev), DENY(SYS_kcmp),
        DENY(SYS_pidfd_open), DENY(SYS_pidfd_getfd), DENY(SYS_pidfd_send_signal),
        DENY(SYS_mount), DENY(SYS_umount2), DENY(SYS_pivot_root), DENY(SYS_chroot), DENY(SYS_unshare),
        DENY(SYS_setns), DENY(SYS_open_tree), DENY(SYS_move_mount), DENY(SYS_fsopen), DENY(SYS_fsmount),
        DENY(SYS_fsconfig), DENY(SYS_fspick), DENY(SYS_mount_setattr),
        DENY(SYS_bpf), DENY(SYS_perf_event_open), DENY(SYS_userfaultfd), DENY(SYS_keyctl), DENY(SYS_add_key),
        DENY(SYS_request_key), DENY(SYS_init_module), DENY(SYS_finit_module), DENY(SYS_delete_module),
        DENY(SYS_kexec_load), DENY(SYS_kexec_file_load), DENY(SYS_reboot), DENY(SYS_swapon), DENY(SYS_swapoff),
        DENY(SYS_acct), DENY(SYS_quotactl), DENY(SYS_syslog), DENY(SYS_personality), DENY(SYS_setdomainname),
        DENY(SYS_sethostname), DENY(SYS_settimeofday), DENY(SYS_clock_settime), DENY(SYS_adjtimex),
        DENY(SYS_open_by_handle_at), DENY(SYS_name_to_handle_at), DENY(SYS_fanotify_init), DENY(SYS_io_uring_setup),
#ifdef __x86_64__
        DENY(SYS_iopl), DENY(SYS_ioperm), DENY(SYS_modify_ldt), DENY(SYS_uselib),
#endif
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 &&
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        die("seccomp: %s", strerror(errno));
}

/* RLIMIT_CPU counts whole seconds: the limit rounded up, at least 1 */
static rlim_t cpu_limit_whole_s(void) {
    rlim_t cpu = (rlim_t)(opt.cpu_limit_s + 0.999);
    return cpu < 1 ? 1 : cpu;
}

static void exec_program(int isolated) {
    set_limit(RLIMIT_CPU, cpu_limit_whole_s());
    set_limit(RLIMIT_AS, (rlim_t)opt.memory_mb << 20);
    set_limit(RLIMIT_FSIZE, (rlim_t)opt.file_size_mb << 20);
    set_limit(RLIMIT_NOFILE, (rlim_t)opt.nofile);
    set_limit(RLIMIT_NPROC, (rlim_t)opt.nproc);
    set_limit(RLIMIT_CORE, 0);
    set_limit(RLIMIT_MEMLOCK, 0);
    set_limit(RLIMIT_MSGQUEUE, 0);
    clearenv();
    setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
    setenv("HOME", isolated ? "/scratch" : ".", 1);
    setenv("TMPDIR", "/tmp", 1);
    setenv("LANG", "C.UTF-8", 1);
    setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
    setenv("PYTHONHASHSEED", "0", 1);
    close_inherited_fds();
    if (isolated) drop_capabilities();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("NO_NEW_PRIVS: %s", strerror(errno));
    install_seccomp();
    execvp(opt.argv[0], opt.argv);
    fprintf(stderr, "r1mega-sandbox: cannot run %s: %s\n", opt.argv[0], strerror(errno));
    _exit(127);
}

/* -------------------------------------------------------------------------- the init's side */
static void mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

/* A mount point at ``dst``: a directory, or an empty file for a file bind. */
static void make_mountpoint(int is_dir, const char *dst) {
    if (is_dir) {
        mkdirs(dst);
        return;
    }
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dst);
    char *slash = strrchr(parent, '/');
    if (slash) { *slash = 0; mkdirs(parent); }
    int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die("mount point %s: %s", dst, strerror(errno));
    close(fd);
}

static int is_dir(const char *src) {
    struct stat st;
    if (stat(src, &st) != 0) die("--ro %s: %s", src, strerror(errno));
    return S_ISDIR(st.st_mode);
}

static void bind_readonly(const char *src, const char *dst) {
    struct stat st;
    if (stat(src, &st) != 0) die("--ro %s: %s", src, strerror(errno));
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind %s: %s", src, strerror(errno));
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (S_ISCHR(st.st_mode) ? 0 : MS_NODEV);
    if (mount(NULL, dst, NULL, flags, NULL) != 0) {
        /* a bind of a mount with locked flags (nodev, noexec...) keeps them: add them and retry */
        if (mount(NULL, dst, NULL, flags | MS_NODEV | MS_NOEXEC, NULL) != 0 &&
            mount(NULL, dst, NULL, flags | MS_NODEV, NULL) != 0)
            die("read-only remount of %s: %s", src, strerror(errno));
    }
}

static int open_path(const char *path, int flags, const char *what) {
    int fd = open(path, flags);
    if (fd < 0) die("%s %s: %s", what, path, strerror(errno));
    return fd;
}

static void become_namespace_root(void) {
    if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) die("setresuid inside the namespace: %s", strerror(errno));
}

static void copy_in(const char *spec, int in, const char *scratch) {
    char src[4096];
    snprintf(src, sizeof src, "%s", spec);
    const char *name = NULL;
    char *colon = strrchr(src, ':');
    if (colon && !strchr(colon, '/')) { *colon = 0; name = colon + 1; }
    if (!name || !*name) { const char *s = strrchr(src, '/'); name = s ? s + 1 : src; }
    if (strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, ".")) die("--file %s: NAME must be a plain file name", spec);
    char dst[8192];
    snprintf(dst, sizeof dst, "%s/%s", scratch, name);
    struct stat st;
    mode_t mode = fstat(in, &st) == 0 && (st.st_mode & 0111) ? 0755 : 0644;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out < 0) die("--file %s: cannot create %s: %s", src, name, strerror(errno));
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write_all(out, buf, (size_t)n) != 0) die("--file %s: %s", src, strerror(errno));
    close(in);
    close(out);
}

static const char *DEVICES[] = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"};
#define N_DEVICES (sizeof DEVICES / sizeof DEVICES[0])

/* The init starts with the caller's credentials (unmapped in the new user namespace: it can read
 * what the caller can, but not create files), and full capabilities in the namespace. So: a
 * helper that is the namespace's root creates the mount points; the init binds the caller's paths
 * into them; then the init too becomes the namespace's root (an unprivileged user outside). */
static void build_root(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make / private: %s", strerror(errno));
    const char *root = "/tmp/.r1mega-sandbox-root";  /* a mount point in this private namespace only */
    mkdir(root, 0700);
    char size[96], path[4096];
    snprintf(size, sizeof size, "size=%ldm,mode=755,uid=0,gid=0", opt.scratch_mb + 16);
    if (mount("r1mega-root", root, "tmpfs", MS_NOSUID | MS_NODEV, size) != 0) die("tmpfs root: %s", strerror(errno));
    int ro_dir[MAX_LIST];
    for (int i = 0; i < opt.n_ro; i++) ro_dir[i] = is_dir(opt.ro[i]);  /* with the caller's rights */
    pid_t helper = fork();
    if (helper < 0) die("fork: %s", strerror(errno));
    if (helper == 0) {
        become_namespace_root();
        for (int i = 0; i < opt.n_ro; i++) {
            snprintf(path, sizeof path, "%s%s", root, opt.ro[i]);
            make_mountpoint(ro_dir[i], path);
        }
        for (size_t i = 0; i < N_DEVICES; i++) {
            snprintf(path, sizeof path, "%s%s", root, DEVICES[i]);
            make_mountpoint(0, path);
        }
        static const char *dirs[] = {"/scratch", "/tmp", "/proc", "/.old"};
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            snprintf(path, sizeof path, "%s%s", root, dirs[i]);
            mkdirs(path);
        }
        _exit(0);
    }
    int st;
    if (waitpid(helper, &st, 0) != helper || !WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(EXIT_SANDBOX);
    for (int i = 0; i < opt.n_ro; i++) {
        snprintf(path, sizeof path, "%s%s", root, opt.ro[i]);
        bind_readonly(opt.ro[i], path);
    }
    for (size_t i = 0; i < N_DEVICES; i++) {
        snprintf(path, sizeof path, "%s%s", root, DEVICES[i]);
        bind_readonly(DEVICES[i], path);
    }
    snprintf(path, sizeof path, "%s/dev/null", root);  /* writable: programs write to it */
    mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID, NULL);
    /* /scratch: the program's working directory, its own capped tmpfs */
    snprintf(path, sizeof path, "%s/scratch", root);
    snprintf(size, sizeof size, "size=%ldm,mode=777,uid=0,gid=0", opt.scratch_mb);
    if (mount("r1mega-scratch", path, "tmpfs", MS_NOSUID | MS_NODEV, size) != 0) die("tmpfs scratch: %s", strerror(errno));
    char tmpdir[4096];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", root);
    if (mount("r1mega-tmp", tmpdir, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777,uid=0,gid=0") != 0)
        die("tmpfs /tmp: %s", strerror(errno));
    become_namespace_root();
    for (int i = 0; i < opt.n_files; i++) copy_in(opt.files[i], opt.file_fd[i], path);
    snprintf(path, sizeof path, "%s/proc", root);
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("proc: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/.old", root);
    if (syscall(SYS_pivot_root, root, path) != 0) die("pivot_root: %s", strerror(errno));
    if (chdir("/") != 0 || umount2("/.old", MNT_DETACH) != 0) die("detach the old root: %s", strerror(errno));
    rmdir("/.old");
    mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
    if (chdir("/scratch") != 0) die("chdir /scratch: %s", strerror(errno));
}

struct init_args {
    int sync_fd;    /* the supervisor writes a byte once the uid/gid maps are in place */
    int status_fd;  /* the init writes its report here */
    int out_fd, err_fd;
};

struct report {
    int wait_status;
    double cpu_s;
    long max_rss_kb;
    char error[256];
};

static int init_main(void *arg) {
    struct init_args *a = arg;
    char byte;
    if (read(a->sync_fd, &byte, 1) != 1) _exit(EXIT_SANDBOX);
    close(a->sync_fd);
    struct report rep = {0};
    /* a session of its own: with the kernel's autogroup scheduling (CONFIG_SCHED_AUTOGROUP, on by
     * default) every session is one scheduling group, so a sandbox full of spinning processes (a
     * fork bomb at its RLIMIT_NPROC) gets one group's share of the CPUs, not one share per process,
     * and a program in the next sandbox still runs at a fair speed */
    if (setsid() < 0) {}
    if (sethostname("sandbox", 7) != 0) {}
    build_root();
    pid_t prog = fork();
    if (prog < 0) die("fork: %s", strerror(errno));
    if (prog == 0) {
        if (dup2(a->out_fd, 1) < 0 || dup2(a->err_fd, 2) < 0) _exit(EXIT_SANDBOX);
        exec_program(1);
    }
    close(a->out_fd);
    close(a->err_fd);
    /* reap everything; the program's status is the report */
    for (;;) {
        int st;
        pid_t p = wait(&st);
        if (p < 0 && errno == EINTR) continue;
        if (p < 0) break;
        if (p == prog) {
            rep.wait_status = st;
            break;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    rep.cpu_s = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    rep.max_rss_kb = ru.ru_maxrss;
    write_all(a->status_fd, &rep, sizeof rep);
    /* --output files: (index, size, bytes) each, a missing one with size -1 */
    for (int i = 0; i < opt.n_outputs; i++) {
        int32_t idx = i;
        int64_t size = -1;
        int fd = open(opt.outputs[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) size = st.st_size;
        write_all(a->status_fd, &idx, sizeof idx);
        write_all(a->status_fd, &size, sizeof size);
        char buf[65536];
        for (int64_t left = size; left > 0;) {
            ssize_t n = read(fd, buf, left < (int64_t)sizeof buf ? (size_t)left : sizeof buf);
            if (n <= 0) { memset(buf, 0, sizeof buf); n = left < (int64_t)sizeof buf ? left : (int64_t)sizeof buf; }
            write_all(a->status_fd, buf, (size_t)n);
            left -= n;
        }
        if (fd >= 0) close(fd);
    }
    _exit(0);  /* PID 1 exits: the kernel kills whatever the program left behind */
}

/* --------------------------------------------------------------------------- the supervisor */
struct capture {
    int fd;
    long kept, total;
    char *buf;
    int truncated;
};

static void drain(struct capture *c) {
    char tmp[65536];
    ssize_t n = read(c->fd, tmp, sizeof tmp);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) { close(c->fd); c->fd = -1; }
        return;
    }
    c->total += n;
    long room = opt.output_limit - c->kept;
    long keep = n < room ? n : (room > 0 ? room : 0);
    if (keep > 0) { memcpy(c->buf + c->kept, tmp, (size_t)keep); c->kept += keep; }
    if (keep < n) c->truncated = 1;
}

static void json_result(const char *status, int code, int sig, double wall, const struct report *rep,
                        const struct capture *out, const struct capture *err, const char *error) {
    if (!opt.result_path) return;
    FILE *f = fopen(opt.result_path, "w");
    if (!f) { fprintf(stderr, "r1mega-sandbox: --result %s: %s\n", opt.result_path, strerror(errno)); return; }
    fprintf(f, "{\"status\": \"%s\", \"exit_code\": %d, \"signal\": %d, \"wall_s\": %.6f, \"cpu_s\": %.6f, "
               "\"max_rss_kb\": %ld, \"stdout_bytes\": %ld, \"stderr_bytes\": %ld, \"stdout_truncated\": %s, "
               "\"stderr_truncated\": %s, \"isolated\": %s, \"error\": \"",
            status, code, sig, wall, rep ? rep->cpu_s : 0.0, rep ? rep->max_rss_kb : 0L, out->total, err->total,
            out->truncated ? "true" : "false", err->truncated ? "true" : "false", opt.unisolated ? "false" : "true");
    for (const char *p = error ? error : ""; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        if ((unsigned char)*p >= 0x20) fputc(*p, f);
    }
    fprintf(f, "\"}\n");
    fclose(f);
}

/* The --output files the init streamed: written into --output-dir by the supervisor (the caller's
 * rights), never following links; a file the program did not leave is simply absent. */
static void write_outputs(const char *buf, size_t len) {
    if (!opt.n_outputs) return;
    int dir = open(opt.output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) { fprintf(stderr, "r1mega-sandbox: --output-dir %s: %s\n", opt.output_dir, strerror(errno)); return; }
    size_t pos = 0;
    while (pos + sizeof(int32_t) + sizeof(int64_t) <= len) {
        int32_t idx;
        int64_t size;
        memcpy(&idx, buf + pos, sizeof idx);
        memcpy(&size, buf + pos + sizeof idx, sizeof size);
        pos += sizeof idx + sizeof size;
        if (idx < 0 || idx >= opt.n_outputs || size > (int64_t)(len - pos)) break;
        if (size < 0) continue;
        int fd = openat(dir, opt.outputs[idx], O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0755);
        if (fd >= 0) {
            write_all(fd, buf + pos, (size_t)size);
            close(fd);
        }
        pos += (size_t)size;
    }
    close(dir);
}

static const char *userns_problem(void) {
    static char why[512];
    FILE *f = fopen("/proc/sys/kernel/unprivileged_userns_clone", "r");
    if (f) {
        int v = 1;
        if (fscanf(f, "%d", &v) == 1 && v == 0 && geteuid() != 0) {
            fclose(f);
            return "kernel.unprivileged_userns_clone is 0 (enable it: sysctl -w kernel.unprivileged_userns_clone=1)";
        }
        fclose(f);
    }
    f = fopen("/proc/sys/user/max_user_namespaces", "r");
    if (f) {
        long v = 1;
        if (fscanf(f, "%ld", &v) == 1 && v == 0) {
            fclose(f);
            return "user.max_user_namespaces is 0 (raise it: sysctl -w user.max_user_namespaces=10000)";
        }
        fclose(f);
    }
    snprintf(why, sizeof why, "the kernel refused new namespaces (%s); a container may need "
             "--security-opt seccomp=unconfined or an AppArmor profile allowing userns", strerror(errno));
    return why;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int out_pipe[2], err_pipe[2], status_pipe[2], sync_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) || pipe2(err_pipe, O_CLOEXEC) || pipe2(status_pipe, O_CLOEXEC) ||
        pipe2(sync_pipe, O_CLOEXEC))
        die("pipe: %s", strerror(errno));
    struct capture out = {out_pipe[0], 0, 0, malloc((size_t)opt.output_limit + 1), 0};
    struct capture err = {err_pipe[0], 0, 0, malloc((size_t)opt.output_limit + 1), 0};
    /* every host path the sandbox gets is opened here, with the caller's rights: the init, an
     * unprivileged user outside, only binds and reads these descriptors */
    for (int i = 0; i < opt.n_ro; i++) close(open_path(opt.ro[i], O_PATH | O_CLOEXEC, "--ro"));  /* named early */
    for (int i = 0; i < opt.n_files; i++) {
        char src[4096];
        snprintf(src, sizeof src, "%s", opt.files[i]);
        char *colon = strrchr(src, ':');
        if (colon && !strchr(colon, '/')) *colon = 0;
        opt.file_fd[i] = open_path(src, O_RDONLY | O_CLOEXEC, "--file");
    }
    double t0 = now_s();
    pid_t child;
    if (opt.unisolated) {
        fprintf(stderr, "r1mega-sandbox: WARNING: --unisolated: the program runs WITHOUT namespaces or "
                        "seccomp isolation; it can read your files and reach the network\n");
        child = fork();
        if (child == 0) {
            setsid();  /* its own session (and process group, killed as one): one autogroup, as isolated runs */
            char scratch[] = "/tmp/r1mega-sandbox-XXXXXX";  /* left behind: nothing cleans up unisolated runs */
            if (!mkdtemp(scratch)) die("mkdtemp: %s", strerror(errno));
            for (int i = 0; i < opt.n_files; i++) copy_in(opt.files[i], opt.file_fd[i], scratch);
            if (chdir(scratch) != 0) die("chdir %s: %s", scratch, strerror(errno));
            if (dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0) _exit(EXIT_SANDBOX);
            exec_program(0);
        }
    } else {
        static char stack[1 << 20];
        struct init_args a = {sync_pipe[0], status_pipe[1], out_pipe[1], err_pipe[1]};
        int flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
        if (!opt.allow_network) flags |= CLONE_NEWNET;
        child = clone(init_main, stack + sizeof stack, flags, &a);
        if (child < 0) {
            const char *why = userns_problem();
            json_result("error", EXIT_SANDBOX, 0, 0, NULL, &out, &err, why);
            die("cannot isolate the program: %s. Refusing to run it unisolated; pass --unisolated to do so "
                "knowingly", why);
        }
        /* the sandbox's uid outside is an unprivileged one: when we are root, one of its own
         * (1000000 + the supervisor's pid; no file or process on the host has it), so that
         * RLIMIT_NPROC, which the kernel counts per uid, is per sandbox and a fork bomb in one
         * cannot starve another; else our own uid (the only one we may map) */
        char map[128], path[64];
        unsigned outside_uid = geteuid() == 0 ? 1000000u + (unsigned)getpid() : geteuid();
        unsigned outside_gid = getegid() == 0 ? 65534 : getegid();
        snprintf(path, sizeof path, "/proc/%d/setgroups", child);
        write_file(path, "deny");
        snprintf(path, sizeof path, "/proc/%d/uid_map", child);
        snprintf(map, sizeof map, "0 %u 1", outside_uid);
        if (write_file(path, map) != 0) { kill(child, SIGKILL); die("uid_map: %s", strerror(errno)); }
        snprintf(path, sizeof path, "/proc/%d/gid_map", child);
        snprintf(map, sizeof map, "0 %u 1", outside_gid);
        if (write_file(path, map) != 0) { kill(child, SIGKILL); die("gid_map: %s", strerror(errno)); }
        if (write(sync_pipe[1], "x", 1) != 1) die("sync: %s", strerror(errno));
    }
    if (child < 0) die("fork: %s", strerror(errno));
    close(out_pipe[1]);
    close(err_pipe[1]);
    close(status_pipe[1]);
    close(sync_pipe[0]);
    close(sync_pipe[1]);
    fcntl(out.fd, F_SETFL, O_NONBLOCK);
    fcntl(err.fd, F_SETFL, O_NONBLOCK);

    double deadline = t0 + opt.time_limit_s;
    int timed_out = 0, killed = 0;
    /* the init's report (and --output files) arrive on the status pipe; read it with the outputs,
     * so a large --output never blocks the init */
    size_t st_cap = 1 << 16, st_len = 0;
    char *st_buf = malloc(st_cap);
    int status_fd = opt.unisolated ? -1 : status_pipe[0];
    if (status_fd >= 0) fcntl(status_fd, F_SETFL, O_NONBLOCK);
    while (out.fd >= 0 || err.fd >= 0 || status_fd >= 0) {
        double left = deadline - now_s();
        if (left <= 0) { timed_out = 1; break; }
        struct pollfd p[3] = {{out.fd, POLLIN, 0}, {err.fd, POLLIN, 0}, {status_fd, POLLIN, 0}};
        int r = poll(p, 3, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) break;
        if (out.fd >= 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) drain(&out);
        if (err.fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) drain(&err);
        if (status_fd >= 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (st_len == st_cap) st_buf = realloc(st_buf, st_cap *= 2);
            ssize_t n = read(status_fd, st_buf + st_len, st_cap - st_len);
            if (n > 0) st_len += (size_t)n;
            else if (n == 0 || (errno != EINTR && errno != EAGAIN)) { close(status_fd); status_fd = -1; }
        }
    }
    int st = 0;
    for (;;) {
        pid_t w = waitpid(child, &st, WNOHANG);
        if (w == child) break;
        if (timed_out || now_s() >= deadline) {
            timed_out = 1;
            killed = 1;
            if (opt.unisolated) kill(-child, SIGKILL);
            kill(child, SIGKILL);
            waitpid(child, &st, 0);
            break;
        }
        usleep(1000);
    }
    if (opt.unisolated && !killed) kill(-child, SIGKILL);  /* leftovers of the process group */
    double wall = now_s() - t0;
    struct report rep = {0};
    int have_report = 0;
    if (opt.unisolated) {
        rep.wait_status = st;
        struct rusage ru;
        getrusage(RUSAGE_CHILDREN, &ru);
        rep.cpu_s = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
        rep.max_rss_kb = ru.ru_maxrss;
        have_report = !killed;
    } else if (st_len >= sizeof rep) {
        memcpy(&rep, st_buf, sizeof rep);
        have_report = 1;
        write_outputs(st_buf + sizeof rep, st_len - sizeof rep);
    }
    /* forward the captured output */
    write_all(1, out.buf, (size_t)out.kept);
    write_all(2, err.buf, (size_t)err.kept);
    if (out.truncated && !opt.quiet) fprintf(stderr, "\nr1mega-sandbox: stdout truncated at %ld of %ld bytes\n", out.kept, out.total);
    if (err.truncated && !opt.quiet) fprintf(stderr, "\nr1mega-sandbox: stderr truncated at %ld of %ld bytes\n", err.kept, err.total);
    if (timed_out) {
        json_result("timeout", 124, SIGKILL, wall, have_report ? &rep : NULL, &out, &err, "");
        return 124;
    }
    if (!have_report) {
        const char *why = WIFEXITED(st) && WEXITSTATUS(st) == EXIT_SANDBOX ? "the sandbox failed to start the program"
                                                                           : "the sandbox's init died without a report";
        json_result("error", EXIT_SANDBOX, 0, wall, NULL, &out, &err, why);
        return EXIT_SANDBOX;
    }
    if (WIFSIGNALED(rep.wait_status)) {
        int sig = WTERMSIG(rep.wait_status);
        /* the CPU-time limit (RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one) is a
           time limit too: 124, "timeout", like the wall clock */
        if (sig == SIGXCPU || (sig == SIGKILL && rep.cpu_s >= (double)cpu_limit_whole_s() - 0.05)) {
            json_result("timeout", 124, sig, wall, &rep, &out, &err, "");
            return 124;
        }
        json_result("signal", 128 + sig, sig, wall, &rep, &out, &err, "");
        return 128 + sig;
    }
    int code = WEXITSTATUS(rep.wait_status);
    json_result(code == 0 ? "ok" : "exit", code, 0, wall, &rep, &out, &err, "");
    return code;
}
