package mcp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

func ptr[T any](v T) *T { return &v }

func (s *Server) addTools() {
	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "run_code",
		Title: "Run Python code",
		Description: `Run a complete Python 3 program in a fresh process inside the session's sandboxed workspace. Returns the exit code, stdout and stderr, and the files the program wrote under output/: images (PNG, JPEG, GIF, WebP) as image content, other files as resource links.
The working directory is the workspace root. Files persist between calls; Python variables and imports do not, so every program must be complete, unless you pass state: with state "NAME" the code runs in a live interpreter kept under that name, whose globals, imports and loaded data persist from one call with that name to the next; a call that fails leaves the state as it was (state_rolled_back). fork_from starts a new state as a copy of another. background: true returns a run_id at once for get_run and cancel_run. print() what you want to read. Save results for the user (plots, CSV, reports) under output/; plt.show() saves matplotlib figures there.
Third-party packages must be declared in requirements (pip names). Optional "files" downloads URLs into mounts/ (read-only) before the run. Output longer than the inline budget is cut in the middle; the complete streams are kept in logs/. A failed run comes with a hint for the fix.`,
		Annotations: &sdk.ToolAnnotations{
			Title:           "Run Python code",
			DestructiveHint: ptr(false),
			OpenWorldHint:   ptr(true),
		},
	}, s.runCode)

	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "mount_file",
		Title: "Download a file into mounts/",
		Description: `Download a file from an http(s) URL into the workspace under mounts/ so that code can read it.
mount_path is relative to mounts/ ("data/sales.csv" becomes mounts/data/sales.csv). Mounted files are read-only to the code. Downloads have a size cap and a time limit.`,
		Annotations: &sdk.ToolAnnotations{
			Title:           "Download a file into mounts/",
			DestructiveHint: ptr(false),
			IdempotentHint:  true,
			OpenWorldHint:   ptr(true),
		},
	}, s.mountFile)

	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "list_dir",
		Title: "List a workspace directory",
		Description: `List the files and directories at a path in the workspace (default: the workspace root), with type, size and modification time.
Typical places: output/ (files the code wrote), mounts/ (inputs), logs/ (complete stdout and stderr of each run).`,
		Annotations: &sdk.ToolAnnotations{Title: "List a workspace directory", ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, s.listDir)

	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "preview_file",
		Title: "Read part of a workspace file",
		Description: `Read a text file in the workspace, up to 8 KB per call. For longer files call again with offset set to the returned next_offset until eof is true.
Binary files are described (type and size) rather than dumped.`,
		Annotations: &sdk.ToolAnnotations{Title: "Read part of a workspace file", ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, s.previewFile)

	sdk.AddTool(s.sdk, &sdk.Tool{
		Name:  "persist_artifact",
		Title: "Upload an output file",
		Description: `Keep a file from output/ beyond the session. With presigned_url the file is uploaded there with an HTTP PUT (for example an S3 or GCS presigned upload URL). Without it, the file goes to the server's artifact store, when the server has one, and the result gives its key, sha256 and a time-limited download URL.
Only regular files under output/ can be persisted; there is a size cap.`,
		Annotations: &sdk.ToolAnnotations{
			Title:           "Upload an output file",
			DestructiveHint: ptr(false),
			IdempotentHint:  true,
			OpenWorldHint:   ptr(true),
		},
	}, s.persistArtifact)
}

// MountInput asks for one URL to be downloaded into mounts/.
type MountInput struct {
	URL       string `json:"url" jsonschema:"http or https URL to download"`
	MountPath string `json:"mount_path,omitempty" jsonschema:"where to put it, relative to mounts/, for example data/input.csv"`
	// The original Python PRIMS's run_code files spelled it mountPath.
	MountPathAlias string `json:"mountPath,omitempty" jsonschema:"the same as mount_path (the original PRIMS's name)"`
}

// MountOutput describes a mounted file.
type MountOutput struct {
	Path string `json:"path" jsonschema:"the file's path relative to the workspace root"`
	Size int64  `json:"size"`
	MIME string `json:"mime"`
}

func (s *Server) mountFile(ctx context.Context, req *sdk.CallToolRequest, in MountInput) (*sdk.CallToolResult, MountOutput, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, MountOutput{}, err
	}
	target, err := in.target()
	if err != nil {
		return nil, MountOutput{}, err
	}
	e, err := sess.Workspace().Fetch(ctx, in.URL, target, s.cfg.Transfer)
	if err != nil {
		return nil, MountOutput{}, s.toolError("mount_file", err)
	}
	out := MountOutput{Path: e.Path, Size: e.Size, MIME: e.MIME}
	return textResult(fmt.Sprintf("Mounted %s (%s, %s). Code can open it as %q.", e.Path, human.Bytes(e.Size), e.MIME, e.Path)), out, nil
}

// ListInput names a directory.
type ListInput struct {
	Path string `json:"path,omitempty" jsonschema:"directory relative to the workspace root; empty for the root"`
	// The original Python PRIMS's name.
	DirPath string `json:"dir_path,omitempty" jsonschema:"the same as path (the original PRIMS's name)"`
}

// ListOutput is a directory listing.
type ListOutput struct {
	Path      string            `json:"path"`
	Entries   []workspace.Entry `json:"entries"`
	Truncated bool              `json:"truncated" jsonschema:"true when the directory has more entries than were listed"`
}

