//go:build race

package machine

// raceEnabled: the race detector makes the randomized tests slow; they run
// fewer seeds under it.
const raceEnabled = true
