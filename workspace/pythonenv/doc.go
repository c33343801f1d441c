// Package pythonenv finds the Python interpreters on a host and gives PRIMS
// content-addressed Python environments that are installed once per machine
// and reused by every run that asks for the same packages.
//
//	interps, skipped := pythonenv.Discover(ctx, pythonenv.DiscoverOptions{Explicit: pythonFlags})
//	interp, err := pythonenv.Select(interps, "3.12") // "" for the default
//	cache, err := pythonenv.New(pythonenv.Options{MaxBytes: 5 << 30})
//	env, err := cache.Acquire(ctx, interp, []string{"pandas>=2", "requests"}, func(line string) {
//		notify(line) // "resolving pandas>=2", "downloading pandas-2.2.1 (12.4 MB)", ...
//	})
//	if err != nil {
//		return err // *InstallError or *RequirementError: safe to show a model
//	}
//	defer env.Release()
//	// run env.Python, mounting env.Dir and interp.BasePrefix read-only
//
// An environment is a venv created without pip (tens of milliseconds where
// ensurepip costs seconds); packages are installed into it by one pip from
// outside, "pip --python <env>/bin/python install", with a pip cache shared
// by all builds. Its key hashes the interpreter (path and version), the
// normalized requirement set and the index configuration. It is built in a
// temporary directory beside the cache and published by an atomic rename,
// so a failed or killed build never leaves an environment a later Acquire
// would use. Concurrent Acquires for one key share one build. Environments
// in use are pinned with a shared flock, which LRU eviction under
// Options.MaxBytes respects across processes.
//
// Published environments are never written again: pip compiles bytecode at
// build time, so runs can mount them read-only and set
// PYTHONDONTWRITEBYTECODE. Console scripts in bin/ keep the build path in
// their shebang; runs use Env.Python directly.
package pythonenv
