/* A C extension module for the sandbox's hostile tests: native code that the audit hook cannot see.
   Each function makes the system calls an attacker would and returns the result or -errno, so a test
   can demand success (and score 0 when the operating system refuses). Built by the tests with gcc. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static PyObject *h_system(PyObject *self, PyObject *args) {
    const char *cmd;
    if (!PyArg_ParseTuple(args, "y", &cmd)) return NULL;
    return PyLong_FromLong(system(cmd));
}

static PyObject *h_spawn(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "y", &path)) return NULL;
    pid_t pid = fork();
    if (pid < 0) return PyLong_FromLong(-errno);
    if (pid == 0) { execl(path, path, "-c", "id > spawned.txt", (char *)NULL); _exit(127); }
    int status = 0;
    waitpid(pid, &status, 0);
    return PyLong_FromLong(WIFEXITED(status) ? WEXITSTATUS(status) : -1000);
}

static PyObject *h_read(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "y", &path)) return NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return PyLong_FromLong(-errno);
    char buffer[65536];
    ssize_t n = read(fd, buffer, sizeof buffer);
    close(fd);
    if (n < 0) return PyLong_FromLong(-errno);
    return PyBytes_FromStringAndSize(buffer, n);
}

static PyObject *h_write(PyObject *self, PyObject *args) {
    const char *path, *data;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "yy#", &path, &data, &size)) return NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return PyLong_FromLong(-errno);
    ssize_t n = write(fd, data, size);
    close(fd);
    return PyLong_FromLong(n < 0 ? -errno : n);
}

static PyObject *h_connect(PyObject *self, PyObject *args) {
    int port;
    if (!PyArg_ParseTuple(args, "i", &port)) return NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return PyLong_FromLong(-errno);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int result = connect(fd, (struct sockaddr *)&address, sizeof address);
    if (result == 0) result = send(fd, "leak", 4, 0) == 4 ? 0 : -errno; else result = -errno;
    close(fd);
    return PyLong_FromLong(result);
}

static PyObject *h_unix(PyObject *self, PyObject *args) {
    const char *path;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y#", &path, &size)) return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return PyLong_FromLong(-errno);
    struct sockaddr_un address = {0};
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, path, size < 100 ? size : 100);
    int result = connect(fd, (struct sockaddr *)&address, offsetof(struct sockaddr_un, sun_path) + size);
    result = result == 0 ? (send(fd, "leak", 4, 0) == 4 ? 0 : -errno) : -errno;
    close(fd);
    return PyLong_FromLong(result);
}

static PyObject *h_syscall(PyObject *self, PyObject *args) {
    long nr, a[6] = {0};
    if (!PyArg_ParseTuple(args, "l|llllll", &nr, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5])) return NULL;
    long result = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    return PyLong_FromLong(result < 0 ? -errno : result);
}

static PyMethodDef methods[] = {
    {"system", h_system, METH_VARARGS, NULL}, {"spawn", h_spawn, METH_VARARGS, NULL},
    {"read", h_read, METH_VARARGS, NULL}, {"write", h_write, METH_VARARGS, NULL},
    {"connect", h_connect, METH_VARARGS, NULL}, {"unix", h_unix, METH_VARARGS, NULL}, {"syscall", h_syscall, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hostile", NULL, -1, methods};
PyMODINIT_FUNC PyInit_hostile(void) { return PyModule_Create(&module); }
