package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/session"
)

// statesURI is the resource that lists the session's states.
const statesURI = "prims://states"

// StateInfo describes one live state of the session.
type StateInfo struct {
	Name         string   `json:"name"`
	AgeS         int64    `json:"age_s" jsonschema:"seconds since the state was created"`
	IdleS        int64    `json:"idle_s" jsonschema:"seconds since its last call ended; idle states expire"`
	MemoryBytes  int64    `json:"memory_bytes" jsonschema:"memory the state's interpreter holds (proportional set size: pages shared with copies count once)"`
	Python       string   `json:"python"`
	Requirements []string `json:"requirements" jsonschema:"the requirements fixed when the state was created"`
	ForkedFrom   string   `json:"forked_from,omitempty"`
}

func stateInfos(states []session.StateInfo) []StateInfo {
	out := make([]StateInfo, 0, len(states))
	for _, st := range states {
		out = append(out, StateInfo{
			Name:         st.Name,
			AgeS:         int64(st.Age.Seconds()),
			IdleS:        int64(st.Idle.Seconds()),
			MemoryBytes:  st.Memory,
			Python:       st.Python,
			Requirements: st.Requirements,
			ForkedFrom:   st.ForkedFrom,
		})
	}
	return out
}

// DropStateInput is what drop_state accepts.
type DropStateInput struct {
	State string `json:"state" jsonschema:"the name of the state to end"`
}

// DropStateOutput is drop_state's structured result.
type DropStateOutput struct {
	Dropped string      `json:"dropped"`
	States  []StateInfo `json:"states" jsonschema:"the states left in the session"`
}

func (s *Server) dropState(ctx context.Context, req *sdk.CallToolRequest, in DropStateInput) (*sdk.CallToolResult, *DropStateOutput, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	if err := sess.DropState(in.State); err != nil {
		return nil, nil, s.toolError("drop_state", err)
	}
	out := &DropStateOutput{Dropped: in.State, States: stateInfos(sess.States())}
	var names []string
	for _, st := range out.States {
		names = append(names, st.Name)
	}
	left := "none"
	if len(names) > 0 {
		left = strings.Join(names, ", ")
	}
	return textResult(fmt.Sprintf("State %q ended; its memory is freed. States left: %s.", in.State, left)), out, nil
}

// readStates answers resources/read of prims://states.
func (s *Server) readStates(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	b, _ := json.MarshalIndent(map[string]any{"states": stateInfos(sess.States())}, "", "  ")
	return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: statesURI, MIMEType: "application/json", Text: string(b)}}}, nil
}

// statesResource is the states resource as resources/list shows it.
var statesResource = &sdk.Resource{
	URI:         statesURI,
	Name:        "states",
	Title:       "Python states of this session",
	Description: "The live interpreters run_code's state argument keeps: name, age, idle time, memory, Python and requirements.",
	MIMEType:    "application/json",
}

func (s *Server) addStates() {
	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:        "drop_state",
		Title:       "End a Python state",
		Description: `End a state that run_code's state argument keeps, freeing its memory. States also end when idle for long (--state-idle), and with the session.`,
		Annotations: &sdk.ToolAnnotations{Title: "End a Python state", DestructiveHint: ptr(true), OpenWorldHint: ptr(false)},
	}, s.dropState)
	s.sdk.AddResource(statesResource, s.readStates)
}
