//go:build !race

package sandbox

// raceInitEnv is empty outside race-detector builds; see race.go.
var raceInitEnv []string
