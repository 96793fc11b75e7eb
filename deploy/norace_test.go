//go:build !race

package deploy_test

// raceEnabled: the test binary runs without the race detector.
const raceEnabled = false
