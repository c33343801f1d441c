//go:build !unix

package workspace

const (
	oNoFollow = 0
	oNonBlock = 0
)

const oDirectory = 0

func allocatedOf(fi interface{ Size() int64 }) int64 { return fi.Size() }
