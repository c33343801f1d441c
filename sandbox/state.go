package sandbox

import (
	_ "embed"
	"errors"
	"strings"
)

var (
	//go:embed stateserver.py
	stateServer string
	//go:embed msgs.py
	msgsPy string
	//go:embed zygote.py
	zygotePy string
)

// bootstrapDefs are the bootstrap's definitions (its hooks and fallbacks),
// without its final call, which would read a program.
var bootstrapDefs = func() string {
	defs, ok := strings.CutSuffix(bootstrap, "\n_prims_main()\n")
	if !ok {
		panic("sandbox: bootstrap.py must end with its _prims_main() call")
	}
	return defs
}()

// stateProgram is what a state sandbox runs: the bootstrap's definitions,
// the messages and the state server.
var stateProgram = bootstrapDefs + "\n" + msgsPy + "\n" + stateServer

// zygoteProgram is what a zygote sandbox runs (zygote_linux.go).
var zygoteProgram = bootstrapDefs + "\n" + msgsPy + "\n" + zygotePy

// ErrNoState is wrapped by StateHost's errors for a state name that does
// not exist (never created, dropped, or lost).
var ErrNoState = errors.New("no such state")

// ErrStateLost is wrapped when a state's interpreter died outside any
// call's control (a limit took the holder itself, or it was killed): what
// it held is gone.
var ErrStateLost = errors.New("the state's interpreter died; what it held is gone")

// ErrStatesUnsupported is returned by OpenStates where states cannot be
// kept (outside Linux: they need fork and /proc).
var ErrStatesUnsupported = errors.New("stateful runs are not supported on this platform")

// StateResult is how one call on a state ended.
type StateResult struct {
	Result
	// Committed: the program ended well (exit status 0, no uncaught
	// exception) and its interpreter is the state now. Otherwise the
	// state is exactly as it was before the call.
	Committed bool
	// Threads names the threads other than the main one that the
	// program left running in the state (committed calls only). A fork
	// carries only the thread that forks: they keep running in the
	// state's interpreter until the next call that ends well replaces it,
	// and no later call sees them run.
	Threads []string
	// OpenFiles and Sockets count the descriptors the state holds open
	// (committed calls only). Every later call's fork shares their
	// position: reading one moves it for the state too, even in a call
	// that is rolled back.
	OpenFiles, Sockets int
}
