package pyenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/prims-mcp/prims/sandbox/pyenv"
)

func ExampleCache_Acquire() {
	ctx := context.Background()
	interps, _ := pyenv.Discover(ctx, pyenv.DiscoverOptions{})
	interp, err := pyenv.Select(interps, "3.11")
	if err != nil {
		fmt.Println(err) // names the versions available
		return
	}
	cache, err := pyenv.New(pyenv.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	env, err := cache.Acquire(ctx, interp, []string{"requests>=2.31"}, func(line string) {
		fmt.Fprintln(os.Stderr, line)
	})
	var ie *pyenv.InstallError
	if errors.As(err, &ie) {
		fmt.Println(ie.Kind, ie.Summary, ie.PipLines, ie.Hint)
		return
	} else if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Release()
	out, _ := exec.CommandContext(ctx, env.Python, "-c", "import requests").CombinedOutput()
	fmt.Printf("%s", out)
}

func ExampleDistributionFor() {
	fmt.Println(pyenv.DistributionFor("sklearn.linear_model"))
	fmt.Println(pyenv.DistributionFor("cv2"))
	fmt.Println(pyenv.DistributionFor("numpy"))
	// Output:
	// scikit-learn
	// opencv-python
	// numpy
}

func ExampleValidateRequirements() {
	reqs, err := pyenv.ValidateRequirements([]string{"Pandas >= 2", "requests[SOCKS]", "pandas>=2"}, false)
	fmt.Println(reqs, err)
	_, err = pyenv.ValidateRequirements([]string{"-r requirements.txt"}, false)
	fmt.Println(err)
	// Output:
	// [pandas>=2 requests[socks]] <nil>
	// requirement "-r requirements.txt": pip options (-r, -e, --index-url, ...) are not allowed; list package names with optional version specifiers, such as "pandas" or "requests>=2.31"
}
