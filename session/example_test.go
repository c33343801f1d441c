package session_test

import (
	"context"
	"fmt"
	"log"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/session"
)

// A run in a temporary workspace, as prims run makes one. (Compiled, not
// run: it needs a Python at the path given; TestRun runs the same.)
func ExampleSession_Run() {
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer runner.Close()
	rt := session.New(session.Config{Python: "/usr/bin/python3"}, runner)
	sess, err := rt.Open("", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	res, err := sess.Run(context.Background(), session.Request{
		Code: "print(6 * 7)",
		// Requirements would need Config.Envs, an environment cache.
	})
	if err != nil {
		log.Fatal(err) // the program did not run: a download, an install or the start failed
	}
	fmt.Print(res.Stdout.Text)
	if res.Hint != "" {
		fmt.Println("hint:", res.Hint) // from the limit that fired, or the traceback
	}
}
