//go:build unix && !linux

package sandbox

import "errors"

const fdDir = "/dev/fd"

func closeRangeOnExec(int) error { return errors.ErrUnsupported }
