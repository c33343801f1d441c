//go:build race

package sandbox

// raceInitEnv is added to the init's environment in race-detector builds
// (the tests): the race runtime otherwise sleeps a second before every
// exit (GORACE's atexit_sleep_ms), and every sandboxed run ends with one.
var raceInitEnv = []string{"GORACE=atexit_sleep_ms=0"}