func (s *Server) listDir(ctx context.Context, req *sdk.CallToolRequest, in ListInput) (*sdk.CallToolResult, ListOutput, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, ListOutput{}, err
	}
	if in.Path == "" {
		in.Path = in.DirPath
	} else if in.DirPath != "" && in.DirPath != in.Path {
		return nil, ListOutput{}, errors.New("give path or dir_path, not both")
	}
	entries, truncated, err := sess.Workspace().List(in.Path)
	if err != nil {
		return nil, ListOutput{}, s.toolError("list_dir", err)
	}
	shown := in.Path
	if shown == "" {
		shown = "."
	}
	out := ListOutput{Path: shown, Entries: entries, Truncated: truncated}
	if out.Entries == nil {
		out.Entries = []workspace.Entry{}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d entries\n", shownName(shown), len(entries))
	for _, e := range entries {
		name := shownName(e.Name)
		switch e.Type {
		case "dir":
			fmt.Fprintf(&b, "  %s/\n", name)
		case "file":
			fmt.Fprintf(&b, "  %s  %s  %s\n", name, human.Bytes(e.Size), e.Modified.Format("2006-01-02T15:04:05Z07:00"))
		default:
			fmt.Fprintf(&b, "  %s  (%s)\n", name, e.Type)
		}
	}
	if truncated {
		fmt.Fprintf(&b, "  ... listing cut at %d entries\n", workspace.MaxListEntries)
	}
	return textResult(b.String()), out, nil
}

// shownName is a file name as list_dir's text shows it: as it is when it is
// plain printable text, quoted (strconv.Quote) when it holds anything that
// could break a line or pass for other text, such as a newline, a control
// character, invalid UTF-8, a quote, or a leading or trailing space. The
// structured entries keep the real name.
func shownName(name string) string {
	plain := utf8.ValidString(name) && name == strings.TrimSpace(name) && !strings.ContainsAny(name, "\"\\")
	for _, r := range name {
		if !unicode.IsPrint(r) {
			plain = false
			break
		}
	}
	if plain {
		return name
	}
	return strconv.Quote(name)
}

// PreviewInput names a file and a page of it.
type PreviewInput struct {
	Path string `json:"path,omitempty" jsonschema:"file path relative to the workspace root, for example output/result.csv"`
	// The original Python PRIMS's name; there too relative to the root.
	RelativePath string `json:"relative_path,omitempty" jsonschema:"the same as path (the original PRIMS's name)"`
	Offset       int64  `json:"offset,omitempty" jsonschema:"byte offset to start at (from next_offset of the previous page)"`
	MaxBytes     int64  `json:"max_bytes,omitempty" jsonschema:"bytes to return, at most 8192 (the default)"`
}

func (s *Server) previewFile(ctx context.Context, req *sdk.CallToolRequest, in PreviewInput) (*sdk.CallToolResult, *workspace.Preview, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	if in.Path == "" {
		in.Path = in.RelativePath
	} else if in.RelativePath != "" && in.RelativePath != in.Path {
		return nil, nil, errors.New("give path or relative_path, not both")
	}
	p, err := sess.Workspace().Preview(in.Path, in.Offset, in.MaxBytes)
	if err != nil {
		return nil, nil, s.toolError("preview_file", err)
	}
	if p.Binary {
		return textResult(fmt.Sprintf("%s is a binary file (%s, %s); it is not shown as text.", shownName(p.Path), p.MIME, human.Bytes(p.Size))), p, nil
	}
	text := p.Text
	if !p.EOF {
		text += fmt.Sprintf("\n[... bytes %d-%d of %d shown; call preview_file with offset=%d for more]", p.Offset, p.NextOffset, p.Size, p.NextOffset)
	}
	if p.Note != "" {
		text += fmt.Sprintf("\n[PRIMS: this log is not the whole stream: %s]", p.Note)
	}
	return textResult(text), p, nil
}

// toolError turns an error into what the model sees. Errors the client can
// act on pass through; anything else is logged and replaced by a message
// without host details.
func (s *Server) toolError(tool string, err error) error {
	var we *workspace.Error
	var se *artifactstore.Error
	if errors.As(err, &we) || errors.As(err, &se) {
		return err
	}
	if errors.Is(err, errShuttingDown) {
		// Not "try again": this server will not run it.
		return fmt.Errorf("%s was not carried out, and nothing ran: the server is shutting down. Call it again once the server is back", tool)
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("the call was cancelled")
	}
	if errors.Is(err, session.ErrStateGone) || errors.Is(err, session.ErrNoRun) || errors.Is(err, session.ErrNoState) {
		return err // written for the model
	}
	if errors.Is(err, session.ErrNotRun) {
		// pythonenv's errors are written for the model and name no host
		// paths; pip's own lines add what the summary leaves out.
		var ie *pythonenv.InstallError
		if errors.As(err, &ie) && len(ie.PipLines) > 0 {
			return fmt.Errorf("%w\npip said:\n  %s", err, strings.Join(ie.PipLines, "\n  "))
		}
		return err
	}
	s.log.Error("tool failed", "tool", tool, "err", err)
	return fmt.Errorf("%s failed inside the server; the workspace is unchanged. Try again, or report this if it persists", tool)
}

func textResult(text string) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: text}}}
}
