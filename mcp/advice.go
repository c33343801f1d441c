package mcp

//lint:file-ignore SA1019 Sampling is deprecated from protocol 2026-07-28 (SEP-2577) but works through the deprecation window (twelve months or more); --sample-fixes, which alone uses it, is opt-in.

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Install advice (--sample-fixes): when requirements fail to install
// because pip found no such package or version or could not build it, or a
// run fails with ModuleNotFoundError, the client's model is asked which
// requirements to use. Its answer is parsed into requirement strings and
// returned as an unverified suggestion: nothing is installed on its word.
// The request travels like a fix suggestion (sampling.go), on every
// protocol, and a client without sampling gets the result it gets today.

// adviceKinds are the install failures a different requirement can fix; an
// unreachable index, a timeout or a full disk are not the model's to solve.
var adviceKinds = map[string]bool{"not_found": true, "no_matching_version": true, "build_failed": true}

// installAdvised returns the install failure in err that the client's model
// may help with, or nil.
func installAdvised(err error) *pythonenv.InstallError {
	var ie *pythonenv.InstallError
	if errors.As(err, &ie) && adviceKinds[ie.Kind] {
		return ie
	}
	return nil
}

// requirementsLine starts the line of the model's answer that lists the
// requirements; the prompts ask for it.
const requirementsLine = "requirements:"

// maxAdvised bounds the requirements taken from one answer.
const maxAdvised = 10

// pep508 is what one suggested requirement may look like: a project name,
// optional extras, optional version specifiers. Anything else (URLs, paths,
// options such as --index-url) is dropped: the suggestion must not steer
// pip anywhere the server's flags do not.
var pep508 = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?(?:\s*(?:===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+(?:\s*,\s*(?:===|==|~=|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?$`)

// parseAdvice finds the requirements line in a model's answer and returns
// the requirements on it that look like PEP 508 requirements.
func parseAdvice(text string) []string {
	var reqs []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.Trim(strings.TrimSpace(line), "`*_ ")
		rest, ok := cutFoldPrefix(line, requirementsLine)
		if !ok {
			continue
		}
		for _, r := range splitRequirements(rest) {
			r = strings.Trim(strings.TrimSpace(r), "`'\"* ")
			if r != "" && pep508.MatchString(r) && len(reqs) < maxAdvised {
				reqs = append(reqs, r)
			}
		}
		break
	}
	return reqs
}

// splitRequirements splits a list of requirements at commas that start a
// new requirement, keeping those inside a specifier list (numpy>=1,<2).
func splitRequirements(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		p := strings.TrimSpace(part)
		if len(out) > 0 && p != "" && strings.ContainsAny(p[:1], "<>=!~") {
			out[len(out)-1] += "," + p
			continue
		}
		out = append(out, p)
	}
	return out
}

func cutFoldPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// missingModule is the module a ModuleNotFoundError in stderr names.
var missingModule = regexp.MustCompile(`ModuleNotFoundError: No module named '([^']+)'`)

// adviceAsk is the part of a prompt that asks for the requirements line.
const adviceAsk = "End your answer with one line that starts with \"requirements:\" and lists the pip requirements to pass to run_code (PEP 508, such as opencv-python or numpy<2), separated by commas."

// installAdviceRequest asks the client's model which requirements to use
// after ie.
func installAdviceRequest(code string, reqs []string, ie *pythonenv.InstallError) *sdk.CreateMessageParams {
	var b strings.Builder
	b.WriteString("PRIMS, a Python sandbox, could not install the requirements a program declared, so the program did not run. Packages come from a pip index; there is no other way to get them.\n\n")
	fmt.Fprintf(&b, "Requirements: %s\n", strings.Join(reqs, ", "))
	fmt.Fprintf(&b, "pip failed (%s): %s\n", ie.Kind, ie.Summary)
	if len(ie.PipLines) > 0 {
		fmt.Fprintf(&b, "pip said:\n```\n%s\n```\n", human.Tail(strings.Join(ie.PipLines, "\n"), 2<<10))
	}
	fmt.Fprintf(&b, "\nProgram:\n```python\n%s\n```\n\n", human.Tail(code, 8<<10))
	b.WriteString("Which requirements should the program declare instead? Correct misspelt or renamed projects (the import name is often not the pip name), and relax versions that do not exist. In at most three sentences. ")
	b.WriteString(adviceAsk)
	return &sdk.CreateMessageParams{
		SystemPrompt:     "You help a coding agent choose pip requirements. Answer briefly; the last line lists the requirements.",
		Messages:         []*sdk.SamplingMessage{{Role: "user", Content: &sdk.TextContent{Text: b.String()}}},
		MaxTokens:        300,
		IncludeContext:   "none",
		ModelPreferences: &sdk.ModelPreferences{SpeedPriority: 0.8, IntelligencePriority: 0.5},
	}
}

// notRunResult is run_code's result for code that did not run because its
// requirements failed to install: the error as today, as a result that can
// also carry the model's advice.
func notRunResult(msg string, reqs []string) (*sdk.CallToolResult, *RunOutput) {
	res := textResult(msg)
	res.IsError = true
	return res, &RunOutput{NotRun: true, Requirements: append([]string{}, reqs...), Artifacts: []Artifact{}, Hint: msg}
}

// addAdvice puts the requirements parsed from the model's answer into the
// result, marked unverified.
func addAdvice(res *sdk.CallToolResult, out *RunOutput, text string) {
	reqs := parseAdvice(text)
	if len(reqs) == 0 {
		return
	}
	out.SuggestedRequirements = reqs
	res.Content = append(res.Content, &sdk.TextContent{
		Text: fmt.Sprintf("Suggested requirements (from the client's model via sampling; not verified, nothing was installed): %s. Pass them in run_code's requirements to try them.", strings.Join(reqs, ", ")),
	})
}
