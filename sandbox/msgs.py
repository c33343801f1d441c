# PRIMS messages between the server and a program of its sandbox (the state
# server, the zygote) on a unix socket: a 4-byte little-endian length and
# JSON; descriptors ride on the length with SCM_RIGHTS.
import array
import json
import os
import socket
import struct


def _prims_send(sock, obj, fds=()):
    data = json.dumps(obj).encode()
    hdr = struct.pack("<I", len(data))
    if fds:
        sock.sendmsg([hdr], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        sock.sendall(data)
    else:
        sock.sendall(hdr + data)


def _prims_recv(sock):
    """One message and the descriptors that came with it; (None, []) at EOF.
    Received descriptors are close-on-exec: a subprocess never inherits them."""
    fds = []
    hdr = b""
    while len(hdr) < 4:
        try:
            msg, anc, _, _ = sock.recvmsg(4 - len(hdr), socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC)
        except OSError:
            msg, anc = b"", []
        for level, kind, d in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(d[: len(d) - len(d) % a.itemsize])
                fds.extend(a)
        if not msg:
            for fd in fds:
                os.close(fd)
            return None, []
        hdr += msg
    n = struct.unpack("<I", hdr)[0]
    body = bytearray()
    while len(body) < n:
        try:
            chunk = sock.recv(min(n - len(body), 1 << 20))
        except OSError:
            chunk = b""
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        body += chunk
    return json.loads(bytes(body)), fds
