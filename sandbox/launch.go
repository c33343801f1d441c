package sandbox

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// launch is one prepared child: the command, the descriptors to release once
// it has started, and, when the child is the sandbox init, the pipe on which
// the init reports setup errors and how the program ended.
type launch struct {
	cmd      *exec.Cmd
	release  []*os.File // the parent's copies of descriptors handed to the child
	status   *os.File   // read end of the init's report pipe; nil without init
	report   chan initReport
	cleanups []func()
	// config sends the init its configuration; until then it waits, so
	// the server can place it in the run's cgroup first.
	config func()
}

// initReport is what the sandbox init writes, once, on its report pipe:
// either why the sandbox could not be set up, or how the program ended. A
// pipe closed with nothing on it means the init exec'd the program itself.
type initReport struct {
	Err      string `json:"err,omitempty"`
	Status   *int   `json:"status,omitempty"` // raw wait status of the program
	CPUNanos int64  `json:"cpu_ns,omitempty"`
}

// prepare builds the child for job in the runner's tier.
func (r *Runner) prepare(job Job, code, stdout, stderr *os.File, mem *memGuard) (*launch, error) {
	if r.tier == TierNone {
		cmd := exec.Command(job.Python, "-s", "-c", job.program())
		if job.cmd != nil {
			cmd = exec.Command(job.cmd.Args[0], job.cmd.Args[1:]...)
		}
		cmd.Dir = job.Dir
		cmd.Env = childEnv(job)
		cmd.Stdout = stdout
		cmd.Stderr = stderr
		cmd.ExtraFiles = []*os.File{code} // fd 3
		setProcessGroup(cmd)
		return &launch{cmd: cmd}, nil
	}
	return r.prepareSandbox(job, code, stdout, stderr, mem)
}

// afterStart releases the parent's copies of what the child inherited and
// starts reading the init's report.
func (l *launch) afterStart() {
	for _, f := range l.release {
		f.Close()
	}
	l.release = nil
	if l.status != nil {
		l.report = make(chan initReport, 1)
		go func() {
			var rep initReport
			b, _ := io.ReadAll(io.LimitReader(l.status, 1<<20))
			if len(b) > 0 && json.Unmarshal(b, &rep) != nil {
				rep.Err = "sandbox init sent a malformed report"
			}
			l.report <- rep
		}()
	}
}

// sendConfig lets the init go on (see config). Once only.
func (l *launch) sendConfig() {
	if l.config != nil {
		l.config()
		l.config = nil
	}
}

// abort undoes prepare after a failed start.
func (l *launch) abort() {
	l.afterStart()
	l.sendConfig()
	l.done()
}

func (l *launch) done() {
	if l.status != nil {
		l.status.Close()
	}
	for _, f := range l.cleanups {
		f()
	}
	l.cleanups = nil
}

// finish reports how the program ended, once the child has been waited for.
func (l *launch) finish(ps *os.ProcessState) (childStatus, error) {
	defer l.done()
	var st childStatus
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			st.ws = &ws
		}
		st.cpu = ps.UserTime() + ps.SystemTime()
	}
	if l.report == nil {
		return st, nil
	}
	rep := <-l.report
	if rep.Err != "" {
		return st, errors.New(rep.Err)
	}
	if rep.Status != nil {
		st.ws = rawWaitStatus(*rep.Status)
		st.cpu = time.Duration(rep.CPUNanos)
	}
	return st, nil
}
