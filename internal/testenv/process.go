package testenv

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a program a test runs, such as the controller binary, with
// its output appended to a log file; it can be stopped, killed and
// started again with the same arguments.
type Process struct {
	t       testing.TB
	path    string
	args    []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error
}

// StartProcess starts path with args, its output appended to logPath, and
// kills it when the test ends if it still runs.
func StartProcess(t testing.TB, logPath, path string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, path: path, args: args, logPath: logPath}
	p.Start()
	t.Cleanup(func() { p.Kill() })
	return p
}

// Start starts the program again once it has ended.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s is running already", p.path)
	}
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		p.t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		log.Close()
		exited <- err
	}()
	p.cmd, p.exited = cmd, exited
}

// Exited reports whether the program ended on its own, and how.
func (p *Process) Exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return true, nil
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		return true, err
	default:
		return false, nil
	}
}

// Kill ends the program at once (SIGKILL), as a node that fails would.
func (p *Process) Kill() {
	_ = p.end(syscall.SIGKILL, 0)
}

// Stop asks the program to end (SIGTERM) and waits up to grace for it;
// it returns how it exited, or an error when it had to be killed.
func (p *Process) Stop(grace time.Duration) error {
	return p.end(syscall.SIGTERM, grace)
}

func (p *Process) end(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-p.exited:
	case <-time.After(max(grace, 10*time.Second)):
		_ = p.cmd.Process.Kill()
		<-p.exited //nolint:errcheck // killed: how it ended says nothing
		err = errors.New("it did not end in time and was killed")
	}
	p.cmd, p.exited = nil, nil
	if sig == syscall.SIGKILL {
		return nil
	}
	return err
}

// Pid is the running program's process id, 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Log returns what the program wrote so far, in all its runs.
func (p *Process) Log() []byte {
	b, _ := os.ReadFile(p.logPath)
	return b
}
