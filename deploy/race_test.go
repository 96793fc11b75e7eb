//go:build race

package deploy_test

// raceEnabled: the test binary runs with the race detector, and so do the
// processes the topology test builds.
const raceEnabled = true
