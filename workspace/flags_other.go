//go:build !unix

package workspace

const (
	oNoFollow = 0
	oNonBlock = 0
)

const oDirectory = 0
