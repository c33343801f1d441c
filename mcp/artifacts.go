package mcp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sync/errgroup"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/artifactstore"
)

// PersistInput names an output file and where it goes: a presigned URL the
// client has, or else the server's artifact store.
type PersistInput struct {
	Path string `json:"path,omitempty" jsonschema:"file under output/, for example output/report.pdf"`
	// The original Python PRIMS named the file relative to output/.
	RelativePath string `json:"relative_path,omitempty" jsonschema:"the same file relative to output/, for example report.pdf (the original PRIMS's name); give path or relative_path"`
	PresignedURL string `json:"presigned_url,omitempty" jsonschema:"http(s) URL that accepts an HTTP PUT of the file; omit it to keep the file in the server's artifact store"`
}

// PersistOutput is persist_artifact's result: the HTTP status of an upload
// to a presigned URL, or the key, checksum and download URL of a stored one.
type PersistOutput struct {
	workspace.Entry
	Status     int       `json:"status,omitempty" jsonschema:"HTTP status the presigned URL answered"`
	StatusText string    `json:"status_text,omitempty"`
	Store      string    `json:"store,omitempty" jsonschema:"the artifact store that keeps the file"`
	Key        string    `json:"key,omitempty" jsonschema:"the file's key in the artifact store"`
	SHA256     string    `json:"sha256,omitempty"`
	URL        string    `json:"url,omitempty" jsonschema:"time-limited download URL of the stored file, where the store can sign one"`
	URLExpires time.Time `json:"url_expires,omitzero"`
}

func (s *Server) persistArtifact(ctx context.Context, req *sdk.CallToolRequest, in PersistInput) (*sdk.CallToolResult, *PersistOutput, error) {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, nil, err
	}
	name, err := persistPath(in)
	if err != nil {
		return nil, nil, err
	}
	if in.PresignedURL != "" {
		r, err := sess.Workspace().Upload(ctx, name, in.PresignedURL, s.cfg.Transfer)
		if err != nil {
			return nil, nil, s.toolError("persist_artifact", err)
		}
		out := &PersistOutput{Entry: r.Entry, Status: r.Status, StatusText: r.StatusText}
		return textResult(fmt.Sprintf("Uploaded %s (%s, %s): the server answered %s.", r.Path, human.Bytes(r.Size), r.MIME, r.StatusText)), out, nil
	}
	if s.cfg.Artifacts == nil {
		return nil, nil, errors.New("presigned_url is required: this server has no artifact store (prims --artifact-store). Give an http(s) URL that accepts a PUT of the file")
	}
	a, err := s.cfg.Artifacts.Put(ctx, sess.Workspace(), name, sess.artifactPrefix())
	if err != nil {
		return nil, nil, s.toolError("persist_artifact", err)
	}
	return textResult(storedText(s.cfg.Artifacts, a)), persistOutput(s.cfg.Artifacts, a), nil
}

func persistOutput(st *artifactstore.Store, a artifactstore.Artifact) *PersistOutput {
	return &PersistOutput{
		Entry: workspace.Entry{Name: path.Base(a.Path), Path: a.Path, Type: "file", Size: a.Size, MIME: a.MIME},
		Store: st.String(), Key: a.Key, SHA256: a.SHA256, URL: a.URL, URLExpires: a.URLExpires,
	}
}

func storedText(st *artifactstore.Store, a artifactstore.Artifact) string {
	text := fmt.Sprintf("Stored %s (%s, %s) in %s as %s, sha256 %s.", a.Path, human.Bytes(a.Size), a.MIME, st, a.Key, a.SHA256)
	if a.URL != "" {
		text += fmt.Sprintf(" Download URL, valid until %s: %s", a.URLExpires.Format(time.RFC3339), a.URL)
	}
	return text
}

// persistPath is the workspace path persist_artifact names, by path or by
// relative_path (relative to output/). relative_path is joined, not
// cleaned: the resolver still sees and refuses any "..".
func persistPath(in PersistInput) (string, error) {
	switch {
	case in.Path != "" && in.RelativePath != "":
		return "", errors.New("give path or relative_path, not both")
	case in.RelativePath != "":
		return workspace.OutputDir + "/" + in.RelativePath, nil
	case in.Path == "":
		return "", errors.New("path is required: the file under output/ to persist, for example output/report.pdf")
	}
	return in.Path, nil
}

// artifactPrefix is where this session's files go in the artifact store:
// the day the session first stored one and a random name, so sessions never
// share keys and the MCP session ID (a credential on the HTTP transport)
// never appears in a bucket listing.
func (c *client) artifactPrefix() string {
	c.prefixOnce.Do(func() {
		c.prefix = "sessions/" + time.Now().UTC().Format("2006-01-02") + "/" + rand.Text()[:16]
	})
	return c.prefix
}

// target is where a mount goes, by mount_path or by the original PRIMS's
// mountPath.
func (m MountInput) target() (string, error) {
	switch {
	case m.MountPath != "" && m.MountPathAlias != "" && m.MountPath != m.MountPathAlias:
		return "", errors.New("give mount_path or mountPath, not both")
	case m.MountPath == "" && m.MountPathAlias == "":
		return "", errors.New("mount_path is required: where to put the file, relative to mounts/, for example data/input.csv")
	case m.MountPath == "":
		return m.MountPathAlias, nil
	}
	return m.MountPath, nil
}

// persistConcurrency bounds the uploads of one run's outputs: each holds
// a few parts in memory (artifactstore.Options), and a run that wrote a
// thousand files must not open a thousand connections.
const persistConcurrency = 4

// persisted is what persistOutputs kept, in the order of the run's files.
type persisted struct {
	artifacts []artifactstore.Artifact
	errors    []string
}

// persistOutputs stores a run's new or changed output/ files in the
// artifact store. A file that cannot be stored is reported, not fatal: the
// run's result stands, and the file stays in the workspace.
func (s *Server) persistOutputs(ctx context.Context, c *client, files []workspace.Entry, status func(string)) persisted {
	if len(files) == 0 {
		return persisted{}
	}
	status(fmt.Sprintf("storing %d output files in %s", len(files), s.cfg.Artifacts))
	arts := make([]artifactstore.Artifact, len(files))
	errs := make([]error, len(files))
	var g errgroup.Group
	g.SetLimit(persistConcurrency)
	for i, f := range files {
		g.Go(func() error {
			arts[i], errs[i] = s.cfg.Artifacts.Put(ctx, c.Workspace(), f.Path, c.artifactPrefix())
			return nil
		})
	}
	g.Wait()
	var p persisted
	for i, err := range errs {
		if err != nil {
			p.errors = append(p.errors, fmt.Sprintf("%s: %v", files[i].Path, s.toolError("persist_artifact", err)))
			continue
		}
		p.artifacts = append(p.artifacts, arts[i])
	}
	return p
}

// text is the line of the run's result that lists what was stored.
func (p persisted) text(st *artifactstore.Store) string {
	if len(p.artifacts) == 0 && len(p.errors) == 0 {
		return ""
	}
	var b strings.Builder
	if len(p.artifacts) > 0 {
		fmt.Fprintf(&b, "Stored in %s:", st)
		for _, a := range p.artifacts {
			fmt.Fprintf(&b, "\n  %s as %s (sha256 %s)", a.Path, a.Key, a.SHA256)
			if a.URL != "" {
				fmt.Fprintf(&b, " %s", a.URL)
			}
		}
	}
	for _, e := range p.errors {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Not stored: %s", e)
	}
	return b.String()
}
