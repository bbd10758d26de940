package ring

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary act as a second tracer (claimHelperEnv): it claims the ring
// at the path given, says so, and holds it until its stdin closes or it is killed.
func TestMain(m *testing.M) {
	if path := os.Getenv(claimHelperEnv); path != "" {
		r, err := Open(path)
		if err == nil {
			err = r.Claim()
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("claimed")
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const claimHelperEnv = "PM_RING_CLAIM_HELPER"

// A ring has one consumer: a second reader's claim fails and names the holder, and it
// succeeds once the first reader is closed.
func TestClaimIsExclusive(t *testing.T) {
	w, err := Create(SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r1, r2 := openReader(t, w), openReader(t, w)
	if err := r1.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Claim(); err != nil {
		t.Fatalf("a second claim by the holder: %v", err)
	}
	err = r2.Claim()
	var ce *ClaimError
	if !errors.Is(err, ErrClaimed) || !errors.As(err, &ce) || ce.Holder != os.Getpid() || !strings.Contains(ce.Cmdline, "ring.test") {
		t.Fatalf("second reader's claim: %v (%+v), want ErrClaimed naming pid %d", err, ce, os.Getpid())
	}
	r1.Close()
	if err := r2.Claim(); err != nil {
		t.Fatalf("claim after the holder closed: %v", err)
	}
}

// A ring handed over by its producer shares the producer's open file description (SCM_RIGHTS
// passes the description, not a new one): two readers made from such descriptors still
// exclude each other, because each claim locks a description of its own.
func TestClaimOnHandedOverDescriptors(t *testing.T) {
	w, err := Create(SourceCUPTI, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	handed := func() *Reader {
		fd, err := unix.Dup(int(w.File().Fd()))
		if err != nil {
			t.Fatal(err)
		}
		r, err := OpenFile(os.NewFile(uintptr(fd), "handed"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := handed(), handed()
	if err := a.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(); !errors.Is(err, ErrClaimed) {
		t.Fatalf("claim through a second hand-over: %v, want ErrClaimed", err)
	}
}

// The holder is another process (another tracer): the claim names its pid and command line,
// and the ring is free again the moment that process dies, without any cleanup.
func TestClaimHeldByAnotherProcess(t *testing.T) {
	w, err := Create(SourcePyhook, 1<<12)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), claimHelperEnv+"=/proc/"+strconv.Itoa(os.Getpid())+"/fd/"+strconv.Itoa(int(w.File().Fd())))
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "claimed\n" {
		t.Fatalf("helper: %q", line)
	}
	r := openReader(t, w)
	err = r.Claim()
	var ce *ClaimError
	if !errors.As(err, &ce) || ce.Holder != cmd.Process.Pid || !strings.Contains(ce.Cmdline, "-test.run=^$") {
		t.Fatalf("claim while pid %d holds the ring: %v (%+v)", cmd.Process.Pid, err, ce)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d (", cmd.Process.Pid)) {
		t.Errorf("message %q does not name the holder", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := r.Claim(); err != nil {
		t.Fatalf("claim after the holder died: %v", err)
	}
}

func TestFlockHolder(t *testing.T) {
	locks := []byte("1: POSIX  ADVISORY  WRITE 77 00:01:2088 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 4242 00:01:2088 0 EOF\n" +
		"2: -> FLOCK  ADVISORY  WRITE 5151 00:01:2088 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 99 fd:01:2088 0 EOF\n")
	if got := flockHolder(locks, unix.Mkdev(0, 1), 2088); got != 4242 {
		t.Errorf("holder of 00:01:2088 = %d, want 4242 (the POSIX lock and the waiter are not holders)", got)
	}
	if got := flockHolder(locks, unix.Mkdev(0xfd, 1), 2088); got != 99 {
		t.Errorf("holder of fd:01:2088 = %d, want 99", got)
	}
	if got := flockHolder(locks, unix.Mkdev(0, 1), 2089); got != 0 {
		t.Errorf("holder of an unlocked inode = %d", got)
	}
}
