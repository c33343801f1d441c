// Package initproc is the sandbox init: the process that package sandbox
// starts by re-executing this binary (as runc does), which builds the run's
// namespaces, root filesystem, privileges, Landlock and seccomp confinement
// and limits, starts the program and reaps it. It exists on Linux only.
//
// It is a package of its own, with few imports, so that it is initialized
// (and becomes the init) before the rest of the binary's packages.
package initproc
