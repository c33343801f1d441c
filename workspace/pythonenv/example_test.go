package pythonenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/prims-mcp/prims/workspace/pythonenv"
)

func ExampleCache_Acquire() {
	ctx := context.Background()
	interps, _ := pythonenv.Discover(ctx, pythonenv.DiscoverOptions{})
	interp, err := pythonenv.Select(interps, "3.11")
	if err != nil {
		fmt.Println(err) // names the versions available
		return
	}
	cache, err := pythonenv.New(pythonenv.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	env, err := cache.Acquire(ctx, interp, []string{"requests>=2.31"}, func(line string) {
		fmt.Fprintln(os.Stderr, line)
	})
	var ie *pythonenv.InstallError
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
	fmt.Println(pythonenv.DistributionFor("sklearn.linear_model"))
	fmt.Println(pythonenv.DistributionFor("cv2"))
	fmt.Println(pythonenv.DistributionFor("numpy"))
	// Output:
	// scikit-learn
	// opencv-python
	// numpy
}

func ExampleValidateRequirements() {
	reqs, err := pythonenv.ValidateRequirements([]string{"Pandas >= 2", "requests[SOCKS]", "pandas>=2"}, false)
	fmt.Println(reqs, err)
	_, err = pythonenv.ValidateRequirements([]string{"-r requirements.txt"}, false)
	fmt.Println(err)
	// Output:
	// [pandas>=2 requests[socks]] <nil>
	// requirement "-r requirements.txt": pip options (-r, -e, --index-url, ...) are not allowed; list package names with optional version specifiers, such as "pandas" or "requests>=2.31"
}
