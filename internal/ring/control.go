package ring

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Incoming is one ring fd received over the control socket.
type Incoming struct {
	Source string // "cupti", "pyhook", …
	Pid    int    // pid as the producer sees it (its namespace)
	// HostPid is the producer's pid in the tracer's pid namespace, from the socket's peer
	// credentials (the kernel translates it); 0 if unavailable.
	HostPid int
	File    *os.File // the ring memfd; pass to OpenFile
}

// ControlSocket receives ring fds from producers: each producer connects to the
// SOCK_STREAM unix socket named in PROFILEMATE_CONTROL_SOCKET, sends one message
// "<source> <pid>\n" carrying the fd as SCM_RIGHTS, and closes.
type ControlSocket struct {
	l    *net.UnixListener
	path string
	ch   chan Incoming
	wg   sync.WaitGroup
	once sync.Once
	done chan struct{}
}

// ListenControl creates the socket in dir (mode 0700 directory recommended).
func ListenControl(dir string) (*ControlSocket, error) {
	path := filepath.Join(dir, fmt.Sprintf("pm-ctl-%d-%d.sock", os.Getpid(), time.Now().UnixNano()%1e9))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	c := &ControlSocket{l: l, path: path, ch: make(chan Incoming, 64), done: make(chan struct{})}
	c.wg.Add(1)
	go c.loop()
	return c, nil
}

// Path is the socket path to put in PROFILEMATE_CONTROL_SOCKET.
func (c *ControlSocket) Path() string { return c.path }

// Incoming delivers received rings; it is closed by Close.
func (c *ControlSocket) Incoming() <-chan Incoming { return c.ch }

// Close stops listening and closes the Incoming channel.
func (c *ControlSocket) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.l.Close()
		c.wg.Wait()
		close(c.ch)
	})
	return err
}

func (c *ControlSocket) loop() {
	defer c.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		conn, err := c.l.AcceptUnix()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer conn.Close()
			in, ok := readOne(conn)
			if !ok {
				return
			}
			select {
			case c.ch <- in:
			case <-c.done:
				in.File.Close()
			}
		}()
	}
}

func readOne(conn *net.UnixConn) (Incoming, bool) {
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var msg []byte
	var files []*os.File
	buf := make([]byte, 256)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for len(msg) < 256 && !bytes.Contains(msg, []byte("\n")) {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			if cmsgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, cm := range cmsgs {
					if fds, ferr := syscall.ParseUnixRights(&cm); ferr == nil {
						for _, fd := range fds {
							syscall.CloseOnExec(fd)
							files = append(files, os.NewFile(uintptr(fd), "ring"))
						}
					}
				}
			}
		}
		msg = append(msg, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	line, _, _ := strings.Cut(string(msg), "\n")
	src, pidStr, ok := strings.Cut(strings.TrimSpace(line), " ")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || len(files) == 0 || src == "" {
		closeAll()
		return Incoming{}, false
	}
	for _, f := range files[1:] {
		f.Close()
	}
	return Incoming{Source: src, Pid: pid, HostPid: peerPid(conn), File: files[0]}, true
}

// peerPid returns the connected producer's pid as this process's namespace sees it.
func peerPid(conn *net.UnixConn) int {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
