package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The messages between the server and a program of its sandbox (the state
// server, the zygote), as msgs.py writes and reads them: a 4-byte
// little-endian length and JSON; descriptors ride on the length.

// sendMsg sends msg with fds.
func sendMsg(conn *net.UnixConn, msg any, fds []*os.File) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	hdr := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	var oob []byte
	if len(fds) > 0 {
		ints := make([]int, len(fds))
		for i, f := range fds {
			ints[i] = int(f.Fd())
		}
		oob = unix.UnixRights(ints...)
	}
	if _, _, err := conn.WriteMsgUnix(hdr, oob, nil); err != nil {
		return err
	}
	_, err = conn.Write(body)
	return err
}

// recvMsg reads one message into rep by deadline. With SO_PASSCRED on
// conn, it also returns the sender's pid as this process sees it (0
// otherwise): the kernel's word, not the sender's.
func recvMsg(conn *net.UnixConn, rep any, deadline time.Time) (pid int, err error) {
	_ = conn.SetReadDeadline(deadline)
	var hdr [4]byte
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(hdr[:], oob)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(cred.Pid)
			}
			if fds, err := unix.ParseUnixRights(&m); err == nil {
				for _, fd := range fds {
					unix.Close(fd) // nothing is meant to come this way
				}
			}
		}
	}
	if _, err := io.ReadFull(conn, hdr[n:]); err != nil {
		return 0, err
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size > 16<<20 {
		return 0, fmt.Errorf("a message of %d bytes", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(conn, body); err != nil {
		return 0, err
	}
	return pid, json.Unmarshal(body, rep)
}
