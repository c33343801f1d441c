//go:build !unix

package artifactstore_test

import "errors"

func mkfifo(string) error { return errors.New("no FIFOs on this OS") }
