package mcp

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/workspace"
)

// inlineImages are the image types returned as image content: the ones
// that MCP clients and the models behind them can display.
var inlineImages = map[string]bool{
	"image/png":  true,
	"image/jpeg": true,
	"image/gif":  true,
	"image/webp": true,
}

// maxLinks bounds the resource links in one result; the text summary and
// list_dir cover the rest.
const maxLinks = 50

// fileContent returns what the model sees of the files a run wrote, newest
// first: images as image content while they fit the per-result budget, every
// other file (and every image over the budget) as a resource link. It sets
// each artifact's Note to say which, and why. Clients of a protocol older
// than resource links get no link: the note names the resource to read.
func (s *Server) fileContent(ws *workspace.Workspace, arts []Artifact, version string) []sdk.Content {
	canLink := hasResourceLinks(version)
	var images, links []sdk.Content
	budget := s.cfg.ImageBudget
	for i := range arts {
		a := &arts[i]
		mt, _, _ := mime.ParseMediaType(a.MIME)
		if inlineImages[mt] {
			data, why := readImage(ws, a.Path, mt, budget, s.cfg.ImageBudget)
			if why == "" {
				budget -= int64(len(data))
				images = append(images, &sdk.ImageContent{Data: data, MIMEType: mt})
				a.Note = "shown below as an image"
				continue
			}
			a.Note = why
		}
		if !canLink {
			if a.Note != "" {
				a.Note += "; "
			}
			a.Note += "read it as resource " + a.URI
			continue
		}
		if len(links) == maxLinks {
			if a.Note == "" {
				a.Note = fmt.Sprintf("not linked (only the newest %d files are); read it as resource %s", maxLinks, a.URI)
			}
			continue
		}
		size := a.Size
		links = append(links, &sdk.ResourceLink{URI: a.URI, Name: path.Base(a.Path), Title: a.Path, MIMEType: a.MIME, Size: &size})
		if a.Note == "" {
			a.Note = "linked as resource " + a.URI
		} else {
			a.Note += "; linked as resource " + a.URI
		}
	}
	return append(images, links...)
}

// readImage reads an image file whole if it fits in the budget left and its
// content really is the image type its name says. Otherwise it returns why
// the image is not shown inline.
func readImage(ws *workspace.Workspace, name, mediaType string, left, total int64) ([]byte, string) {
	f, e, err := ws.Open(name)
	if err != nil {
		return nil, "not shown inline: it could not be opened"
	}
	defer f.Close()
	switch {
	case e.Size > total:
		return nil, fmt.Sprintf("not shown inline: it is over the %s image budget of a result", human.Bytes(total))
	case e.Size > left:
		return nil, fmt.Sprintf("not shown inline: newer images used the %s image budget of this result", human.Bytes(total))
	}
	// The code may still be writing: read at most what is left and one byte.
	data, err := io.ReadAll(io.LimitReader(f, left+1))
	if err != nil {
		return nil, "not shown inline: it could not be read"
	}
	if int64(len(data)) > left {
		return nil, "not shown inline: it grew past the image budget while being read"
	}
	if got := http.DetectContentType(data); got != mediaType {
		return nil, fmt.Sprintf("not shown inline: its content is %s, not %s", got, mediaType)
	}
	return data, ""
}

// Protocol versions that introduced content types. Versions are dates, so
// they compare as strings; "" (not known) is taken as the newest.
const (
	versionAudio         = "2025-03-26"
	versionResourceLinks = "2025-06-18"
)

func hasResourceLinks(version string) bool { return version == "" || version >= versionResourceLinks }

// contentFor returns content with what the client's protocol version
// cannot parse replaced by text: a client of 2024-11-05 or 2025-03-26
// rejects a whole result over one resource_link (the TypeScript SDK 1.11
// does), one of 2024-11-05 over audio.
func contentFor(version string, content []sdk.Content) []sdk.Content {
	if version == "" || version >= versionResourceLinks {
		return content
	}
	out := make([]sdk.Content, 0, len(content))
	for _, c := range content {
		switch c := c.(type) {
		case *sdk.ResourceLink:
			name := c.Title
			if name == "" {
				name = c.Name
			}
			out = append(out, &sdk.TextContent{Text: fmt.Sprintf("%s (%s): read it as resource %s", name, c.MIMEType, c.URI)})
		case *sdk.AudioContent:
			if version < versionAudio {
				out = append(out, &sdk.TextContent{Text: fmt.Sprintf("[%s audio not shown: this client's protocol has no audio content]", c.MIMEType)})
				continue
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return out
}
