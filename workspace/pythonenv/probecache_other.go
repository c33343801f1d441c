//go:build !unix

package pythonenv

import "io/fs"

// ownedBySelf cannot tell owners apart here: the cache lives in the user's
// own cache directory.
func ownedBySelf(fs.FileInfo) bool { return true }
